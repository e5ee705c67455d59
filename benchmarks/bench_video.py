"""Stage-1 video speed on the CPU: preprocessing (decode once, then read the cache) and pretraining.

    python benchmarks/bench_video.py                 # everything; rows appended to results/video_speed.jsonl
    python benchmarks/bench_video.py --quick         # smoke run, not saved
    python benchmarks/bench_video.py --table         # markdown tables of all saved results

Preprocessing, per clip (median seconds of ``--repeats`` runs after one warm-up):

* ``decode``: :func:`cardiodistill.io.read_video` of a DICOM file: a simulated echo (uncompressed,
  140 frames of 112x112) and, when ``../shared/data`` is there, the real apical 4-chamber cine
  (JPEG baseline, 120 frames of 480x640);
* ``prepare``: :func:`cardiodistill.video.prepare_clip` of the decoded clip (field of view, overlays,
  crop, resize, one cardiac cycle in 16 frames of 64x64: the quick preset's model input);
* ``cache read``: one item of :class:`~cardiodistill.data.video_clips.ClipDataset` (memory-mapped
  uint8 clip, z-scored inside its mask): what a training step pays per clip once the cache exists.

Pretraining: one full step (forward, loss, backward, AdamW) of
:class:`~cardiodistill.train.video.VideoPretrainModule` on a batch of prepared clips, for each
objective (``mae``: 90 % tube masking; ``contrastive``: two augmented views through the whole
encoder) and thread count, each in a fresh process so its peak resident memory (``ru_maxrss``) is
its own. ``clips/s`` = batch / median step seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_pretrain import cpu_name, median_seconds

from cardiodistill.io.atomic import write_text_atomic

RESULTS = Path(__file__).parent / "results" / "video_speed.jsonl"
REAL_ECHO = Path(__file__).resolve().parents[2] / "shared" / "data" / "dicom" / "color3d_jpeg_baseline.dcm"


def _row(**values) -> dict:
    return {**values, "load_avg_1min": round(os.getloadavg()[0], 2), "cpu": cpu_name(), "cores": os.cpu_count(),
            "torch": torch.__version__, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
            "when": time.strftime("%Y-%m-%dT%H:%M:%S")}


def preprocessing(repeats: int) -> list[dict]:
    """Decode, prepare and cache-read seconds per clip for a simulated and (if present) a real DICOM."""
    from cardiodistill.data.video_clips import ClipDataset, VideoSource, build_clip_cache, source_videos
    from cardiodistill.io import read_video, write_echo_dicom
    from cardiodistill.video import ClipSpec, prepare_clip

    torch.set_num_threads(1)
    spec = ClipSpec(size=64, frames=16, cycles=1.0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folders = {"simulated echo (uncompressed)": Path(tmp) / "sim", "real A4C echo (JPEG baseline)": Path(tmp) / "real"}
        for folder in folders.values():
            folder.mkdir()
        clip = next(source_videos(VideoSource(kind="synth", patients=1))).load()
        write_echo_dicom(clip, folders["simulated echo (uncompressed)"] / "echo.dcm", patient_id="P0",
                         heart_rate=clip.meta["heart_rate"])
        if REAL_ECHO.is_file():
            (folders["real A4C echo (JPEG baseline)"] / "echo.dcm").symlink_to(REAL_ECHO)
        for label, folder in folders.items():
            path = folder / "echo.dcm"
            if not path.exists():
                continue
            decoded = read_video(path)
            decode = statistics.median(median_seconds(lambda p=path: read_video(p), 1, repeats))
            prepare = statistics.median(median_seconds(lambda c=decoded: prepare_clip(c, spec), 1, repeats))
            cache = build_clip_cache(folder.with_name(folder.name + "-cache"),
                                     [VideoSource(kind="files", path=str(folder))], spec, val_fraction=0.0)
            dataset = ClipDataset(cache)
            read = statistics.median(median_seconds(lambda d=dataset: d[0], 1, repeats * 20))
            rows.append(_row(kind="preprocess", file=label, frames=decoded.n_frames,
                             shape=list(decoded.frames.shape[1:]), decode_s=round(decode, 5),
                             prepare_s=round(prepare, 5), cache_read_s=round(read, 6),
                             speedup=round((decode + prepare) / read, 1)))
            print(json.dumps(rows[-1]))
    return rows


def train_one(objective: str, threads: int, batch: int, warmup: int, steps: int) -> dict:
    """One pretraining row, measured in this process (called in a fresh subprocess)."""
    from cardiodistill.models import model_defaults
    from cardiodistill.train.module import step_generator
    from cardiodistill.train.video import VideoPretrainModule

    torch.set_num_threads(threads)
    name = "video_mae_tiny" if objective == "mae" else "video_vit_tiny"
    config = {"name": name, **model_defaults(name)}
    module = VideoPretrainModule(config, objective=objective).train()
    clip = config.get("encoder", config)  # a masked autoencoder nests its encoder's config
    x = torch.randn(batch, clip["frames"], clip["size"], clip["size"], generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)

    def step() -> None:
        loss = module._losses({"x": x}, step_generator(0, 0, 0, "cpu"))["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    times = median_seconds(step, warmup, steps)
    seconds = statistics.median(times)
    return _row(kind="pretrain", model=name, objective=objective, threads=threads, batch=batch,
                size=clip["size"], frames=clip["frames"], tubelet=clip["tubelet"],
                step_s_median=round(seconds, 4), step_s_all=[round(t, 4) for t in times],
                clips_per_s=round(batch / seconds, 2),
                peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))


def pretraining(objectives: list[str], threads: list[int], batch: int, warmup: int, steps: int) -> list[dict]:
    rows = []
    for objective in objectives:
        for n in threads:
            cmd = [sys.executable, __file__, "--train-one", objective, "--threads", str(n), "--batch", str(batch),
                   "--warmup", str(warmup), "--steps", str(steps)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "step_s_all"}))
    return rows


def tables(rows: list[dict]) -> str:
    pre = [r for r in rows if r["kind"] == "preprocess"]
    train = [r for r in rows if r["kind"] == "pretrain"]
    lines = ["| file | frames | decode | prepare | cache read | decode + prepare / cache read | load |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in pre:
        lines.append(f"| {r['file']} | {r['frames']} x {r['shape'][0]}x{r['shape'][1]} | {1000 * r['decode_s']:.0f} ms "
                     f"| {1000 * r['prepare_s']:.0f} ms | {1000 * r['cache_read_s']:.2f} ms | {r['speedup']:.0f}x "
                     f"| {r['load_avg_1min']:.1f} |")
    lines += ["", "| model | objective | threads | batch | step | clips/s | peak RSS | load |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in train:
        lines.append(f"| {r['model']} | {r['objective']} | {r['threads']} | {r['batch']} | "
                     f"{1000 * r['step_s_median']:.0f} ms | {r['clips_per_s']:.1f} | {r['peak_rss_mb']:.0f} MB "
                     f"| {r['load_avg_1min']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objectives", nargs="+", default=["mae", "contrastive"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (the median is reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed preprocessing runs")
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 4, 1 thread, 2 steps; not saved")
    parser.add_argument("--table", action="store_true", help="print the markdown tables of all results and exit")
    parser.add_argument("--train-one", choices=["mae", "contrastive"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_one:
        threads = args.threads[0]
        print(json.dumps(train_one(args.train_one, threads, args.batch, args.warmup, args.steps)))
        return
    if args.table:
        print(tables([json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]))
        return
    if args.quick:
        args.batch, args.threads, args.warmup, args.steps, args.repeats = 4, [1], 1, 2, 2
    rows = preprocessing(args.repeats) + pretraining(args.objectives, args.threads, args.batch, args.warmup,
                                                      args.steps)
    print("\n" + tables(rows))
    if not args.quick:
        old = RESULTS.read_text() if RESULTS.exists() else ""
        write_text_atomic(RESULTS, old + "".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
