"""Distillation throughput with and without the teacher's output cache (issue 19, item 3).

``finetune`` runs the teacher once over every study and writes ``teacher_outputs.npz`` (logits, LVEF, the fused
embedding); a student then trains from those cached arrays and its handheld ECG alone. Without the cache every
student step would also load the study's 12-lead ECG, echo, labs and note and run the teacher on them. Both
loops are timed here on the same studies, one batch of 32 at a time, through the same ``StudentModule`` losses
and an AdamW step (no Lightning: only the per-step work differs):

* ``cached``: the handheld ECG (``PairedDataset`` with the mobile modality) plus the cached arrays;
* ``teacher every step``: every modality loaded, the teacher's forward pass (no gradient), then the same step.

The quick preset's models (untrained weights: the cost does not depend on them) on a 64-patient simulated
cohort's training studies, batches drawn in a loop; the median of ``--batches`` timed batches after 3 warm-up
batches. Also the cache's one-off cost: the teacher's forward pass per study. Appended to
``benchmarks/results/distill_cache.jsonl``:

    python benchmarks/bench_distill_cache.py --batches 30
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))

from bench_stream import _base_cohort, _quick_config  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "distill_cache.jsonl"
BATCH = 32


def _timed(loader, step, batches: int, warmup: int = 3) -> list[float]:
    """Seconds per batch (loading included) for ``batches`` batches after ``warmup``."""
    times, it = [], iter(itertools.cycle(loader))
    for i in range(warmup + batches):
        start = time.perf_counter()
        step(next(it))
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()

    from cardiodistill.models import create_model
    from cardiodistill.stages.stage2 import encoder_config, fusion_config
    from cardiodistill.stages.stage3 import student_config
    from cardiodistill.train.distill import StudentModule
    from cardiodistill.train.teacher import predict_studies

    torch.manual_seed(0)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-distill-"))
    cohort = _base_cohort(work)
    cfg = _quick_config()
    ecg = encoder_config(None, cfg.align.ecg_model, "align.ecg_model")
    video = encoder_config(None, cfg.align.video_model, "align.video_model")
    mean, std = cohort.lvef_stats()
    fusion = fusion_config(cfg, cohort, ecg[0], video[0])
    teacher = create_model("cardio_teacher", fusion=fusion, outputs=cohort.outputs, lvef_mean=mean, lvef_std=std).eval()

    rows = cohort.splits["train"]
    start = time.perf_counter()
    with torch.no_grad():
        cached = predict_studies(teacher, cohort.dataset(np.arange(len(cohort.cache))), batch_size=BATCH)
    once_per_study = (time.perf_counter() - start) / len(cohort.cache)
    order = np.argsort(cached["index"])
    arrays = {"t_logits": cached["logits"][order], "t_lvef": cached["lvef"][order],
              "t_embedding": cached["embedding"][order]}

    d = cfg.distill
    module = StudentModule(student_config(cfg, 1, arrays["t_embedding"].shape[1], cohort), label=d.label, soft=d.soft,
                           embedding=d.embedding, lvef=d.lvef, temperature=d.temperature)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)

    def student_step(batch) -> None:
        optimizer.zero_grad()
        module._losses(batch, generator)["loss"].backward()
        optimizer.step()

    def with_teacher(batch) -> None:
        with torch.no_grad():
            out = teacher(batch)
        student_step({**batch, "t_logits": out["logits"], "t_lvef": out["lvef"], "t_embedding": out["embedding"]})

    labels = cohort.with_targets  # the targets every student step reads, cached or not
    mobile = DataLoader(labels(cohort.dataset(rows, modalities=("mobile",)), arrays), batch_size=BATCH, shuffle=True,
                        drop_last=True)
    every = DataLoader(labels(cohort.dataset(rows)), batch_size=BATCH, shuffle=True, drop_last=True)
    module.train()
    results = {"cached": _timed(mobile, student_step, args.batches),
               "teacher every step": _timed(every, with_teacher, args.batches)}
    base = None
    for name, times in results.items():
        per_batch = statistics.median(times)
        per_s = BATCH / per_batch
        base = base or per_s
        row = {"variant": name, "batch": BATCH, "batches": len(times), "median_s_per_batch": round(per_batch, 4),
               "studies_per_s": round(per_s, 1), "relative": round(per_s / base, 3),
               "cache_seconds_per_study": round(once_per_study, 4), "threads": torch.get_num_threads(),
               "machine": platform.node(), "time": time.strftime("%Y-%m-%d %H:%M")}
        print(json.dumps(row), flush=True)
        with RESULTS.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
