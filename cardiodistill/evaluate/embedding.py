"""Maps of a representation: a 2-D embedding of ``[N, D]`` features, coloured by labels, and how well labels cluster.

:func:`embedding_map` projects with PCA or t-SNE (scikit-learn), :func:`plot_embedding_map` draws one panel per
label (categorical labels with a legend, continuous ones such as LVEF with a colour bar), and
:func:`knn_label_agreement` puts a number on a map: how often a record's nearest neighbours in the full feature
space share its label, against what random neighbours would give.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from .regression import save_figure

__all__ = ["embedding_map", "knn_label_agreement", "plot_embedding_map"]

MAX_CATEGORIES = 10  # a numeric label with more distinct values than this is drawn as continuous
_TSNE_PCA_DIMS = 50


def _features(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 3:
        raise ValueError(f"expected features [N, D] with N >= 3, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values")
    return x


def embedding_map(x, *, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2-D coordinates [N, 2] of features ``x`` [N, D] (N >= 3, finite).

    ``"pca"``: the first two principal components. ``"tsne"``: t-SNE (PCA initialisation) with perplexity
    ``min(30, (N - 1) / 3)`` so small sets work, after a PCA to 50 dimensions when ``D > 50``. Deterministic
    under ``seed``.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = _features(x)
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method != "tsne":
        raise ConfigError(f"unknown embedding method {method!r}: use 'pca' or 'tsne'")
    if x.shape[1] > _TSNE_PCA_DIMS:
        x = PCA(n_components=min(_TSNE_PCA_DIMS, len(x)), random_state=seed).fit_transform(x)
    perplexity = max(1.0, min(30.0, (len(x) - 1) / 3.0))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def _is_continuous(values: np.ndarray, missing: np.ndarray) -> bool:
    """Numeric (not boolean) with more than :data:`MAX_CATEGORIES` distinct values."""
    if values.dtype.kind not in "iuf":
        return False
    return len(np.unique(values[~missing])) > MAX_CATEGORIES


def _categorical_panel(ax, xy: np.ndarray, values: np.ndarray, missing: np.ndarray, size: float, plt) -> None:
    categories, counts = np.unique(values[~missing].astype(str), return_counts=True)
    order = np.argsort(-counts, kind="stable")  # the largest group first, so small groups are drawn on top
    cmap = plt.get_cmap("tab10" if len(categories) <= 10 else "tab20")
    names = values.astype(str)
    for rank, i in enumerate(order):
        sel = ~missing & (names == categories[i])
        ax.scatter(*xy[sel].T, s=size, lw=0, alpha=0.8, color=cmap(rank % cmap.N),
                   label=f"{categories[i]} (n={counts[i]})")
    ax.legend(fontsize=7, markerscale=max(1.0, 20 / size), frameon=False, loc="best")


def plot_embedding_map(
    xy, labels: Mapping[str, Any], path: str | os.PathLike[str], *, title: str = "", ncols: int = 3
) -> Path:
    """Write a map of 2-D coordinates ``xy`` [N, 2], one panel per label, to a PNG atomically; returns the path.

    ``labels`` maps a name to values [N]: booleans, strings and numbers with at most :data:`MAX_CATEGORIES`
    distinct values are categorical (a colour and a legend entry per value, with its count); other numbers are
    continuous (viridis, with a colour bar). Missing values (NaN or None) are drawn in light grey underneath.
    """
    from ..viz import _plt

    plt = _plt()
    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"expected coordinates [N, 2], got {xy.shape}")
    if not labels:
        raise ValueError("no labels to colour the map by")
    if ncols < 1:
        raise ConfigError(f"ncols must be at least 1, got {ncols}")
    columns = {name: np.asarray(values) for name, values in labels.items()}
    wrong = {name: v.shape for name, v in columns.items() if v.shape != (len(xy),)}
    if wrong:
        raise ValueError(f"labels must be [N] = [{len(xy)}] like the coordinates, got {wrong}")
    ncols = min(ncols, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 4.2 * nrows), squeeze=False)
    size = float(np.clip(4000 / len(xy), 2, 30))
    for ax, (name, values) in zip(axes.ravel(), columns.items()):
        missing = np.asarray(pd.isna(values), dtype=bool)
        if missing.any():
            ax.scatter(*xy[missing].T, s=size, lw=0, color="0.85", label=f"missing (n={int(missing.sum())})")
        if _is_continuous(values, missing):
            points = ax.scatter(*xy[~missing].T, c=values[~missing].astype(np.float64), s=size, lw=0, cmap="viridis")
            fig.colorbar(points, ax=ax, fraction=0.046, pad=0.02)
            if missing.any():
                ax.legend(fontsize=7, frameon=False, loc="best")
        else:
            _categorical_panel(ax, xy, values, missing, size, plt)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.ravel()[len(columns) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def knn_label_agreement(x, labels, k: int = 10) -> dict[str, Any]:
    """How often a record's ``k`` nearest neighbours (Euclidean, in ``x`` [N, D]) share its categorical label [N].

    Records with a missing label (NaN or None) are left out. Returns a JSON-ready dict: ``agreement`` (the
    fraction of neighbours with the same label, averaged over records), ``chance`` (its expectation if the labels
    were shuffled: ``sum_c (n_c / n) (n_c - 1) / (n - 1)``, the base rate), ``lift`` (``agreement / chance``),
    ``k`` and ``n``.
    """
    from sklearn.neighbors import NearestNeighbors

    x = _features(x)
    y = np.asarray(labels)
    if y.shape != (len(x),):
        raise ValueError(f"labels must be [N] = [{len(x)}] like the features, got {y.shape}")
    keep = ~np.asarray(pd.isna(y), dtype=bool)
    x, y = x[keep], y[keep].astype(str)
    if not 1 <= k < len(y):
        raise ConfigError(f"k must be between 1 and {len(y) - 1} (records with a label less one), got {k}")
    neighbours = NearestNeighbors(n_neighbors=k).fit(x).kneighbors(return_distance=False)  # [n, k], self excluded
    agreement = float((y[neighbours] == y[:, None]).mean())
    _, counts = np.unique(y, return_counts=True)
    chance = float((counts * (counts - 1)).sum() / (len(y) * (len(y) - 1)))
    return {
        "agreement": agreement,
        "chance": chance,
        "lift": agreement / chance if chance > 0 else None,
        "k": k,
        "n": len(y),
    }
