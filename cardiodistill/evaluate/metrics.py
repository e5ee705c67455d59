"""Discrimination metrics with bootstrap confidence intervals.

AUROC is computed from ranks (the Mann-Whitney U statistic, ties counted as one half), which
lets a whole batch of bootstrap resamples be scored in one vectorised call. :func:`bootstrap_interval`
gives any other statistic of the records (a challenge score, a difference between two models scored
on the same records, a mean over training seeds) its percentile interval.
"""

from __future__ import annotations

from collections.abc import Callable

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


def _runs(y: np.ndarray, *scores: np.ndarray) -> list[np.ndarray]:
    """Each of ``scores`` as ``[R, n, C]`` runs (a ``[n, C]`` array is one run); ValueError unless they match
    ``y [n, C]`` and each other."""
    runs = [np.asarray(s, dtype=float) for s in scores]
    runs = [r[None] if r.ndim == 2 else r for r in runs]
    if y.ndim != 2 or any(r.ndim != 3 or r.shape[1:] != y.shape or len(r) != len(runs[0]) for r in runs):
        raise ValueError(f"y_true {y.shape} and scores {[np.shape(s) for s in scores]} must be [n, classes] "
                         "(or [runs, n, classes], the same number of runs)")
    return runs


def _macro_rows(y: np.ndarray, idx: np.ndarray, runs: np.ndarray) -> np.ndarray:
    """``[B]``: for each row of resample indices ``idx [B, n]``, the mean over ``runs [R, n, C]`` of the macro
    AUROC (over the classes scorable in it)."""
    with np.errstate(invalid="ignore"):
        per_run = [np.nanmean(np.stack([_auroc_rows(y[idx, c], run[idx, c]) for c in range(y.shape[1])], 1), 1)
                   for run in runs]
    return np.mean(per_run, axis=0)


def macro_auroc_ci(
    y_true, scores, *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float, float, list[float]]:
    """Macro-averaged AUROC of a multi-label task with a percentile bootstrap interval.

    ``y_true`` is ``[n, C]``, ``scores`` ``[n, C]`` or, for several runs of one method (training seeds),
    ``[R, n, C]``: the statistic is then the mean over the runs, and each resample scores every run on the same
    records. Records are resampled (all classes of a record together, so the correlation between labels is
    kept) and each resample's macro average is the mean over the classes scorable in it. Returns
    ``(macro, lo, hi, per_class)`` (per class: the mean over runs); classes with one label value only are NaN
    in ``per_class`` and left out of the macro average.
    """
    y = np.asarray(y_true).astype(bool)
    (runs,) = _runs(y, scores)
    per_class = [float(np.mean([auroc(y[:, c], run[:, c]) for run in runs])) for c in range(y.shape[1])]
    point = float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")
    if n_boot <= 0 or np.isnan(point):
        return point, float("nan"), float("nan"), per_class
    rng = np.random.default_rng(seed)
    macro = _macro_rows(y, rng.integers(0, len(y), size=(n_boot, len(y))), runs)
    macro = macro[np.isfinite(macro)]
    lo, hi = np.quantile(macro, [alpha / 2, 1 - alpha / 2])
    return point, float(lo), float(hi), per_class


def paired_macro_auroc_ci(
    y_true, scores_a, scores_b, *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0, groups=None
) -> tuple[float, float, float]:
    """Macro AUROC of ``scores_a`` minus that of ``scores_b`` on the same records, with a paired
    percentile bootstrap interval: each resample draws records once and scores both on them, so what
    the records share (their difficulty) cancels. Returns ``(difference, lo, hi)``; an interval that
    includes 0 means the two are not distinguishable on these records. Scores are ``[n, C]`` or, for several
    runs of each method (training seeds; as many for both), ``[R, n, C]``: the difference of their means over
    the runs.

    ``groups`` ``[n]`` (e.g. each record's cross-validation fold): the difference is the mean over the groups
    of the within-group differences, and each resample draws every group's records from that group. This is
    the comparison of recipes whose scores come from one model per group: pooling the groups would also rank
    one model's scores against another's, and so charge a recipe for how its models' scales differ."""
    y = np.asarray(y_true).astype(bool)
    a, b = _runs(y, scores_a, scores_b)
    parts = [np.arange(len(y))] if groups is None else [np.flatnonzero(np.asarray(groups) == g)
                                                          for g in np.unique(groups)]
    point = float(np.mean([macro_auroc_ci(y[r], a[:, r], n_boot=0)[0] - macro_auroc_ci(y[r], b[:, r], n_boot=0)[0]
                           for r in parts]))
    if n_boot <= 0 or np.isnan(point):
        return point, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    diffs = []
    for rows in parts:
        idx = rows[rng.integers(0, len(rows), size=(n_boot, len(rows)))]
        diffs.append(_macro_rows(y, idx, a) - _macro_rows(y, idx, b))  # the mean of the runs' differences
    diff = np.mean(diffs, axis=0)
    diff = diff[np.isfinite(diff)]
    lo, hi = np.quantile(diff, [alpha / 2, 1 - alpha / 2])
    return point, float(lo), float(hi)


def bootstrap_interval(
    statistic: Callable[[np.ndarray], float], n: int, *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> dict[str, float]:
    """``statistic(rows)`` on all ``n`` records and its percentile bootstrap interval:
    ``{"value", "ci_low", "ci_high"}``. Each resample draws ``n`` row indices with replacement and hands
    them to ``statistic``, so a statistic that scores two models (or several seeds of one) on those rows
    gets a paired interval: what the records share cancels. Resamples where the statistic is undefined
    (NaN, e.g. a class left out) are dropped; with none left the bounds are NaN."""
    rng = np.random.default_rng(seed)
    boot = np.array([statistic(rng.integers(0, n, n)) for _ in range(n_boot)], dtype=float)
    boot = boot[np.isfinite(boot)]
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2]) if len(boot) else (np.nan, np.nan)
    return {"value": float(statistic(np.arange(n))), "ci_low": float(lo), "ci_high": float(hi)}
