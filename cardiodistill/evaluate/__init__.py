"""Metrics with confidence intervals, and probes of what a representation or modality carries."""

from .metrics import auroc, auroc_ci, macro_auroc_ci

__all__ = ["auroc", "auroc_ci", "macro_auroc_ci"]
