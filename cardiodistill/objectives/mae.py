"""Masked-patch reconstruction objective and metric (pure tensor functions, no framework).

Tensors follow the patch layout of :class:`cardiodistill.models.ecg_transformer.EcgMAE`:
``pred`` and ``target`` are ``[B, N, patch_size]`` (one row per lead-patch token) and ``mask`` is
``[B, N]``, true (or 1) where a token was hidden from the encoder *and* its lead is present. Only
those tokens are scored: visible tokens are trivially copied and absent leads have no truth.

``norm_pix`` follows the MAE paper: each target patch is standardised by its own mean and
(unbiased) variance, ``(t - mean) / sqrt(var + 1e-6)``, so the loss weighs waveform *shape* in
flat segments and large QRS complexes alike, instead of being dominated by QRS amplitude.
"""

from __future__ import annotations

import torch
from torch import Tensor

NORM_PIX_EPS = 1e-6


def normalise_patches(target: Tensor, eps: float = NORM_PIX_EPS) -> Tensor:
    """Standardise every patch (last axis) by its own mean and unbiased variance."""
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    return (target - mean) / torch.sqrt(var + eps)


def masked_patch_loss(pred: Tensor, target: Tensor, mask: Tensor, *, norm_pix: bool = False) -> Tensor:
    """Mean squared error over the masked patches only.

    Per-patch MSE (mean over the patch's samples), then the mean over tokens with ``mask`` set.
    Values at unmasked positions never reach the result (not even NaNs). A batch with no masked
    token gives a loss of 0 that still back-propagates (zero gradient).
    """
    if norm_pix:
        target = normalise_patches(target)
    mask = mask.bool()
    scored = mask[..., None]  # unscored patches are zeroed first, so a NaN there cannot reach the gradient either
    pred = torch.where(scored, pred, torch.zeros((), dtype=pred.dtype, device=pred.device))
    target = torch.where(scored, target, torch.zeros((), dtype=target.dtype, device=target.device))
    per_patch = (pred - target).pow(2).mean(dim=-1)
    per_patch = torch.where(mask, per_patch, torch.zeros_like(per_patch))
    return per_patch.sum() / mask.sum().clamp_min(1)


def normalised_cross_correlation(
    pred: Tensor, target: Tensor, mask: Tensor, *, reduction: str = "mean", eps: float = 1e-8
) -> Tensor:
    """Pearson correlation between predicted and true waveform of each patch.

    ``reduction="mean"``: the mean over masked patches (scalar; 0 when none is masked).
    ``reduction="none"``: ``[B, N]`` per patch, NaN where the token is not masked. A flat patch
    (zero variance in pred or target) scores 0.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    mask = mask.bool()
    p = pred - pred.mean(dim=-1, keepdim=True)
    t = target - target.mean(dim=-1, keepdim=True)
    ncc = (p * t).sum(-1) / torch.sqrt(p.pow(2).sum(-1) * t.pow(2).sum(-1) + eps)
    if reduction == "none":
        return torch.where(mask, ncc, torch.full_like(ncc, float("nan")))
    ncc = torch.where(mask, ncc, torch.zeros_like(ncc))
    return ncc.sum() / mask.sum().clamp_min(1)
