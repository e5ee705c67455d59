"""What an ensemble member costs at the edge: file size and network time of int8 ensembles of cross-validated recipes.

Each ensemble named by ``--ensemble`` (recipes, keys of ``--cv-result``, joined by `` + ``) is built from its
recipes' fold-``--fold`` models (:class:`~cardiodistill.models.StudentEnsemble`), exported and quantised to int8
the way ``cardiodistill export`` does (:func:`~cardiodistill.deploy.export_onnx`, then
:func:`~cardiodistill.deploy.quantize_int8`; short names), calibrated on random windows and features: the file's
size and speed do not depend on the calibration, its accuracy does, which the cross-validation measures. Then each
graph reads a 30-s recording's three 10-s windows on one thread, the ensembles timed in turn ``--rounds`` times
(:func:`~cardiodistill.deploy.onnx_latency`), so a busy machine slows them alike; the ratio to the first ensemble
is the figure to quote::

    python benchmarks/bench_ensemble_size.py \\
        --ensemble "$GRU + 5-fold, passes 24 + $TREES" --ensemble "$GRU + 5-fold, passes 24 + $BEATS + $TREES"

Result: ``benchmarks/results/cinc2017_ensemble_size.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from cardiodistill.deploy import export_onnx, onnx_latency, quantize_int8
from cardiodistill.io.atomic import write_json_atomic
from cardiodistill.models import StudentEnsemble
from cardiodistill.train.checkpoints import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ensemble", action="append", required=True, help="recipes joined by ' + ' (repeatable)")
    ap.add_argument("--cv-result", type=Path, default=Path("benchmarks/results/cinc2017_cv_rerun.json"))
    ap.add_argument("--fold", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--result", type=Path, default=Path("benchmarks/results/cinc2017_ensemble_size.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    done = json.loads(args.cv_result.read_text())
    rng = np.random.default_rng(0)
    windows = rng.standard_normal((64, 1, 1000)).astype(np.float32)
    rows, files = [], []
    with tempfile.TemporaryDirectory(prefix="cardiodistill-ensemble-size-") as tmp:
        for k, name in enumerate(args.ensemble):
            recipes = name.split(" + ")
            missing = [r for r in recipes if r not in done]
            if missing:
                raise SystemExit(f"{args.cv_result}: not cross-validated: {missing}")
            model = StudentEnsemble([load_model(Path(done[r]["folder"]) / f"fold{args.fold}" / "student.pt")
                                     for r in recipes]).eval()
            rhythm = rng.random((len(windows), model.n_rhythm)).astype(np.float32)
            fp32 = export_onnx(model, torch.from_numpy(windows[:1]), Path(tmp) / f"{k}.onnx",
                               rhythm=torch.from_numpy(rhythm[:1]))
            int8 = quantize_int8(fp32, Path(tmp) / f"{k}-int8.onnx", windows, rhythm=rhythm)
            rows.append({"ensemble": recipes, "members": len(recipes), "int8_bytes": int8.stat().st_size,
                         "parameters": sum(p.numel() for p in model.parameters()), "median_ms": []})
            files.append((int8, rhythm[:3]))
        for _ in range(args.rounds):
            for row, (path, rhythm) in zip(rows, files):
                row["median_ms"].append(onnx_latency(path, windows[:3], n=50, rhythm=rhythm)["median_ms"])
    for row in rows:
        row["median_of_rounds_ms"] = float(np.median(row["median_ms"]))
        row["ratio_to_first"] = row["median_of_rounds_ms"] / rows[0]["median_of_rounds_ms"]
        print(f"{row['members']} members: {row['int8_bytes'] / 1e3:.0f} kB int8, {row['median_of_rounds_ms']:.2f} ms "
              f"median for three 10-s windows on one thread, {row['ratio_to_first']:.2f} x the first")
    write_json_atomic(args.result, {"fold": args.fold, "rounds": args.rounds, "input": "3 windows of 1 x 1000",
                                    "ensembles": rows})


if __name__ == "__main__":
    main()
