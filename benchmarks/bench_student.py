"""Edge cost of the mobile-ECG students: latency of one 10 s recording, file size and peak memory.

For every student of a demo run folder (``RUN/student-<n>-lead/student.pt``), or, without ``--run``,
for freshly built untrained ``student_cnn`` students with 1, 2 and 6 leads and the demo's 10 outputs
(latency, size and memory do not depend on the weights), :func:`cardiodistill.deploy.bench_student`
times PyTorch eager, ONNX fp32 and ONNX int8 (calibrated on simulated ECGs drawn here with
:func:`cardiodistill.synth.windows.simulated_windows` and passed in) on 1 and 2 threads,
batch 1, and measures each backend's peak memory in a fresh process. The plan's limit is 50 ms per
recording on the edge device.

    python benchmarks/bench_student.py                      # untrained students
    python benchmarks/bench_student.py --run runs/demo3     # a demo's trained students

Results go to ``benchmarks/results/student_bench.json`` and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI: idle OpenMP threads sleep, set before torch

import numpy as np

from cardiodistill.config import FinetuneConfig
from cardiodistill.deploy import bench_rows, bench_student, model_input
from cardiodistill.deploy.bench import N_CALIBRATION
from cardiodistill.io.atomic import write_json_atomic
from cardiodistill.synth.windows import simulated_windows

RESULTS = Path(__file__).resolve().parent / "results" / "student_bench.json"


def untrained_students(folder: Path, leads=(1, 2, 6)) -> dict[str, Path]:
    """Untrained ``student_cnn`` students (the demo's outputs) saved into ``folder``."""
    from cardiodistill.models import create_model
    from cardiodistill.train.checkpoints import save_model

    students = {}
    for n in leads:
        model = create_model("ecg_student", backbone={"name": "student_cnn", "in_leads": n, "fs": 100.0,
                                                      "seconds": 10.0}, outputs=FinetuneConfig().outputs)
        students[f"{n}-lead"] = save_model(model, folder / f"student-{n}-lead.pt")
    return students


def run_students(run: Path) -> dict[str, Path]:
    """The ``student.pt`` of each ``student-<n>-lead`` folder of a demo run."""
    found = sorted(run.glob("student-*-lead/student.pt"), key=lambda p: int(p.parent.name.split("-")[1]))
    if not found:
        raise SystemExit(f"{run}: no student-<n>-lead/student.pt inside")
    return {p.parent.name.removeprefix("student-"): p for p in found}


def markdown(results: dict[str, dict]) -> str:
    rows = [{"student": name, **row} for name, result in results.items() for row in bench_rows(result)]
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="demo run folder (default: untrained students)")
    parser.add_argument("--n", type=int, default=200, help="timed runs per backend and thread count")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        students = run_students(args.run) if args.run else untrained_students(Path(tmp))
        for name, path in students.items():
            start = time.perf_counter()
            leads, fs, seconds = model_input(path)
            rng = np.random.default_rng(0)
            x = simulated_windows(1, leads, fs, seconds, rng)
            calibration = simulated_windows(N_CALIBRATION, leads, fs, seconds, rng)
            results[name] = bench_student(path, x, calibration=calibration, source="simulated",
                                          threads=tuple(args.threads), n=args.n)
            results[name]["model"] = str(path) if args.run else f"untrained student_cnn, {name}"
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {time.perf_counter() - start:.0f} s", flush=True)
    write_json_atomic(args.out, {
        "source": str(args.run) if args.run else "untrained student_cnn (weights do not change the cost)",
        "date": time.strftime("%Y-%m-%d"), "students": results,
    })
    print(markdown(results))


if __name__ == "__main__":
    main()
