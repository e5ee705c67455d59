"""What the recording's features know about CinC 2017 on their own: a gradient-boosted classifier on the rhythm
features, the beat features and both, cross-validated on the CNN recipes' folds.

A diagnostic, not a recipe (nothing here ships): it tells whether a set of whole-recording features carries
information the other does not before a student is trained with it (``bench_real_students.py --rhythm`` /
``--beats``). Each fold's classifier (scikit-learn's ``HistGradientBoostingClassifier``, fixed settings, chosen
before looking at any fold) trains on the fold's training and validation recordings and predicts its test
recordings; the pooled out-of-fold predictions give the challenge score (mean F1 of normal, AF and other) with
a bootstrap 95 % CI, and each class's F1. About a minute on one core, most of it the features (cached)::

    python benchmarks/bench_cinc_features.py --out runs/real
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_real_students import (  # noqa: E402
    CINC_OUTPUTS,
    DATA,
    _clean,
    challenge_scores,
    cinc_arrays,
    cinc_folds,
    cinc_rhythm,
    features_cache,
    features_of,
    paired_challenge,
)

from cardiodistill.io.atomic import write_json_atomic  # noqa: E402
from cardiodistill.signals.beats import BEAT_FEATURES  # noqa: E402
from cardiodistill.signals.rhythm import RECORDING_FEATURES, RHYTHM_FEATURES  # noqa: E402

RESULT = Path(__file__).resolve().parent / "results" / "cinc2017_features_gbm.json"
SETS = {"rhythm features": RHYTHM_FEATURES, "beat features": BEAT_FEATURES, "rhythm and beat features":
        RECORDING_FEATURES}


def out_of_fold(table: np.ndarray, target: np.ndarray, folds: list[dict[str, np.ndarray]], seed: int) -> np.ndarray:
    """``[N, 4]`` class probabilities, each recording's from the fold model that never saw it."""
    probs = np.zeros((len(target), len(CINC_OUTPUTS)))
    for fold in folds:
        fit = np.r_[fold["train"], fold["val"]]
        model = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, random_state=seed)
        probs[fold["test"]] = model.fit(table[fit], target[fit]).predict_proba(table[fold["test"]])
    return probs


def diagnostic_setup(doc: str, result: Path) -> tuple[argparse.Namespace, dict[str, np.ndarray], np.ndarray,
                                                      list[dict[str, np.ndarray]]]:
    """A CinC feature diagnostic's command line (``--out``: ``bench_real_students.py``'s run folder, ``--bootstrap``,
    ``--result``, default ``result``), its recordings (cached arrays), their features table and the 5 folds of the
    bundled recipes (``trainer.seed`` 0)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/real"))
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--result", type=Path, default=result)
    args = ap.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA}: the shared data folder is not here")
    arrays = cinc_arrays(DATA / "cinc2017", args.out / "cinc2017" / "arrays.npz", None)
    table = cinc_rhythm(arrays, features_cache(args.out / "cinc2017"))
    return args, arrays, table, cinc_folds(arrays["target"], 5, 0)


def main() -> None:
    start = time.time()
    args, arrays, table, folds = diagnostic_setup(__doc__, RESULT)
    target, seed = arrays["target"], 0
    results, preds = {}, {}
    for name, names in SETS.items():
        probs = out_of_fold(features_of(table, names), target, folds, seed)
        preds[name] = probs.argmax(1)
        scores = challenge_scores(target, preds[name], args.bootstrap, seed)
        results[name] = {"n_features": len(names), **scores}
        print(f"{name:26s} challenge {scores['challenge']['value']:.3f} "
              f"({scores['challenge']['ci_low']:.3f}-{scores['challenge']['ci_high']:.3f}); F1 "
              + ", ".join(f"{c} {scores[f'f1_{c}']['value']:.3f}" for c in CINC_OUTPUTS))
    both, rhythm = "rhythm and beat features", "rhythm features"
    results[both]["minus_rhythm_features"] = paired_challenge(target, preds[both], preds[rhythm], args.bootstrap, seed)
    results["wall_seconds"] = round(time.time() - start, 1)
    write_json_atomic(args.result, json.loads(json.dumps(_clean(results), default=float)))
    print(f"{both} - {rhythm}: {results[both]['minus_rhythm_features']}")


if __name__ == "__main__":
    main()
