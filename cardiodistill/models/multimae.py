"""MultiMAE decoders: one small cross-attention decoder per modality (arXiv 2410.16424, Bachmann 2022).

Every decoder gets one query per hidden token of its modality - a learned mask token plus that
token's position (ECG: lead and patch; echo: time slice and place; labs: which lab) - and lets
the queries attend to the **whole** fused encoder output (all modalities), then predicts the
hidden content: 50 ECG samples, a tubelet of pixels, a lab value. Only hidden tokens are decoded
(queries are compacted like the encoder's visible tokens), so the cost follows the masked share.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..signals.leads import LEADS_12
from .transformer import init_weights, sincos_embedding
from .video_transformer import compact, sincos_embedding_2d

__all__ = ["CrossAttentionDecoder", "MultiModalDecoders", "gather_tokens"]


class CrossBlock(nn.Module):
    """Pre-norm ``q + cross_attn(norm(q), context)``, then ``q + mlp(norm(q))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, q: Tensor, context: Tensor, context_mask: Tensor) -> Tensor:
        kv = self.norm_kv(context)
        q = q + self.attn(self.norm_q(q), kv, kv, key_padding_mask=~context_mask, need_weights=False)[0]
        return q + self.mlp(self.norm2(q))


class CrossAttentionDecoder(nn.Module):
    """Queries ``[B, K, dim]`` (position + mask token) attend to ``context [B, N, context_dim]``;
    returns ``[B, K, out_dim]``."""

    def __init__(self, context_dim: int, dim: int, out_dim: int, depth: int = 1, heads: int = 4):
        super().__init__()
        self.context = nn.Linear(context_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(CrossBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, out_dim)
        self.apply(init_weights)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, position: Tensor, context: Tensor, context_mask: Tensor) -> Tensor:
        q = self.mask_token + position
        context = self.context(context)
        for block in self.blocks:
            q = block(q, context, context_mask)
        return self.head(self.norm(q))


class MultiModalDecoders(nn.Module):
    """The per-modality decoders of joint masked modelling over a :class:`~.fusion.CardioFusion`.

    ``ecg_patch``: samples per ECG patch; ``ecg_patches``: patches per lead; ``echo_grid``:
    ``(time slices, rows, cols)`` of the tubelet grid and ``echo_tubelet_pixels`` the pixels per
    tubelet; ``n_labs``: labs. A modality set to ``None`` / 0 gets no decoder.
    """

    def __init__(self, context_dim: int, dim: int = 128, depth: int = 1, heads: int = 4, *,
                 ecg_patch: int | None = None, ecg_patches: int = 0,
                 echo_grid: tuple[int, int, int] | None = None, echo_tubelet_pixels: int = 0, n_labs: int = 0):
        super().__init__()
        self.decoders = nn.ModuleDict()
        if ecg_patch:
            self.decoders["ecg"] = CrossAttentionDecoder(context_dim, dim, ecg_patch, depth, heads)
            self.lead_embed = nn.Parameter(torch.zeros(len(LEADS_12), dim))
            nn.init.trunc_normal_(self.lead_embed, std=0.02)
            self.register_buffer("ecg_time", sincos_embedding(ecg_patches, dim), persistent=False)
        if echo_grid:
            n_t, gh, gw = echo_grid
            self.decoders["echo"] = CrossAttentionDecoder(context_dim, dim, echo_tubelet_pixels, depth, heads)
            pos = sincos_embedding(n_t, dim)[:, None] + sincos_embedding_2d(gh, gw, dim)[None]
            self.register_buffer("echo_position", pos.reshape(n_t * gh * gw, dim), persistent=False)
        if n_labs:
            self.decoders["labs"] = CrossAttentionDecoder(context_dim, dim, 1, depth, heads)
            self.lab_embed = nn.Parameter(torch.zeros(n_labs, dim))
            nn.init.trunc_normal_(self.lab_embed, std=0.02)

    def positions(self, modality: str) -> Tensor:
        """Position embedding ``[N_m, dim]`` of every token of ``modality`` (the encoder's order)."""
        if modality == "ecg":
            return (self.lead_embed[:, None] + self.ecg_time[None]).reshape(-1, self.lead_embed.shape[1])
        if modality == "echo":
            return self.echo_position
        return self.lab_embed

    def forward(self, modality: str, targets_at: Tensor, context: Tensor, context_mask: Tensor
                ) -> tuple[Tensor, Tensor, Tensor]:
        """Decode the tokens of ``modality`` flagged in ``targets_at [B, N_m]``.

        Returns ``(pred [B, K, out], ids [B, K], valid [B, K])``: predictions at token indices
        ``ids`` (``valid`` False for filler slots); gather the targets with the same ``ids``.
        """
        safe = targets_at.clone()
        safe[~safe.any(1), 0] = True
        ids, valid = compact(safe)
        valid = valid & targets_at.gather(1, ids)
        position = self.positions(modality)[ids]  # [B, K, dim]
        return self.decoders[modality](position, context, context_mask), ids, valid


def gather_tokens(x: Tensor, ids: Tensor) -> Tensor:
    """``x [B, N, C]`` at token indices ``ids [B, K]`` -> ``[B, K, C]``."""
    return x.gather(1, ids[..., None].expand(-1, -1, x.shape[-1]))
