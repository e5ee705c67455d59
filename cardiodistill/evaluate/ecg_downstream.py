"""What a pretrained ECG encoder is worth on labelled data, per lead subset and label budget.

For a labelled PTB-XL-style folder (either layout: the PhysioNet one, or ``signals.npy`` +
``meta.csv`` like ``../shared/data/ptbxl/subset100``), training records are the folds
``train_folds`` (default 1-8) and scored records the folds ``eval_folds`` (default 9). Every
record becomes one window the way the encoder was pretrained (same rate, band, z-score;
:func:`~cardiodistill.data.ecg_windows.record_windows`). For each lead set (``12``, ``limb6``,
``I+II``, ``I`` or any ``+``-joined leads) and each fraction of the training labels, the methods:

* ``linear`` - the frozen pretrained encoder's pooled embedding, standardised, then one L2
  logistic regression per class, the strength chosen by 3-fold CV on the training records only;
* ``finetune`` - the pretrained encoder plus a linear head, all weights trained (the encoder at
  ``finetune_lr_scale`` times the rate);
* ``scratch`` - the same encoder architecture from random weights, trained the same way;
* ``supervised`` - a fixed-lead 1-D CNN (xresnet1d family) trained on the same labels;
* ``baselines`` - each of the field's standard supervised models (``baselines``: the PTB-XL
  benchmark's ``resnet1d_wang``, ``inception1d``, ``xresnet1d101``) trained the same way; its cells
  are named by the model.

Trained runs use a fixed schedule (``epochs``, at least ``min_steps`` steps, AdamW with a
cosine decay) and are scored once at the end: the evaluation folds never choose anything. Scores
are macro AUROC over the task's classes with a record-level bootstrap 95 % CI
(:func:`~cardiodistill.evaluate.metrics.macro_auroc_ci`). The label subsets are nested (the
10 % subset is inside the 100 % set) and seeded. Each cell is written to
``cells/<method>__<leads>__<fraction>.json`` as soon as it is done, so an interrupted
evaluation continues where it stopped.

With 145 labelled records a single training run is a draw: its seed picks the label subset and the
initialisation, and on PTB-XL the gain of a pretrained encoder over scratch at 10 % of labels ranged +0.025 to
+0.063 over five seeds.
``repeats`` runs every cell with seeds ``seed``, ``seed + 1``, ... (each further run's files end ``__run<k>``): a
cell reports the mean over the runs with a bootstrap CI over the evaluation records in which every resample scores
every run, and the runs' own values and SD; a paired difference is the mean of the runs' differences.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import EcgEvalConfig, TrainerConfig
from ..data.ecg_windows import WindowSpec, record_windows
from ..errors import ConfigError, DataError
from ..io.atomic import save_npz_atomic, write_json_atomic
from ..signals.leads import LEADS_12, LIMB_LEADS, normalize_lead_name
from .metrics import macro_auroc_ci, paired_macro_auroc_ci

__all__ = ["LEAD_SETS", "evaluate_ecg_encoder", "label_subset", "load_labelled", "parse_lead_set"]

DEFAULT_BAND = (0.5, 40.0)  # Hz, when the model file does not say
LEAD_SETS: dict[str, tuple[str, ...]] = {"12": LEADS_12, "limb6": LIMB_LEADS, "I+II": ("I", "II"), "I": ("I",)}


def parse_lead_set(name: str) -> tuple[str, ...]:
    """A named lead set, or leads joined by ``+`` (``"I+II+V2"``), in canonical order."""
    if name in LEAD_SETS:
        return LEAD_SETS[name]
    leads = {normalize_lead_name(part.strip()) for part in name.split("+")}
    return tuple(lead for lead in LEADS_12 if lead in leads)


def load_labelled(cfg: EcgEvalConfig, spec: WindowSpec) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
    """``(train, eval, classes)``; each split is ``{"x" [n, 12, S] float32, "present" [n, 12],
    "y" [n, C] float32, "ecg_id" [n]}``, one window per record."""
    from ..data.datasets.ptbxl import PTBXL

    if not cfg.data:
        raise ConfigError("no labelled data: give --data (a PTB-XL folder) or set evaluate.ecg.data")
    data = PTBXL(cfg.data, task=cfg.task, folds=sorted({*cfg.train_folds, *cfg.eval_folds}))
    folds = data.frame["strat_fold"].to_numpy()
    splits = {}
    for name, wanted in (("train", cfg.train_folds), ("eval", cfg.eval_folds)):
        rows = np.flatnonzero(np.isin(folds, wanted))
        if not len(rows):
            raise DataError(f"no labelled records in folds {wanted} for the {name} split", cfg.data)
        xs, present, kept = [], [], []
        for i in rows:
            record, _ = data[int(i)]
            windows, mask, _ = record_windows(record, spec, max_windows=1)
            if len(windows):
                xs.append(windows[0])
                present.append(mask[0])
                kept.append(int(i))
        splits[name] = {"x": np.stack(xs), "present": np.stack(present), "y": data.targets[kept].astype(np.float32),
                        "ecg_id": data.frame["ecg_id"].to_numpy()[kept]}
    return splits["train"], splits["eval"], list(data.labels)


def label_subset(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of ``fraction`` of the records: a seeded prefix of one permutation, plus,
    for a class the prefix has no positive (or no negative) of, the first such record in the same
    permutation. Smaller subsets are therefore nested in larger ones, and every class is scorable."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"label fractions must be in (0, 1], got {fraction}")
    order = np.random.default_rng(seed).permutation(len(y))
    chosen = list(order[: max(1, math.ceil(fraction * len(y)))])
    for c in range(y.shape[1]):
        for value in (1, 0):
            if not (y[chosen, c] == value).any():
                first = next((i for i in order if y[i, c] == value), None)
                if first is not None:
                    chosen.append(first)
    return np.sort(np.asarray(chosen))


# ----------------------------------------------------------------------------------- the methods


@torch.no_grad()
def embed(encoder, x: np.ndarray, present: np.ndarray, leads: Sequence[str], batch_size: int = 128) -> np.ndarray:
    """Pooled embeddings ``[n, D]`` of windows restricted to ``leads``."""
    encoder.eval()
    subset = torch.zeros(len(LEADS_12), dtype=torch.bool)
    subset[[LEADS_12.index(lead) for lead in leads]] = True
    ids = torch.arange(len(LEADS_12))
    out = []
    for start in range(0, len(x), batch_size):
        xb = torch.from_numpy(x[start : start + batch_size])
        mask = torch.from_numpy(present[start : start + batch_size]) & subset
        out.append(encoder(xb, ids, mask).float().numpy())
    return np.concatenate(out)


def linear_probe(
    train_features: np.ndarray, y: np.ndarray, eval_features: np.ndarray, cs: Sequence[float], seed: int
) -> np.ndarray:
    """Per-class L2 logistic regression on standardised features; ``C`` by 3-fold CV on the training set."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scores = np.zeros((len(eval_features), y.shape[1]))
    for c in range(y.shape[1]):
        folds = int(min(3, y[:, c].sum(), (1 - y[:, c]).sum()))
        model = make_pipeline(StandardScaler(), LogisticRegressionCV(
            Cs=list(cs), cv=max(folds, 2), scoring="roc_auc", max_iter=2000, random_state=seed))
        with warnings.catch_warnings():
            # With few positives some CV folds hold one class (their AUROC is skipped, as intended), and
            # scikit-learn >= 1.8 announces a change of its fitted attributes: neither is the user's concern.
            warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")
            warnings.filterwarnings("ignore", message=".*(Only one class is present|least populated class).*")
            model.fit(train_features, y[:, c])
        scores[:, c] = model.predict_proba(eval_features)[:, 1]
    return scores


def train_classifier(
    backbone_config: dict[str, Any],
    backbone_state: dict[str, torch.Tensor] | None,
    train: dict[str, np.ndarray],
    evaluation: dict[str, np.ndarray],
    leads: Sequence[str],
    cfg: EcgEvalConfig,
    trainer_cfg: TrainerConfig,
    *,
    lr: float,
    seed: int,
    encoder_lr_scale: float = 1.0,
) -> np.ndarray:
    """Train :class:`~cardiodistill.train.ecg.EcgClassifierModule` on ``train`` (nothing written);
    eval-set probabilities. ``encoder_lr_scale``: the backbone's rate as a fraction of ``lr``."""
    import lightning as L
    from torch.utils.data import DataLoader

    from ..data.sampling import ArrayDataset
    from ..train.ecg import EcgClassifierModule
    from ..train.engine import fit

    L.seed_everything(seed, workers=True, verbose=False)
    batch = min(cfg.batch_size, len(train["y"]))
    steps_per_epoch = len(train["y"]) // batch
    max_steps = max(cfg.epochs * steps_per_epoch, cfg.min_steps)
    module = EcgClassifierModule(
        backbone_config, train["y"].shape[1], leads, lr=lr, weight_decay=cfg.weight_decay,
        warmup_steps=round(cfg.warmup_epochs * steps_per_epoch), max_steps=max_steps,
        encoder_lr_scale=encoder_lr_scale,
    )
    if backbone_state is not None:
        module.backbone.load_state_dict(backbone_state)
    fit(module, ArrayDataset(x=train["x"], present=train["present"], y=train["y"]), None,
        trainer_cfg.model_copy(update={"seed": seed, "num_workers": 0}), None, batch_size=batch, max_steps=max_steps,
        show_bar=False)
    module.eval()
    loader = DataLoader(ArrayDataset(x=evaluation["x"], present=evaluation["present"]), batch_size=256)
    with torch.no_grad():
        probs = [module.predict_step(b, i) for i, b in enumerate(loader)]
    return torch.cat(probs).numpy()


# ----------------------------------------------------------------------------------- the grid


def _cell_name(method: str, lead_set: str, fraction: float, repeat: int = 0) -> str:
    """A cell's file name: the first run's as before repeats existed, each further run's with its number."""
    return f"{method}__{lead_set.replace('+', '-')}__{fraction:g}" + (f"__run{repeat}" if repeat else "")


def _run_scores(cells: Path, method: str, lead_set: str, fraction: float, repeats: int) -> np.ndarray | None:
    """``[repeats, n, C]``: a cell's saved scores of every run, None while one is missing."""
    files = [cells / f"{_cell_name(method, lead_set, fraction, r)}.npz" for r in range(repeats)]
    return np.stack([np.load(f)["scores"] for f in files]) if all(f.is_file() for f in files) else None


def _mean_cell(runs: list[dict[str, Any]], cells: Path, y: np.ndarray, classes: Sequence[str],
               cfg: EcgEvalConfig) -> dict[str, Any]:
    """One cell of several runs (``runs``: their cell records): the mean macro AUROC over the runs with a
    bootstrap CI over the records (each resample scores every run), and the runs' own values and SD."""
    first = runs[0]
    scores = _run_scores(cells, first["method"], first["leads"], first["label_fraction"], len(runs))
    macro, lo, hi, per_class = macro_auroc_ci(y, scores, n_boot=cfg.bootstrap, seed=cfg.seed)
    values = [r["macro_auroc"] for r in runs]
    return {"method": first["method"], "leads": first["leads"], "label_fraction": first["label_fraction"],
            "n_train": first["n_train"], "macro_auroc": macro, "ci_low": lo, "ci_high": hi,
            "per_class": dict(zip(classes, per_class)), "seeds": [cfg.seed + r for r in range(len(runs))],
            "runs": values, "sd_runs": float(np.std(values, ddof=1))}


def evaluate_ecg_encoder(
    model_file: str | Path | None,
    cfg: EcgEvalConfig,
    trainer_cfg: TrainerConfig,
    out: str | Path,
    *,
    progress: Callable[[str], None] | None = None,
    compare: str | Path | None = None,
) -> dict[str, Any]:
    """Run the grid of the module doc; returns ``{"classes", "n_train", "n_eval", "cells": [...]}``.

    ``model_file`` is a pretrained encoder (``encoder.pt``, ``mae.pt`` or a training checkpoint);
    without one only ``supervised`` can run. ``compare``: another evaluation's run folder; the results then hold
    ``compared_with``, this run's cells minus that one's (:func:`compare_runs`).
    """
    from ..data.cohort import window_spec
    from ..train.checkpoints import build_model, read_model_file

    out = Path(out)
    if compare is not None and not (Path(compare) / "cells").is_dir():
        raise ConfigError(f"{compare}: not an evaluate-ecg run folder (no cells/), nothing to compare with")
    methods = _methods(cfg)
    encoder, is_mae, band = None, False, DEFAULT_BAND
    if model_file is not None:
        saved = read_model_file(model_file)
        is_mae = saved["model_config"]["name"].startswith("ecg_mae")
        band = saved.get("band", DEFAULT_BAND)  # the band the encoder was pretrained on
        encoder = build_model(saved, part="encoder" if is_mae else None, source=model_file)
        encoder_config = encoder.model_config
    elif set(methods) & {"linear", "finetune", "scratch"}:
        raise ConfigError(f"methods {sorted(set(methods) & {'linear', 'finetune', 'scratch'})} need a pretrained "
                          "encoder (--checkpoint)")
    else:
        encoder_config = None
    spec = window_spec(encoder_config or _supervised_input(cfg), band)
    train, evaluation, classes = load_labelled(cfg, spec)
    cells = []
    for fraction in cfg.label_fractions:
        for lead_set in cfg.lead_sets:
            leads = parse_lead_set(lead_set)
            for method in methods:
                runs = []
                for repeat in range(cfg.repeats):
                    run_cfg = cfg.model_copy(update={"seed": cfg.seed + repeat})
                    subset = label_subset(train["y"], fraction, run_cfg.seed)
                    path = out / "cells" / f"{_cell_name(method, lead_set, fraction, repeat)}.json"
                    if not path.is_file():
                        if progress is not None:
                            progress(f"{method} on {lead_set} leads, {fraction:.0%} of labels"
                                     + (f", run {repeat + 1} of {cfg.repeats}" if cfg.repeats > 1 else ""))
                        part = {k: v[subset] for k, v in train.items()}
                        scores = _run_method(method, encoder, encoder_config, part, evaluation, leads, run_cfg,
                                             trainer_cfg)
                        save_npz_atomic(path.with_suffix(".npz"), scores=scores, ecg_id=evaluation["ecg_id"])
                        macro, lo, hi, per_class = macro_auroc_ci(evaluation["y"], scores, n_boot=cfg.bootstrap,
                                                                  seed=run_cfg.seed)
                        write_json_atomic(path, {"method": method, "leads": lead_set, "label_fraction": fraction,
                                                 "n_train": len(subset), "seed": run_cfg.seed, "macro_auroc": macro,
                                                 "ci_low": lo, "ci_high": hi,
                                                 "per_class": dict(zip(classes, per_class))})
                    runs.append(json.loads(path.read_text()))
                cells.append(runs[0] if cfg.repeats == 1 else
                             _mean_cell(runs, out / "cells", evaluation["y"], classes, cfg))
    results = {"classes": classes, "n_train": len(train["y"]), "n_eval": len(evaluation["y"]),
               "train_folds": cfg.train_folds, "eval_folds": cfg.eval_folds, "spec": spec.__dict__, "cells": cells,
               "paired": paired_differences(out / "cells", evaluation["y"], cfg), "encoder": encoder_config}
    if compare is not None:
        results["compared_with"] = compare_runs(out / "cells", compare, evaluation, cfg)
    if is_mae:
        if progress is not None:
            progress("reconstruction of the evaluation records")
        mae = build_model(saved, source=model_file)
        results["reconstruction"] = reconstruction_report(mae, evaluation, spec, out, cfg.seed)
    return results


# (method, baseline): what pretraining adds over the same network from scratch, and over the supervised CNN
PAIRS = (("linear", "scratch"), ("finetune", "scratch"), ("finetune", "supervised"), ("linear", "supervised"))


def _methods(cfg: EcgEvalConfig) -> list[str]:
    """The cells' method names: ``baselines`` stands for each of the field's models."""
    return [name for m in cfg.methods for name in (cfg.baselines if m == "baselines" else [m])]


def pairs(cfg: EcgEvalConfig) -> tuple[tuple[str, str], ...]:
    """:data:`PAIRS`, then the fine-tuned encoder against each of the field's baselines."""
    return PAIRS + tuple(("finetune", name) for name in cfg.baselines)


def paired_differences(cells: Path, y: np.ndarray, cfg: EcgEvalConfig) -> list[dict[str, Any]]:
    """Macro AUROC of each method minus its baseline (:func:`pairs`) per lead set and label fraction,
    on the same evaluation records, with a paired bootstrap 95 % CI; pairs whose scores are not
    both saved (``cells/*.npz``) are left out. With ``repeats`` runs: the mean of the runs' differences (each
    run's in ``runs``), each resample scoring every run on the same records."""
    return [{"method": method, "baseline": baseline, "leads": lead_set, "label_fraction": fraction,
             **_paired(y, a, b, cfg)}
            for method, baseline, lead_set, fraction, a, b in _scored_pairs(cells, cells, pairs(cfg), cfg)]


def _scored_pairs(cells: Path, other_cells: Path, methods: Sequence[tuple[str, str]], cfg: EcgEvalConfig
                  ) -> Iterator[tuple[str, str, str, float, np.ndarray, np.ndarray]]:
    """Each ``(method, baseline)`` of ``methods`` per label fraction and lead set whose scores are both saved, the
    method's in ``cells`` and the baseline's in ``other_cells``: ``(method, baseline, lead set, fraction, method's
    scores, baseline's scores)``, the scores ``[repeats, n, C]``."""
    for fraction in cfg.label_fractions:
        for lead_set in cfg.lead_sets:
            for method, baseline in methods:
                a = _run_scores(cells, method, lead_set, fraction, cfg.repeats)
                b = _run_scores(other_cells, baseline, lead_set, fraction, cfg.repeats)
                if a is not None and b is not None:
                    yield method, baseline, lead_set, fraction, a, b


def _paired(y: np.ndarray, a: np.ndarray, b: np.ndarray, cfg: EcgEvalConfig) -> dict[str, Any]:
    """``a`` minus ``b`` (``[repeats, n, C]`` scores on the same records): the paired difference, its CI and, with
    several runs, each run's."""
    delta, lo, hi = paired_macro_auroc_ci(y, a, b, n_boot=cfg.bootstrap, seed=cfg.seed)
    row = {"delta": delta, "ci_low": lo, "ci_high": hi}
    if cfg.repeats > 1:
        row["runs"] = [paired_macro_auroc_ci(y, ra, rb, n_boot=0)[0] for ra, rb in zip(a, b)]
    return row


def compare_runs(cells: Path, other: str | Path, evaluation: dict[str, np.ndarray],
                 cfg: EcgEvalConfig) -> dict[str, Any]:
    """This run's cells minus another ``evaluate ecg`` run's (``other``, its folder), cell by cell: every method,
    lead set and label fraction both have finished, with as many runs, paired over the evaluation records (which
    must be the same). Two encoders, two pretraining recipes or two fine-tuning rates are compared this way: each
    run trains its cells with its own checkpoint and settings, and the difference is paired as within a run."""
    other = Path(other)
    rows = []
    for method, _, lead_set, fraction, a, b in _scored_pairs(cells, other / "cells",
                                                             [(m, m) for m in _methods(cfg)], cfg):
        ids = np.load(other / "cells" / f"{_cell_name(method, lead_set, fraction, 0)}.npz")["ecg_id"]
        if not np.array_equal(ids, evaluation["ecg_id"]):
            raise DataError(f"cell {method} on {lead_set} leads scored other records than this run's "
                            "evaluation folds; compare runs evaluated on the same records", other)
        rows.append({"method": method, "leads": lead_set, "label_fraction": fraction,
                     **_paired(evaluation["y"], a, b, cfg)})
    if not rows:
        raise ConfigError(f"{other}: shares no finished cell with this run (the same method, lead set, label "
                          f"fraction and {cfg.repeats} run(s)); nothing to compare")
    return {"run": str(other), "rows": rows}


def reconstruction_report(mae, evaluation: dict[str, np.ndarray], spec: WindowSpec, out: Path, seed: int) -> dict:
    """Masked-patch MSE / NCC of ``mae`` on the evaluation windows (vs linear interpolation), and
    ``out/reconstruction.png``: the first evaluation record, original vs reconstruction."""
    from .reconstruction import plot_reconstruction, reconstruction_metrics

    metrics = reconstruction_metrics(mae, evaluation["x"], evaluation["present"], seed=seed)
    first = int(np.argmax(evaluation["present"].sum(1)))
    figure = plot_reconstruction(
        mae, evaluation["x"][first], evaluation["present"][first], out / "reconstruction.png", fs=spec.fs, seed=seed,
        title=f"ECG {int(evaluation['ecg_id'][first])}: masked patches (grey) reconstructed (red)",
    )
    return {**metrics, "figure": figure.name}


def _supervised_input(cfg: EcgEvalConfig) -> dict[str, Any]:
    from ..models import model_defaults

    return model_defaults(cfg.supervised_model)


def _run_method(method, encoder, encoder_config, train, evaluation, leads, cfg, trainer_cfg) -> np.ndarray:
    if method == "linear":
        features = embed(encoder, train["x"], train["present"], leads)
        eval_features = embed(encoder, evaluation["x"], evaluation["present"], leads)
        return linear_probe(features, train["y"], eval_features, cfg.linear_c, cfg.seed)
    if method in ("finetune", "scratch"):
        state = encoder.state_dict() if method == "finetune" else None
        return train_classifier(encoder_config, state, train, evaluation, leads, cfg, trainer_cfg, lr=cfg.lr,
                                seed=cfg.seed, encoder_lr_scale=cfg.finetune_lr_scale if state is not None else 1.0)
    if method == "supervised" or method in cfg.baselines:
        config = {"name": cfg.supervised_model if method == "supervised" else method}
        return train_classifier(config, None, train, evaluation, leads, cfg, trainer_cfg, lr=cfg.supervised_lr,
                                seed=cfg.seed)
    raise ConfigError(f"unknown evaluation method {method!r}")


def results_table(results: dict[str, Any]) -> str:
    """Markdown: one row per method and label fraction, one column per lead set."""
    cells = results["cells"]
    lead_sets = list(dict.fromkeys(c["leads"] for c in cells))
    seeds = next((c["seeds"] for c in cells if "seeds" in c), None)
    lines = [f"Means over {len(seeds)} runs (seeds {', '.join(map(str, seeds))}), 95 % CI over the evaluation "
             "records, SD over the runs:", ""] if seeds else []
    lines += ["| method | labels | " + " | ".join(f"{s} leads" for s in lead_sets) + " |",
              "|---|---|" + "---|" * len(lead_sets)]
    for fraction in dict.fromkeys(c["label_fraction"] for c in cells):
        for method in dict.fromkeys(c["method"] for c in cells):
            row = {c["leads"]: c for c in cells if c["method"] == method and c["label_fraction"] == fraction}
            if not row:
                continue
            n = next(iter(row.values()))["n_train"]
            values = [f"{row[s]['macro_auroc']:.3f} ({row[s]['ci_low']:.3f}-{row[s]['ci_high']:.3f})"
                      + (f", SD {row[s]['sd_runs']:.3f}" if "sd_runs" in row[s] else "") if s in row
                      else "" for s in lead_sets]
            lines.append(f"| {method} | {fraction:.0%} ({n}) | " + " | ".join(values) + " |")
    paired = results.get("paired") or []
    if paired:
        lines += _difference_table("Paired differences (same evaluation records, bootstrap 95 % CI):", "difference",
                                   paired, lambda p: f"{p['method']} - {p['baseline']}", lead_sets)
    compared = results.get("compared_with")
    if compared:
        lines += _difference_table(f"This run minus {compared['run']} (same evaluation records, paired bootstrap "
                                   "95 % CI):", "method", compared["rows"], lambda r: r["method"], lead_sets)
    return "\n".join(lines) + "\n"


def _difference_table(title: str, first_column: str, rows: list[dict[str, Any]], name: Callable[[dict], str],
                      lead_sets: Sequence[str]) -> list[str]:
    """The markdown lines of a table of paired differences: one row per ``name(row)`` and label fraction, one column
    per lead set."""
    lines = ["", title, "", f"| {first_column} | labels | " + " | ".join(f"{s} leads" for s in lead_sets) + " |",
             "|---|---|" + "---|" * len(lead_sets)]
    for fraction in dict.fromkeys(r["label_fraction"] for r in rows):
        for label in dict.fromkeys(name(r) for r in rows):
            row = {r["leads"]: r for r in rows if (name(r), r["label_fraction"]) == (label, fraction)}
            if row:
                values = [_difference(row[s]) if s in row else "" for s in lead_sets]
                lines.append(f"| {label} | {fraction:.0%} | " + " | ".join(values) + " |")
    return lines


def _difference(row: dict[str, Any]) -> str:
    """``+0.012 (-0.003 to +0.027); runs ...``: a paired difference as the tables print it."""
    return (f"{row['delta']:+.3f} ({row['ci_low']:+.3f} to {row['ci_high']:+.3f})"
            + (f"; runs {', '.join(f'{d:+.3f}' for d in row['runs'])}" if "runs" in row else ""))
