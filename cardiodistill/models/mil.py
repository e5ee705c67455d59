"""Attention-based multiple-instance pooling over the views of one study (Ilse et al., ICML 2018).

A study (one echo exam) has a variable number of views (clips): apical 4-chamber, parasternal
long axis, ... Each view is encoded on its own to an embedding ``h_v [D]``; the study embedding is
their attention-weighted mean

    a_v = w^T (tanh(V h_v) * sigmoid(U h_v))         (gated; without the gate: w^T tanh(V h_v))
    weights = softmax over the study's present views of a_v,     pooled = sum_v weights_v h_v

so the weights are permutation-equivariant, absent views get weight exactly 0, a study's weights
sum to 1 and a single-view study returns that view's embedding unchanged. The weights tell which
views the prediction rests on.

Shapes: view embeddings ``[B, V, D]`` (``V`` view slots, padded), ``mask [B, V]`` bool (True =
view present); clips ``[B, V, T, H, W]`` for :class:`MultiViewEncoder`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .transformer import init_weights


class AttentionMIL(nn.Module):
    """Gated attention pooling of ``[B, V, D]`` instance embeddings to ``[B, D]``.

    ``hidden``: width of the attention MLP; ``gated``: multiply by the sigmoid gate (Ilse et al.'s
    gated variant); ``dropout``: on the attention MLP's hidden units.
    """

    def __init__(self, dim: int, *, hidden: int = 128, gated: bool = True, dropout: float = 0.0):
        super().__init__()
        self.dim = dim
        self.attention = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh())
        self.gate = nn.Sequential(nn.Linear(dim, hidden), nn.Sigmoid()) if gated else None
        self.dropout = nn.Dropout(dropout)
        self.score = nn.Linear(hidden, 1)
        self.apply(init_weights)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``pooled [B, D]`` and ``weights [B, V]`` (0 where ``mask`` is False, each row sums to 1)."""
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"expected view embeddings [batch, views, {self.dim}], got shape {tuple(x.shape)}")
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        elif mask.shape != x.shape[:2]:
            raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {tuple(x.shape[:2])}")
        mask = mask.to(device=x.device, dtype=torch.bool)
        if not bool(mask.any(1).all()):
            raise ValueError("every study needs at least one present view")
        x = torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))  # NaN-safe padding

        hidden = self.attention(x)
        if self.gate is not None:
            hidden = hidden * self.gate(x)
        logits = self.score(self.dropout(hidden)).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = logits.softmax(dim=1)
        return torch.einsum("bv,bvd->bd", weights, x), weights


class MultiViewEncoder(nn.Module):
    """A clip encoder applied to every present view of a study, then :class:`AttentionMIL`.

    ``encoder`` maps clips ``[M, T, H, W]`` (and an optional ``frame_mask [M, T]``) to embeddings
    ``[M, D]``, e.g. a :class:`~cardiodistill.models.video_transformer.VideoTransformer`; only the
    present views are encoded (padding views cost nothing and cannot leak in).
    """

    def __init__(self, encoder: nn.Module, mil: AttentionMIL):
        super().__init__()
        self.encoder = encoder
        self.mil = mil

    def forward(
        self, x: Tensor, view_mask: Tensor | None = None, frame_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``x [B, V, T, H, W]``, ``view_mask [B, V]`` (True = present), ``frame_mask [B, V, T]``;
        returns the study embedding ``[B, D]`` and the view weights ``[B, V]``."""
        if x.ndim != 5:
            raise ValueError(f"expected clips [batch, views, frames, height, width], got shape {tuple(x.shape)}")
        b, v = x.shape[:2]
        if view_mask is None:
            view_mask = torch.ones(b, v, dtype=torch.bool, device=x.device)
        elif view_mask.shape != (b, v):
            raise ValueError(f"view_mask has shape {tuple(view_mask.shape)}, expected {(b, v)}")
        view_mask = view_mask.to(device=x.device, dtype=torch.bool)
        if not bool(view_mask.any(1).all()):
            raise ValueError("every study needs at least one present view")
        if frame_mask is not None and frame_mask.shape != x.shape[:3]:
            raise ValueError(f"frame_mask has shape {tuple(frame_mask.shape)}, expected {tuple(x.shape[:3])}")

        embeddings = self.encoder(x[view_mask], None if frame_mask is None else frame_mask[view_mask])
        views = embeddings.new_zeros(b, v, embeddings.shape[-1]).index_put((view_mask,), embeddings)
        return self.mil(views, view_mask)
