"""Stage 2 on the ECG-only embedding: does cross-modal alignment make the ECG encoder better for echo-defined labels?

For one finished run (``cardiodistill demo`` or the stage commands), embeds every study of its cohort with the
ECG modality ONLY (no echo, labs or note reach the model) through the fusion model's ECG branch
(``fused.unimodal["ecg"]``, the encoder's pooled embedding), for four encoders of the same config:

* ``random``: a randomly initialised ECG encoder (the floor);
* ``stage 1``: the stage-1 encoder alone (``<run>/stage1-ecg/encoder.pt``);
* ``aligned``: the same encoder after stage-2 alignment (the ECG branch of ``<run>/align/aligned.pt``);
* ``aligned, CLIP``: the aligned model's CLIP projection of that embedding (``aligned.clip_embeddings``).

Lead sets: the 12-lead ECG; lead I of the 12-lead; the cohort's handheld (mobile) ECG as the paired cache holds it,
lead I alone and its six limb leads, fed through the ECG branch's I..aVF slots.

Labels: urgent referral (triage) and the echo-defined reduced EF, valve disease and LVH (AUROC), LVEF (ridge
regression: MAE and R^2). The embeddings use no labels, so every study of the cohort is scored out of fold:
stratified 5-fold cross-validation repeated over ``--repeats`` seeds; in each training fold a random ``1 %``,
``10 %`` or ``100 %`` of the studies keep their labels (at least ``--min-labelled``, and at least one study of each
class); logistic regression (``C`` fixed in advance, ``--c``) on embeddings standardised on the training fold;
ridge with its penalty chosen by leave-one-out on the labelled studies only. The folds and labelled subsets are the
same for every encoder and lead set, so the encoders are compared on the same studies and the same labels.
Point estimate: the mean over repeats of the out-of-fold metric. 95 % intervals: a bootstrap over studies (each
resample scores every repeat and averages them); the difference aligned - stage 1 is a PAIRED bootstrap (one
resample of studies scores both encoders).

    OMP_NUM_THREADS=1 python benchmarks/bench_stage2_probes.py --run /tmp/demo \\
        --out benchmarks/results/stage2_probes.json

The committed results also probe a 4x longer alignment of the same encoders (about 9 min on 2 cores):

    cardiodistill align --cohort /tmp/demo/cohort --ecg-encoder /tmp/demo/stage1-ecg/encoder.pt \\
        --video-encoder /tmp/demo/stage1-video/encoder.pt -c /tmp/demo/config.yaml \\
        --set align.optim.max_steps=340 -o /tmp/s2/align-340
    OMP_NUM_THREADS=1 python benchmarks/bench_stage2_probes.py --run /tmp/demo \\
        --out benchmarks/results/stage2_probes.json --also-aligned "aligned 340 steps=/tmp/s2/align-340/aligned.pt"

A median-beat reference (each lead's median beat plus RR statistics, ``evaluate.probes.ecg_features``, read from
the cohort's files; not an encoder) goes through the same probe and folds: what a linear probe finds in the same
recordings (``--no-reference`` skips it). The JSON also records how far stage 2 moved the ECG encoder (relative
weight change, linear CKA of the embeddings).

``--run`` is a folder with ``config.yaml``, ``cohort/``, ``stage1-ecg/encoder.pt`` and ``align/aligned.pt`` (the
layout ``cardiodistill demo`` writes); ``--cohort`` / ``--encoder`` / ``--aligned`` override the parts. The run's
paired cache is reused (read only); if the cohort has none for the aligned model's spec, one is built under
``--cache-dir``. Prints a markdown table and writes the results with the config used.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy / torch: the machine is shared

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import rankdata  # noqa: E402
from sklearn.linear_model import LogisticRegression, RidgeCV  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from cardiodistill.config import load_config  # noqa: E402
from cardiodistill.data.cohort import open_cohort  # noqa: E402
from cardiodistill.evaluate.metrics import auroc_ci  # noqa: E402
from cardiodistill.evaluate.probes import ecg_features  # noqa: E402
from cardiodistill.io.atomic import write_json_atomic  # noqa: E402
from cardiodistill.io.wfdb import read_wfdb  # noqa: E402
from cardiodistill.models.registry import model_from_config  # noqa: E402
from cardiodistill.signals.leads import LEADS_12  # noqa: E402
from cardiodistill.stages.common import fusion_of, resolve_model_config, spec_of  # noqa: E402
from cardiodistill.train.checkpoints import load_model, read_model_file  # noqa: E402

BINARY = ("triage", "reduced_ef", "valve_disease", "lvh")
LEAD_SETS = {  # name -> (source array in the paired cache, which of its leads are used)
    "12-lead": ("ecg", LEADS_12),
    "12-lead slot I": ("ecg", ("I",)),
    "handheld I": ("mobile", ("I",)),
    "handheld 6 limb": ("mobile", ("I", "II", "III", "aVR", "aVL", "aVF")),
}
MODELS = ("random", "stage 1", "aligned", "aligned, CLIP")
REFERENCE = "median beat"  # not an encoder: the simulator docs' simple probe features, same probe and folds
DIFFS = {"aligned - stage 1": ("aligned", "stage 1"), "aligned, CLIP - stage 1": ("aligned, CLIP", "stage 1"),
         "stage 1 - random": ("stage 1", "random")}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------------------------- embeddings

def _ecg_batch(batch: dict, source: str, leads: tuple[str, ...], cache_leads: tuple[str, ...]) -> dict:
    """The batch as the fusion model's ECG branch reads it, with only ``leads`` of ``source`` present."""
    x, present = batch[source].float(), batch[f"{source}_present"].bool()
    n = len(batch["index"])
    ecg = torch.zeros(n, len(LEADS_12), x.shape[-1])
    ecg_present = torch.zeros(n, len(LEADS_12), dtype=torch.bool)
    for k, lead in enumerate(cache_leads):
        if lead in leads:
            slot = LEADS_12.index(lead)
            ecg[:, slot], ecg_present[:, slot] = x[:, k], present[:, k]
    out = dict(batch)
    out.update(ecg=ecg, ecg_present=ecg_present, has_ecg=batch[f"has_{source}"].bool() & ecg_present.any(1))
    for m in ("mobile", "echo", "labs", "note"):
        out[f"has_{m}"] = torch.zeros(n, dtype=torch.bool)  # nothing but the ECG reaches the model
    return out


@torch.no_grad()
def embed(fusion, cohort, rows: np.ndarray, source: str, leads: tuple[str, ...], clip: bool,
          batch_size: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """``(unimodal ECG embedding [n, D], its CLIP projection [n, P] or None)`` of ``rows``, ECG only."""
    fusion.eval()
    cache_leads = tuple(LEADS_12) if source == "ecg" else tuple(cohort.cache.spec.mobile_leads)
    uni, proj, has = [], [], []
    for batch in DataLoader(cohort.dataset(rows, modalities=(source,)), batch_size=batch_size):
        b = _ecg_batch(batch, source, leads, cache_leads)
        fused = fusion(b)
        uni.append(fused.unimodal["ecg"].numpy())
        has.append(b["has_ecg"].numpy())
        if clip:
            proj.append(fusion.clip_heads["ecg"](fused.unimodal["ecg"]).numpy())
    if not np.concatenate(has).all():
        _log(f"  warning: {int((~np.concatenate(has)).sum())} studies lack {source} {'+'.join(leads)}; zero embedding")
    return np.concatenate(uni), (np.concatenate(proj) if clip else None)


def _ecg_state(path) -> dict[str, torch.Tensor]:
    """The ECG encoder's weights inside an aligned model file."""
    return {k.removeprefix("encoders.ecg."): v for k, v in read_model_file(path)["state_dict"].items()
            if k.startswith("encoders.ecg.")}


def all_embeddings(args, cohort) -> dict[str, dict[str, np.ndarray]]:
    """``{lead set: {model: [n, D]}}`` for every study of the cohort."""
    fusion = load_model(args.aligned)
    aligned_state = {k: v.clone() for k, v in fusion.encoders["ecg"].state_dict().items()}
    stage1 = read_model_file(args.encoder)
    ecg_config = fusion_of(args.aligned)["ecg"]
    # defaults filled in on both sides: a file saved before a model gained an option still matches
    if resolve_model_config(dict(stage1["model_config"]), "encoder") != resolve_model_config(dict(ecg_config), "ecg"):
        raise SystemExit(f"{args.encoder} is not the config of the aligned model's ECG encoder")
    torch.manual_seed(args.seed)
    random_state = model_from_config(dict(ecg_config)).state_dict()
    states = {"random": random_state, "stage 1": stage1["state_dict"], "aligned": aligned_state}
    for name, path in args.also_aligned.items():  # other alignments of the same stage-1 encoder: their ECG branch
        if fusion_of(path)["ecg"] != ecg_config:
            raise SystemExit(f"{path}: its ECG encoder's config differs from {args.aligned}'s")
        states[name] = _ecg_state(path)
    rows = np.arange(len(cohort.cache))
    out: dict[str, dict[str, np.ndarray]] = {}
    for lead_set in args.lead_sets:
        source, leads = LEAD_SETS[lead_set]
        out[lead_set] = {}
        for name, state in states.items():
            fusion.encoders["ecg"].load_state_dict(state)
            uni, proj = embed(fusion, cohort, rows, source, leads, clip=name == "aligned")
            out[lead_set][name] = uni
            if proj is not None:
                out[lead_set]["aligned, CLIP"] = proj
        _log(f"embedded {lead_set}: {', '.join(f'{k} {v.shape[1]}' for k, v in out[lead_set].items())}")
    return out


def reference_features(args, cohort, lead_sets) -> dict[str, np.ndarray]:
    """``{lead set: [n, F]}``: each lead's median beat plus RR statistics (``evaluate.probes.ecg_features``)
    read from the cohort's files: what a fixed, untrained representation of the same recordings gives."""
    import pandas as pd

    manifest = pd.read_csv(args.cohort / "manifest.csv", dtype={"patient_id": str})
    if len(manifest) != len(cohort.cache) or (manifest["split"].astype(str).to_numpy()
                                              != cohort.table["split"].astype(str).to_numpy()).any():
        raise SystemExit("the paired cache's rows do not follow manifest.csv")
    out = {k: [] for k in lead_sets}
    for row in manifest.itertuples():
        records = {"ecg": read_wfdb(args.cohort / row.ecg_path), "mobile": read_wfdb(args.cohort / row.mobile_path)}
        for k in lead_sets:
            source, leads = LEAD_SETS[k]
            out[k].append(ecg_features(records[source], tuple(lead for lead in leads if lead in records[source].leads)))
    return {k: np.stack(v) for k, v in out.items()}


def _linear_cka(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(0), b - b.mean(0)
    return float(np.linalg.norm(a.T @ b) ** 2 / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)))


def alignment_change(args, emb: dict) -> dict:
    """How far stage 2 moved the ECG encoder: relative weight change, and embedding similarity (linear CKA,
    mean cosine of the same study's two embeddings) stage 1 vs aligned and stage 1 vs random."""
    s1 = {k: v for k, v in read_model_file(args.encoder)["state_dict"].items()  # weights, not BatchNorm statistics
          if v.is_floating_point() and "running_" not in k}
    den = sum(float((v.float() ** 2).sum()) for v in s1.values())
    out = {"relative_weight_change": {}, "embedding": {}}
    for name, path in {"aligned": args.aligned, **args.also_aligned}.items():
        al = _ecg_state(path)
        num = sum(float(((al[k].float() - v.float()) ** 2).sum()) for k, v in s1.items())
        out["relative_weight_change"][name] = (num / den) ** 0.5
    for lead_set, e in emb.items():
        out["embedding"][lead_set] = {"cka_stage1_random": _linear_cka(e["stage 1"], e["random"])}
        for name in ("aligned", *args.also_aligned):
            cos = np.sum(e["stage 1"] * e[name], 1) / (np.linalg.norm(e["stage 1"], axis=1)
                                                       * np.linalg.norm(e[name], axis=1))
            out["embedding"][lead_set][f"cka_stage1_{name}"] = _linear_cka(e["stage 1"], e[name])
            out["embedding"][lead_set][f"mean_cosine_stage1_{name}"] = float(cos.mean())
    return out


# ----------------------------------------------------------------------------------------------- protocol

def fold_plan(y: np.ndarray, binary: bool, fractions, repeats: int, folds: int, min_labelled: int,
              seed: int) -> list[list[tuple[np.ndarray, dict[float, np.ndarray], np.ndarray]]]:
    """Per repeat, per fold: ``(training rows, {fraction: labelled training rows}, scored rows)``.

    Stratified on the label (binary) or on LVEF quintiles; the labelled subsets are nested (a larger fraction
    keeps the smaller one's studies) and hold at least one study of each class."""
    strata = y.astype(int) if binary else np.digitize(y, np.quantile(y, [0.2, 0.4, 0.6, 0.8]))
    plan = []
    for r in range(repeats):
        skf = StratifiedKFold(folds, shuffle=True, random_state=seed + r)
        rep = []
        for k, (train, test) in enumerate(skf.split(np.zeros(len(y)), strata)):
            rng = np.random.default_rng([seed, r, k])
            order = train[rng.permutation(len(train))]
            subsets = {}
            for f in fractions:
                take = list(order[: min(len(order), max(min_labelled, int(round(f * len(order)))))])
                if binary:
                    for cls in (0, 1):  # a probe needs both classes: add the first study of a missing one
                        if not (y[take] == cls).any():
                            take.append(next(i for i in order if y[i] == cls))
                subsets[f] = np.sort(np.asarray(take))
            rep.append((train, subsets, test))
        plan.append(rep)
    return plan


def out_of_fold(x: np.ndarray, y: np.ndarray, binary: bool, plan, fraction: float, c: float) -> np.ndarray:
    """Out-of-fold scores ``[repeats, n]`` (probability of the positive class, or predicted LVEF)."""
    scores = np.full((len(plan), len(y)), np.nan)
    for r, rep in enumerate(plan):
        for train, subsets, test in rep:
            scaler = StandardScaler().fit(x[train])  # label-free: the whole training fold
            a, b = scaler.transform(x[subsets[fraction]]), scaler.transform(x[test])
            yl = y[subsets[fraction]]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if binary:
                    model = LogisticRegression(C=c, max_iter=3000).fit(a, yl.astype(int))
                    scores[r, test] = model.predict_proba(b)[:, 1]
                else:
                    model = RidgeCV(alphas=np.logspace(-1, 5, 13)).fit(a, yl)
                    scores[r, test] = model.predict(b)
    return scores


# ----------------------------------------------------------------------------------------------- metrics

def _auroc_rows(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """AUROC of each row of ``s [B, n]`` against ``y [B, n]`` (ranks, ties one half); NaN with one class."""
    y = y.astype(bool)
    ranks = rankdata(s, axis=1)
    n_pos = y.sum(1)
    n_neg = y.shape[1] - n_pos
    u = np.where(y, ranks, 0.0).sum(1) - n_pos * (n_pos + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def _metric_rows(y: np.ndarray, s: np.ndarray, metric: str) -> np.ndarray:
    if metric == "auroc":
        return _auroc_rows(y, s)
    err = s - y
    if metric == "mae":
        return np.abs(err).mean(1)
    ss_tot = ((y - y.mean(1, keepdims=True)) ** 2).sum(1)
    return 1.0 - (err ** 2).sum(1) / ss_tot  # r2


def boot_metric(y: np.ndarray, scores: np.ndarray, metric: str, idx: np.ndarray) -> tuple[float, np.ndarray, float]:
    """``(point, bootstrap values [B], sd over repeats)``: the metric of each repeat's scores, averaged over
    repeats, on all studies and on each resample ``idx [B, n]`` (shared between encoders: paired)."""
    per_repeat = np.array([_metric_rows(y[None], s[None], metric)[0] for s in scores])
    boot = np.mean([_metric_rows(y[idx], s[idx], metric) for s in scores], axis=0)
    return float(per_repeat.mean()), boot, float(per_repeat.std())


def _interval(point: float, boot: np.ndarray) -> dict[str, float]:
    boot = boot[np.isfinite(boot)]
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return {"value": point, "ci_low": float(lo), "ci_high": float(hi)}


# ----------------------------------------------------------------------------------------------- table

def _fmt(m: dict, digits: int = 3) -> str:
    return f"{m['value']:.{digits}f} ({m['ci_low']:.{digits}f}, {m['ci_high']:.{digits}f})"


def _fmt_diff(m: dict, digits: int = 3) -> str:
    sign = "**" if m["ci_low"] > 0 or m["ci_high"] < 0 else ""
    return f"{sign}{m['value']:+.{digits}f}{sign} ({m['ci_low']:+.{digits}f}, {m['ci_high']:+.{digits}f})"


def markdown(results: dict) -> str:
    ref = results["reference"] is not None
    extra = [k for k in results["models"] if k not in MODELS]
    lines = ["| label | lead set | labels | labelled / fold | random | stage 1 | aligned | aligned, CLIP "
             "| aligned - stage 1 | aligned, CLIP - stage 1 |" + "".join(f" {k} | {k} - stage 1 |" for k in extra)
             + (" median beat (ref.) |" if ref else ""),
             "|---|---|---|---|---|---|---|---|---|---|" + "---|---|" * len(extra) + ("---|" if ref else "")]
    for cell in results["cells"]:
        digits = 2 if cell["metric"] == "mae" else 3
        label = {"auroc": cell["label"], "mae": "LVEF MAE", "r2": "LVEF R^2"}[cell["metric"]]
        m, d = cell["models"], cell["diffs"]
        lines.append(f"| {label} | {cell['lead_set']} | {cell['fraction']:.0%} | {cell['n_labelled']:.0f} | "
                     + " | ".join(_fmt(m[k], digits) for k in MODELS) + " | "
                     + " | ".join(_fmt_diff(d[k], digits) for k in ("aligned - stage 1", "aligned, CLIP - stage 1"))
                     + " |" + "".join(f" {_fmt(m[k], digits)} | {_fmt_diff(d[f'{k} - stage 1'], digits)} |" for k in extra)
                     + (f" {_fmt(m[REFERENCE], digits)} |" if ref else ""))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("/tmp/demo"))
    ap.add_argument("--cohort", type=Path, default=None, help="default: <run>/cohort")
    ap.add_argument("--encoder", type=Path, default=None, help="default: <run>/stage1-ecg/encoder.pt")
    ap.add_argument("--aligned", type=Path, default=None, help="default: <run>/align/aligned.pt")
    ap.add_argument("--config", default=None, help="default: <run>/config.yaml")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/stage2_probes.json"))
    ap.add_argument("--cache-dir", type=Path, default=Path("runs/stage2-probes-cache"),
                    help="where to build a paired cache if the cohort has none for the aligned model's spec")
    ap.add_argument("--lead-sets", nargs="+", default=list(LEAD_SETS), choices=list(LEAD_SETS))
    ap.add_argument("--fractions", nargs="+", type=float, default=[0.01, 0.1, 1.0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--min-labelled", type=int, default=10)
    ap.add_argument("--c", type=float, default=0.1, help="logistic regression's inverse penalty (fixed)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-reference", action="store_true", help="skip the median-beat reference features")
    ap.add_argument("--also-aligned", nargs="*", default=[], metavar="NAME=PATH",
                    help="more aligned.pt files from the same stage-1 encoder (e.g. a longer alignment): "
                         "their ECG branch is probed as model NAME, with NAME - stage 1")
    args = ap.parse_args()
    args.also_aligned = dict(item.split("=", 1) for item in args.also_aligned)
    torch.set_num_threads(args.threads)
    args.cohort = args.cohort or args.run / "cohort"
    args.encoder = args.encoder or args.run / "stage1-ecg" / "encoder.pt"
    args.aligned = args.aligned or args.run / "align" / "aligned.pt"
    args.config = args.config or str(args.run / "config.yaml")
    t0 = time.time()

    cfg = load_config(args.config)
    spec = spec_of(fusion_of(args.aligned))
    key = hashlib.blake2b(json.dumps(spec.to_dict(), sort_keys=True).encode(), digest_size=4).hexdigest()
    if not cfg.pipeline.cache_dir and not (args.cohort / "cache" / f"paired-{key}").is_dir():
        cfg.pipeline.cache_dir = str(args.cache_dir / f"paired-{key}")  # never write into the run's cohort
    cohort = open_cohort(cfg, args.cohort, spec)
    n = len(cohort.cache)
    _log(f"cohort {args.cohort}: {n} studies ({', '.join(f'{s} {len(cohort.splits[s])}' for s in ('train', 'val', 'test'))})")

    emb = all_embeddings(args, cohort)
    change = alignment_change(args, emb)
    _log("stage 2 moved the ECG encoder's weights by " + ", ".join(
        f"{k} {v:.2%}" for k, v in change["relative_weight_change"].items()) + "; " + ", ".join(
        f"{k}: CKA(stage 1, aligned) {v['cka_stage1_aligned']:.3f}" for k, v in change["embedding"].items()))
    model_names = list(MODELS) + list(args.also_aligned)
    diffs_wanted = {**DIFFS, **{f"{k} - stage 1": (k, "stage 1") for k in args.also_aligned}}
    if not args.no_reference:
        for lead_set, x in reference_features(args, cohort, args.lead_sets).items():
            emb[lead_set][REFERENCE] = x
        model_names.append(REFERENCE)
        _log("read the median-beat reference features")
    t_embed = time.time() - t0

    labels = {name: cohort.labels[:, cohort.outputs.index(name)] for name in BINARY}
    labels["lvef"] = cohort.lvef_labels.astype(float)
    rng = np.random.default_rng(args.seed)
    idx = rng.integers(0, n, size=(args.bootstrap, n))  # one set of resamples for every cell: paired
    cells = []
    for label, y_all in labels.items():
        binary = label != "lvef"
        known = np.isfinite(y_all)
        y, rows = y_all[known], np.flatnonzero(known)
        if len(rows) < n:
            raise SystemExit(f"{label}: {n - len(rows)} studies unlabelled; this benchmark expects a fully labelled cohort")
        plan = fold_plan(y, binary, args.fractions, args.repeats, args.folds, args.min_labelled, args.seed)
        for lead_set in args.lead_sets:
            for f in args.fractions:
                n_lab = float(np.mean([len(s[f]) for rep in plan for _, s, _ in rep]))
                scores = {m: out_of_fold(emb[lead_set][m], y, binary, plan, f, args.c) for m in model_names}
                for metric in (("auroc",) if binary else ("mae", "r2")):
                    boots, models = {}, {}
                    for m in model_names:
                        point, boots[m], sd = boot_metric(y, scores[m], metric, idx)
                        models[m] = {**_interval(point, boots[m]), "sd_over_repeats": sd}
                    if metric == "auroc":  # the package's own interval for repeat 0, as a cross-check
                        for m in model_names:
                            a, lo, hi = auroc_ci(y, scores[m][0], n_boot=args.bootstrap, seed=args.seed)
                            models[m]["repeat0_auroc_ci"] = [a, lo, hi]
                    diffs = {}
                    for name, (b, a) in diffs_wanted.items():
                        point = models[b]["value"] - models[a]["value"]
                        diffs[name] = _interval(point, boots[b] - boots[a])
                    cells.append({"label": label, "metric": metric, "lead_set": lead_set, "fraction": f,
                                  "n_labelled": n_lab, "n": int(len(y)), "n_pos": int(y.sum()) if binary else None,
                                  "models": models, "diffs": diffs})
                _log(f"{label} {lead_set} {f:.0%}: " + ", ".join(
                    f"{m} {cells[-1]['models'][m]['value']:.3f}" for m in model_names))

    stage1 = read_model_file(args.encoder)
    aligned = read_model_file(args.aligned)
    results = {
        "kind": "stage2_probes",
        "command": "OMP_NUM_THREADS=1 python benchmarks/bench_stage2_probes.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in (("run", args.run), ("config", args.config), ("cohort", args.cohort),
                                                        ("encoder", args.encoder), ("aligned", args.aligned),
                                                        ("out", args.out))) + (
            " --also-aligned " + " ".join(f"'{k}={v}'" for k, v in args.also_aligned.items())
            if args.also_aligned else ""),
        "cohort": {"path": str(args.cohort), "studies": n, "splits": {s: int(len(cohort.splits[s]))
                                                                       for s in ("train", "val", "test")},
                   "positives": {k: int(np.nansum(v)) for k, v in labels.items() if k != "lvef"},
                   "lvef_mean_sd": [float(np.mean(labels["lvef"])), float(np.std(labels["lvef"]))]},
        "models": {"stage 1": {"path": str(args.encoder), "objective": stage1.get("objective"),
                               "steps": stage1.get("steps"), "config": stage1["model_config"]},
                   "aligned": {"path": str(args.aligned), "objectives": aligned.get("objectives"),
                               "steps": aligned.get("steps"), "pretrained": aligned.get("pretrained")},
                   "random": {"init_seed": args.seed},
                   **{name: {"path": str(path), "objectives": read_model_file(path).get("objectives"),
                             "steps": read_model_file(path).get("steps")} for name, path in args.also_aligned.items()}},
        "protocol": {"folds": args.folds, "repeats": args.repeats, "fractions": args.fractions,
                     "min_labelled": args.min_labelled, "at_least_one_per_class": True,
                     "logistic_C": args.c, "ridge_alphas": "logspace(-1, 5, 13), leave-one-out on the labelled studies",
                     "standardisation": "fitted on the whole training fold (embeddings are label-free)",
                     "bootstrap": args.bootstrap, "seed": args.seed,
                     "ci": "percentile bootstrap over studies, each resample averaging the repeats; "
                           "differences paired (same resamples)",
                     "embedding": "fusion.unimodal['ecg'] (the ECG encoder's pooled embedding: the mean of a "
                                  "transformer's lead-patch tokens, a CNN's pooled features), ECG only; "
                                  "'aligned, CLIP' = clip_heads['ecg'] of it",
                     "lead_sets": {k: {"source": LEAD_SETS[k][0], "leads": list(LEAD_SETS[k][1])} for k in args.lead_sets}},
        "alignment_change": change,
        "reference": None if args.no_reference else
        "median beat per lead + RR statistics (cardiodistill.evaluate.probes.ecg_features) of the same recordings, "
        "same probe and folds: not an encoder, the simulator docs' simple probe",
        "seconds": {"embedding": round(t_embed, 1), "total": round(time.time() - t0, 1)},
        "cells": cells,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, results)
    print(markdown(results))
    _log(f"wrote {args.out} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
