"""Does the fusion model fuse? Attention rollout by modality, and the relative source variance of its units.

Attention rollout (Abnar & Zuidema 2020)
    Each layer's attention ``[B, H, N, N]`` is averaged over heads, the identity is added for the
    residual connection and the rows are renormalised, ``A_l = norm(mean_h(W_l) + I)``; the layers are
    then chained, ``R = A_L ... A_2 A_1``, so ``R[b, i, j]`` is how much output token ``i`` draws on input
    token ``j``. Padded keys (``key_mask`` False) are zeroed in every layer before renormalising, so they
    carry no mass. :func:`modality_attention_share` sums ``R`` over the key tokens of each modality and
    averages over the query tokens of each modality: row ``a``, column ``b`` is the share of what tokens
    of modality ``a`` end up made of that comes from modality ``b``. A model that does not fuse has a
    diagonal share matrix.

Relative source variance (Kleinman et al., CVPR 2023; used for MultiMAE by the reference 004)
    The source variance of unit ``d`` to modality ``m`` at anchor sample ``a`` is the variance of the unit
    when modality ``m`` is taken from ``n_vary`` random samples while every other input stays fixed at
    ``a``. It is averaged over ``n_anchor`` anchors and normalised across modalities by a plain ratio,
    ``RSV_m = SV_m / sum_k SV_k``, as Kleinman et al. define it. (The reference 004 mentions a softmax over
    the source variances; a softmax of raw variances depends on each unit's scale, near-uniform for a
    unit with small activations and near one-hot for a large one, so it cannot be compared across units
    or models; the ratio is scale-free.) An RSV of ``1 / M`` for every modality is a unit that mixes all
    ``M`` sources equally; 1 is a unit that listens to one modality only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from .regression import save_figure

__all__ = [
    "attention_rollout",
    "modality_attention_share",
    "plot_modality_attention",
    "plot_rsv",
    "relative_source_variance",
]


# ------------------------------------------------------------------------------------------------ attention rollout


def attention_rollout(attentions: Sequence[Tensor], key_mask: Tensor | None = None) -> Tensor:
    """Rolled-out attention ``[B, N, N]`` (rows sum to 1) from per-layer attentions ``[B, H, N, N]``, first layer first.

    ``key_mask`` ``[B, N]`` bool, True for real tokens: padded tokens get zero mass as keys in every layer.
    """
    if not attentions:
        raise ValueError("attention_rollout needs the attentions of at least one layer")
    shape = attentions[0].shape
    if len(shape) != 4 or shape[-1] != shape[-2] or any(a.shape != shape for a in attentions):
        raise ValueError(f"expected attentions [B, H, N, N] of one shape, got {[tuple(a.shape) for a in attentions]}")
    n = shape[-1]
    dtype = torch.promote_types(attentions[0].dtype, torch.float32)
    eye = torch.eye(n, dtype=dtype, device=attentions[0].device)
    keep = None if key_mask is None else key_mask[:, None, :].to(dtype)
    rollout = None
    for attention in attentions:
        layer = attention.to(dtype).mean(dim=1) + eye
        if keep is not None:
            layer = layer * keep
        layer = layer / layer.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
        rollout = layer if rollout is None else layer @ rollout
    return rollout


def modality_attention_share(
    rollout: Tensor, token_modality: Tensor, n_modalities: int, key_mask: Tensor | None = None
) -> Tensor:
    """Share ``[M, M]`` of the rolled-out attention of modality-``a`` queries (row) on modality-``b`` keys (column).

    ``rollout`` ``[B, N, N]`` from :func:`attention_rollout`; ``token_modality`` ``[N]`` or ``[B, N]`` long, the
    modality index of each token in ``[0, n_modalities)``, or -1 for tokens of no modality (CLS, registers),
    which are neither counted as queries nor as keys (each query's mass is renormalised over the counted
    keys). Padded tokens (``key_mask`` ``[B, N]`` False) are left out the same way. Per sample the shares are
    averaged over the query tokens of each modality, then over the samples that have such tokens; rows sum
    to 1, and a modality no sample has gets a row of NaN.
    """
    if rollout.ndim != 3 or rollout.shape[1] != rollout.shape[2]:
        raise ValueError(f"expected a rollout [B, N, N], got shape {tuple(rollout.shape)}")
    batch, n, _ = rollout.shape
    modality = token_modality.to(rollout.device).long().expand(batch, n)
    if int(modality.max()) >= n_modalities or int(modality.min()) < -1:
        raise ValueError(f"token_modality must be in [-1, {n_modalities}), got values "
                         f"{int(modality.min())}..{int(modality.max())}")
    counted = modality >= 0 if key_mask is None else (modality >= 0) & key_mask.to(rollout.device)
    onehot = F.one_hot(modality.clamp_min(0), n_modalities).to(torch.float64) * counted[..., None]  # [B, N, M]
    mass = rollout.to(torch.float64) @ onehot  # [B, N queries, M key modalities]
    mass = mass / mass.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    counts = onehot.sum(dim=1)  # [B, M] query tokens of each modality
    per_sample = (onehot.transpose(1, 2) @ mass) / counts[..., None].clamp_min(1)  # [B, M, M]
    present = (counts > 0).to(torch.float64)
    return (per_sample * present[..., None]).sum(dim=0) / present.sum(dim=0)[:, None]


def plot_modality_attention(
    share: Tensor | np.ndarray, names: Sequence[str], path: str | os.PathLike[str], *, title: str = ""
) -> Path:
    """Write the ``[M, M]`` share of :func:`modality_attention_share` as an annotated heat map (PNG, atomically)."""
    from ..viz import _plt

    share = np.asarray(share.detach().cpu() if isinstance(share, Tensor) else share, dtype=np.float64)
    if share.ndim != 2 or share.shape != (len(names), len(names)):
        raise ValueError(f"expected a share [{len(names)}, {len(names)}] for {list(names)}, got {share.shape}")
    fig, ax = _plt().subplots(figsize=(1.1 * len(names) + 2.2, 1.1 * len(names) + 1.2))
    image = ax.imshow(share, vmin=0.0, vmax=1.0, cmap="viridis")
    for (i, j), value in np.ndenumerate(share):
        ax.text(j, i, "n/a" if np.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=8,
                color="black" if value > 0.6 else "white")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("attended modality (keys)")
    ax.set_ylabel("attending modality (queries)")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of rolled-out attention")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------- relative source variance


def relative_source_variance(
    embed: Callable[[dict[str, Tensor]], Tensor],
    batch: Mapping[str, Tensor],
    groups: Mapping[str, Sequence[str]],
    n_anchor: int = 16,
    n_vary: int = 32,
    seed: int = 0,
) -> tuple[np.ndarray, list[str]]:
    """Relative source variance ``[D, M]`` of each embedding unit to each modality, and the modality names.

    ``embed`` maps a batch dict to embeddings ``[n, D]`` (put the model in eval mode first; it runs under
    ``torch.no_grad``). ``batch``: tensors with a common first axis ``N`` (samples). ``groups`` maps each
    modality name to the batch keys that belong to it (its data and its masks or presence flags, e.g.
    ``"ecg": ["ecg", "ecg_present"]``); keys in no group are always taken from the anchor. ``n_anchor``
    anchors are drawn without replacement, and per anchor one set of ``n_vary`` samples that every modality
    is varied across (both capped at ``N``); each anchor and modality is one call of ``embed`` on ``n_vary``
    rows. Rows sum to 1; a unit that no modality moves gets NaN.
    """
    names = list(groups)
    if len(names) < 2:
        raise ConfigError(f"relative source variance needs at least two modality groups, got {names}")
    owner: dict[str, str] = {}
    for name, keys in groups.items():
        for key in keys:
            if key in owner:
                raise ConfigError(f"batch key {key!r} is in two modality groups: {owner[key]!r} and {name!r}")
            owner[key] = name
    missing = sorted(set(owner) - set(batch))
    if missing:
        raise ConfigError(f"modality groups name keys the batch does not have: {missing}; batch keys: {sorted(batch)}")
    sizes = {key: value.shape[0] for key, value in batch.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"batch tensors must share their first axis (samples), got {sizes}")
    n = next(iter(sizes.values()))
    n_vary = min(n_vary, n)
    if n_anchor < 1 or n_vary < 2:
        raise ConfigError(f"need n_anchor >= 1 and at least 2 samples to vary, got n_anchor={n_anchor}, "
                          f"n_vary={n_vary} (batch of {n})")
    rng = np.random.default_rng(seed)
    anchors = rng.choice(n, size=min(n_anchor, n), replace=False)
    variance = []  # per anchor: [M, D]
    with torch.no_grad():
        for anchor in anchors:
            vary = torch.from_numpy(rng.choice(n, size=n_vary, replace=False))
            fixed = torch.full((n_vary,), int(anchor))
            per_modality = []
            for name in names:
                combined = {
                    key: value[(vary if owner.get(key) == name else fixed).to(value.device)]
                    for key, value in batch.items()
                }
                out = embed(combined)
                if out.ndim != 2 or out.shape[0] != n_vary:
                    raise ValueError(f"embed must return [n, D] = [{n_vary}, D], got shape {tuple(out.shape)}")
                per_modality.append(out.detach().to(torch.float64).var(dim=0, unbiased=False).cpu().numpy())
            variance.append(np.stack(per_modality))
    source = np.mean(variance, axis=0).T  # [D, M]
    total = source.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rsv = np.where(total > 0, source / total, np.nan)
    return rsv, names


def plot_rsv(rsv: np.ndarray, names: Sequence[str], path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Write the RSV figure (PNG, atomically): per-modality histograms, and every unit as a stacked bar.

    Left: the distribution of each modality's RSV over units, with ``1 / M`` (equal tuning) marked. Right:
    the units sorted by their dominant modality, then by its RSV, each a bar stacked to 1. Units with NaN
    RSV (no modality moves them) are left out and counted in the title.
    """
    from ..viz import _plt

    rsv = np.asarray(rsv, dtype=np.float64)
    if rsv.ndim != 2 or rsv.shape[1] != len(names):
        raise ValueError(f"expected rsv [D, {len(names)}] for {list(names)}, got {rsv.shape}")
    dead = np.isnan(rsv).any(axis=1)
    units = rsv[~dead]
    order = np.lexsort((-units.max(axis=1), units.argmax(axis=1)))
    colours = _plt().get_cmap("tab10")
    fig, (hist_ax, bar_ax) = _plt().subplots(1, 2, figsize=(11.0, 4.0), gridspec_kw={"width_ratios": [1, 1.6]})
    bins = np.linspace(0.0, 1.0, 26)
    for m, name in enumerate(names):
        hist_ax.hist(units[:, m], bins=bins, histtype="step", lw=1.5, color=colours(m % 10), label=name)
    hist_ax.axvline(1.0 / len(names), color="0.4", ls="--", lw=0.8, label=f"equal (1/{len(names)})")
    hist_ax.set_xlabel("relative source variance")
    hist_ax.set_ylabel("units")
    hist_ax.legend(fontsize=8, frameon=False)
    bottom = np.zeros(len(units))
    for m in range(len(names)):
        bar_ax.bar(np.arange(len(units)), units[order, m], bottom=bottom, width=1.0, color=colours(m % 10), lw=0)
        bottom += units[order, m]
    bar_ax.set_xlim(-0.5, len(units) - 0.5)
    bar_ax.set_ylim(0.0, 1.0)
    bar_ax.set_xlabel("units (sorted by dominant modality)")
    bar_ax.set_ylabel("relative source variance")
    for ax in (hist_ax, bar_ax):
        ax.spines[["top", "right"]].set_visible(False)
    suffix = f" ({int(dead.sum())} units with no source variance left out)" if dead.any() else ""
    fig.suptitle(f"{title}{suffix}".strip(), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
