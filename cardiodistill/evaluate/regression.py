"""Agreement of a continuous prediction with the truth (LVEF and the like): metrics with bootstrap CIs, a ridge
probe, and the scatter + Bland-Altman figure.

:func:`regression_metrics` scores paired values ``y_true``, ``y_pred`` (any unit, e.g. LVEF in %): MAE, RMSE,
Pearson r, R^2 and the Bland-Altman bias (mean of ``pred - true``), SD of the differences and 95 % limits of
agreement (``bias -+ 1.96 SD``). Every number comes with a percentile bootstrap interval over records, computed
for a whole batch of resamples in one vectorised call (as :mod:`~cardiodistill.evaluate.metrics` does for AUROC).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..io.atomic import atomic_path

__all__ = ["LOA_Z", "plot_agreement", "plot_bland_altman", "regression_metrics", "ridge_probe", "save_figure"]

LOA_Z = 1.96  # half-width of the Bland-Altman 95 % limits of agreement, in SDs of the differences
_METRICS = ("mae", "rmse", "pearson_r", "r2", "bias", "sd_diff", "loa_low", "loa_high")


def _paired(y_true, y_pred) -> tuple[np.ndarray, np.ndarray, int]:
    """The pairs ``(true, pred)`` [n] where both are finite, and how many pairs were dropped."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.ndim != 1 or t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} must both be 1-D of the same length")
    keep = np.isfinite(t) & np.isfinite(p)
    if keep.sum() < 3:
        raise ValueError(f"need at least 3 pairs with both values finite, got {int(keep.sum())} of {len(t)}")
    return t[keep], p[keep], int((~keep).sum())


def _metric_rows(t: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of each row of ``t``, ``p`` [B, n]: arrays [B], NaN where undefined (r, R^2 of a constant row)."""
    d = p - t
    bias = d.mean(axis=1)
    sd = d.std(axis=1, ddof=1)
    tc = t - t.mean(axis=1, keepdims=True)
    pc = p - p.mean(axis=1, keepdims=True)
    ss_t = (tc**2).sum(axis=1)
    ss_p = (pc**2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where((ss_t > 0) & (ss_p > 0), (tc * pc).sum(axis=1) / np.sqrt(ss_t * ss_p), np.nan)
        r2 = np.where(ss_t > 0, 1.0 - (d**2).sum(axis=1) / ss_t, np.nan)
    return {
        "mae": np.abs(d).mean(axis=1),
        "rmse": np.sqrt((d**2).mean(axis=1)),
        "pearson_r": np.clip(r, -1.0, 1.0),
        "r2": r2,
        "bias": bias,
        "sd_diff": sd,
        "loa_low": bias - LOA_Z * sd,
        "loa_high": bias + LOA_Z * sd,
    }


def _json_float(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def regression_metrics(
    y_true, y_pred, *, n_boot: int = 1000, seed: int = 0, ci: float = 0.95, chunk: int = 256
) -> dict[str, Any]:
    """Agreement of ``y_pred`` with ``y_true`` (both [N], same unit) with percentile bootstrap intervals over records.

    Pairs where either value is NaN or infinite are dropped (counted in ``n_dropped``); fewer than 3 pairs left
    raise ``ValueError``. Returns a JSON-ready dict: ``n``, ``n_dropped``, ``n_boot``, ``ci``, ``seed`` and, for each
    of ``mae``, ``rmse``, ``pearson_r``, ``r2``, ``bias`` (mean of ``pred - true``), ``sd_diff`` (sample SD of the
    differences), ``loa_low`` / ``loa_high`` (``bias -+ 1.96 sd_diff``), a dict ``{"value", "ci_low", "ci_high"}``.
    A value that is undefined (r or R^2 with a constant ``y_true``) is ``None``, as is every interval when
    ``n_boot=0``. Resamples where a metric is undefined are left out of its interval.
    """
    if not 0.0 < ci < 1.0:
        raise ConfigError(f"ci must be in (0, 1), got {ci}")
    if n_boot < 0:
        raise ConfigError(f"n_boot must be 0 or more, got {n_boot}")
    t, p, n_dropped = _paired(y_true, y_pred)
    point = _metric_rows(t[None], p[None])
    boot: dict[str, list[np.ndarray]] = {name: [] for name in _METRICS}
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, len(t), size=(min(chunk, n_boot - start), len(t)))
        for name, values in _metric_rows(t[idx], p[idx]).items():
            boot[name].append(values)
    out: dict[str, Any] = {"n": len(t), "n_dropped": n_dropped, "n_boot": n_boot, "ci": ci, "seed": seed}
    tail = (1.0 - ci) / 2.0
    for name in _METRICS:
        values = np.concatenate(boot[name]) if n_boot else np.empty(0)
        values = values[np.isfinite(values)]
        lo, hi = np.quantile(values, [tail, 1.0 - tail]) if len(values) else (np.nan, np.nan)
        out[name] = {"value": _json_float(point[name][0]), "ci_low": _json_float(lo), "ci_high": _json_float(hi)}
    return out


def ridge_probe(
    x_train,
    y_train,
    x_test,
    *,
    alphas: Sequence[float] = (0.1, 1, 10, 100, 1000),
    folds: int = 5,
    seed: int = 0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Ridge regression on standardised features, ``alpha`` chosen by ``folds``-fold CV (MSE) on the training set.

    ``x_train`` [N, D], ``y_train`` [N] (rows with a non-finite target are dropped), ``x_test`` [M, D]. The scaler
    is refitted inside every CV fold and the test set is only ever predicted, never looked at. Returns
    ``(pred_test [M], info)`` with ``info`` = ``{"alpha", "alphas", "folds", "cv_rmse", "n_train", "n_dropped"}``.
    """
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV, KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(x_train, dtype=np.float64)
    y = np.asarray(y_train, dtype=np.float64)
    x_eval = np.asarray(x_test, dtype=np.float64)
    if x.ndim != 2 or x_eval.ndim != 2 or y.shape != (len(x),) or x_eval.shape[1] != x.shape[1]:
        raise ValueError(f"expected x_train [N, D], y_train [N], x_test [M, D]; got {x.shape}, {y.shape}, {x_eval.shape}")
    if not alphas or min(alphas) <= 0:
        raise ConfigError(f"alphas must be a non-empty list of positive values, got {list(alphas)}")
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    if not 2 <= folds <= len(y):
        raise ConfigError(f"folds must be between 2 and the {len(y)} training records with a target, got {folds}")
    search = GridSearchCV(
        make_pipeline(StandardScaler(), Ridge()),
        {"ridge__alpha": [float(a) for a in alphas]},
        scoring="neg_mean_squared_error",
        cv=KFold(n_splits=folds, shuffle=True, random_state=seed),
    )
    search.fit(x, y)
    info = {
        "alpha": float(search.best_params_["ridge__alpha"]),
        "alphas": [float(a) for a in alphas],
        "folds": folds,
        "cv_rmse": float(np.sqrt(-search.best_score_)),
        "n_train": len(y),
        "n_dropped": int((~keep).sum()),
    }
    return search.predict(x_eval), info


# ----------------------------------------------------------------------------------------------------- figures


def save_figure(fig, path: str | os.PathLike[str], *, dpi: int = 150) -> Path:
    """Write a matplotlib figure to a PNG atomically and close it; returns the path."""
    from ..viz import _plt

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    finally:
        _plt().close(fig)
    return path


def _fmt(value: float | None, units: str) -> str:
    """Three significant digits, never in scientific notation, with the unit."""
    if value is None:
        return "n/a"
    text = np.format_float_positional(value, precision=3, fractional=False, trim="-")
    return f"{text} {units}".rstrip()


def _point_size(n: int) -> tuple[float, float]:
    """Marker size and opacity that keep a scatter of ``n`` points readable."""
    return float(np.clip(3000 / n, 3, 25)), float(np.clip(300 / n, 0.2, 0.9))


def _scatter_panel(ax, t: np.ndarray, p: np.ndarray, m: dict[str, Any], units: str) -> None:
    size, alpha = _point_size(len(t))
    lo, hi = min(t.min(), p.min()), max(t.max(), p.max())
    pad = 0.05 * (hi - lo or 1.0)
    lims = (lo - pad, hi + pad)
    r = m["pearson_r"]["value"]
    label = f"n = {len(t)}, MAE {_fmt(m['mae']['value'], units)}, r = {'n/a' if r is None else f'{r:.2f}'}"
    ax.scatter(t, p, s=size, alpha=alpha, color="tab:blue", lw=0, label=label)
    ax.plot(lims, lims, color="k", lw=0.8, ls="--", label="identity")
    ax.set_xlim(lims)
    ax.set_ylim(lims)
    ax.set_aspect("equal")
    suffix = f" ({units})" if units else ""
    ax.set_xlabel(f"true{suffix}")
    ax.set_ylabel(f"predicted{suffix}")
    ax.legend(loc="upper left", fontsize=8, frameon=False)


_LABEL_BOX = {"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 1}  # keeps line labels readable


def _bland_altman_panel(ax, t: np.ndarray, p: np.ndarray, m: dict[str, Any], units: str) -> None:
    size, alpha = _point_size(len(t))
    ax.scatter((t + p) / 2.0, p - t, s=size, alpha=alpha, color="tab:blue", lw=0)
    lines = (
        ("bias", m["bias"]["value"], "-"),
        (f"+{LOA_Z} SD", m["loa_high"]["value"], "--"),
        (f"-{LOA_Z} SD", m["loa_low"]["value"], "--"),
    )
    for name, value, style in lines:
        ax.axhline(value, color="tab:red", lw=1.0, ls=style)
        ax.text(0.99, value, f"{name} {_fmt(value, units)}", transform=ax.get_yaxis_transform(), ha="right",
                va="bottom", fontsize=8, color="tab:red", bbox=_LABEL_BOX)
    ax.axhline(0.0, color="0.6", lw=0.6)
    suffix = f" ({units})" if units else ""
    ax.set_xlabel(f"mean of true and predicted{suffix}")
    ax.set_ylabel(f"predicted - true{suffix}")


_PANELS = {"scatter": _scatter_panel, "bland_altman": _bland_altman_panel}


def plot_agreement(
    y_true,
    y_pred,
    path: str | os.PathLike[str],
    *,
    title: str = "",
    units: str = "%",
    panels: Sequence[str] = ("scatter", "bland_altman"),
) -> Path:
    """Write the agreement figure to a PNG atomically; returns the path.

    ``y_true``, ``y_pred`` [N] in ``units`` (pairs with a non-finite value are left out). Panels, side by side in
    the order given: ``"scatter"`` (predicted vs true, identity line, n / MAE / r in the legend) and
    ``"bland_altman"`` (difference vs mean, the bias and the 95 % limits of agreement labelled with their values).
    """
    from ..viz import _plt

    unknown = [name for name in panels if name not in _PANELS]
    if not panels or unknown:
        raise ConfigError(f"panels must be a non-empty list of {sorted(_PANELS)}, got {list(panels)}")
    t, p, _ = _paired(y_true, y_pred)
    m = regression_metrics(t, p, n_boot=0)
    fig, axes = _plt().subplots(1, len(panels), figsize=(5.0 * len(panels), 4.6), squeeze=False)
    for ax, name in zip(axes[0], panels):
        _PANELS[name](ax, t, p, m, units)
        ax.spines[["top", "right"]].set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_bland_altman(
    y_true, y_pred, path: str | os.PathLike[str], *, title: str = "", units: str = "%"
) -> Path:
    """Write the Bland-Altman panel of :func:`plot_agreement` alone to a PNG atomically; returns the path."""
    return plot_agreement(y_true, y_pred, path, title=title, units=units, panels=("bland_altman",))
