"""The plan's training stages from a stream at two cohort sizes: is memory flat in cohort size? (issue 19)

For each ``--patients`` size: the simulator writes the cohort and its stream (``synth.stream=true``, the quick
preset's encoder inputs), then stage 1 (ECG and video), stage 2, the teacher and a 1-lead student each train from the
stream (``--stream``), each command in a fresh process under ``/usr/bin/time -v``, whose peak resident memory
(the largest process; the loaders run in-process, ``trainer.num_workers=0``) and wall time are recorded.
Schedules are cut so that a 20,000-patient run fits a session: ``--steps`` for stages 1 and 2, one epoch for
the teacher (its labelled share) and the student (every training study), each at least 20 steps.

    python benchmarks/bench_stream_pipeline.py --patients 2000 20000 --work /data/bench

Appended to ``benchmarks/results/stream_pipeline.jsonl``; ``--table`` prints the markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "stream_pipeline.jsonl"


def commands(root: Path, patients: int, steps: int) -> list[tuple[str, list[str]]]:
    stream = str(root / "cohort" / "stream")
    cut = ["--set", "finetune.epochs=1", "--set", "finetune.min_steps=20", "--set", "distill.epochs=1",
           "--set", "distill.min_steps=20"]
    return [
        ("synth + stream", ["synth", "-o", str(root / "cohort"), "--patients", str(patients), "--workers", "2",
                            "--set", "synth.chunk_size=64", "--set", "synth.stream=true"]),
        ("stage 1 ECG", ["pretrain", "ecg", "--stream", stream, "-o", str(root / "pretrain"),
                         "--set", f"pretrain.ecg.optim.max_steps={steps}"]),
        ("stage 1 video", ["pretrain", "video", "--stream", stream, "-o", str(root / "pretrain-video"),
                           "--set", f"pretrain.video.optim.max_steps={steps}"]),
        ("stage 2", ["align", "--stream", stream, "-o", str(root / "align"),
                     "--set", f"align.optim.max_steps={steps}"]),
        ("teacher", ["finetune", "--stream", stream, "--aligned", str(root / "align" / "aligned.pt"),
                     "-o", str(root / "teacher"), *cut]),
        ("1-lead student", ["distill", "--stream", stream, "--teacher", str(root / "teacher"), "--leads", "1",
                            "-o", str(root / "student"), *cut]),
    ]


def measure(argv: list[str]) -> dict:
    proc = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "cardiodistill.cli", *argv],
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr).group(1)
    seconds = sum(float(part) * 60 ** i for i, part in enumerate(reversed(wall.split(":"))))
    return {"peak_rss_mib": round(peak / 1024, 1), "seconds": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--work", type=Path, required=False, default=Path("runs/bench-stream-pipeline"))
    ap.add_argument("--keep", action="store_true", help="keep each size's cohort, stream and runs")
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args()
    if args.table:
        print(table())
        return
    for n in args.patients:
        root = args.work / f"sim{n}"
        shutil.rmtree(root, ignore_errors=True)
        for name, argv in commands(root, n, args.steps):
            row = {"patients": n, "command": name, **measure(argv), "machine": platform.node(),
                   "time": time.strftime("%Y-%m-%d %H:%M")}
            if name == "synth + stream":
                stream = root / "cohort" / "stream"
                row["stream_bytes"] = sum(f.stat().st_size for f in stream.rglob("*") if f.is_file())
                row["studies"] = json.loads((stream / "stream.json").read_text())["splits"]
            print(json.dumps(row), flush=True)
            with RESULTS.open("a") as f:
                f.write(json.dumps(row) + "\n")
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def table() -> str:
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    sizes = sorted({r["patients"] for r in rows})
    names = list(dict.fromkeys(r["command"] for r in rows))
    got = {(r["command"], r["patients"]): r for r in rows}
    head = "| command | " + " | ".join(f"{n:,} patients: peak RSS | wall" for n in sizes) + " |"
    lines = [head, "|---|" + "---:|---:|" * len(sizes)]
    for name in names:
        cells = []
        for n in sizes:
            r = got.get((name, n))
            cells += [f"{r['peak_rss_mib']:.0f} MiB", f"{r['seconds']:.0f} s"] if r else ["", ""]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
