"""Simulator throughput and peak memory.

Each measurement runs `cardiodistill synth` in a fresh child process and reads the child's peak
resident memory from the OS, so the numbers include everything a user's run would hold.

    python benchmarks/bench_synth.py --patients 1000 --workers 1 --output files
    python benchmarks/bench_synth.py --patients 1000 --workers 2 --output stream

``--output files`` writes the clinical files (WFDB, DICOM, CSV, text); ``stream`` writes them and then the
stream stage 2 reads (``synth.stream=true``: the paired cache, then LitData chunks); ``none`` generates and
discards (pure simulation cost). Rows with output ``shards`` were measured with the ``.npz`` shards that the
stream replaced (commit 6f552da and before). Results are appended to
benchmarks/results/synth.jsonl; ``--table`` prints the markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "synth.jsonl"


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(patients: int, workers: int, output: str, chunk_size: int, keep: Path | None) -> dict:
    root = Path(tempfile.mkdtemp(prefix="bench-synth-")) if keep is None else keep
    out = root / "cohort"
    overrides = [f"synth.chunk_size={chunk_size}"]
    if output == "stream":
        overrides += ["synth.stream=true"]
    elif output == "none":
        overrides += ["synth.files=false"]
    cmd = [sys.executable, "-m", "cardiodistill.cli", "synth", "--out", str(out), "--patients", str(patients),
           "--workers", str(workers), "--overwrite"]
    for o in overrides:
        cmd += ["--set", o]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    # largest single process among the waited-for descendants (one measurement per invocation)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    size = _folder_bytes(out)
    if keep is None:
        shutil.rmtree(root)
    return {
        "patients": patients,
        "workers": workers,
        "output": output,
        "chunk_size": chunk_size,
        "seconds": round(seconds, 2),
        "patients_per_s": round(patients / seconds, 2),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "bytes_written": size,
        "mib_per_patient": round(size / patients / 2**20, 3),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }


def components(n: int = 64, repeats: int = 5) -> dict:
    """Median milliseconds per patient of each generator and of writing the files, in one process."""
    import numpy as np

    from cardiodistill.config import SynthConfig
    from cardiodistill.synth import cohort
    from cardiodistill.synth.ecg import render_12lead, render_mobile, sample_ecg_params
    from cardiodistill.synth.echo import render_echo
    from cardiodistill.synth.labs import sample_labs
    from cardiodistill.synth.notes import write_notes
    from cardiodistill.synth.population import sample_population
    from cardiodistill.synth.rhythm import sample_beats

    cfg = SynthConfig(patients=n, chunk_size=n)
    rng = np.random.default_rng(0)
    pop = sample_population(n, cfg.prevalence, rng)
    beats = sample_beats(pop, cfg.ecg.duration_s, rng)
    params = sample_ecg_params(pop, rng)
    labs = sample_labs(pop, rng)
    chunk = cohort.generate_chunk(cfg, 0)
    jobs = {
        "population + beats": lambda: sample_beats(sample_population(n, cfg.prevalence, rng), 10.0, rng),
        "12-lead ECG": lambda: render_12lead(pop, beats, params, cfg.ecg.fs, rng),
        "handheld ECG": lambda: render_mobile(pop, beats, params, cfg.mobile.fs, rng),
        "echo cine": lambda: render_echo(pop, beats, rng, start_s=np.full(n, 1.0)),
        "labs": lambda: sample_labs(pop, rng),
        "notes": lambda: write_notes(pop, rng, labs=labs),
    }
    out = {}
    for name, job in jobs.items():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            job()
            times.append(time.perf_counter() - start)
        out[name] = round(1000 * float(np.median(times)) / n, 2)
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            cohort._write_chunk_files(chunk, cfg, Path(tmp))
            times.append(time.perf_counter() - start)
    out["write files (WFDB x2, DICOM, note)"] = round(1000 * float(np.median(times)) / n, 2)
    return out


def table(rows: list[dict]) -> str:
    lines = [
        "| patients | workers | output | wall time | patients/s | peak RSS (largest process) | written |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['patients']:,} | {r['workers']} | {r['output']} | {r['seconds']:.0f} s | {r['patients_per_s']:.1f} | "
            f"{r['peak_rss_mib']:.0f} MiB | {r['bytes_written'] / 2**30:.2f} GiB |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--output", choices=["files", "stream", "none"], default="files")
    parser.add_argument("--keep", type=Path, help="write here and keep the cohort (default: temp, deleted)")
    parser.add_argument("--table", action="store_true", help="print the markdown table of all results and exit")
    parser.add_argument("--components", action="store_true", help="time each generator (ms per patient) and exit")
    args = parser.parse_args()
    if args.components:
        print(json.dumps(components(), indent=2))
        return
    if args.table:
        rows = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
        print(table(rows))
        return
    row = measure(args.patients, args.workers, args.output, args.chunk_size, args.keep)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
