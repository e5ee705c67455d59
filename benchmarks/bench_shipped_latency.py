"""Latency of the bundled CinC 2017 model on one 30-s single-lead recording, one CPU thread (issue 17's edge budget).

Issue 17 asks the shipped student to stay within an int8 ONNX file of at most 1 MB and 5 ms p50 for a 30-s
single-lead recording on one core. The model now reads the recording's rhythm features beside its 10-s windows
(:mod:`cardiodistill.signals.rhythm`), which the runtime computes from R-peaks before the model runs, so both
parts are timed, in one process, on the same recordings:

* ``model``: onnxruntime on the recording's three 10-s windows (one batch) and its rhythm features;
* ``rhythm``: R-peak detection and the rhythm features on the prepared 100 Hz lead (what the runtime adds);
* ``prepare``: the runtime's whole preparation of the 300 Hz recording (resampling, band-pass, windows, quality,
  rhythm), as ``cardiodistill predict`` runs it after reading the file;
* ``prepare_designing_filters``: the same with every filter designed again for every recording (the kept
  Butterworth designs, their zero-phase initial conditions and the resampling's anti-alias FIR cleared first),
  as the runtime did before it kept them.

Recordings: the first ``--n`` CinC 2017 recordings of at least 30 s (their first 30 s), each timed ``--repeats``
times after a warm-up; medians and 90th percentiles over all timings. Writes
``benchmarks/results/shipped_latency.json``::

    OMP_NUM_THREADS=1 python benchmarks/bench_shipped_latency.py
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from cardiodistill.data.datasets import CinC2017
from cardiodistill.edge import EdgeModel
from cardiodistill.io.atomic import write_json_atomic
from cardiodistill.records import EcgRecord
from cardiodistill.signals.prepare import forget_filter_designs, prepare
from cardiodistill.signals.rhythm import signal_rhythm

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cinc2017"
SECONDS = 30.0


def _time(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(1e3 * (time.perf_counter() - start))
    return out


def _summary(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(float(np.median(ms)), 3), "p90_ms": round(float(np.percentile(ms, 90)), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50, help="recordings")
    ap.add_argument("--repeats", type=int, default=20, help="timings per recording")
    ap.add_argument("--result", type=Path, default=ROOT / "benchmarks" / "results" / "shipped_latency.json")
    ap.add_argument("--model", type=Path, default=None,
                    help="an exported model to time instead of the bundled one (e.g. the one it replaced)")
    args = ap.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA}: the CinC 2017 data are not here")
    model = EdgeModel.load(args.model, threads=1)
    spec = model.spec
    data = CinC2017(DATA)
    records = []
    for i in data.frame.sort_values("number").index:
        record = data[int(i)][0]
        if record.duration_s >= SECONDS:
            n = int(SECONDS * record.fs)
            records.append(EcgRecord(record.signal[:, :n], record.fs, record.leads, record.source))
        if len(records) == args.n:
            break
    timings: dict[str, list[float]] = {"model": [], "rhythm": [], "prepare": [], "prepare_designing_filters": []}
    for record in records:
        prepared = prepare(record, spec.input_spec)
        windows, filtered = prepared.windows, prepared.filtered
        rhythm = signal_rhythm(filtered.signal, filtered.fs, names=spec.rhythm) if spec.rhythm else None
        timings["model"] += _time(lambda: model.run(windows, rhythm), args.repeats)
        if spec.rhythm:
            timings["rhythm"] += _time(lambda: signal_rhythm(filtered.signal, filtered.fs, names=spec.rhythm),
                                       args.repeats)
        timings["prepare"] += _time(lambda: model.prepare(record), args.repeats)
        timings["prepare_designing_filters"] += _time(lambda: (forget_filter_designs(), model.prepare(record)),
                                                      args.repeats)
    result = {
        "model_id": spec.model_id, "precision": spec.precision, "rhythm_features": list(spec.rhythm),
        "bytes": model.path.stat().st_size, "recordings": len(records), "seconds": SECONDS,
        "windows": len(windows), "repeats": args.repeats, "threads": 1,
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
        "timings": {k: _summary(v) for k, v in timings.items() if v},
    }
    write_json_atomic(args.result, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
