"""Clinical metrics of a binary or multi-label classifier, with bootstrap confidence intervals.

:func:`binary_metrics` reports what a clinician asks of a test: discrimination (AUROC, AUPRC) and, at one operating
threshold, sensitivity, specificity, PPV, NPV, F1 and balanced accuracy, plus the prevalence. Every number comes
with a percentile bootstrap interval over patients; all metrics share the same resamples, and a whole batch of
resamples is scored in one vectorised call (the style of :mod:`~cardiodistill.evaluate.metrics`). A record is
called positive when ``p >= threshold``.

:func:`multilabel_metrics` does this per label (NaN labels are unlabelled and masked) plus a macro average,
:func:`subgroup_metrics` per subgroup (sex, age band, site), :func:`choose_threshold` picks the operating point on a
validation set, :func:`paired_difference` is the bootstrap difference of two models scored on the same patients,
and :func:`recall_at_k` scores cross-modal retrieval (ECG -> echo embeddings).

Every interval is a dict ``{"value", "ci_low", "ci_high"}`` (the key names :mod:`~cardiodistill.evaluate.regression`
and every report use). AUROC and AUPRC intervals also say where they stand against chance (AUROC 0.5; AUPRC the
prevalence): ``"chance"`` and ``"vs_chance"``, one of ``"above"``, ``"not distinguishable"`` (the interval includes
chance) or ``"below"``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import rankdata

from ..errors import ConfigError, DataError
from .metrics import auroc
from .regression import save_figure

__all__ = [
    "BINARY_METRICS",
    "CHANCE_VERDICTS",
    "MIN_SUBGROUP_N",
    "age_bands",
    "binary_metrics",
    "choose_threshold",
    "multilabel_metrics",
    "paired_difference",
    "plot_label_fraction_curve",
    "plot_roc",
    "recall_at_k",
    "subgroup_metrics",
]

#: Keys of :func:`binary_metrics` that hold a ``{"value", "ci_low", "ci_high"}`` dict, in report order.
BINARY_METRICS = ("auroc", "auprc", "sensitivity", "specificity", "ppv", "npv", "f1", "balanced_accuracy",
                  "prevalence")
_RANK_METRICS = ("auroc", "auprc")
_OPERATING_METRICS = ("sensitivity", "specificity", "ppv", "npv", "f1", "balanced_accuracy")
#: ``"vs_chance"`` of an interval: above chance, not distinguishable from it (the interval includes it), below it.
CHANCE_VERDICTS = ("above", "not distinguishable", "below")
MIN_SUBGROUP_N = 10  # fewer patients than this in a subgroup: no metrics, only a note
_THRESHOLD_RULES = ("youden", "f1", "sensitivity")
_NAN = float("nan")
_MAX_CHUNK_ELEMENTS = 1 << 22  # bound on resamples x patients x labels scored in one vectorised call (memory)

Seed = int | np.random.Generator


# ------------------------------------------------------------------------------------------------ inputs


def _check_bootstrap(n_boot: int, alpha: float) -> None:
    if n_boot < 0:
        raise ConfigError(f"n_boot must be 0 or more, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")


def _labels_and_scores(y: ArrayLike, p: ArrayLike, ndim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(labels bool, scores float, labelled mask)`` of equal shape; NaN labels are unlabelled.

    Raises :class:`DataError` for a label other than 0, 1 or NaN, or a non-finite score where a label is given.
    """
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if y.ndim != ndim or y.shape != p.shape:
        shape = "[n]" if ndim == 1 else "[n, C]"
        raise ValueError(f"labels {y.shape} and predictions {p.shape} must both be {shape}")
    labelled = ~np.isnan(y)
    bad = labelled & (y != 0) & (y != 1)
    if bad.any():
        raise DataError(f"labels must be 0, 1 or NaN (unlabelled); got {np.unique(y[bad])[:5].tolist()}")
    if not np.isfinite(p[labelled]).all():
        raise DataError(f"{int((~np.isfinite(p[labelled])).sum())} predictions are NaN or infinite for labelled records")
    return y == 1, np.where(labelled, p, 0.0), labelled


# ------------------------------------------------------------------------------ vectorised metric rows [B, n]


def _auroc_rows(y: np.ndarray, s: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """AUROC [B] of each row of scores ``s`` [B, n] against labels ``y`` [B, n] over the ``valid`` entries.

    The rank (Mann-Whitney U) AUROC of :mod:`~cardiodistill.evaluate.metrics` with a mask: invalid entries get the
    score +inf, so they rank above every valid one and leave the valid ranks as if they were absent.
    NaN where a row has one class.
    """
    pos = y & valid
    ranks = rankdata(np.where(valid, s, np.inf), axis=1)
    n_pos = pos.sum(axis=1)
    n_neg = valid.sum(axis=1) - n_pos
    u = np.where(pos, ranks, 0.0).sum(axis=1) - n_pos * (n_pos + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def _ap_rows(y: np.ndarray, s: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Average precision [B] of each row over the ``valid`` entries, step-wise as sklearn's
    ``average_precision_score``: ``sum_k (R_k - R_{k-1}) P_k`` over the distinct thresholds (tied scores form one
    threshold). Invalid entries get the score -inf, i.e. sort after every valid one. NaN where a row has one class.
    """
    key = np.where(valid, s, -np.inf)
    order = np.argsort(-key, axis=1, kind="stable")
    key = np.take_along_axis(key, order, axis=1)
    pos = np.take_along_axis(y & valid, order, axis=1)
    n = key.shape[1]
    tps = np.cumsum(pos, axis=1)
    # index of the last record of each record's tie group: the precision at that group's threshold counts
    is_last = np.ones(key.shape, dtype=bool)
    is_last[:, :-1] = key[:, :-1] != key[:, 1:]
    last = np.where(is_last, np.arange(n), n)
    group_end = np.minimum.accumulate(last[:, ::-1], axis=1)[:, ::-1]
    precision = np.take_along_axis(tps, group_end, axis=1) / (group_end + 1.0)
    n_pos = pos.sum(axis=1)
    n_neg = valid.sum(axis=1) - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), np.where(pos, precision, 0.0).sum(axis=1) / n_pos, np.nan)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den``, NaN where ``den`` is 0 (counts are never fractional, so the clip to 1 changes nothing else)."""
    return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def _binary_rows(y: np.ndarray, s: np.ndarray, threshold: float | None) -> dict[str, np.ndarray]:
    """Every metric of :data:`BINARY_METRICS` for each row of ``y``, ``s`` [B, n]: arrays [B], NaN where undefined
    (the operating-point metrics everywhere when ``threshold`` is None: no operating point was chosen)."""
    valid = np.ones(y.shape, dtype=bool)
    rows = {
        "auroc": _auroc_rows(y, s, valid),
        "auprc": _ap_rows(y, s, valid),
        "prevalence": _ratio(y.sum(axis=1), np.full(len(y), y.shape[1])),
    }
    if threshold is None:
        rows.update({name: np.full(len(y), np.nan) for name in _OPERATING_METRICS})
        return rows
    called = s >= threshold
    tp = (called & y).sum(axis=1)
    fp = (called & ~y).sum(axis=1)
    fn = (~called & y).sum(axis=1)
    tn = (~called & ~y).sum(axis=1)
    sens = _ratio(tp, tp + fn)
    spec = _ratio(tn, tn + fp)
    rows.update({
        "sensitivity": sens,
        "specificity": spec,
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "balanced_accuracy": (sens + spec) / 2.0,
    })
    return rows


def _interval(point: float, boot: np.ndarray, alpha: float, chance: float | None = None) -> dict[str, Any]:
    """``{"value", "ci_low", "ci_high"}``: the percentile interval of the finite bootstrap values (NaN when there
    are none). With a ``chance`` level (and an interval) also ``"chance"`` and ``"vs_chance"`` (module doc)."""
    boot = boot[np.isfinite(boot)]
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2]) if len(boot) and np.isfinite(point) else (_NAN, _NAN)
    out: dict[str, Any] = {"value": float(point), "ci_low": float(lo), "ci_high": float(hi)}
    if chance is not None and np.isfinite(chance) and np.isfinite(lo):
        out["chance"] = float(chance)
        above, undecided, below = CHANCE_VERDICTS
        out["vs_chance"] = above if lo > chance else below if hi < chance else undecided
    return out


def _chance(name: str, prevalence: float) -> float | None:
    """What a random score reaches on ``name``: AUROC 0.5, AUPRC the prevalence; None for other metrics."""
    return 0.5 if name == "auroc" else prevalence if name == "auprc" else None


def _bootstrap(n: int, n_boot: int, seed: Seed, chunk: int, width: int = 1) -> Iterator[np.ndarray]:
    """Resample indices [b, n] (with replacement), ``n_boot`` rows in all, in chunks of at most ``chunk`` rows and
    at most :data:`_MAX_CHUNK_ELEMENTS` elements of ``n * width`` per row (``width``: labels scored per resample)."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(chunk, _MAX_CHUNK_ELEMENTS // max(1, n * width)))
    for start in range(0, n_boot if n else 0, chunk):
        yield rng.integers(0, n, size=(min(chunk, n_boot - start), n))


# ---------------------------------------------------------------------------------------------- binary


def binary_metrics(
    y: ArrayLike,
    p: ArrayLike,
    *,
    threshold: float | None = 0.5,
    n_boot: int = 1000,
    seed: Seed = 0,
    alpha: float = 0.05,
    chunk: int = 256,
) -> dict[str, Any]:
    """Discrimination and operating-point metrics of predictions ``p`` [n] for labels ``y`` [n] (0/1, NaN =
    unlabelled and left out), with ``(1 - alpha)`` percentile bootstrap intervals over patients.

    A patient is called positive when ``p >= threshold``; ``threshold=None`` (no operating point could be chosen,
    e.g. a validation split without positives) leaves the operating-point metrics NaN. Returns ``n``, ``n_pos``
    (labelled patients, positives), ``threshold``, ``n_boot`` and, for each key of :data:`BINARY_METRICS` (AUROC;
    AUPRC = average precision, step-wise as sklearn's ``average_precision_score``; sensitivity, specificity, PPV,
    NPV, F1 and balanced accuracy at the threshold; prevalence), a dict ``{"value", "ci_low", "ci_high"}``; AUROC
    and AUPRC also carry ``"chance"`` and ``"vs_chance"`` (module doc). All metrics are scored on the same
    resamples, by the same function as the point estimate; a resample where a metric is undefined (one class drawn
    for AUROC / AUPRC, no positive call for PPV) is left out of that metric's interval. Undefined values are NaN,
    never an error: with one class present AUROC and AUPRC are NaN. ``n_boot=0`` gives NaN intervals.
    """
    _check_bootstrap(n_boot, alpha)
    y_all, s_all, labelled = _labels_and_scores(y, p, ndim=1)
    yb, s = y_all[labelled], s_all[labelled]
    threshold = None if threshold is None or not np.isfinite(threshold) else float(threshold)
    point = _binary_rows(yb[None], s[None], threshold)
    boot: dict[str, list[np.ndarray]] = {name: [] for name in BINARY_METRICS}
    for idx in _bootstrap(len(yb), n_boot, seed, chunk):
        for name, values in _binary_rows(yb[idx], s[idx], threshold).items():
            boot[name].append(values)
    out: dict[str, Any] = {"n": len(yb), "n_pos": int(yb.sum()), "threshold": threshold, "n_boot": n_boot}
    prevalence = float(point["prevalence"][0])
    for name in BINARY_METRICS:
        values = np.concatenate(boot[name]) if boot[name] else np.empty(0)
        out[name] = _interval(point[name][0], values, alpha, _chance(name, prevalence))
    return out


def paired_difference(
    y: ArrayLike,
    p_a: ArrayLike,
    p_b: ArrayLike,
    metric: str = "auroc",
    *,
    n_boot: int = 1000,
    seed: Seed = 0,
    alpha: float = 0.05,
    chunk: int = 256,
) -> dict[str, Any]:
    """``metric(p_a) - metric(p_b)`` (``"auroc"`` or ``"auprc"``) of two models scored on the SAME patients, with a
    paired percentile bootstrap interval: every resample draws patients once and scores both models on them, so
    what the patients share (their difficulty) cancels and the interval is that of the difference itself.

    Returns ``{"value", "ci_low", "ci_high", "n", "n_pos"}``; resamples with one class are left out. An interval
    that includes 0 means the two models are not distinguishable on these patients.
    """
    rows = {"auroc": _auroc_rows, "auprc": _ap_rows}
    if metric not in rows:
        raise ConfigError(f"paired_difference scores {sorted(rows)}, got {metric!r}")
    _check_bootstrap(n_boot, alpha)
    y_all, s_a, labelled = _labels_and_scores(y, p_a, ndim=1)
    _, s_b, _ = _labels_and_scores(y, p_b, ndim=1)
    yb, a, b = y_all[labelled], s_a[labelled], s_b[labelled]
    fn = rows[metric]

    def diff(idx: np.ndarray) -> np.ndarray:
        valid = np.ones(idx.shape, dtype=bool)
        return fn(yb[idx], a[idx], valid) - fn(yb[idx], b[idx], valid)

    point = diff(np.arange(len(yb))[None])[0]
    boot = [diff(idx) for idx in _bootstrap(len(yb), n_boot, seed, chunk, width=2)]
    out = _interval(point, np.concatenate(boot) if boot else np.empty(0), alpha)
    return {**out, "n": len(yb), "n_pos": int(yb.sum())}


def choose_threshold(y: ArrayLike, p: ArrayLike, rule: str = "youden", target: float = 0.9) -> float:
    """The operating threshold (``p >= threshold`` is positive) picked by ``rule`` on a VALIDATION set.

    Pick it on validation predictions, never on the test set, whose metrics would otherwise be optimistic.
    ``"youden"``: maximises sensitivity + specificity - 1; ``"f1"``: maximises F1; ``"sensitivity"``: the highest
    threshold whose sensitivity is at least ``target`` (so the best specificity at that sensitivity, a rule-out
    test). The threshold is always one of the predicted values. NaN labels are left out; both classes are needed.
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    if rule not in _THRESHOLD_RULES:
        raise ConfigError(f"unknown threshold rule {rule!r}: use one of {list(_THRESHOLD_RULES)}")
    if rule == "sensitivity" and not 0.0 < target <= 1.0:
        raise ConfigError(f"target sensitivity must be in (0, 1], got {target}")
    y_all, s_all, labelled = _labels_and_scores(y, p, ndim=1)
    yb, s = y_all[labelled], s_all[labelled]
    if yb.all() or not yb.any():
        raise DataError(f"choosing a threshold needs both classes; got {int(yb.sum())} positives of {len(yb)}")
    if rule == "f1":
        precision, recall, thresholds = precision_recall_curve(yb, s)
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.nan_to_num(2 * precision * recall / (precision + recall))[:-1]  # the last point has no threshold
        return float(thresholds[np.argmax(f1)])
    fpr, tpr, thresholds = roc_curve(yb, s, drop_intermediate=False)
    fpr, tpr, thresholds = fpr[1:], tpr[1:], thresholds[1:]  # the first point (threshold +inf) calls nobody positive
    if rule == "youden":
        return float(thresholds[np.argmax(tpr - fpr)])
    return float(thresholds[np.argmax(tpr >= target - 1e-12)])


# ------------------------------------------------------------------------------------------ multi-label


def _macro_rank_rows(y: np.ndarray, s: np.ndarray, labelled: np.ndarray, idx: np.ndarray,
                     include: np.ndarray) -> dict[str, np.ndarray]:
    """Macro AUROC and AUPRC [b] of the resamples ``idx`` [b, n] of ``y``, ``s``, ``labelled`` [n, C]: the mean over
    the labels ``include`` [C] (bool), NaN in a resample where one of them has a single class.

    The point estimate is this function on the identity resample ``arange(n)[None]``, so it and every bootstrap
    value average the same labels with the same AUROC / AUPRC (see :func:`multilabel_metrics`).
    """
    cols = np.flatnonzero(include)
    b, k = len(idx), len(cols)
    if k == 0:
        return {name: np.full(b, np.nan) for name in _RANK_METRICS}
    rows = [a[:, cols][idx].transpose(0, 2, 1).reshape(b * k, -1) for a in (y, s, labelled)]  # [b * k, n]
    out = {}
    for name, fn in (("auroc", _auroc_rows), ("auprc", _ap_rows)):
        scores = fn(*rows).reshape(b, k)
        out[name] = scores.mean(axis=1)  # NaN when any included label is undefined in the resample
    return out


def _macro_rank_metrics(
    y: np.ndarray, s: np.ndarray, labelled: np.ndarray, n_boot: int, seed: Seed, alpha: float, chunk: int
) -> dict[str, Any]:
    """Macro AUROC and AUPRC over the labels of ``y``, ``s``, ``labelled`` [n, C], bootstrapped over patients.

    Label-inclusion rule: the labels with both classes among the labelled test patients are averaged, in the point
    estimate AND in every resample; a resample that draws one class of an included label is left out (its macro is
    undefined), never averaged over fewer labels. (Averaging each resample over the labels it happens to be able to
    score drops a rare label, usually the hardest, from the resamples that miss its few positives, and shifts the
    interval away from the point: that is how a point estimate fell outside its own interval.)
    """
    n, n_labels = y.shape
    n_pos = (y & labelled).sum(axis=0)
    include = (n_pos > 0) & (n_pos < labelled.sum(axis=0))
    point = _macro_rank_rows(y, s, labelled, np.arange(n)[None], include)
    boot: dict[str, list[np.ndarray]] = {name: [] for name in _RANK_METRICS}
    for idx in _bootstrap(n, n_boot, seed, chunk, width=n_labels):
        for name, values in _macro_rank_rows(y, s, labelled, idx, include).items():
            boot[name].append(values)
    prevalence = _ratio(n_pos, labelled.sum(axis=0))
    chance = {"auroc": 0.5, "auprc": float(np.mean(prevalence[include])) if include.any() else None}
    out: dict[str, Any] = {"n_labels": int(include.sum())}
    for name in _RANK_METRICS:
        values = np.concatenate(boot[name]) if boot[name] else np.empty(0)
        out[name] = _interval(point[name][0], values, alpha, chance[name])
    out["n_boot_used"] = int(np.isfinite(np.concatenate(boot["auroc"])).sum()) if boot["auroc"] else 0
    return out


def multilabel_metrics(
    Y: ArrayLike,
    P: ArrayLike,
    names: Sequence[str],
    thresholds: float | Sequence[float] | None = None,
    *,
    n_boot: int = 1000,
    seed: Seed = 0,
    alpha: float = 0.05,
    chunk: int = 256,
) -> dict[str, dict[str, Any]]:
    """:func:`binary_metrics` of each label of ``Y``, ``P`` [n, C] (NaN = unlabelled, masked per label), plus
    ``"macro"``: the mean AUROC and AUPRC over the labels with both classes, with a bootstrap over patients in which
    all labels are resampled together (the correlation between labels is kept).

    ``thresholds``: one value for all labels or one per label (0.5 when None); a NaN threshold (none could be chosen
    on validation) leaves that label's operating-point metrics NaN. ``"macro"`` holds ``n_labels`` (the labels
    averaged), ``n_boot_used`` (the resamples in the interval) and ``auroc``, ``auprc`` as ``{"value", "ci_low",
    "ci_high", "chance", "vs_chance"}``.

    The macro point estimate and its interval come from one function and one label-inclusion rule: the labels with
    both classes among the labelled patients are averaged in the point estimate and in every resample, and a
    resample in which one of them draws a single class is left out, as :func:`binary_metrics` leaves out a resample
    with one class. The point is the statistic on the full sample, the interval the percentiles of the same
    statistic on the resamples; for a skewed statistic such a percentile interval can still exclude the point,
    but never because the two average different labels.
    """
    _check_bootstrap(n_boot, alpha)
    y, s, labelled = _labels_and_scores(Y, P, ndim=2)
    names = [str(name) for name in names]
    if len(names) != y.shape[1] or len(set(names)) != len(names) or "macro" in names:
        raise ConfigError(f"need {y.shape[1]} distinct label names other than 'macro', got {names}")
    cuts = np.broadcast_to(np.asarray(0.5 if thresholds is None else thresholds, dtype=np.float64), (y.shape[1],))
    cuts = [float(c) if np.isfinite(c) else None for c in cuts]
    out: dict[str, dict[str, Any]] = {}
    for c, name in enumerate(names):
        y_c = np.where(labelled[:, c], y[:, c], np.nan)
        out[name] = binary_metrics(y_c, s[:, c], threshold=cuts[c], n_boot=n_boot, seed=seed, alpha=alpha,
                                   chunk=chunk)
    out["macro"] = _macro_rank_metrics(y, s, labelled, n_boot, seed, alpha, chunk)
    return out


# -------------------------------------------------------------------------------------------- subgroups


def _group_names(values: ArrayLike) -> np.ndarray:
    """Group labels as strings [n]; missing ones (None, NaN, "") become ``"missing"``."""
    import pandas as pd

    values = np.asarray(values, dtype=object)
    text = np.array([str(v) for v in values], dtype=object)
    missing = pd.isna(values) | (text == "")
    return np.where(missing, "missing", text)


def subgroup_metrics(
    y: ArrayLike,
    p: ArrayLike,
    groups: Mapping[str, ArrayLike],
    threshold: float = 0.5,
    *,
    min_n: int = MIN_SUBGROUP_N,
    n_boot: int = 1000,
    seed: Seed = 0,
    alpha: float = 0.05,
    chunk: int = 256,
) -> list[dict[str, Any]]:
    """:func:`binary_metrics` within each group of each subgroup variable, one row per group.

    ``groups`` maps a variable name to its group label per patient [n] (e.g. ``{"sex": ..., "age":
    age_bands(age)}``); missing labels form the group ``"missing"``. A row is ``{"subgroup", "group", "n", "n_pos",
    <metric>: {"value", "ci_low", "ci_high"} ...}`` counting labelled patients. A group with fewer than ``min_n``
    labelled patients or with one class has NaN metrics and a ``"note"`` saying why. Rows follow the order of
    ``groups``, then the sorted group labels.
    """
    y_all, s_all, labelled = _labels_and_scores(y, p, ndim=1)
    y_arr = np.where(labelled, y_all, np.nan)
    nan_cell = {"value": _NAN, "ci_low": _NAN, "ci_high": _NAN}
    rows: list[dict[str, Any]] = []
    for variable, values in groups.items():
        labels = _group_names(values)
        if labels.shape != y_arr.shape:
            raise ValueError(f"subgroup {variable!r} has {labels.shape} labels for {y_arr.shape} patients")
        for group in sorted(set(labels.tolist())):
            sel = labels == group
            y_g = y_arr[sel]
            n = int((~np.isnan(y_g)).sum())
            n_pos = int(np.nansum(y_g == 1))
            row: dict[str, Any] = {"subgroup": str(variable), "group": group, "n": n, "n_pos": n_pos}
            if n < min_n or n_pos in (0, n):
                why = f"fewer than {min_n} patients" if n < min_n else "only one class"
                row.update({name: dict(nan_cell) for name in BINARY_METRICS})
                row["note"] = f"not scored: {why} ({n} patients, {n_pos} positive)"
            else:
                m = binary_metrics(y_g, s_all[sel], threshold=threshold, n_boot=n_boot, seed=seed, alpha=alpha,
                                   chunk=chunk)
                row.update({name: m[name] for name in BINARY_METRICS})
            rows.append(row)
    return rows


def age_bands(age: ArrayLike, edges: Sequence[float] = (40, 60, 75)) -> np.ndarray:
    """Age band label per patient [n] for ages in years: with the default edges ``"<40"``, ``"40-59"``,
    ``"60-74"``, ``">=75"`` (a band includes its lower edge); NaN ages give ``"missing"``. Integer edges are printed
    as whole years (``a-(b-1)``), others as ``"a-<b"``.
    """
    edges = [float(e) for e in edges]
    if not edges or np.any(np.diff(edges) <= 0):
        raise ConfigError(f"age band edges must be increasing, got {edges}")
    whole = all(e.is_integer() for e in edges)
    names = [f"<{edges[0]:g}"]
    for lo, hi in pairwise(edges):
        names.append(f"{lo:g}-{hi - 1:g}" if whole else f"{lo:g}-<{hi:g}")
    names.append(f">={edges[-1]:g}")
    age = np.asarray(age, dtype=np.float64)
    bands = np.asarray(names)[np.digitize(np.nan_to_num(age, nan=0.0), edges)]
    return np.where(np.isnan(age), "missing", bands)


# -------------------------------------------------------------------------------------------- retrieval


def recall_at_k(
    query: ArrayLike,
    gallery: ArrayLike,
    ks: Sequence[int] = (1, 5, 10),
    *,
    chunk: int = 1024,
    n_boot: int = 1000,
    seed: Seed = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Cross-modal retrieval of ``gallery`` [n, D] rows by ``query`` [n, D] rows under cosine similarity, where
    row i's match is gallery row i.

    The rank of the match is 1 + the number of OTHER gallery rows at least as similar (ties count against the
    model, so a collapsed embedding scores chance, not perfection). Returns ``"recall@k"`` (fraction of queries
    whose match ranks <= k) as ``{"value", "ci_low", "ci_high"}``, ``"chance@k"`` (``k / n``, what random
    embeddings give) for each k, and ``"median_rank"``. The interval is a percentile bootstrap over the queries
    (patients), each keeping its rank among the whole gallery; ``n_boot=0`` gives NaN bounds.
    """
    _check_bootstrap(n_boot, alpha)
    q = np.asarray(query, dtype=np.float64)
    g = np.asarray(gallery, dtype=np.float64)
    if q.ndim != 2 or q.shape != g.shape or len(q) == 0:
        raise ValueError(f"query {q.shape} and gallery {g.shape} must both be [n, D] with n >= 1")
    if not (np.isfinite(q).all() and np.isfinite(g).all()):
        raise DataError("embeddings contain NaN or infinite values")
    if any(int(k) < 1 for k in ks):
        raise ConfigError(f"ks must be positive, got {list(ks)}")
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    n = len(q)
    ranks = np.empty(n, dtype=np.int64)
    for start in range(0, n, chunk):
        sim = q[start:start + chunk] @ g.T  # [b, n]
        rows = np.arange(len(sim))
        own = sim[rows, start + rows]
        ranks[start:start + chunk] = (sim >= own[:, None]).sum(axis=1)  # counts the match itself: rank 1 if alone
    hits = {int(k): ranks <= int(k) for k in ks}
    boot: dict[int, list[np.ndarray]] = {k: [] for k in hits}
    for idx in _bootstrap(n, n_boot, seed, 256, width=len(hits)):
        for k, hit in hits.items():
            boot[k].append(hit[idx].mean(axis=1))
    out: dict[str, Any] = {}
    for k, hit in hits.items():
        out[f"recall@{k}"] = _interval(float(hit.mean()), np.concatenate(boot[k]) if boot[k] else np.empty(0), alpha)
    for k in hits:
        out[f"chance@{k}"] = min(1.0, k / n)
    out["median_rank"] = float(np.median(ranks))
    return out


# ---------------------------------------------------------------------------------------------- figures


def plot_label_fraction_curve(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    ylabel: str = "macro AUROC",
    *,
    title: str = "",
) -> Path:
    """Metric vs the fraction of labelled training data, one line per method with its CI band; PNG written
    atomically, returns the path.

    ``rows``: dicts ``{"method", "fraction" (0-1], "auroc", "ci_low", "ci_high"}`` (NaN bounds draw no band). The x axis
    is in percent of the labels, logarithmic when the fractions span a factor of 10 or more.
    """
    from ..viz import _plt

    if not rows:
        raise ConfigError("plot_label_fraction_curve needs at least one row")
    keys = ("method", "fraction", "auroc", "ci_low", "ci_high")
    missing = [key for key in keys if any(key not in r for r in rows)]
    if missing:
        raise ConfigError(f"label-fraction rows need the keys {', '.join(keys)}; missing {missing}")
    fig, ax = _plt().subplots(figsize=(6.0, 4.2))
    methods = list(dict.fromkeys(str(r["method"]) for r in rows))
    for i, method in enumerate(methods):
        sel = sorted((r for r in rows if str(r["method"]) == method), key=lambda r: float(r["fraction"]))
        x = 100.0 * np.array([float(r["fraction"]) for r in sel])
        y, lo, hi = (np.array([float(r[key]) for r in sel]) for key in ("auroc", "ci_low", "ci_high"))
        color = f"C{i % 10}"
        ax.plot(x, y, marker="o", ms=4, color=color, label=method)
        ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0)
    fractions = np.array([float(r["fraction"]) for r in rows])
    if fractions.min() > 0 and fractions.max() / fractions.min() >= 10:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(_plt().FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("labelled training data (%)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, lw=0.5)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


#: Line styles and markers cycled by the ROC curves, so that curves which coincide stay distinguishable.
_CURVE_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 1, 1, 1)), "v"), ((0, (1, 1)), "P"))


def plot_roc(
    curves: Mapping[str, tuple[ArrayLike, ArrayLike]], path: str | os.PathLike[str], *, title: str = ""
) -> Path:
    """ROC curves, one per name from its ``(y [n], p [n])`` (NaN labels left out), with the AUROC in the legend
    and the chance diagonal; PNG written atomically, returns the path. A curve with one class is listed as n/a.

    Each curve has its own colour, line style and markers (a few per curve), drawn over the earlier ones with
    decreasing width, so identical curves (two models at chance) stay visible; the legend sits below the axes,
    off the curves.
    """
    from sklearn.metrics import roc_curve

    from ..viz import _plt

    if not curves:
        raise ConfigError("plot_roc needs at least one curve")
    fig, ax = _plt().subplots(figsize=(5.6, 5.0 + 0.22 * (len(curves) + 1)))
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--", label="chance (AUROC 0.50)")
    for i, (name, (y, p)) in enumerate(curves.items()):
        style, marker = _CURVE_STYLES[i % len(_CURVE_STYLES)]
        kw = {"color": f"C{i % 10}", "ls": style, "marker": marker, "ms": 4, "mfc": "none"}
        y_all, s_all, labelled = _labels_and_scores(y, p, ndim=1)
        yb, s = y_all[labelled], s_all[labelled]
        if yb.all() or not yb.any():
            ax.plot([], [], **kw, label=f"{name} (AUROC n/a: one class)")
            continue
        fpr, tpr, _ = roc_curve(yb, s)
        auc = auroc(yb, s)
        ax.plot(fpr, tpr, lw=max(0.8, 2.2 - 0.3 * i), markevery=max(1, len(fpr) // 6), **kw,
                label=f"{name} (AUROC {auc:.3f}, n={len(yb)})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("1 - specificity (false-positive rate)")
    ax.set_ylabel("sensitivity (true-positive rate)")
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
