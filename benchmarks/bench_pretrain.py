"""Masked-autoencoder pretraining speed on the CPU: throughput, FLOPs, matmul peak, where the time goes.

    python benchmarks/bench_pretrain.py                                  # ecg_mae_tiny, batch 64, 1 and 2 threads
    python benchmarks/bench_pretrain.py --model ecg_mae_base --batch 4   # the ViT-B sized model
    python benchmarks/bench_pretrain.py --quick                          # seconds-long smoke run, not saved
    python benchmarks/bench_pretrain.py --table                          # markdown table of all results

The model is built as the CPU preset builds it: ``create_model(model, fs=100.0, patch_size=50)``,
so a 10 s window is 1000 samples per lead and 20 patches (240 tokens for 12 leads). For each torch
thread count (``torch.set_num_threads``) and each input it measures:

* ``samples/s``: batch / median seconds of a full training step (forward, loss, backward, AdamW
  step) over ``--steps`` timed steps after ``--warmup`` steps. Every step replays the same mask
  draw (a generator seeded with ``--seed``), so every step does the same work;
* ``GFLOP/step``: forward + backward FLOPs from ``torch.utils.flop_counter.FlopCounterMode``
  (matmuls and attention; the CPU flash-attention kernels, which torch does not count, are
  counted with torch's own SDPA formulas; AdamW's element-wise work is not counted), and from
  it the achieved GFLOP/s;
* the machine's fp32 matmul peak: median GFLOP/s of ``torch.mm`` on two ``--matmul-size``
  square matrices at the same thread count, and achieved / peak;
* the ops with the most self CPU time in one profiled step (``torch.profiler``).

Inputs: ``12-lead`` (every lead present) and ``mixed`` (the second half of the batch is lead I
alone: ``lead_mask`` marks the other 11 leads absent). ``--adamw`` picks torch's AdamW
implementation: ``default`` (a loop over the parameters on the CPU), ``foreach`` or ``fused``.

The 1-minute load average and ``OMP_WAIT_POLICY`` are stored with each row: the machine's cores
are shared, and with other work running, OpenMP threads that spin while waiting (the default)
make every small op of a multi-threaded step slow. ``OMP_WAIT_POLICY=PASSIVE`` (set in the
environment, before Python starts) avoids that.
One row per (thread count, input) is appended to benchmarks/results/pretrain_speed.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from cardiodistill.io.atomic import write_text_atomic
from cardiodistill.models import create_model
from cardiodistill.signals.leads import LEADS_12

RESULTS = Path(__file__).parent / "results" / "pretrain_speed.jsonl"
INPUTS = ("12-lead", "mixed")


def _cpu_flash_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_flash_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# FlopCounterMode knows the CUDA attention kernels only; these are the ones SDPA runs on the CPU.
CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_backward_flops,
}


def cpu_name() -> str:
    """The CPU model name from /proc/cpuinfo, else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def batch_input(batch: int, kind: str, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A z-scored-like signal ``[batch, 12, 1000]`` and the lead mask of input ``kind``."""
    x = torch.randn(batch, len(LEADS_12), 1000, generator=torch.Generator().manual_seed(seed))
    if kind == "12-lead":
        return x, None
    lead_mask = torch.ones(batch, len(LEADS_12), dtype=torch.bool)
    lead_mask[batch // 2 :, 1:] = False  # lead I alone
    return x, lead_mask


def make_step(
    model: torch.nn.Module, x: torch.Tensor, lead_mask: torch.Tensor | None, seed: int, adamw: str
) -> Callable[[], None]:
    """One training step (forward, MAE loss, backward, AdamW step) that replays the same masks."""
    impl = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}[adamw]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1.5e-4, weight_decay=0.05, **impl)

    def step() -> None:
        out = model(x, LEADS_12, lead_mask, generator=torch.Generator().manual_seed(seed))
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()

    return step


def count_flops(model: torch.nn.Module, x: torch.Tensor, lead_mask: torch.Tensor | None, seed: int) -> dict[str, int]:
    """Forward + backward FLOPs of one step by ATen op (the step ``make_step`` times)."""
    counter = FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS)
    with counter:
        out = model(x, LEADS_12, lead_mask, generator=torch.Generator().manual_seed(seed))
        out["loss"].backward()
    model.zero_grad(set_to_none=True)
    return {str(op): int(n) for op, n in counter.get_flop_counts()["Global"].items()}


def median_seconds(fn: Callable[[], None], warmup: int, repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def matmul_peak(size: int, repeats: int = 5) -> float:
    """Median fp32 GFLOP/s of ``torch.mm`` on two ``size`` x ``size`` matrices (current thread count)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    times = median_seconds(lambda: torch.mm(a, b), warmup=1, repeats=repeats)
    return 2 * size**3 / statistics.median(times) / 1e9


def top_ops(step: Callable[[], None], print_rows: int, keep: int) -> list[dict]:
    """Profile one step; print the ``print_rows`` ops with most self CPU time, return the top ``keep``."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=print_rows))
    total = sum(e.self_cpu_time_total for e in events)
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:keep]
    return [
        {
            "op": e.key,
            "calls": e.count,
            "self_ms": round(e.self_cpu_time_total / 1000, 1),
            "share": round(e.self_cpu_time_total / total, 3),
        }
        for e in ranked
    ]


def measure(model_name: str, batch: int, threads: int, kind: str, args: argparse.Namespace) -> dict:
    """One result row: throughput, FLOPs, matmul peak and top ops for one thread count and input."""
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    model = create_model(model_name, fs=100.0, patch_size=50).train()
    x, lead_mask = batch_input(batch, kind, args.seed)
    flops = count_flops(model, x, lead_mask, args.seed)
    load = os.getloadavg()[0]
    step = make_step(model, x, lead_mask, args.seed, args.adamw)
    times = median_seconds(step, args.warmup, args.steps)
    seconds = statistics.median(times)
    peak = matmul_peak(args.matmul_size)
    print(f"\n{model_name}, batch {batch}, {kind}, {threads} thread(s): top ops by self CPU time in one step")
    ops = top_ops(step, print_rows=15, keep=10)
    gflop = sum(flops.values()) / 1e9
    return {
        "model": model_name,
        "batch": batch,
        "input": kind,
        "threads": threads,
        "adamw": args.adamw,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "steps": args.steps,
        "step_s_median": round(seconds, 4),
        "step_s_all": [round(t, 4) for t in times],
        "samples_per_s": round(batch / seconds, 2),
        "gflop_per_step": round(gflop, 3),
        "gflop_by_op": {op: round(n / 1e9, 3) for op, n in flops.items()},
        "achieved_gflop_s": round(gflop / seconds, 2),
        "matmul_size": args.matmul_size,
        "matmul_peak_gflop_s": round(peak, 2),
        "fraction_of_peak": round(gflop / seconds / peak, 3),
        "top_ops": ops,
        "load_avg_1min": round(load, 2),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def table(rows: list[dict]) -> str:
    header = (
        "| model | batch | input | threads | AdamW | OMP wait | samples/s | step | GFLOP/step | achieved GFLOP/s "
        "| matmul peak GFLOP/s | of peak | load | top op (share) |"
    )
    lines = [
        header,
        "|---|---:|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        top = r["top_ops"][0]
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['input']} | {r['threads']} | {r['adamw']} | "
            f"{r['omp_wait_policy'] or 'default'} | {r['samples_per_s']:.1f} | "
            f"{1000 * r['step_s_median']:.0f} ms | {r['gflop_per_step']:.1f} | {r['achieved_gflop_s']:.1f} | "
            f"{r['matmul_peak_gflop_s']:.1f} | {100 * r['fraction_of_peak']:.0f}% | {r['load_avg_1min']:.1f} | "
            f"{top['op']} ({100 * top['share']:.0f}%) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ecg_mae_tiny")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--inputs", nargs="+", choices=INPUTS, default=list(INPUTS))
    parser.add_argument("--steps", type=int, default=5, help="timed steps (the median is reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--adamw", choices=["default", "foreach", "fused"], default="default")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: batch 8, 1 thread, 1 warm-up + 2 timed steps, 512 matmul; not saved",
    )
    parser.add_argument("--table", action="store_true", help="print the markdown table of all results and exit")
    args = parser.parse_args()
    if args.table:
        rows = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
        print(table(rows))
        return
    if args.quick:
        args.batch, args.threads, args.warmup, args.steps, args.matmul_size = 8, [1], 1, 2, 512
    before = torch.get_num_threads()
    rows = []
    try:
        for threads in args.threads:
            for kind in args.inputs:
                rows.append(measure(args.model, args.batch, threads, kind, args))
                print(json.dumps({k: v for k, v in rows[-1].items() if k not in ("top_ops", "step_s_all")}))
    finally:
        torch.set_num_threads(before)
    print("\n" + table(rows))
    if not args.quick:
        old = RESULTS.read_text() if RESULTS.exists() else ""
        write_text_atomic(RESULTS, old + "".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
