"""What lead I's rhythm and beat features add to the lead-I networks on PTB-XL: trees on the features, alone and as
one more ensemble member, on ``bench_ptbxl_cv.py``'s folds.

On CinC 2017 gradient-boosted trees on a recording's rhythm and beat features (:mod:`cardiodistill.signals.rhythm`,
:mod:`cardiodistill.signals.beats`) are the bundled model's third member (+0.012 challenge score). This asks the
same of PTB-XL superdiagnostic from lead I, where the gap to the 12-lead teacher is the open goal (issue 17): in
each of the four cross-validation folds, one tree model per class (:func:`~cardiodistill.train.trees.fit_feature_trees`,
scikit-learn's defaults, the fold's training and validation records that carry the label) scores the fold's test
records; the pooled out-of-fold predictions give the trees' macro AUROC, and averaged with a lead-I recipe's own
out-of-fold predictions (the two as equal members, and the trees as one of three), the paired difference against
the recipe alone (bootstrap over the 1,442 records). Nothing here chooses a recipe or ships. A minute on one core
once ``bench_ptbxl_cv.py`` has scored the recipes (their cached predictions are read)::

    OMP_NUM_THREADS=1 python benchmarks/bench_ptbxl_features.py --out runs/ptbxl-cv
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ptbxl_cv import BY_NAME, CV_FOLDS, Data  # noqa: E402

from cardiodistill.evaluate.metrics import macro_auroc_ci, paired_macro_auroc_ci  # noqa: E402
from cardiodistill.io.atomic import write_json_atomic  # noqa: E402
from cardiodistill.signals.rhythm import RECORDING_FEATURES, signal_rhythm  # noqa: E402
from cardiodistill.train.trees import fit_feature_trees  # noqa: E402

RESULT = Path(__file__).resolve().parent / "results" / "ptbxl_features_trees.json"
FS = 100.0
#: The lead-I recipes of ``bench_ptbxl_cv.py`` the trees join: the best three by cross-validated macro AUROC at
#: full labels, a baseline, the toolkit's stage-1 recipe and the distilled student.
RECIPES = ("lead I: resnet1d_wang",
           "100 % labels, lead I: ecg_cnn from stage 1, distilled from resnet1d_wang on every record",
           "lead I: student_cnn, distilled from the 12-lead ensemble")


def lead_i_features(x: np.ndarray) -> np.ndarray:
    """``[N, len(RECORDING_FEATURES)]`` of the records ``x [N, leads, T]`` at 100 Hz, from lead I (channel 0)."""
    return np.stack([signal_rhythm(np.asarray(r[:1], np.float32), FS, r.shape[-1], RECORDING_FEATURES) for r in x])


def out_of_fold_trees(data: Data, features: np.ndarray, seed: int) -> np.ndarray:
    """``[N, C]``: each record's probability per class from the trees of the fold that tested it."""
    probs = np.full(data.y.shape, np.nan)
    for k in range(len(CV_FOLDS)):
        split = data.split(k)
        fit, test = np.r_[split["fit"], split["val"]], split["test"]
        for c, label in enumerate(data.labels):
            rows = fit[np.isfinite(data.y[fit, c])]
            trees = fit_feature_trees(features[rows], data.y[rows, c].astype(int), rhythm=RECORDING_FEATURES,
                                      outputs=[label], seed=seed)
            with torch.no_grad():
                probs[test, c] = trees.probabilities(torch.from_numpy(features[test].astype(np.float32)))[:, 0]
    return probs


def _cell(point: float, lo: float, hi: float) -> dict[str, float]:
    return {"value": point, "ci_low": lo, "ci_high": hi}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/ptbxl-cv"), help="bench_ptbxl_cv.py's run folder")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--result", type=Path, default=RESULT)
    args = ap.parse_args()
    start, seed = time.time(), 0
    data = Data(report_fold=9, seed=seed)
    trees = out_of_fold_trees(data, lead_i_features(data.x), seed)
    point, lo, hi, _ = macro_auroc_ci(data.y, trees, n_boot=args.bootstrap, seed=seed)
    results: dict = {"trees": _cell(point, lo, hi), "recipes": {}}
    print(f"trees on lead I's {len(RECORDING_FEATURES)} features: macro AUROC {point:.3f} ({lo:.3f}-{hi:.3f})")
    for name in RECIPES:
        cache = args.out / BY_NAME[name].folder / f"predictions-fold{data.report_fold}.npz"
        if not cache.is_file():
            raise SystemExit(f"{cache}: not scored yet; run bench_ptbxl_cv.py --out {args.out} first")
        with np.load(cache) as saved:
            own = saved["oof"].astype(np.float64)
        entry = {"alone": _cell(*macro_auroc_ci(data.y, own, n_boot=args.bootstrap, seed=seed)[:3])}
        for label, weight in (("with the trees, equal members", 1 / 2), ("with the trees as one of three", 1 / 3)):
            mixed = (1 - weight) * own + weight * trees
            entry[label] = {"macro_auroc": _cell(*macro_auroc_ci(data.y, mixed, n_boot=args.bootstrap, seed=seed)[:3]),
                            "minus_alone": _cell(*paired_macro_auroc_ci(data.y, mixed, own, n_boot=args.bootstrap,
                                                                        seed=seed))}
        results["recipes"][name] = entry
        diffs = "; ".join(f"{k}: {v['minus_alone']['value']:+.3f} ({v['minus_alone']['ci_low']:+.3f}, "
                          f"{v['minus_alone']['ci_high']:+.3f})" for k, v in entry.items() if k != "alone")
        print(f"{name}: {entry['alone']['value']:.3f} alone; {diffs}")
    results["wall_seconds"] = round(time.time() - start, 1)
    write_json_atomic(args.result, json.loads(json.dumps(results, default=float)))


if __name__ == "__main__":
    main()
