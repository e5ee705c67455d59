"""What a pretrained video encoder knows: probes and fine-tuning on a labelled (simulated) echo cohort.

Each clip has an LVEF and binary conditions (reduced EF, prior MI, valve disease, LVH, AF ...).
Test patients are chosen by a hash of their id (``test_fraction``) and never trained on; on the
training patients, at several nested label fractions, each method predicts both targets:

* ``probe`` (the default, fast): the encoder is frozen and each clip becomes one feature vector
  (``readout``: the pooled embedding, by default with the temporal SD of the tokens beside it, see
  :func:`embed_clips`); LVEF by ridge regression (alpha by CV on the training labels) and each
  condition by an L2 logistic regression (C by CV on the training labels). The same probes are
  fitted on the features of the **baselines**: ``random_init`` is the same architecture with random
  weights, so the difference is what pretraining taught the encoder (the standard floor for
  self-supervised representations), and ``pixels`` is no model at all, the prepared clip's
  brightness and motion maps (:func:`pixel_features`): what a probe can read from the input itself;
* ``finetune``: the pretrained encoder plus a linear head trained end to end on the labels
  (:class:`~cardiodistill.train.video.VideoSupervisedModule`);
* ``scratch``: the same model and schedule from random weights: what the labels alone give.

Scores on the test patients: LVEF MAE with a bootstrap CI, Bland-Altman bias and 95 % limits of
agreement (and, for scale, the MAE of always predicting the training mean), AUROC per condition
and macro AUROC with bootstrap CIs.

Outputs: one JSON per (model, fraction) cell under ``cells/`` (a rerun continues where it
stopped), ``agreement.png`` (predicted vs true LVEF and Bland-Altman, pretrained encoder's probe,
all labels) and ``embedding_map.png`` (the test embeddings in 2-D coloured by condition and LVEF,
with the k-nearest-neighbour label agreement of each embedding space in the results).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import TrainerConfig, VideoEvalConfig
from ..data.cache import in_fraction
from ..data.video_clips import ClipCache, ClipDataset, VideoSource, build_clip_cache
from ..errors import ConfigError, DataError
from ..io.atomic import save_npz_atomic, write_json_atomic
from .ecg_downstream import label_subset, linear_probe
from .embedding import embedding_map, knn_label_agreement, plot_embedding_map
from .metrics import auroc_ci, bootstrap_interval, macro_auroc_ci, paired_macro_auroc_ci
from .regression import plot_agreement, regression_metrics, ridge_probe

__all__ = ["READOUTS", "embed_clips", "evaluate_video_encoder", "pixel_features", "video_results_table"]

PRETRAINED = "pretrained"


READOUTS = ("mean", "mean+temporal_std", "regional")
PIXEL_GRID = 16  # the pixels baseline: prepared frames averaged to 16 x 16 blocks


def _batches(dataset: ClipDataset, batch_size: int):
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)


@torch.no_grad()
def embed_clips(encoder: torch.nn.Module, dataset: ClipDataset, batch_size: int = 32,
                readout: str = "mean") -> np.ndarray:
    """Frozen-encoder features ``[n, D]`` (``readout="mean"``: the pooled embedding) or ``[n, 2 D]``
    (``"mean+temporal_std"``: the pooled embedding and, per feature, the SD over time of each spatial
    position's token, averaged over positions: how much the image moves there, which mean pooling
    averages away) or ``[n, 8 D]`` (``"regional"``: the same two statistics in each quarter of the token grid,
    so a probe can tell where in the image something is bright or moves, as the pixels baseline can)."""
    if readout not in READOUTS:
        raise ConfigError(f"readout must be one of {', '.join(READOUTS)}, got {readout!r}")
    encoder.eval()
    out = []
    for batch in _batches(dataset, batch_size):
        if readout == "mean":
            out.append(encoder(batch["x"]).float().numpy())
            continue
        tokens, _ = encoder.forward_tokens(batch["x"])  # [B, n_t * n_s, D], time-major
        grid = tokens.view(len(tokens), -1, encoder.grid[0] * encoder.grid[1], tokens.shape[-1]).float()
        if readout == "mean+temporal_std":
            out.append(torch.cat([grid.mean((1, 2)), grid.std(1).mean(1)], dim=1).numpy())
            continue
        # each position's mean and SD over time, averaged per quarter of the grid (an odd grid's middle row and
        # column count in both halves, as adaptive pooling splits them): [B, D, 2, 2] -> quarter-major [B, 4 D]
        maps = torch.stack([grid.mean(1), grid.std(1)]).transpose(2, 3).unflatten(3, encoder.grid)
        quarters = torch.nn.functional.adaptive_avg_pool2d(maps.flatten(0, 1), 2).unflatten(0, (2, len(grid)))
        out.append(quarters.permute(1, 0, 3, 4, 2).flatten(1).numpy())
    return np.concatenate(out)


@torch.no_grad()
def pixel_features(dataset: ClipDataset, batch_size: int = 32) -> np.ndarray:
    """The no-model baseline ``[n, 2 * 16 * 16]``: each prepared clip averaged to 16 x 16 blocks, then
    the mean and the SD over time of every block (a map of brightness and one of motion)."""
    out = []
    for batch in _batches(dataset, batch_size):
        blocks = torch.nn.functional.adaptive_avg_pool2d(batch["x"], PIXEL_GRID)  # [B, T, 16, 16]
        out.append(torch.cat([blocks.mean(1).flatten(1), blocks.std(1).flatten(1)], dim=1).numpy())
    return np.concatenate(out)


def _labels(cache: ClipCache, conditions: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(lvef [n], conditions [n, C])`` from the cache's label columns."""
    index = cache.index
    missing = [c for c in ["lvef", *(f"dx_{k}" for k in conditions)] if c not in index]
    if missing:
        raise DataError(f"the evaluation videos have no {', '.join(missing)} labels "
                        "(use a simulated cohort: evaluate.video.data kind synth or cohort)", cache.folder)
    return index["lvef"].to_numpy(float), index[[f"dx_{k}" for k in conditions]].to_numpy(np.int64)


def _score_cell(
    name: str, fraction: float, n_train: int, lvef_pred: np.ndarray, scores: np.ndarray, lvef_train: np.ndarray,
    test: tuple[np.ndarray, np.ndarray], conditions: list[str], cfg: VideoEvalConfig,
) -> dict[str, Any]:
    """One result cell: LVEF agreement and condition AUROCs of predictions on the test clips."""
    lvef, y = test
    macro, lo, hi, _ = macro_auroc_ci(y, scores, n_boot=cfg.bootstrap, seed=cfg.seed)
    per_condition = {}
    for c, condition in enumerate(conditions):
        auc, c_lo, c_hi = auroc_ci(y[:, c], scores[:, c], n_boot=cfg.bootstrap, seed=cfg.seed)
        per_condition[condition] = {"auroc": auc, "ci_low": c_lo, "ci_high": c_hi, "n_pos": int(y[:, c].sum())}
    return {
        "encoder": name, "label_fraction": fraction, "n_train": n_train,
        "lvef": regression_metrics(lvef, lvef_pred, n_boot=cfg.bootstrap, seed=cfg.seed),
        "lvef_mae_predicting_the_mean": float(np.abs(lvef - np.nanmean(lvef_train)).mean()),
        "macro_auroc": {"value": macro, "ci_low": lo, "ci_high": hi}, "conditions": per_condition,
    }


def _probe(x_train: np.ndarray, x_test: np.ndarray, lvef: np.ndarray, y: np.ndarray,
           cfg: VideoEvalConfig) -> tuple[np.ndarray, np.ndarray]:
    """Ridge (LVEF) and logistic (conditions) probes fitted on frozen training embeddings."""
    pred, _ = ridge_probe(x_train, lvef, x_test, seed=cfg.seed)
    return pred, linear_probe(x_train, y, x_test, cfg.linear_c, cfg.seed)


def _train_end_to_end(
    encoder_config: dict[str, Any], encoder_state: dict[str, torch.Tensor] | None, train: ClipDataset,
    test: ClipDataset, n_conditions: int, cfg: VideoEvalConfig, trainer_cfg: TrainerConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Fine-tune (``encoder_state`` given) or train from scratch (nothing written); LVEF and probabilities
    on ``test``."""
    import lightning as L

    from ..train.engine import fit
    from ..train.video import VideoSupervisedModule

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    lvef = train.targets["lvef"][train.indices].numpy()
    steps_per_epoch = max(1, len(train) // cfg.batch_size)
    steps = max(cfg.epochs * steps_per_epoch, cfg.min_steps)
    module = VideoSupervisedModule(
        encoder_config, n_conditions, encoder_state=encoder_state, lvef_mean=float(np.nanmean(lvef)),
        lvef_std=float(np.nanstd(lvef)) or 1.0, lr=cfg.lr, warmup_steps=steps_per_epoch, max_steps=steps,
    )
    batch_size = min(cfg.batch_size, len(train))
    loader = torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(cfg.seed))
    trainer = fit(module, loader, None, trainer_cfg.model_copy(update={"accumulate": 1}), None,
                  batch_size=batch_size, max_steps=steps, show_bar=False)["trainer"]
    out = torch.cat(trainer.predict(module, _batches(test, cfg.batch_size)))
    return out[:, 0].numpy(), out[:, 1:].numpy()


def evaluate_video_encoder(
    model_file: str | Path,
    cfg: VideoEvalConfig,
    trainer_cfg: TrainerConfig,
    out: str | Path,
    *,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the evaluation of the module doc for the encoder in ``model_file`` (``encoder.pt``,
    ``mae.pt`` or a training checkpoint); writes into ``out`` and returns the results."""
    from ..data.cohort import clip_spec
    from ..models import model_from_config
    from ..train.checkpoints import build_model, read_model_file
    from ..train.engine import set_threads

    out = Path(out)
    set_threads(trainer_cfg.threads)
    saved = read_model_file(model_file)
    name = saved["model_config"]["name"]
    if not name.startswith("video_"):
        raise DataError(f"not a video model ({name!r})", model_file)
    encoder = build_model(saved, part="encoder" if name.startswith("video_mae") else None, source=model_file)
    if not cfg.conditions:
        raise ConfigError("evaluate.video.conditions is empty: name at least one dx_* label to probe")

    def say(message: str) -> None:
        if progress is not None:
            progress(message)

    say("preparing the labelled clips")
    spec = clip_spec(encoder.model_config)
    cache = build_clip_cache(out / "clips", [VideoSource(**cfg.data.model_dump())], spec, val_fraction=0.0)
    lvef, y = _labels(cache, list(cfg.conditions))
    is_test = in_fraction(cache.index["split_bucket"], cfg.test_fraction)
    train_idx, test_idx = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    if len(train_idx) < 10 or len(test_idx) < 10:
        raise ConfigError(f"{len(train_idx)} training and {len(test_idx)} test clips: simulate more patients "
                          "(evaluate.video.data.patients)")

    targets = {"lvef": lvef, "y": y}
    encoders = {PRETRAINED: encoder}
    if "probe" in cfg.methods and "random_init" in cfg.baselines:
        torch.manual_seed(cfg.seed)
        encoders["random_init"] = model_from_config(encoder.model_config)
    dataset = ClipDataset(cache)
    features = {}
    for key, model in encoders.items():
        say(f"embedding {len(dataset)} clips with the {key} encoder")
        features[key] = embed_clips(model, dataset, cfg.batch_size, cfg.readout)
    if "probe" in cfg.methods and "pixels" in cfg.baselines:
        features["pixels"] = pixel_features(dataset, cfg.batch_size)

    cells, lvef_pred = [], None
    for fraction in cfg.label_fractions:
        subset = train_idx[label_subset(y[train_idx], fraction, cfg.seed)]
        runs = [(key, "probe") for key in features if "probe" in cfg.methods]
        runs += [(method, method) for method in cfg.methods if method != "probe"]
        for key, method in runs:
            path = out / "cells" / f"{key}_{round(fraction * 100):03d}pct.json"
            if path.is_file():
                cells.append(json.loads(path.read_text()))
                continue
            say(f"{key}: {method} with {fraction:.0%} of the labels")
            if method == "probe":
                pred, scores = _probe(features[key][subset], features[key][test_idx], lvef[subset], y[subset], cfg)
            else:
                state = encoder.state_dict() if method == "finetune" else None
                pred, scores = _train_end_to_end(
                    encoder.model_config, state, ClipDataset(cache, subset, targets),
                    ClipDataset(cache, test_idx, targets), y.shape[1], cfg, trainer_cfg)
            cell = _score_cell(key, fraction, len(subset), pred, scores, lvef[subset], (lvef[test_idx], y[test_idx]),
                               list(cfg.conditions), cfg)
            save_npz_atomic(path.with_suffix(".npz"), lvef=pred, scores=scores)  # for the paired differences
            write_json_atomic(path, {**cell, "method": method})
            cells.append({**cell, "method": method})
            if key == PRETRAINED and fraction == max(cfg.label_fractions):
                lvef_pred = pred

    if lvef_pred is None:  # the cell came from a previous run: refit the one probe the figure needs
        lvef_pred, _ = ridge_probe(features[PRETRAINED][train_idx], lvef[train_idx], features[PRETRAINED][test_idx],
                                   seed=cfg.seed)
    say("figures")
    plot_agreement(lvef[test_idx], lvef_pred, out / "agreement.png",
                   title=f"LVEF from the frozen {name} embedding (ridge probe, test patients)")
    test_labels = {"LVEF (%)": lvef[test_idx], **{k: y[test_idx, c] for c, k in enumerate(cfg.conditions)}}
    xy = embedding_map(features[PRETRAINED][test_idx], method=cfg.embedding_map, seed=cfg.seed)
    plot_embedding_map(xy, test_labels, out / "embedding_map.png",
                       title=f"{name}: test clips ({cfg.embedding_map.upper()} of the embedding)")
    neighbours = {key: {k: knn_label_agreement(x[test_idx], y[test_idx, c])
                        for c, k in enumerate(cfg.conditions)} for key, x in features.items()}
    return {
        "encoder": encoder.model_config, "clip_spec": spec.to_dict(), "clips": cache.meta["counts"],
        "n_train": len(train_idx), "n_test": len(test_idx), "conditions": list(cfg.conditions),
        "prevalence_test": {k: float(y[test_idx, c].mean()) for c, k in enumerate(cfg.conditions)},
        "cells": cells, "knn_agreement": neighbours,
        "paired": paired_differences(out / "cells", lvef[test_idx], y[test_idx], cfg),
    }


def paired_differences(cells: Path, lvef: np.ndarray, y: np.ndarray, cfg: VideoEvalConfig) -> list[dict[str, Any]]:
    """The pretrained encoder's probe minus each other model's, per label fraction, on the same test clips:
    macro AUROC (above 0: the encoder is better) and LVEF MAE (below 0: better), each with a paired bootstrap
    95 % CI. Models whose predictions were not saved (``cells/*.npz``; cells of older runs) are left out."""
    rows = []
    for fraction in cfg.label_fractions:
        tag = f"{round(fraction * 100):03d}pct"
        mine = cells / f"{PRETRAINED}_{tag}.npz"
        if not mine.is_file():
            continue
        a = np.load(mine)
        for other in sorted(cells.glob(f"*_{tag}.npz")):
            name = other.name[: -len(f"_{tag}.npz")]
            if name == PRETRAINED:
                continue
            b = np.load(other)
            delta, lo, hi = paired_macro_auroc_ci(y, a["scores"], b["scores"], n_boot=cfg.bootstrap, seed=cfg.seed)
            err_a, err_b = np.abs(a["lvef"] - lvef), np.abs(b["lvef"] - lvef)
            mae = bootstrap_interval(lambda rows: float(np.nanmean(err_a[rows]) - np.nanmean(err_b[rows])), len(lvef),
                                     n_boot=cfg.bootstrap, seed=cfg.seed)
            rows.append({"label_fraction": fraction, "versus": name,
                         "macro_auroc": {"value": delta, "ci_low": lo, "ci_high": hi}, "lvef_mae": mae})
    return rows


def _ci(m: dict[str, Any], digits: int = 3) -> str:
    if m["ci_low"] is None or not np.isfinite(m["ci_low"]):
        return f"{m['value']:.{digits}f}"
    return f"{m['value']:.{digits}f} ({m['ci_low']:.{digits}f}-{m['ci_high']:.{digits}f})"


def video_results_table(results: dict[str, Any]) -> str:
    """Markdown: one row per model and label fraction; LVEF MAE (and that of predicting the mean),
    limits of agreement, macro AUROC and each condition's AUROC (95 % CIs in brackets)."""
    conditions = results["conditions"]
    head = ["model", "labels", "LVEF MAE (%)", "MAE of the mean (%)", "LoA (%)", "macro AUROC", *conditions]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cell in sorted(results["cells"], key=lambda c: (c["label_fraction"], c["encoder"] != PRETRAINED)):
        lv = cell["lvef"]
        loa = f"{lv['loa_low']['value']:+.1f} to {lv['loa_high']['value']:+.1f}"
        per = [f"{cell['conditions'][k]['auroc']:.3f}" for k in conditions]
        rows.append(f"| {cell['encoder']} | {cell['label_fraction']:.0%} ({cell['n_train']}) | {_ci(lv['mae'], 1)} "
                    f"| {cell['lvef_mae_predicting_the_mean']:.1f} | {loa} | {_ci(cell['macro_auroc'])} | " + " | ".join(per) + " |")
    if results.get("paired"):
        rows += ["", f"Paired differences, {PRETRAINED} minus each other model on the same test clips (95 % CIs):", "",
                 "| labels | versus | macro AUROC | LVEF MAE (%) |", "|---|---|---|---|"]
        for d in results["paired"]:
            m, e = d["macro_auroc"], d["lvef_mae"]
            rows.append(f"| {d['label_fraction']:.0%} | {d['versus']} | {m['value']:+.3f} ({m['ci_low']:+.3f}, "
                        f"{m['ci_high']:+.3f}) | {e['value']:+.2f} ({e['ci_low']:+.2f}, {e['ci_high']:+.2f}) |")
    return "\n".join(rows)
