"""Paired differences between cross-validated CinC 2017 recipes, from their out-of-fold predictions.

``bench_real_students.py --cv-result`` keeps every cross-validated recipe (and ensemble) with the folder of its
pooled out-of-fold predictions (``oof.npz``: each recording scored by the one fold model that never saw it). This
diagnostic compares two of them on the same 6,000 recordings: challenge score (the mean F1 of normal, AF and other),
AF F1 and one-vs-rest macro AUROC, each as ``a - b`` with a paired bootstrap 95 % CI over the recordings, and writes
the pairs to ``--result``. It trains nothing::

    python benchmarks/bench_cinc_pairs.py --cv-result benchmarks/results/cinc2017_cv_rerun.json \\
        --pair "<recipe a>" "<recipe b>" [--pair ...] --result benchmarks/results/cinc2017_distil.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_real_students import CINC_OUTPUTS, _fmt, paired_challenge, paired_macro_delta  # noqa: E402

from cardiodistill.evaluate.metrics import bootstrap_interval  # noqa: E402
from cardiodistill.io.atomic import write_json_atomic  # noqa: E402

AF = CINC_OUTPUTS.index("af")


def out_of_fold(entry: dict[str, Any], name: str) -> tuple[np.ndarray, np.ndarray]:
    """A cross-validated recipe's pooled out-of-fold probabilities ``[N, 4]`` and labels ``[N]``."""
    path = Path(entry["folder"]) / "oof.npz"
    if not path.is_file():
        raise SystemExit(f"{path}: the out-of-fold predictions of {name!r} are not here; cross-validate it again")
    saved = np.load(path)
    return saved["probs"], saved["target"]


def compare(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], n_boot: int, seed: int
            ) -> dict[str, dict[str, float]]:
    """``a - b`` for two recipes' ``(probs, target)`` on the same recordings, paired bootstrap 95 % CIs."""
    (p_a, y), (p_b, y_b) = a, b
    if not np.array_equal(y, y_b):
        raise SystemExit("the two recipes were not scored on the same recordings")
    pred_a, pred_b = p_a.argmax(1), p_b.argmax(1)

    def af_f1(idx: np.ndarray, pred: np.ndarray) -> float:
        return float(f1_score(y[idx] == AF, pred[idx] == AF, zero_division=0.0))

    onehot = np.eye(p_a.shape[1])[y]
    return {"challenge": paired_challenge(y, pred_a, pred_b, n_boot, seed),
            "f1_af": bootstrap_interval(lambda idx: af_f1(idx, pred_a) - af_f1(idx, pred_b), len(y), n_boot=n_boot,
                                        seed=seed),
            "macro_auroc": paired_macro_delta(onehot, p_a, p_b, n_boot, seed),
            "recordings_changing_class": int((pred_a != pred_b).sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cv-result", type=Path, default=Path("benchmarks/results/cinc2017_cv.json"))
    ap.add_argument("--pair", nargs=2, action="append", required=True, metavar=("A", "B"),
                    help="two cross-validated recipes (keys of --cv-result); reports A - B")
    ap.add_argument("--result", type=Path, default=None, help="JSON file the pairs are written to")
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()
    recipes = json.loads(args.cv_result.read_text())
    missing = sorted({name for pair in args.pair for name in pair} - set(recipes))
    if missing:
        raise SystemExit(f"{args.cv_result}: no cross-validated recipe {missing}")
    pairs = []
    for a, b in args.pair:
        diff = compare(out_of_fold(recipes[a], a), out_of_fold(recipes[b], b), args.bootstrap, 0)
        pairs.append({"a": a, "b": b, **diff})
        print(f"{a}\n  - {b}\n  challenge {_fmt(diff['challenge'], True)}, AF F1 {_fmt(diff['f1_af'], True)}, "
              f"macro AUROC {_fmt(diff['macro_auroc'], True)}; {diff['recordings_changing_class']} recordings "
              f"change class")
    if args.result:
        write_json_atomic(args.result, {"cv_result": str(args.cv_result), "bootstrap": args.bootstrap, "pairs": pairs})


if __name__ == "__main__":
    main()
