"""Transformer parts the modality encoders share: blocks, the encoder trunk, the MAE decoder.

* :class:`Block`: a pre-norm block (multi-head self-attention through
  ``scaled_dot_product_attention`` with a key padding mask, then an MLP);
* :class:`TokenEncoder`: the trunk of every token encoder (ECG patches, video tubelets): blocks,
  a final norm and an optional CLS token, with :meth:`TokenEncoder.encode` over a padded batch of
  token sequences (tokens left out - absent leads or frames, hidden MAE tokens - are not in it);
* :class:`MaskedDecoder`: the light MAE decoder: the encoded visible tokens plus a shared mask
  token at every hidden position, each with its position embedding, through a few blocks to a
  per-token prediction;
* fixed sin-cos position embeddings and the weight initialisation of ViT / MAE.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError

__all__ = ["Block", "MaskedDecoder", "TokenEncoder", "init_weights", "masked_mean", "run_blocks", "sincos_embedding"]


def sincos_embedding(n_positions: int, dim: int) -> Tensor:
    """Fixed 1-D sin-cos embedding ``[n_positions, dim]`` (Vaswani et al.): half sines, half cosines."""
    if dim % 2:
        raise ConfigError(f"sin-cos time embedding needs an even dim, got {dim}")
    position = torch.arange(n_positions, dtype=torch.float64)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angle = position * freq
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1).float()


def masked_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``tokens [B, N, D]`` over positions where ``mask [B, N]`` is set."""
    weights = mask.to(tokens.dtype)[..., None]
    return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention`` with a key padding mask."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"transformer dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, key_mask: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_mask[:, None, None, :], dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor, key_mask: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x), key_mask)
        return x + self.mlp(self.norm2(x))


def run_blocks(blocks: nn.ModuleList, x: Tensor, key_mask: Tensor, grad_checkpointing: bool) -> Tensor:
    use_checkpoint = grad_checkpointing and torch.is_grad_enabled()
    for block in blocks:
        x = checkpoint(block, x, key_mask, use_reentrant=False) if use_checkpoint else block(x, key_mask)
    return x


class TokenEncoder(nn.Module):
    """Base of the token encoders: ``blocks``, a final ``norm`` and, with ``pool="cls"``, a learned
    ``cls_token``. A subclass builds its token embedding, then calls :meth:`_init_trunk`."""

    def _init_trunk(
        self, dim: int, depth: int, heads: int, mlp_ratio: float, dropout: float, pool: str, grad_checkpointing: bool
    ) -> None:
        if pool not in ("mean", "cls"):
            raise ConfigError(f"pool must be 'mean' or 'cls', got {pool!r}")
        self.embed_dim = dim
        self.pool = pool
        self.grad_checkpointing = grad_checkpointing
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def lr_layers(self) -> list[nn.Module]:
        """The blocks and the final norm, from input to output (layer-wise learning-rate decay; the token
        embedding, which no listed layer holds, counts as the layer below the first block, as in MAE)."""
        return [*self.blocks, self.norm]

    def encode(self, tokens: Tensor, key_mask: Tensor) -> tuple[Tensor, Tensor | None]:
        """Run the blocks on ``tokens [B, K, D]`` (``key_mask`` True = real token); returns the
        normalised tokens ``[B, K, D]`` and the CLS output ``[B, D]`` (None with mean pooling)."""
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
            key_mask = F.pad(key_mask, (1, 0), value=True)
        tokens = self.norm(run_blocks(self.blocks, tokens, key_mask, self.grad_checkpointing))
        if self.cls_token is not None:
            return tokens[:, 1:], tokens[:, 0]
        return tokens, None

    def pool_tokens(self, tokens: Tensor, key_mask: Tensor, cls: Tensor | None) -> Tensor:
        """The pooled embedding ``[B, D]``: the CLS output, or the mean over ``key_mask``'s tokens."""
        return cls if cls is not None else masked_mean(tokens, key_mask)


class MaskedDecoder(nn.Module):
    """Base of the masked autoencoders: the decoder of the module doc (``decoder_embed``,
    ``mask_token``, ``decoder_blocks``, ``decoder_norm``, ``decoder_head`` to ``out_dim`` values per
    token) and :meth:`decode`. A subclass calls ``super().__init__(...)`` first, then adds its encoder
    and position embeddings."""

    def __init__(self, encoder_dim: int, decoder_dim: int, depth: int, heads: int, out_dim: int):
        super().__init__()
        self.decoder_embed = nn.Linear(encoder_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_blocks = nn.ModuleList(Block(decoder_dim, heads) for _ in range(depth))
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_head = nn.Linear(decoder_dim, out_dim)
        for module in (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_head):
            module.apply(init_weights)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def decode(
        self, latent: Tensor, cls: Tensor | None, ids_keep: Tensor, keep_valid: Tensor, position: Tensor,
        key_mask: Tensor, *, grad_checkpointing: bool = False,
    ) -> Tensor:
        """Predictions ``[B, N, out_dim]`` for every token position.

        ``latent [B, K, D]``: the encoded visible tokens, at positions ``ids_keep [B, K]``
        (``keep_valid`` False for filler slots); ``position [B or 1, N, decoder_dim]``: the position
        embedding of every token; ``key_mask [B, N]``: the tokens that exist (absent ones are padding).
        """
        b, n = key_mask.shape
        visible = self.decoder_embed(latent)
        mask_token = self.mask_token.to(visible.dtype)
        visible = torch.where(keep_valid[..., None], visible, mask_token)  # filler slots stay mask tokens
        tokens = mask_token.expand(b, n, -1).scatter(1, ids_keep[..., None].expand_as(visible), visible)
        tokens = tokens + position
        if cls is not None:
            tokens = torch.cat([self.decoder_embed(cls)[:, None], tokens], dim=1)
            key_mask = F.pad(key_mask, (1, 0), value=True)
        tokens = run_blocks(self.decoder_blocks, tokens, key_mask, grad_checkpointing)
        pred = self.decoder_head(self.decoder_norm(tokens))
        return pred[:, 1:] if cls is not None else pred
