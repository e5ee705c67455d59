"""Calibration of predicted probabilities: expected calibration error, reliability curves and temperature scaling.

A model is calibrated when, among patients given a probability of 0.3, 30 % have the condition. Temperature
scaling (Guo et al. 2017) divides the logits by one scalar ``T > 0`` fitted on a validation set: ``T > 1`` softens
an overconfident model, ``T < 1`` sharpens an underconfident one, and the ranking (AUROC) is unchanged.
Multi-label inputs ``[n, C]`` are pooled over all labelled entries; NaN labels are unlabelled and left out.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import minimize_scalar
from scipy.special import expit

from ..errors import ConfigError, DataError
from .regression import save_figure

__all__ = [
    "TEMPERATURE_BOUNDS",
    "apply_temperature",
    "calibration_report",
    "expected_calibration_error",
    "fit_temperature",
    "logit_nll",
    "plot_reliability",
    "reliability_curve",
]

TEMPERATURE_BOUNDS = (0.05, 20.0)  # search range of T; a fit at a bound means the logits are degenerate
_STRATEGIES = ("uniform", "quantile")


def _pooled(y: ArrayLike, values: ArrayLike, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Labelled entries of ``y`` and ``values`` (same shape, any rank) as flat float arrays ``(y 0/1, values)``."""
    y = np.asarray(y, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if y.shape != v.shape:
        raise ValueError(f"labels {y.shape} and {what} {v.shape} must have the same shape")
    keep = ~np.isnan(y)
    y, v = y[keep], v[keep]
    if not np.isin(y, (0.0, 1.0)).all():
        raise DataError(f"labels must be 0, 1 or NaN (unlabelled); got {np.unique(y[~np.isin(y, (0.0, 1.0))])[:5]}")
    if not np.isfinite(v).all():
        raise DataError(f"{int((~np.isfinite(v)).sum())} {what} are NaN or infinite for labelled records")
    if what == "probabilities" and ((v < 0) | (v > 1)).any():
        raise DataError(f"probabilities must lie in [0, 1]; got values from {v.min():.4g} to {v.max():.4g}")
    return y, v


def _bin_edges(p: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    """Bin edges [bins + 1] on [0, 1] (uniform) or at the quantiles of ``p`` (duplicates merged)."""
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, n_bins + 1)
    return np.unique(np.quantile(p, np.linspace(0.0, 1.0, n_bins + 1)))


def reliability_curve(
    y: ArrayLike, p: ArrayLike, n_bins: int = 10, strategy: str = "uniform"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(bin_mean_pred, bin_frac_pos, bin_count)``, arrays [bins] over the non-empty bins of predicted probability.

    ``strategy="uniform"``: ``n_bins`` equal-width bins on [0, 1]; ``"quantile"``: bins of (about) equal count.
    A bin holds ``lo <= p < hi``, the last one also ``p == hi``.
    """
    if n_bins < 1:
        raise ConfigError(f"n_bins must be 1 or more, got {n_bins}")
    if strategy not in _STRATEGIES:
        raise ConfigError(f"unknown binning strategy {strategy!r}: use one of {list(_STRATEGIES)}")
    y, p = _pooled(y, p, "probabilities")
    if len(y) == 0:
        return np.empty(0), np.empty(0), np.empty(0, dtype=np.int64)
    edges = _bin_edges(p, n_bins, strategy)
    which = np.searchsorted(edges[1:-1], p, side="right")
    count = np.bincount(which, minlength=len(edges) - 1)
    used = count > 0
    mean_pred = np.bincount(which, weights=p, minlength=len(count))[used] / count[used]
    frac_pos = np.bincount(which, weights=y, minlength=len(count))[used] / count[used]
    return mean_pred, frac_pos, count[used]


def expected_calibration_error(y: ArrayLike, p: ArrayLike, n_bins: int = 10, strategy: str = "uniform") -> float:
    """ECE: the mean over bins of ``|mean predicted - observed fraction|``, weighted by the bin's share of records
    (0 = perfectly calibrated, on the probability scale). NaN with no labelled record."""
    mean_pred, frac_pos, count = reliability_curve(y, p, n_bins, strategy)
    if count.sum() == 0:
        return float("nan")
    return float(np.sum(count * np.abs(mean_pred - frac_pos)) / count.sum())


def logit_nll(y: np.ndarray, z: np.ndarray) -> float:
    """Mean binary cross-entropy of ``sigmoid(z)`` against ``y``, computed stably from the logits."""
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(logits: ArrayLike, y: ArrayLike, *, bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """The temperature ``T > 0`` minimising the binary NLL of ``sigmoid(logits / T)`` on a VALIDATION set.

    ``logits`` and ``y`` are [n] or [n, C] (one T for all labels; NaN labels are left out). Fit on validation
    predictions, never on the test set you report. The search is over ``log T`` within ``bounds``
    (scipy's bounded Brent method: deterministic). Both classes are needed.
    """
    lo, hi = (float(b) for b in bounds)
    if not 0.0 < lo < hi:
        raise ConfigError(f"temperature bounds must satisfy 0 < low < high, got {bounds}")
    y, z = _pooled(y, logits, "logits")
    if y.all() or not y.any():
        raise DataError(f"fitting a temperature needs both classes; got {int(y.sum())} positives of {len(y)}")
    result = minimize_scalar(lambda log_t: logit_nll(y, z / np.exp(log_t)), bounds=(np.log(lo), np.log(hi)),
                             method="bounded", options={"xatol": 1e-6})
    return float(np.exp(result.x))


def apply_temperature(logits: ArrayLike, temperature: float) -> np.ndarray:
    """Probabilities ``sigmoid(logits / T)``, same shape as ``logits``."""
    if not temperature > 0:
        raise ConfigError(f"temperature must be positive, got {temperature}")
    return expit(np.asarray(logits, dtype=np.float64) / temperature)


def _score_rows(y: np.ndarray, z: np.ndarray, known: np.ndarray, idx: np.ndarray, n_bins: int) -> dict[str, np.ndarray]:
    """ECE (uniform bins), Brier score and NLL [b] of ``sigmoid(z)`` on the resamples ``idx`` [b, n] of the patients
    of ``y``, ``z``, ``known`` [n, C], pooled over each resample's labelled entries.

    In a bin, ``count * |mean predicted - observed fraction| = |sum p - sum y|``, so the ECE is ``sum over bins
    |sum p - sum y| / N``: the same number :func:`expected_calibration_error` gives on the identity resample.
    """
    p = expit(z)
    which = np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], p, side="right")  # [n, C]
    b = len(idx)
    w = known[idx].astype(np.float64)  # [b, n, C]
    flat = (np.arange(b)[:, None, None] * n_bins + which[idx]).ravel()
    diff = np.bincount(flat, weights=(w * (p[idx] - y[idx])).ravel(), minlength=b * n_bins).reshape(b, n_bins)
    total = w.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "ece": np.abs(diff).sum(axis=1) / total,
            "brier": (w * (p[idx] - y[idx]) ** 2).sum(axis=(1, 2)) / total,
            "nll": (w * (np.logaddexp(0.0, z[idx]) - y[idx] * z[idx])).sum(axis=(1, 2)) / total,
        }


def calibration_report(y: ArrayLike, logits: ArrayLike, temperature: float, *, n_bins: int = 10, n_boot: int = 0,
                       seed: int = 0, alpha: float = 0.05) -> dict[str, Any]:
    """ECE (uniform bins), Brier score and NLL of ``sigmoid(logits)`` ("before") and ``sigmoid(logits / T)``
    ("after"), pooled over the labelled entries of ``y``, ``logits`` ([n] or [n, C]). Apply it to the test set with
    the ``T`` fitted on validation.

    Returns ``{"temperature", "n", "n_boot", "before": {...}, "after": {...}}``, each metric a dict ``{"value",
    "ci_low", "ci_high"}``: a ``(1 - alpha)`` percentile bootstrap over patients (rows; all labels of a patient
    together), before and after on the same resamples and by the same function as the point; ``n_boot=0`` gives
    NaN bounds.
    """
    from .clinical import _bootstrap, _check_bootstrap, _interval

    if not temperature > 0:
        raise ConfigError(f"temperature must be positive, got {temperature}")
    _check_bootstrap(n_boot, alpha)
    y_arr, z_arr = np.asarray(y, dtype=np.float64), np.asarray(logits, dtype=np.float64)
    _pooled(y_arr, z_arr, "logits")  # validates labels and logits
    y2, z2 = (a.reshape(len(a), -1) for a in (y_arr, z_arr))
    known = ~np.isnan(y2)
    y2, z2 = np.where(known, y2, 0.0), np.where(known, z2, 0.0)
    out: dict[str, Any] = {"temperature": float(temperature), "n": int(known.sum()), "n_boot": n_boot}
    for key, z in (("before", z2), ("after", z2 / temperature)):
        point = _score_rows(y2, z, known, np.arange(len(y2))[None], n_bins)
        boot: dict[str, list[np.ndarray]] = {name: [] for name in point}
        for idx in _bootstrap(len(y2), n_boot, seed, 256, width=y2.shape[1]):
            for name, values in _score_rows(y2, z, known, idx, n_bins).items():
                boot[name].append(values)
        out[key] = {name: _interval(point[name][0], np.concatenate(boot[name]) if boot[name] else np.empty(0), alpha)
                    for name in point}
    return out


def plot_reliability(
    curves: Mapping[str, tuple[ArrayLike, ArrayLike]],
    path: str | os.PathLike[str],
    *,
    n_bins: int = 10,
    title: str = "",
) -> Path:
    """Reliability diagram: observed fraction vs mean predicted probability per bin, one line per name from its
    ``(y, p)`` with the ECE in the legend, the diagonal of perfect calibration, and below it a histogram of the
    predictions. PNG written atomically; returns the path.
    """
    from ..viz import _plt

    if not curves:
        raise ConfigError("plot_reliability needs at least one curve")
    fig, (ax, hist) = _plt().subplots(2, 1, figsize=(5.0, 6.0), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1], "hspace": 0.08})
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--", label="perfect calibration")
    bins = np.linspace(0.0, 1.0, 2 * n_bins + 1)
    for i, (name, (y, p)) in enumerate(curves.items()):
        color = f"C{i % 10}"
        mean_pred, frac_pos, _ = reliability_curve(y, p, n_bins)
        ece = expected_calibration_error(y, p, n_bins)
        ax.plot(mean_pred, frac_pos, marker="o", ms=4, color=color, label=f"{name} (ECE {ece:.3f})")
        _, pooled = _pooled(y, p, "probabilities")
        hist.hist(pooled, bins=bins, histtype="step", color=color, lw=1.2)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("observed fraction positive")
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    hist.set_xlabel("predicted probability")
    hist.set_ylabel("count")
    for a in (ax, hist):
        a.spines[["top", "right"]].set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path)
