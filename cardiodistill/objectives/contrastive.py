"""Contrastive objectives: InfoNCE / CLIP, SimCLR's NT-Xent, projection head, learned temperature.

Embeddings are ``[B, D]``, one row per sample; row ``i`` of one view (or modality) is the positive
of row ``i`` of the other and every other row in the batch is a negative. Both losses L2-normalise
their inputs, so they depend on directions only (cosine similarity) and are invariant to scaling.
A lower temperature sharpens the softmax over the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = ["LearnedTemperature", "ProjectionHead", "info_nce", "nt_xent", "retrieval_accuracy"]


def _check_pair(a: Tensor, b: Tensor) -> None:
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"expected two embeddings [B, D] of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def info_nce(a: Tensor, b: Tensor, temperature: float | Tensor = 0.1, *, symmetric: bool = True) -> Tensor:
    """InfoNCE with in-batch negatives; the CLIP loss when ``a`` and ``b`` are two modalities.

    ``logits = normalise(a) @ normalise(b).T / temperature`` (``[B, B]``), then cross-entropy with
    the diagonal as targets, averaged over rows (the a -> b direction). ``symmetric=True`` averages
    it with the b -> a direction (cross-entropy over the columns). ``temperature`` may be a tensor
    (e.g. :class:`LearnedTemperature`) and then receives a gradient.
    """
    _check_pair(a, b)
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature
    targets = torch.arange(a.shape[0], device=a.device)
    loss = F.cross_entropy(logits, targets)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.T, targets))
    return loss


def nt_xent(z1: Tensor, z2: Tensor, temperature: float | Tensor = 0.1) -> Tensor:
    """SimCLR's normalised temperature-scaled cross-entropy over the ``2B`` views.

    ``z1[i]`` and ``z2[i]`` are two views of sample ``i``. Each of the ``2B`` views is scored
    against the other ``2B - 1`` (its own similarity is excluded): its pair is the positive and
    the ``2B - 2`` others are negatives. The result is the mean over all ``2B`` views.
    """
    _check_pair(z1, z2)
    batch = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(2 * batch, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    targets = (torch.arange(2 * batch, device=z.device) + batch) % (2 * batch)
    return F.cross_entropy(logits, targets)


@torch.no_grad()
def retrieval_accuracy(a: Tensor, b: Tensor) -> float:
    """Top-1 retrieval accuracy: the fraction of rows ``i`` whose most cosine-similar row of ``b``
    is ``b[i]`` (a -> b direction; ties go to the lowest index)."""
    _check_pair(a, b)
    sim = F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T
    hits = sim.argmax(dim=1) == torch.arange(a.shape[0], device=a.device)
    return float(hits.float().mean())


class ProjectionHead(nn.Module):
    """SimCLR projection MLP: ``Linear(dim, hidden) -> norm -> GELU -> Linear(hidden, out)``.

    ``norm`` is ``"batch"`` (BatchNorm1d, as in SimCLR; needs batches of 2 or more in training) or
    ``"layer"`` (LayerNorm; independent of batch size). ``hidden`` defaults to ``dim``. Maps
    ``[B, dim]`` to ``[B, out]``; the loss sees the projection, downstream tasks the input.
    """

    def __init__(self, dim: int, hidden: int | None = None, out: int = 128, *, norm: str = "batch") -> None:
        super().__init__()
        if norm not in ("batch", "layer"):
            raise ConfigError(f"projection head norm must be 'batch' or 'layer', got {norm!r}")
        hidden = dim if hidden is None else hidden
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.BatchNorm1d(hidden) if norm == "batch" else nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Linear(hidden, out),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class LearnedTemperature(nn.Module):
    """CLIP's learnable temperature, stored as a log logit scale.

    The parameter is ``log_scale = log(1 / init)`` (``init=0.07`` as in CLIP). :meth:`forward`
    returns ``temperature = 1 / min(exp(log_scale), max_scale)``, so the temperature never drops
    below ``1 / max_scale`` (0.01 by default); while clamped it receives no gradient.
    """

    def __init__(self, init: float = 0.07, max_scale: float = 100.0) -> None:
        super().__init__()
        if not 0 < init or not max_scale > 0 or 1 / init > max_scale:
            raise ConfigError(
                f"temperature init must be positive and at least 1/max_scale, got {init} with max_scale {max_scale}"
            )
        self.max_scale = float(max_scale)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / init)))

    def forward(self) -> Tensor:
        return 1.0 / self.log_scale.exp().clamp(max=self.max_scale)
