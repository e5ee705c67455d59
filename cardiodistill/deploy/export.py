"""ONNX export of the student for edge devices, with an onnxruntime parity check and a latency probe.

:func:`export_onnx` traces ``model.predict`` (one tensor out: the sigmoid probabilities, then LVEF) with
PyTorch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``). In torch 2.9-2.13 it is
deprecated but kept, needs only the ``onnx`` package, takes under a second for the student and targets
opset 17; the default dynamo exporter also needs ``onnxscript``, takes ~20 s on two cores and no longer
emits opsets below 18. The batch axis, and by default the samples axis, are left dynamic, so the one file
serves 2.5-30 s windows. Before the file is put in place, onnxruntime (when installed) runs it on the
example and on a batch of twice its size and must match PyTorch within ``atol``.

:func:`onnx_latency` times the exported graph on one CPU thread, as on a phone. Install both with
``pip install 'cardiodistill[train]'`` (onnx; onnxruntime comes with the ``edge`` part of it).
"""

from __future__ import annotations

import importlib.util
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..edge.spec import open_session
from ..errors import ConfigError
from ..io.atomic import atomic_path
from .quantize import compact_names

__all__ = ["export_onnx", "onnx_latency"]

_INSTALL = "pip install 'cardiodistill[train]'"


class _Predict(nn.Module):
    """Exposes ``model.predict`` as ``forward``, the function the exporter traces."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.model.predict(*inputs)


def _verify(path: Path, wrapper: nn.Module, examples: tuple[Tensor, ...], atol: float, destination: Path) -> None:
    """Run the ONNX file at ``path`` on ``examples`` and on a batch twice their size; compare with PyTorch."""
    session = open_session(path, threads=0)
    names = [i.name for i in session.get_inputs()]
    doubled = tuple(torch.cat([e, e.flip(0)]) for e in examples)
    for inputs in (examples, doubled):
        x = inputs[0]
        with torch.no_grad():
            expected = wrapper(*inputs).float().cpu().numpy()
        got = session.run(None, {n: e.float().cpu().numpy() for n, e in zip(names, inputs)})[0]
        diff = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("inf")
        if not diff < atol:
            raise RuntimeError(f"ONNX export to {destination}: onnxruntime output {got.shape} differs from PyTorch "
                               f"{expected.shape} on batch {x.shape[0]} (max abs diff {diff:.3g} >= {atol:g})")


def export_onnx(
    model: nn.Module,
    example: Tensor,
    path: str | os.PathLike[str],
    *,
    input_name: str = "ecg",
    output_name: str = "outputs",
    opset: int = 17,
    dynamic_samples: bool = True,
    metadata: Mapping[str, str] | None = None,
    atol: float = 1e-4,
    rhythm: Tensor | None = None,
    rhythm_name: str = "rhythm",
    compact: bool = True,
) -> Path:
    """Export ``model.predict`` to an ONNX file at ``path``, atomically; returns the path.

    ``example`` is an input the model accepts (``[B, L, T]`` float32 for the student); the exported graph
    takes ``input_name`` with a dynamic batch axis (and a dynamic last axis if ``dynamic_samples``) and
    returns ``output_name`` ``[B, n_outputs + 1]``. ``metadata`` (string pairs, e.g. the leads and sampling
    rate the model expects) goes into the file's ``metadata_props``. The model is traced in eval mode (its
    training flag is restored after). When onnxruntime is installed the file is checked before it replaces
    ``path``: a max abs difference from PyTorch of ``atol`` or more raises and leaves ``path`` untouched.
    ``rhythm``: an example of a student's rhythm features ``[B, n]`` (:mod:`cardiodistill.signals.rhythm`), for a
    model that takes them: the graph's second input, ``rhythm_name``. ``compact``: the inner tensors and nodes get
    short names (:func:`~cardiodistill.deploy.quantize.compact_names`; False keeps the exporter's module-path names,
    easier to read in a graph viewer, for a larger file).
    """
    if not callable(getattr(model, "predict", None)):
        raise TypeError(f"{type(model).__name__} has no predict(x) method to export")
    try:
        import onnx
    except ImportError as err:
        raise ConfigError(f"ONNX export needs the 'onnx' package: {_INSTALL}") from err
    path = Path(path)
    was_training = model.training
    wrapper = _Predict(model).eval()  # the exporter restores the wrapper's mode, so the wrapper must be in eval
    axes = {0: "batch", example.ndim - 1: "samples"} if dynamic_samples else {0: "batch"}
    examples = (example,) if rhythm is None else (example, rhythm)
    names = [input_name] if rhythm is None else [input_name, rhythm_name]
    dynamic = {input_name: axes, output_name: {0: "batch"}}
    if rhythm is not None:
        dynamic[rhythm_name] = {0: "batch"}
    try:
        with atomic_path(path) as tmp:
            with warnings.catch_warnings():
                # the TorchScript exporter's own deprecation notices, and the tracer's notes on shape checks
                # (the onnxruntime parity check below covers what tracing could get wrong)
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                # a GRU's note that other batch sizes may fail: the parity check runs a batch of two and more
                warnings.filterwarnings("ignore", message="Exporting a model to ONNX with a batch_size other than 1")
                torch.onnx.export(
                    wrapper, examples, str(tmp), dynamo=False, input_names=names,
                    output_names=[output_name], dynamic_axes=dynamic,
                    opset_version=opset,
                )
            if metadata or compact:
                proto = onnx.load(str(tmp))
                if metadata:
                    onnx.helper.set_model_props(proto, {str(k): str(v) for k, v in metadata.items()})
                if compact:
                    compact_names(proto)
                onnx.save(proto, str(tmp))
            if importlib.util.find_spec("onnxruntime") is not None:
                _verify(tmp, wrapper, examples, atol, path)
    finally:
        model.train(was_training)
    return path


def onnx_latency(path: str | os.PathLike[str], example: Tensor | np.ndarray, n: int = 100,
                 rhythm: Tensor | np.ndarray | None = None) -> dict[str, float]:
    """Latency of one forward pass of the ONNX file at ``path`` on ``example`` (and ``rhythm``, the rhythm
    features of a model that takes them) with onnxruntime on 1 CPU thread.

    Pass a batch-1 ``example`` for the edge figure. After 10 warm-up runs, ``n`` timed runs; returns
    ``{"median_ms", "p90_ms"}`` in milliseconds.
    """
    if importlib.util.find_spec("onnxruntime") is None:
        raise ConfigError(f"ONNX latency needs the 'onnxruntime' package: {_INSTALL}")
    if n < 1:
        raise ConfigError(f"n must be at least 1, got {n}")
    session = open_session(path, threads=1)  # DataError for a missing or unreadable file
    arrays = [a.detach().float().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a, np.float32)
              for a in ((example,) if rhythm is None else (example, rhythm))]
    feed = {i.name: a for i, a in zip(session.get_inputs(), arrays)}
    for _ in range(10):
        session.run(None, feed)
    times = np.empty(n)
    for i in range(n):
        start = time.perf_counter()
        session.run(None, feed)
        times[i] = time.perf_counter() - start
    return {"median_ms": float(np.median(times) * 1e3), "p90_ms": float(np.percentile(times, 90) * 1e3)}
