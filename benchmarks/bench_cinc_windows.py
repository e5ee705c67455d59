"""Diagnostic: does a recording scored on full windows only beat the tiling the toolkit uses?

The students train on random full 10-s crops, but a recording is scored on its non-overlapping 10-s tiles plus a
last, partial tile zero-padded to 10 s when it holds at least half a window (:func:`window_starts`, the one rule of
the trainer and the edge runtime). 1,760 of the 6,000 CinC 2017 recordings are not 30 s long, so their last window
is either padded (only the 11 recordings under 10 s gave padded training crops) or dropped. The alternative scored
here keeps the count of windows and spreads them evenly from the first sample to the last, so every window is full
and every sample is read. Both rules score the same cross-validated fold models (``bench_real_students.py --cv 5``,
read from ``--cv-result``), an ensemble when several recipes are given, as ``--cv-ensemble`` does; the difference in
challenge score is paired over the 6,000 recordings::

    python benchmarks/bench_cinc_windows.py --cv-result benchmarks/results/cinc2017_cv_rerun.json \\
        '5-fold, passes 24, rhythm and beat features, distill.backbone={name: student_cnn, temporal: gru}' \\
        '5-fold, passes 24' '5-fold, gradient-boosted trees on the rhythm and beat features'

Result: ``benchmarks/results/cinc2017_windows.json``. (About 4 min on one thread.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_real_students as real  # noqa: E402
from bench_cinc_pairs import compare  # noqa: E402

import cardiodistill.train.supervised as supervised  # noqa: E402
from cardiodistill.io.atomic import write_json_atomic  # noqa: E402
from cardiodistill.signals.windows import MIN_FRACTION  # noqa: E402

TILES = supervised.window_starts


def spread_starts(length: int, window: int, min_fraction: float = MIN_FRACTION, *, keep_short: bool = True
                  ) -> list[int]:
    """As many windows as :func:`window_starts` gives, all full, spread evenly from the first sample to the last
    (a recording no longer than one window keeps its one, padded)."""
    starts = TILES(length, window, min_fraction, keep_short=keep_short)
    if length <= window or len(starts) < 2:
        return starts
    return [int(round(s)) for s in np.linspace(0, length - window, len(starts))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipes", nargs="+", help="cross-validated recipes (keys of --cv-result); several: their ensemble")
    ap.add_argument("--out", type=Path, default=Path("runs/real"))
    ap.add_argument("--cv-result", type=Path, default=Path("benchmarks/results/cinc2017_cv.json"))
    ap.add_argument("--result", type=Path, default=Path("benchmarks/results/cinc2017_windows.json"))
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()
    done = json.loads(args.cv_result.read_text())
    entries = [done[r] for r in args.recipes]
    k = entries[0]["folds"]
    out = args.out / "cinc2017"
    arrays = real.cinc_arrays(real.DATA / "cinc2017", out / "arrays.npz", None)
    rhythm = real.cinc_rhythm(arrays, real.features_cache(out))
    splits = real.cinc_folds(arrays["target"], k, real._config(real.CINC_SETS, []).trainer.seed)
    real.set_threads(1)
    models = [real.fold_model(entries, i) for i in range(k)]
    result: dict = {"recipes": args.recipes, "cv_result": str(args.cv_result)}
    preds = {}
    for name, rule in (("tiles", TILES), ("spread", spread_starts)):
        supervised.window_starts = rule  # the scoring path's one windowing rule, swapped for this run
        try:
            folder = out / f"windows-{name}"
            scores = real._cv_scores(models, arrays, splits, rhythm, real.WINDOW, folder, args.bootstrap, 0)
        finally:
            supervised.window_starts = TILES
        saved = np.load(folder / "oof.npz")
        preds[name] = saved["probs"], saved["target"]
        result[name] = real._clean(scores)
        real._log(f"{name}: challenge score {scores['challenge']['value']:.4f}, folds {scores['challenge_per_fold']}")
    diff = compare(preds["spread"], preds["tiles"], args.bootstrap, 0)
    result["spread_minus_tiles"], result["recordings_changed"] = diff["challenge"], diff["recordings_changing_class"]
    result["spread_minus_tiles_af_f1"], result["spread_minus_tiles_macro_auroc"] = diff["f1_af"], diff["macro_auroc"]
    write_json_atomic(args.result, result)
    real._log(f"spread - tiles: {real._fmt(result['spread_minus_tiles'], True)}; "
              f"{result['recordings_changed']} recordings change class")


if __name__ == "__main__":
    main()
