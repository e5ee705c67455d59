"""Deployment: the gated ONNX export of the mobile-ECG student (int8, fp16 or fp32) and its benchmark.

* :mod:`.export`: :func:`export_onnx`, a model's ``predict`` to ONNX checked against PyTorch, and
  :func:`onnx_latency`;
* :mod:`.quantize`: :func:`quantize_int8` (onnxruntime static, QDQ) and :func:`convert_fp16`;
* :mod:`.student`: :func:`export_student_model`, a trained ``student.pt`` to one ONNX file with its
  :class:`~cardiodistill.edge.spec.EdgeSpec`, a smaller precision kept only when it passes an AUROC gate;
  :func:`ensemble_students`, several students as one model file (their mean);
* :mod:`.bench`: :func:`bench_student`, latency, size and peak memory of PyTorch eager, ONNX fp32 and int8;
* :mod:`.commands`: ``cardiodistill export`` and ``cardiodistill bench`` (imported by the CLI, not here).

The names below are imported on first use, so the CLI can import :mod:`.commands` without PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names, for type checkers and IDEs
    from .bench import bench_rows, bench_student, model_input
    from .export import export_onnx, onnx_latency
    from .quantize import convert_fp16, quantize_int8
    from .student import ensemble_students, export_student_model, student_arrays_npz, student_spec

_WHERE = {
    "bench_rows": "bench",
    "bench_student": "bench",
    "model_input": "bench",
    "convert_fp16": "quantize",
    "ensemble_students": "student",
    "export_onnx": "export",
    "export_student_model": "student",
    "onnx_latency": "export",
    "quantize_int8": "quantize",
    "student_arrays_npz": "student",
    "student_spec": "student",
}

__all__ = [
    "bench_rows",
    "bench_student",
    "convert_fp16",
    "ensemble_students",
    "export_onnx",
    "export_student_model",
    "model_input",
    "onnx_latency",
    "quantize_int8",
    "student_arrays_npz",
    "student_spec",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
