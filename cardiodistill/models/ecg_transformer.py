"""A lead-agnostic ECG transformer (ViT over per-lead patch tokens) and its masked autoencoder.

Tokens
    Every lead's signal ``[S]`` is cut into ``P = S / patch_size`` non-overlapping patches (at
    250 Hz a 50-sample patch is 0.2 s, about one QRS complex). Each patch becomes one token:

        token(l, p) = W_patch @ patch(l, p)  +  lead_embedding[lead id of l]  +  time_embedding[p]

    The patch projection is shared by all leads. Which lead a token comes from is told *only* by
    the learned lead embedding (a vocabulary of the 12 standard leads plus a padding id), and when
    it happened only by the time embedding (fixed 1-D sin-cos over the patch index by default,
    optionally learned). The leads are recorded simultaneously, so the tokens of different leads
    at the same ``p`` share a time embedding. Tokens are laid out lead-major: index ``l * P + p``.

Why any lead subset works
    Self-attention is permutation-equivariant and the pooling is a masked mean over present
    tokens (or a CLS token), so the model is a function of the *set* of (lead, time, waveform)
    tokens: the same weights take 12 leads, the 6 limb leads, I + II or lead I alone, in any
    order. Absent leads (padding id, or ``lead_mask`` False) are zeroed before embedding and
    removed from every attention's keys and from the pooling, so their values cannot leak in.
    This follows ST-MEM (Na et al., ICLR 2024), which pre-trains the same way.

Masked autoencoder (:class:`EcgMAE`, He et al. 2022)
    Per sample, a random ``mask_ratio`` of the present tokens is hidden (argsort of uniform noise,
    as in the MAE paper) and optionally whole leads are dropped first (``lead_mask_prob``), which
    teaches the encoder to work from lead subsets. The encoder runs on the visible tokens only
    (dropping tokens *is* the masking); a light decoder sees encoded tokens plus a shared mask
    token at every hidden position, each with its own lead and time embedding, and predicts the
    samples of every patch. The loss is the MSE over hidden, present patches.

Input units: the presets expect per-lead z-scored signals (see ``normalisation`` in the config).

Shapes: ``x`` ``[B, L, S]`` float; ``leads`` a sequence of ``L`` names, or lead ids ``[L]`` or
``[B, L]`` (``LongTensor`` into :data:`~cardiodistill.signals.leads.LEADS_12`, :data:`PAD_LEAD_ID`
for padding); ``lead_mask`` ``[B, L]`` bool, True where the lead is present.

Parameter counts (measured in ``tests/test_models.py``): ``ecg_vit_tiny`` 1.79 M,
``ecg_vit_base`` 85.1 M (ViT-B: dim 768, depth 12, 12 heads), ``ecg_mae_tiny`` 2.22 M,
``ecg_mae_base`` 88.5 M.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ..data.augment import random_lead_drop
from ..errors import ConfigError
from ..objectives.mae import masked_patch_loss
from ..signals.filters import DEFAULT_BAND
from ..signals.leads import LEADS_12, normalize_lead_name
from .registry import legacy_keys, model_from_config, nest_flat_keys, register_model, register_test
from .transformer import MaskedDecoder, TokenEncoder, init_weights, sincos_embedding

PAD_LEAD_ID = len(LEADS_12)  # lead id of a padded (absent) lead
N_LEAD_IDS = len(LEADS_12) + 1

LeadsArg = Sequence[str] | Tensor


# ----------------------------------------------------------------------------- helpers


def lead_ids(leads: Sequence[str]) -> Tensor:
    """``[L]`` long tensor of ids into ``LEADS_12`` for lead names in any common spelling."""
    return torch.tensor([LEADS_12.index(normalize_lead_name(name)) for name in leads], dtype=torch.long)


class TokenLayout(NamedTuple):
    """Where each token of a ``[B, N = L * P]`` sequence comes from."""

    patches: Tensor  # [B, N, patch_size] raw samples (zero for absent leads): the MAE target
    lead_ids: Tensor  # [B, N] long, PAD_LEAD_ID for absent leads
    time_ids: Tensor  # [N] long, patch index within its lead
    present: Tensor  # [B, N] bool
    n_leads: int
    n_patches: int


def _resolve_leads(
    leads: LeadsArg, lead_mask: Tensor | None, batch: int, n_leads: int, device
) -> tuple[Tensor, Tensor]:
    """Lead ids ``[B, L]`` and presence ``[B, L]`` from names or ids plus an optional mask."""
    ids = leads.to(device=device, dtype=torch.long) if isinstance(leads, Tensor) else lead_ids(leads).to(device)
    if ids.ndim == 1:
        ids = ids.expand(batch, -1)
    if ids.shape != (batch, n_leads):
        raise ValueError(f"leads give {tuple(ids.shape)} lead ids for a signal of {batch} x {n_leads} leads")
    present = ids != PAD_LEAD_ID
    if lead_mask is not None:
        if lead_mask.shape != (batch, n_leads):
            raise ValueError(f"lead_mask has shape {tuple(lead_mask.shape)}, expected {(batch, n_leads)}")
        present = present & lead_mask.to(device=device, dtype=torch.bool)
    ids = ids.masked_fill(~present, PAD_LEAD_ID)
    if not bool(present.any(dim=1).all()):
        raise ValueError("every sample needs at least one present lead")
    return ids, present


# ----------------------------------------------------------------------------- encoder


class EcgTransformer(TokenEncoder):
    """Lead-agnostic ViT encoder over per-lead patch tokens (see the module docstring).

    ``pool``: ``"mean"`` (masked mean over present tokens) or ``"cls"`` (a learned CLS token).
    ``time_embedding``: ``"sincos"`` (fixed) or ``"learned"``; either covers up to ``max_patches``
    patches per lead. ``grad_checkpointing`` recomputes each block in the backward pass.
    """

    def __init__(
        self,
        *,
        patch_size: int = 50,
        max_patches: int = 50,
        dim: int = 192,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        pool: str = "mean",
        time_embedding: str = "sincos",
        grad_checkpointing: bool = False,
    ):
        super().__init__()
        if time_embedding not in ("sincos", "learned"):
            raise ConfigError(f"time_embedding must be 'sincos' or 'learned', got {time_embedding!r}")
        self.patch_size = patch_size
        self.max_patches = max_patches

        self.patch_embed = nn.Linear(patch_size, dim)
        self.lead_embed = nn.Embedding(N_LEAD_IDS, dim, padding_idx=PAD_LEAD_ID)
        if time_embedding == "sincos":
            self.register_buffer("time_embed", sincos_embedding(max_patches, dim), persistent=False)
        else:
            self.time_embed = nn.Parameter(torch.zeros(max_patches, dim))
        self._init_trunk(dim, depth, heads, mlp_ratio, dropout, pool, grad_checkpointing)

        self.apply(init_weights)
        if isinstance(self.time_embed, nn.Parameter):
            nn.init.trunc_normal_(self.time_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def embed(self, x: Tensor, leads: LeadsArg, lead_mask: Tensor | None = None) -> tuple[Tensor, TokenLayout]:
        """Patch tokens ``[B, L * P, D]`` with lead and time embeddings, and their layout."""
        if x.ndim != 3:
            raise ValueError(f"expected a signal [batch, leads, samples], got shape {tuple(x.shape)}")
        b, n_leads, n_samples = x.shape
        if n_samples % self.patch_size:
            raise ValueError(f"signal length {n_samples} is not a multiple of patch_size {self.patch_size}")
        n_patches = n_samples // self.patch_size
        if n_patches > self.max_patches:
            raise ValueError(f"{n_patches} patches per lead exceed the model's max_patches {self.max_patches}")
        ids, lead_present = _resolve_leads(leads, lead_mask, b, n_leads, x.device)

        x = torch.where(lead_present[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))
        patches = x.reshape(b, n_leads * n_patches, self.patch_size)
        token_leads = ids.repeat_interleave(n_patches, dim=1)
        time_ids = torch.arange(n_patches, device=x.device).repeat(n_leads)
        present = lead_present.repeat_interleave(n_patches, dim=1)

        tokens = self.patch_embed(patches) + self.lead_embed(token_leads) + self.time_embed[time_ids]
        return tokens, TokenLayout(patches, token_leads, time_ids, present, n_leads, n_patches)

    def forward_tokens(self, x: Tensor, leads: LeadsArg, lead_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Encoded patch tokens ``[B, L * P, D]`` (lead-major) and their presence mask ``[B, L * P]``."""
        tokens, layout = self.embed(x, leads, lead_mask)
        tokens, _ = self.encode(tokens, layout.present)
        return tokens, layout.present

    def forward_features(self, x: Tensor, leads: LeadsArg, lead_mask: Tensor | None = None) -> Tensor:
        """Pooled embedding ``[B, D]``: the CLS output, or the mean over present tokens."""
        tokens, layout = self.embed(x, leads, lead_mask)
        tokens, cls = self.encode(tokens, layout.present)
        return self.pool_tokens(tokens, layout.present, cls)

    def forward(self, x: Tensor, leads: LeadsArg, lead_mask: Tensor | None = None) -> Tensor:
        return self.forward_features(x, leads, lead_mask)


# ----------------------------------------------------------------------------- masked autoencoder


class EcgMAE(MaskedDecoder):
    """Masked autoencoder around an :class:`EcgTransformer` (see the module docstring).

    ``mask_ratio`` is the fraction of the candidate tokens hidden per sample, where the candidates
    are the present tokens of the leads *not* dropped whole; ``lead_mask_prob`` is the chance that
    each present lead is dropped whole (at least one present lead always survives). With
    ``lead_mask_prob > 0`` the hidden fraction of all present tokens is therefore above ``mask_ratio``.
    """

    def __init__(
        self,
        encoder: EcgTransformer,
        *,
        decoder_dim: int = 128,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
        mask_ratio: float = 0.75,
        lead_mask_prob: float = 0.0,
        norm_pix: bool = False,
    ):
        if not 0.0 <= mask_ratio < 1.0:
            raise ConfigError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        if not 0.0 <= lead_mask_prob <= 1.0:
            raise ConfigError(f"lead_mask_prob must be in [0, 1], got {lead_mask_prob}")
        super().__init__(encoder.embed_dim, decoder_dim, decoder_depth, decoder_heads, encoder.patch_size)
        self.encoder = encoder
        self.mask_ratio = mask_ratio
        self.lead_mask_prob = lead_mask_prob
        self.norm_pix = norm_pix
        self.decoder_lead_embed = nn.Embedding(N_LEAD_IDS, decoder_dim, padding_idx=PAD_LEAD_ID)
        self.decoder_lead_embed.apply(init_weights)
        self.register_buffer("decoder_time_embed", sincos_embedding(encoder.max_patches, decoder_dim), persistent=False)

    def drop_leads(self, lead_present: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``[B, L]`` bool: leads hidden whole, each present lead with ``lead_mask_prob``, never all of them."""
        return lead_present & ~random_lead_drop(lead_present, generator, self.lead_mask_prob)

    def random_masking(
        self, layout: TokenLayout, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Choose the visible tokens per sample (from ``generator``, or torch's global RNG).

        Returns ``ids_keep [B, K]`` (token indices, K = the largest visible count in the batch),
        ``keep_valid [B, K]`` (False for the filler beyond a sample's own count) and
        ``mask [B, N]`` (True = hidden and present: the tokens the loss scores).
        """
        b, n = layout.present.shape
        device = layout.present.device
        candidate = layout.present
        if self.lead_mask_prob > 0:
            lead_present = layout.present.view(b, layout.n_leads, layout.n_patches)[..., 0]
            dropped = self.drop_leads(lead_present, generator).repeat_interleave(layout.n_patches, dim=1)
            candidate = candidate & ~dropped
        # Candidates sort first in random order, then dropped-lead tokens, then absent ones.
        noise = torch.rand(b, n, device=device, generator=generator)
        noise = torch.where(candidate, noise, torch.where(layout.present, 2.0, 3.0))
        ids_shuffle = noise.argsort(dim=1)
        n_keep = torch.round(candidate.sum(1) * (1.0 - self.mask_ratio)).long().clamp_min(1)
        k = int(n_keep.max())
        ids_keep = ids_shuffle[:, :k]
        keep_valid = torch.arange(k, device=device)[None, :] < n_keep[:, None]
        kept = torch.zeros(b, n, dtype=torch.bool, device=device).scatter(1, ids_keep, keep_valid)
        return ids_keep, keep_valid, layout.present & ~kept

    def forward(
        self,
        x: Tensor,
        leads: LeadsArg,
        lead_mask: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """``pred`` and ``target`` ``[B, N, patch_size]``, ``mask`` ``[B, N]`` (1 = hidden and
        present), ``loss`` (MSE over hidden patches; per-patch normalised target if ``norm_pix``).

        ``generator`` (on ``x``'s device) draws the masks, so a training step can be replayed
        exactly (the trainer seeds one per step); without it torch's global RNG is used."""
        tokens, layout = self.encoder.embed(x, leads, lead_mask)
        ids_keep, keep_valid, mask = self.random_masking(layout, generator)

        visible = tokens.gather(1, ids_keep[..., None].expand(-1, -1, tokens.shape[-1]))
        latent, cls = self.encoder.encode(visible, keep_valid)
        pred = self._decode(latent, cls, ids_keep, keep_valid, layout)

        target = layout.patches
        loss = masked_patch_loss(pred, target, mask, norm_pix=self.norm_pix)
        return {"pred": pred, "target": target, "mask": mask.to(pred.dtype), "loss": loss}

    def _decode(
        self, latent: Tensor, cls: Tensor | None, ids_keep: Tensor, keep_valid: Tensor, layout: TokenLayout
    ) -> Tensor:
        position = self.decoder_lead_embed(layout.lead_ids) + self.decoder_time_embed[layout.time_ids]
        return self.decode(latent, cls, ids_keep, keep_valid, position, layout.present,
                           grad_checkpointing=self.encoder.grad_checkpointing)


# ----------------------------------------------------------------------------- registered presets


def _max_patches(fs: float, seconds: float, patch_size: int) -> int:
    return math.ceil(round(fs * seconds, 6) / patch_size)


def check_band(band: Sequence[float] | None) -> None:
    """A model config's ``band``: None (unfiltered input) or ``[low, high]`` Hz with ``0 <= low < high``."""
    if band is None:
        return
    if len(band) != 2 or not all(isinstance(f, (int, float)) for f in band) or not 0 <= band[0] < band[1]:
        raise ConfigError(f"band must be [low, high] Hz with 0 <= low < high, or None; got {list(band)}")


# ``leads`` is the lead set a model was built/trained for; any subset of LEADS_12 is accepted as
# input. ``normalisation`` and ``band`` are metadata for whoever prepares the input (see the registry).
@register_model("ecg_vit")
@register_model("ecg_vit_tiny")
@register_model("ecg_vit_base", dim=768, depth=12, heads=12)
def ecg_vit(
    *,
    fs: float = 250.0,
    seconds: float = 10.0,
    leads: Sequence[str] = LEADS_12,
    patch_size: int = 50,
    normalisation: str = "per-lead z-score",
    band: Sequence[float] | None = DEFAULT_BAND,
    dim: int = 192,
    depth: int = 4,
    heads: int = 4,
    mlp_ratio: float = 4.0,
    dropout: float = 0.0,
    pool: str = "mean",
    time_embedding: str = "sincos",
    grad_checkpointing: bool = False,
) -> EcgTransformer:
    """The lead-agnostic encoder. ``ecg_vit_tiny``: CPU-sized, dim 192, depth 4, 4 heads, 0.2 s
    patches at 250 Hz (1.79 M parameters); ``ecg_vit_base``: ViT-B class, dim 768, depth 12,
    12 heads (85.1 M)."""
    lead_ids(leads)  # validates the names (LeadError on an unknown one)
    check_band(band)
    return EcgTransformer(
        patch_size=patch_size,
        max_patches=_max_patches(fs, seconds, patch_size),
        dim=dim,
        depth=depth,
        heads=heads,
        mlp_ratio=mlp_ratio,
        dropout=dropout,
        pool=pool,
        time_embedding=time_embedding,
        grad_checkpointing=grad_checkpointing,
    )


@register_model("ecg_mae")
@register_model("ecg_mae_tiny")
@register_model("ecg_mae_base", encoder={"name": "ecg_vit_base"}, decoder_dim=256, decoder_depth=4, decoder_heads=8)
@legacy_keys(nest_flat_keys("encoder"))  # configs written before the encoder was nested held its keys flat
def ecg_mae(
    *,
    encoder: Mapping[str, Any] = {"name": "ecg_vit_tiny"},  # the registry copies defaults, never mutates them
    decoder_dim: int = 128,
    decoder_depth: int = 2,
    decoder_heads: int = 4,
    mask_ratio: float = 0.75,
    lead_mask_prob: float = 0.25,
    norm_pix: bool = False,
) -> EcgMAE:
    """MAE pre-training of an :func:`ecg_vit` ``encoder`` (its model config). ``ecg_mae_tiny``: the
    tiny encoder with a 2-block, 128-wide decoder; ``ecg_mae_base``: the base encoder with a
    4-block, 256-wide decoder (as in ST-MEM)."""
    # through the registry, so ``mae.encoder.model_config`` rebuilds the encoder on its own
    return EcgMAE(
        model_from_config(encoder),
        decoder_dim=decoder_dim,
        decoder_depth=decoder_depth,
        decoder_heads=decoder_heads,
        mask_ratio=mask_ratio,
        lead_mask_prob=lead_mask_prob,
        norm_pix=norm_pix,
    )


# ----------------------------------------------------------------------------- test configs


def ecg_example(model: nn.Module, leads: Sequence[str] = ("I", "II")) -> tuple[tuple, dict]:
    """Two random windows of ``leads`` at the model's rate and length: ``((x, leads), {})``, plus a
    seeded mask ``generator`` for a masked autoencoder."""
    config = model.model_config.get("encoder", model.model_config)
    n_samples = round(config["fs"] * config["seconds"])
    x = torch.randn(2, len(leads), n_samples, generator=torch.Generator().manual_seed(0))
    kwargs = {"generator": torch.Generator().manual_seed(1)} if isinstance(model, EcgMAE) else {}
    return (x, list(leads)), kwargs


_SMALL_VIT = {"seconds": 2.0, "dim": 32, "depth": 1, "heads": 2}
register_test("ecg_vit", "ecg_vit_tiny", example=ecg_example, **_SMALL_VIT)
register_test("ecg_vit_base", example=ecg_example, seconds=2.0, depth=1)  # base width and heads, one block
register_test("ecg_mae", "ecg_mae_tiny", example=ecg_example, encoder=_SMALL_VIT, decoder_dim=16, decoder_depth=1)
register_test("ecg_mae_base", example=ecg_example, encoder={"seconds": 2.0, "depth": 1}, decoder_depth=1)
