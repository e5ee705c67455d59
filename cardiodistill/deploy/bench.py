"""How fast and how large the deployed student is: latency, file size and memory per backend.

:func:`bench_student` times ONE recording (batch 1, ``[1, L, fs * seconds]``), as a phone paired with a
handheld recorder would run it, on each backend: PyTorch eager (when given the ``student.pt``),
onnxruntime float32 and onnxruntime int8 (quantised on the fly, see
:func:`~cardiodistill.deploy.quantize.quantize_int8`), each on 1 and 2 threads by default. The
caller passes the windows: the first one is timed, and the int8 graph is calibrated on them (or on
``calibration``). Deployment never imports the simulator: ``cardiodistill bench`` and
``benchmarks/bench_student.py`` draw simulated handheld ECGs with
the simulator's ``simulated_windows`` and pass them in.

Peak memory is measured in a fresh Python process per backend (its peak resident set size: ``VmHWM``
on Linux, ``ru_maxrss`` elsewhere): its baseline after importing the runtime (numpy + onnxruntime,
or torch + cardiodistill), and its peak after loading the model and running it 20 times, so the
model's own share is the difference.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..edge.spec import open_session, read_spec
from ..errors import ConfigError, DataError
from .quantize import quantize_int8, require_onnx

__all__ = ["N_CALIBRATION", "bench_rows", "bench_student", "model_input"]

N_CALIBRATION = 100  # windows a caller draws to calibrate the int8 graph (the commands and benchmark scripts)
_WARMUP = 10
_MEMORY_RUNS = 20  # forward passes of the memory probe

# The memory probe, run as `python -c _MEMORY_PROBE backend model leads samples`: prints one JSON line.
# On Linux ru_maxrss survives fork + exec, so a child of a large process starts at its parent's peak;
# the probe reads VmHWM, the peak of its own address space, and falls back to ru_maxrss elsewhere.
_MEMORY_PROBE = """
import json, resource, sys
backend, path, leads, samples, n_rhythm = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
import numpy as np
if backend == "torch":
    import torch
    from cardiodistill.train.checkpoints import load_model
    torch.set_num_threads(1)
else:
    import onnxruntime as ort

def peak():
    try:
        with open("/proc/self/status") as fh:
            return next(int(l.split()[1]) for l in fh if l.startswith("VmHWM:")) * 1024 / 1e6
    except (OSError, StopIteration):
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e6

baseline = peak()
x = np.zeros((1, leads, samples), np.float32)
inputs = [x] + ([np.zeros((1, n_rhythm), np.float32)] if n_rhythm else [])
if backend == "torch":
    model = load_model(path)
    with torch.inference_mode():
        for _ in range(RUNS):
            model.predict(*(torch.from_numpy(a) for a in inputs))
else:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    for _ in range(RUNS):
        session.run(None, {i.name: a for i, a in zip(session.get_inputs(), inputs)})
print(json.dumps({"baseline_mb": baseline, "peak_mb": peak()}))
""".replace("RUNS", str(_MEMORY_RUNS))


def _timings(run: Callable[[], Any], n: int) -> dict[str, float]:
    """Latency of ``run()`` in ms over ``n`` timed calls after the warm-up: p50, p95 and mean."""
    for _ in range(_WARMUP):
        run()
    times = np.empty(n)
    for i in range(n):
        start = time.perf_counter()
        run()
        times[i] = time.perf_counter() - start
    times *= 1e3
    return {"p50": round(float(np.percentile(times, 50)), 4), "p95": round(float(np.percentile(times, 95)), 4),
            "mean": round(float(times.mean()), 4)}


def _torch_latency(model, inputs: Sequence[np.ndarray], threads: int, n: int) -> dict[str, float]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        tensors = [torch.from_numpy(a) for a in inputs]
        with torch.inference_mode():
            return _timings(lambda: model.predict(*tensors), n)
    finally:
        torch.set_num_threads(before)


def _onnx_latency(path: Path, inputs: Sequence[np.ndarray], threads: int, n: int) -> dict[str, float]:
    session = open_session(path, threads=threads)
    feed = {i.name: a for i, a in zip(session.get_inputs(), inputs)}
    return _timings(lambda: session.run(None, feed), n)


def _window_rhythm(windows: np.ndarray, fs: float, names: Sequence[str]) -> np.ndarray | None:
    """The rhythm features ``[N, len(names)]`` of each window, as the input of a model that reads them (None for one
    that does not): timing needs their shape, and the window's own beats give plausible values."""
    if not names:
        return None
    from ..signals.rhythm import signal_rhythm

    return np.stack([signal_rhythm(w, fs, names=names) for w in windows]).astype(np.float32)


def _memory(backend: str, path: Path, shape: tuple[int, int, int], n_rhythm: int = 0) -> dict[str, float]:
    """Baseline and peak RSS (MB) of a fresh process that loads and runs ``path`` (module doc)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    probe = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, "torch" if backend == "torch" else "onnx", str(path),
         str(shape[1]), str(shape[2]), str(n_rhythm)], capture_output=True, text=True, env=env, check=False,
    )
    if probe.returncode != 0:
        raise RuntimeError(f"memory probe of {path} ({backend}) failed: {probe.stderr.strip()[-500:]}")
    result = json.loads(probe.stdout.strip().splitlines()[-1])
    return {"baseline": round(result["baseline_mb"], 1), "peak": round(result["peak_mb"], 1),
            "model": round(result["peak_mb"] - result["baseline_mb"], 1)}


def _onnx_parameters(path: Path) -> int:
    """Number of float weights in an ONNX graph (batch norms folded into the convs)."""
    onnx = require_onnx()
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in onnx.load(str(path)).graph.initializer
                   if t.data_type == onnx.TensorProto.FLOAT))


def model_input(student_pt_or_onnx: str | os.PathLike[str]) -> tuple[tuple[str, ...], float, float]:
    """``(leads, fs, seconds)`` that a ``student.pt`` or an exported ``.onnx`` (its EdgeSpec) reads: what the
    windows given to :func:`bench_student` must be."""
    path = Path(student_pt_or_onnx)
    if not path.is_file():
        raise DataError("no such model file", path)
    if path.suffix == ".onnx":
        spec = read_spec(path)
        return tuple(spec.leads), float(spec.fs), float(spec.seconds)
    model = _load_student(path)
    return tuple(model.leads), float(model.backbone_config["fs"]), float(model.backbone_config["seconds"])


def _load_student(path: Path):
    """The student model of a ``student.pt`` (PyTorch); :class:`DataError` for another model."""
    from ..train.checkpoints import load_model

    model = load_model(path)
    if not all(hasattr(model, a) for a in ("leads", "backbone_config", "predict")):
        raise DataError(f"not a student model ({type(model).__name__})", path)
    return model


def _check_windows(x: np.ndarray, leads: Sequence[str], what: str, path: Path) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3 or len(x) == 0 or x.shape[1] != len(leads) or x.shape[2] == 0:
        raise DataError(f"{what} must be a non-empty float array [N, {len(leads)}, samples] for the leads "
                        f"{', '.join(leads)}, got shape {x.shape}", path)
    if not np.all(np.isfinite(x)):
        raise DataError(f"{what} contain NaN or infinite values", path)
    return np.ascontiguousarray(x, dtype=np.float32)


def bench_student(
    student_pt_or_onnx: str | os.PathLike[str],
    windows: np.ndarray,
    *,
    threads: Sequence[int] = (1, 2),
    n: int = 200,
    calibration: np.ndarray | None = None,
    source: str = "given",
    memory: bool = True,
) -> dict[str, Any]:
    """Latency, file size and peak memory of a student on each backend (module doc).

    ``student_pt_or_onnx``: a ``student.pt`` (PyTorch eager, then its float32 ONNX export and an int8
    version of it) or an exported ``.onnx`` carrying an EdgeSpec (float32: it and an int8 version;
    fp16/int8: that file alone). ``windows`` ``[N, L, T]`` float32, prepared as the model's input (its
    leads, see :func:`model_input`; per-lead z-scored): ``windows[0]`` is the timed recording, of
    ``T / fs`` seconds. ``calibration`` ``[N, L, T]``: int8 calibration windows (default: ``windows``).
    ``source`` says where the windows come from, in the result (e.g. ``"simulated"``). ``n`` timed runs
    per backend and thread count after 10 warm-up runs. ``memory=False`` skips the memory probes (each a
    fresh process: ~1 s for onnxruntime, several for PyTorch).

    Returns ``{"model", "leads", "fs", "seconds", "input_shape", "input", "int8_calibration", "n",
    "threads", "parameters", "backends": {name: {"file", "bytes", "mb", "latency_ms": {threads:
    {"p50", "p95", "mean"}}, "memory_mb": {"baseline", "peak", "model"}}}, "versions", "cpu"}``
    (``memory_mb`` only with ``memory``);
    latencies in ms, sizes in MB (1e6 bytes), thread counts as strings.
    """
    import onnxruntime

    if n < 1 or not threads or any(t < 1 for t in threads):
        raise ConfigError(f"n and every thread count must be at least 1, got n={n}, threads={list(threads)}")
    path = Path(student_pt_or_onnx)
    if not path.is_file():
        raise DataError("no such model file", path)
    versions = {"python": platform.python_version(), "onnxruntime": onnxruntime.__version__}
    with tempfile.TemporaryDirectory(prefix="cardiodistill-bench-") as tmp_dir:
        files: dict[str, Path] = {}
        model = None
        if path.suffix == ".onnx":
            spec = read_spec(path)
            leads, fs, names = spec.leads, spec.fs, tuple(spec.rhythm)
            files[f"onnx_{spec.precision}"] = path
            parameters = {"onnx": _onnx_parameters(path)} if spec.precision == "fp32" else {}
        else:
            import torch

            from .export import export_onnx

            model = _load_student(path)
            leads, fs = tuple(model.leads), float(model.backbone_config["fs"])
            names = tuple(getattr(model, "rhythm_names", ()))
            window = float(model.backbone_config["seconds"])
            files["torch"] = path
            files["onnx_fp32"] = export_onnx(model, torch.zeros(1, len(leads), int(round(fs * window))),
                                             Path(tmp_dir) / "fp32.onnx",
                                             rhythm=torch.zeros(1, len(names)) if names else None)
            parameters = {"torch": sum(p.numel() for p in model.parameters()),
                          "onnx": _onnx_parameters(files["onnx_fp32"])}
            versions["torch"] = torch.__version__
        windows = _check_windows(windows, leads, "benchmark windows", path)
        x = windows[:1]
        shape = x.shape
        rhythm = _window_rhythm(x, fs, names)
        inputs = [x] if rhythm is None else [x, rhythm]
        calibrated_on = None
        if "onnx_fp32" in files:
            calibration = windows if calibration is None else _check_windows(calibration, leads,
                                                                              "calibration windows", path)
            calibrated_on = f"{len(calibration)} {source} windows"
            files["onnx_int8"] = quantize_int8(files["onnx_fp32"], Path(tmp_dir) / "int8.onnx", calibration,
                                               rhythm=_window_rhythm(calibration, fs, names))
        backends: dict[str, dict[str, Any]] = {}
        for name, file in files.items():
            size = file.stat().st_size
            latency = {str(t): _torch_latency(model, inputs, t, n) if name == "torch"
                       else _onnx_latency(file, inputs, t, n) for t in threads}
            backends[name] = {"file": str(file) if file == path else "built for the benchmark", "bytes": size,
                              "mb": round(size / 1e6, 3), "latency_ms": latency}
            if memory:
                backends[name]["memory_mb"] = _memory(name, file, shape, len(names))
    return {
        "model": str(path), "leads": list(leads), "fs": fs, "seconds": shape[2] / fs, "input_shape": list(shape),
        "input": f"one {source} handheld ECG window, per-lead z-scored"
                 + (f", and its {len(names)} rhythm features" if names else ""),
        "int8_calibration": calibrated_on, "n": n, "threads": list(threads), "parameters": parameters,
        "backends": backends, "versions": versions,
        "cpu": {"machine": platform.machine(), "processor": platform.processor() or None, "cores": os.cpu_count()},
    }


def bench_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per backend and thread count of a :func:`bench_student` result, for tables."""
    rows = []
    for name, backend in result["backends"].items():
        memory = backend.get("memory_mb")
        for threads, latency in backend["latency_ms"].items():
            row = {"backend": name, "threads": int(threads), "p50 (ms)": f"{latency['p50']:.3f}",
                   "p95 (ms)": f"{latency['p95']:.3f}", "file (MB)": f"{backend['mb']:.3f}"}
            if memory is not None:
                row.update({"peak RSS (MB)": f"{memory['peak']:.1f}", "model's share (MB)": f"{memory['model']:.1f}"})
            rows.append(row)
    return rows
