"""Read throughput and peak memory of the streaming format (LitData) against the old ``.npz`` shards.

The studies are those of a simulated cohort's paired cache (the quick preset's encoder inputs), a
64-patient cohort repeated to ``--studies`` (the content repeats, the sizes and the reading are those of
a cohort that size). Each format is written once per size, then read for one shuffled epoch in a fresh
child process per (format, size, workers), batches of 32. Peak memory is the largest proportional set size
(PSS: shared pages counted once) of the child and its loader workers together, sampled every 20 ms:

* ``stream``: :class:`~cardiodistill.data.streaming.StudyStream` through its loader - what stage 2 reads,
  the model items included (float32 ECG, z-scored echo);
* ``stream-raw``: the same chunks as LitData's stored items (no conversion), the format's own cost;
* ``shards``: the ``.npz`` shards the stream replaced (``cardiodistill.data.shards`` through ``ShardDataset``,
  stored items). Only at commit 6f552da and before; ``--formats stream stream-raw`` (the default) after.

    python benchmarks/bench_stream.py --studies 1000 20000 --workers 1 2

Results are appended to ``benchmarks/results/stream.jsonl``; ``--table`` prints the markdown table.

``--ddp`` measures the other half of issue 19's item 4, the DDP speed-up on this machine: stage 2 (the quick
preset's alignment) trained from a stream of ``--studies`` studies (the 64-patient cohort repeated, its
splits kept) in one process with 2 threads, then in 2 DDP processes (gloo, one thread each), 32 studies per
process per step. The time between the first and the last timed step's end, validation excluded, gives the
training throughput; the peak memory is that of all the run's processes together (PSS); appended to
``benchmarks/results/stream_ddp.jsonl``:

    python benchmarks/bench_stream.py --ddp --studies 2048 --steps 30
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

RESULTS = Path(__file__).parent / "results" / "stream.jsonl"
DDP_RESULTS = Path(__file__).parent / "results" / "stream_ddp.jsonl"
BATCH = 32
BASE_PATIENTS = 64


class TiledCache:
    """A paired cache's rows repeated to ``n`` studies, with what ``write_stream`` reads of a cache."""

    def __init__(self, cache, n: int, keep_splits: bool = False):
        self.base, self.n = cache, n
        self.meta = {**cache.meta, "files": {"tiled": n}}
        self.spec, self.lab_names, self.dx_names = cache.spec, cache.lab_names, cache.dx_names
        rows = np.arange(n) % len(cache)
        table = cache.table.iloc[rows].reset_index(drop=True)
        if not keep_splits:
            table["split"] = "train"  # every study read in the epoch
        self.table = table
        self.present = {m: v[rows] for m, v in cache.present.items()}
        self._rows = rows

    def __len__(self) -> int:
        return self.n

    def item(self, name: str, i: int) -> np.ndarray:
        return self.base.item(name, int(self._rows[i]))

    def load(self, name: str) -> np.ndarray:
        return self.base.load(name)[self._rows]


def _quick_config(*overrides: str):
    from cardiodistill.config import load_config

    return load_config("quick", [f"synth.patients={BASE_PATIENTS}", f"synth.chunk_size={BASE_PATIENTS}", *overrides])


def _base_cohort(work: Path):
    """The 64-patient quick cohort, opened for the align encoders' inputs."""
    from cardiodistill.data.cohort import open_cohort
    from cardiodistill.stages.common import spec_of
    from cardiodistill.stages.stage2 import encoder_config
    from cardiodistill.synth.cohort import write_cohort

    cfg = _quick_config()
    if not (work / "cohort" / "manifest.csv").is_file():
        write_cohort(cfg, work / "cohort")
    ecg = encoder_config(None, cfg.align.ecg_model, "align.ecg_model")
    video = encoder_config(None, cfg.align.video_model, "align.video_model")
    return open_cohort(cfg, work / "cohort", spec_of({"ecg": ecg[0], "echo": video[0]}))


def _write(fmt: str, cache: TiledCache, out: Path) -> float:
    from cardiodistill.data.streaming import stored_study, write_stream

    start = time.perf_counter()
    if fmt == "shards":
        from cardiodistill.data.shards import ShardWriter

        with ShardWriter(out, 64, real_ids=True) as writer:
            for i in range(len(cache)):
                study = stored_study(cache, i)
                writer.add({k: v for k, v in study.items()})
    else:
        write_stream(cache, out)
    return time.perf_counter() - start


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:  # the process has just exited
        pass
    return 0


def _tree(pid: int) -> list[int]:
    pids, i = [pid], 0
    while i < len(pids):
        for task in Path(f"/proc/{pids[i]}/task").glob("*/children"):
            try:
                pids += [int(c) for c in task.read_text().split()]
            except OSError:
                pass
        i += 1
    return pids


class PeakMemory:
    """The largest total PSS of this process and its descendants while the ``with`` block runs."""

    def __init__(self, every: float = 0.02):
        self.every, self.peak_kib, self._stop = every, 0, threading.Event()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, sum(_pss_kib(p) for p in _tree(os.getpid())))
            self._stop.wait(self.every)

    def __enter__(self) -> "PeakMemory":
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _read(fmt: str, folder: str, workers: int) -> dict[str, Any]:
    """One shuffled epoch (run in the child)."""
    import torch

    torch.set_num_threads(1)
    start, n = time.perf_counter(), 0
    if fmt == "shards":
        from cardiodistill.data.stream import ShardDataset
        from torch.utils.data import DataLoader

        loader = DataLoader(ShardDataset(folder, shuffle=True, seed=0), batch_size=BATCH, num_workers=workers)
    elif fmt == "stream-raw":
        from litdata import StreamingDataLoader, StreamingDataset

        loader = StreamingDataLoader(StreamingDataset(str(Path(folder) / "train"), shuffle=True, seed=0),
                                     batch_size=BATCH, num_workers=workers)
    else:
        from cardiodistill.data.streaming import StudyStream, stream_loader

        loader = stream_loader(StudyStream(folder, shuffle=True, seed=0), BATCH, num_workers=workers)
    with PeakMemory() as memory:
        for batch in loader:
            n += len(batch["row"] if "row" in batch else batch["index"])
    seconds = time.perf_counter() - start
    return {"studies_read": n, "seconds": round(seconds, 2), "peak_pss_mib": round(memory.peak_kib / 1024, 1)}


class StepClock(L.Callback):
    """Seconds of training between the end of step ``skip`` and the last step's end, less the validation
    passes in between; rank 0 writes ``{"steps", "seconds"}`` to ``path``."""

    def __init__(self, path: str, skip: int):
        self.path, self.skip = path, skip
        self.start = self.last = None
        self.steps, self._val_start, self.vals = 0, 0.0, []

    def on_train_batch_end(self, trainer, *args) -> None:
        now = time.perf_counter()
        if trainer.global_step == self.skip:
            self.start, self.steps = now, 0
        elif self.start is not None:
            self.steps, self.last = self.steps + 1, now

    def on_validation_start(self, trainer, *args) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer, *args) -> None:
        self.vals.append((self._val_start, time.perf_counter()))

    def on_train_end(self, trainer, *args) -> None:
        if trainer.is_global_zero:
            val = sum(b - a for a, b in self.vals if self.start <= a and b <= self.last)
            Path(self.path).write_text(json.dumps({"steps": self.steps, "seconds": self.last - self.start - val}))


def _ddp_child(stream: str, processes: int, steps: int, clock: str) -> dict[str, Any]:
    """Stage 2 from the stream in ``processes`` processes (run in the child); the timed part from the clock."""
    from cardiodistill.data.streaming import open_stream
    from cardiodistill.stages.stage2 import encoder_config, run_align

    sets = [f"align.optim.max_steps={steps}", "align.optim.batch_size=32", "trainer.accelerator=cpu",
            "trainer.checkpoint_every=100000", f"trainer.threads={2 // processes}"]
    if processes > 1:
        sets += [f"trainer.devices={processes}", "trainer.strategy=ddp_spawn"]
    cfg = _quick_config(*sets)
    ecg = encoder_config(None, cfg.align.ecg_model, "align.ecg_model")
    video = encoder_config(None, cfg.align.video_model, "align.video_model")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out, PeakMemory(every=0.1) as memory:
        run_align(cfg, open_stream(stream), out, ecg=ecg, video=video, show_bar=False,
                  callbacks=[StepClock(clock, skip=5)])
    timed = json.loads(Path(clock).read_text())
    return {"wall_seconds": round(time.perf_counter() - start, 1), "peak_pss_mib": round(memory.peak_kib / 1024, 1),
            **timed}


def ddp(studies: int, steps: int, work: Path) -> None:
    from cardiodistill.data.streaming import write_stream

    out = work / f"ddp-{studies}"
    shutil.rmtree(out, ignore_errors=True)
    write_stream(TiledCache(_base_cohort(work).cache, studies, keep_splits=True), out)
    single = None
    for processes in (1, 2):
        clock = work / f"clock-{processes}.json"
        child = subprocess.run([sys.executable, __file__, "--ddp-child", str(out), str(processes), str(steps),
                                str(clock)], capture_output=True, text=True)
        if child.returncode:
            raise SystemExit(child.stderr[-3000:])
        got = json.loads(child.stdout.strip().splitlines()[-1])
        per_s = got["steps"] * 32 * processes / got["seconds"]
        single = single or per_s
        row = {"processes": processes, "threads_each": 2 // processes, "batch_per_process": 32, "studies": studies,
               **got, "seconds": round(got["seconds"], 2), "seconds_per_step": round(got["seconds"] / got["steps"], 3),
               "studies_per_s": round(per_s, 1),
               "speedup": round(per_s / single, 2), "machine": platform.node(), "time": time.strftime("%Y-%m-%d %H:%M")}
        print(json.dumps(row), flush=True)
        with DDP_RESULTS.open("a") as f:
            f.write(json.dumps(row) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, nargs="+", default=[1000])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--formats", nargs="+", default=["stream", "stream-raw"])
    ap.add_argument("--work", type=Path, default=None, help="keep the written data here")
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--ddp", action="store_true", help="the DDP speed-up of stage 2 from a stream")
    ap.add_argument("--steps", type=int, default=30, help="--ddp: optimizer steps per run (the first 5 untimed)")
    ap.add_argument("--child", nargs=3, metavar=("FORMAT", "FOLDER", "WORKERS"), help=argparse.SUPPRESS)
    ap.add_argument("--ddp-child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_read(args.child[0], args.child[1], int(args.child[2]))))
        return
    if args.ddp_child:
        stream, processes, steps, clock = args.ddp_child
        print(json.dumps(_ddp_child(stream, int(processes), int(steps), clock)))
        return
    if args.table:
        print(table())
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-stream-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.ddp:
        try:
            for n in args.studies:
                ddp(n, args.steps, work)
        finally:
            if args.work is None:
                shutil.rmtree(work, ignore_errors=True)
        return
    base = _base_cohort(work).cache
    try:
        for n in args.studies:
            cache = TiledCache(base, n)
            for fmt in dict.fromkeys("stream" if f == "stream-raw" else f for f in args.formats):
                out = work / f"{fmt}-{n}"
                shutil.rmtree(out, ignore_errors=True)
                write_s = _write(fmt, cache, out)
                size = _folder_bytes(out)
                for read_fmt in [f for f in args.formats if f == fmt or (fmt == "stream" and f == "stream-raw")]:
                    for workers in args.workers:
                        child = subprocess.run([sys.executable, __file__, "--child", read_fmt, str(out), str(workers)],
                                               capture_output=True, text=True, check=True)
                        got = json.loads(child.stdout.strip().splitlines()[-1])
                        row = {"format": read_fmt, "studies": n, "workers": workers, "write_seconds": round(write_s, 1),
                               "bytes": size, **got,
                               "studies_per_s": round(got["studies_read"] / got["seconds"], 1),
                               "mb_per_s": round(size / 1e6 / got["seconds"], 1), "machine": platform.node(),
                               "time": time.strftime("%Y-%m-%d %H:%M")}
                        print(json.dumps(row), flush=True)
                        with RESULTS.open("a") as f:
                            f.write(json.dumps(row) + "\n")
                shutil.rmtree(out, ignore_errors=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def table() -> str:
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    lines = ["| format | studies | workers | studies/s | MB/s | peak memory (PSS) | on disk | written in |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['format']} | {r['studies']:,} | {r['workers']} | {r['studies_per_s']:.0f} | "
                     f"{r['mb_per_s']:.0f} | {r['peak_pss_mib']:.0f} MiB | {r['bytes'] / 2**20:.0f} MiB | "
                     f"{r['write_seconds']:.0f} s |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
