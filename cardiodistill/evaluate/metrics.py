"""Discrimination metrics with bootstrap confidence intervals.

AUROC is computed from ranks (the Mann-Whitney U statistic, ties counted as one half), which
lets a whole batch of bootstrap resamples be scored in one vectorised call.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def _auroc_rows(y: np.ndarray, score: np.ndarray) -> np.ndarray:
    """AUROC of each row of ``score`` [B, n] against labels ``y`` [B, n]; NaN where a row has one class."""
    y = y.astype(bool)
    ranks = rankdata(score, axis=1)
    n_pos = y.sum(axis=1)
    n_neg = y.shape[1] - n_pos
    u = np.where(y, ranks, 0.0).sum(axis=1) - n_pos * (n_pos + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def auroc(y_true, score) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    y = np.asarray(y_true)[None, :]
    s = np.asarray(score, dtype=float)[None, :]
    return float(_auroc_rows(y, s)[0])


def auroc_ci(
    y_true, score, *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0, chunk: int = 256
) -> tuple[float, float, float]:
    """AUROC and its percentile bootstrap ``(1 - alpha)`` interval over patients: ``(auc, lo, hi)``.

    Resamples that draw a single class are dropped. With ``n_boot=0`` the interval is NaN.
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=float)
    point = auroc(y, s)
    if n_boot <= 0 or np.isnan(point):
        return point, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, len(y), size=(min(chunk, n_boot - start), len(y)))
        values.append(_auroc_rows(y[idx], s[idx]))
    boot = np.concatenate(values)
    boot = boot[np.isfinite(boot)]
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return point, float(lo), float(hi)
