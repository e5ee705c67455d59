"""Deployment: ONNX export of the mobile-ECG student and its latency on one CPU thread."""

from .export import export_onnx, onnx_latency

__all__ = ["export_onnx", "onnx_latency"]
