"""Metrics with confidence intervals, and probes of what a representation or modality carries."""

from .metrics import auroc, auroc_ci, macro_auroc_ci
from .regression import plot_agreement, plot_bland_altman, regression_metrics, ridge_probe

__all__ = ["auroc", "auroc_ci", "macro_auroc_ci", "plot_agreement", "plot_bland_altman", "regression_metrics",
           "ridge_probe"]
