"""A video ViT over tubelet tokens for echo / cine clips, and its masked autoencoder (VideoMAE).

Tokens
    A clip ``[T, H, W]`` (one grayscale channel) is cut into non-overlapping tubelets of
    ``t`` frames x ``ph`` x ``pw`` pixels (``tubelet = (t, ph, pw)``, e.g. (2, 8, 8)); each becomes one
    token through ``nn.Conv3d(1, dim, kernel_size=tubelet, stride=tubelet)``:

        token(i, s) = Conv3d(tubelet(i, s))  +  time_embedding[i]  +  space_embedding[s]

    ``i`` is the tubelet's time slice (frames ``i*t .. i*t + t - 1``) and ``s = row * gw + col`` its
    place on the ``gh x gw`` spatial grid. The position embedding is separable and fixed: 1-D
    sin-cos over the time slice plus 2-D sin-cos over the grid (half the channels for the row,
    half for the column, as in MAE). Both are built for the model's ``frames`` and ``size``, so a
    clip with fewer frames (any multiple of ``t`` up to ``frames``) simply uses the first time
    slices. Tokens are laid out time-major: index ``i * n_s + s`` with ``n_s = gh * gw``.

Absent frames
    ``frame_mask [B, T]`` (True = frame present) marks frames that are missing (a short clip
    padded to ``T``). A time slice with any absent frame is absent; its tokens are *dropped*
    before the transformer (gathered out, not merely masked), as the ECG masked autoencoder drops
    hidden tokens. A clip with absent frames therefore gives the same tokens as the clip with those
    frames cut out, each remaining token keeping its original time position.

Masked autoencoder (:class:`VideoMAE`, Tong et al. 2022; Feichtenhofer et al. 2022)
    A ``mask_ratio`` of the present tokens is hidden per clip and the encoder runs on the visible
    tokens only (with ``mask_ratio=0.9`` that is a tenth of the sequence: the speed-up). Modes:
    ``"tube"`` (VideoMAE's default: one random spatial mask shared by every time slice, so a hidden
    region cannot be copied from the neighbouring frame), ``"random"`` (each token independently)
    and ``"frame"`` (whole time slices). A light decoder sees the encoded tokens plus a shared mask
    token at every hidden position, each with its own position embedding, and predicts the
    ``t * ph * pw`` pixels of every tubelet; the loss is the MSE over hidden, present tubelets
    (per-tubelet normalised targets with ``norm_pix``, the VideoMAE default).

Coarse targets (``target_grid``)
    On ultrasound the pixels of a tubelet are mostly speckle, and a per-tubelet normalised pixel
    target asks the encoder to model exactly that. With ``target_grid=g`` each frame of a tubelet is
    averaged to ``g x g`` blocks before it becomes the target (``t * g * g`` values, e.g. 4 x 4-pixel
    blocks for 8 x 8 tubelets and ``g=2``): speckle averages out, and what is left to predict is where
    the bright walls and the dark blood pool are in each frame - the heart's shape and its motion,
    which is what the no-model 16 x 16 brightness and motion maps read (docs/benchmarks.md). Usually
    with ``norm_pix=False``, so a tubelet's brightness stays in the target.

Input: ``x`` float ``[B, T, H, W]``, ``H = W = size``, z-scored per clip inside the ultrasound
sector and 0 outside (``normalisation`` in the config). The config also records ``cycles`` (the
clip spans this many cardiac cycles, resampled to ``frames``) or, when ``cycles`` is None, ``fps``
(the frame rate clips are resampled to), and ``modality``.

Parameter counts (measured in ``tests/test_video_models.py``): ``video_vit_tiny`` 1.80 M,
``video_vit_small`` 21.3 M, ``video_vit_base`` 85.4 M (ViT-B), ``video_mae_tiny`` 2.24 M,
``video_mae_base`` 93.0 M.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..objectives.mae import masked_patch_loss
from .registry import legacy_keys, model_from_config, nest_flat_keys, register_model, register_test
from .transformer import MaskedDecoder, TokenEncoder, init_weights, sincos_embedding

MASK_MODES = ("tube", "random", "frame")
MODALITIES = ("echo", "cmr")


# ----------------------------------------------------------------------------- helpers


def sincos_embedding_2d(grid_h: int, grid_w: int, dim: int) -> Tensor:
    """Fixed 2-D sin-cos embedding ``[grid_h * grid_w, dim]`` (row-major): the first half of the
    channels encodes the row, the second half the column, each a 1-D sin-cos of ``dim / 2``."""
    if dim % 4:
        raise ConfigError(f"2-D sin-cos position embedding needs a dim divisible by 4, got {dim}")
    rows = sincos_embedding(grid_h, dim // 2)[:, None].expand(-1, grid_w, -1)
    cols = sincos_embedding(grid_w, dim // 2)[None, :].expand(grid_h, -1, -1)
    return torch.cat([rows, cols], dim=-1).reshape(grid_h * grid_w, dim)


def compact(keep: Tensor) -> tuple[Tensor, Tensor]:
    """Indices that gather the kept tokens of ``keep [B, N]`` to the front, in their original order.

    Returns ``ids_keep [B, K]`` (K = the largest kept count in the batch) and ``keep_valid [B, K]``
    (False for the filler slots beyond a sample's own count; those point at tokens not kept).
    """
    n_keep = keep.sum(1)
    ids_keep = (~keep).to(torch.uint8).argsort(dim=1, stable=True)[:, : int(n_keep.max())]
    keep_valid = torch.arange(ids_keep.shape[1], device=keep.device)[None, :] < n_keep[:, None]
    return ids_keep, keep_valid


def _gather(tokens: Tensor, ids: Tensor) -> Tensor:
    return tokens.gather(1, ids[..., None].expand(-1, -1, tokens.shape[-1]))


def _keep_random(noise: Tensor, eligible: Tensor, n_keep: Tensor) -> Tensor:
    """``[B, M]`` bool: per row, the ``n_keep`` eligible positions with the smallest ``noise``."""
    order = torch.where(eligible, noise, 2.0).argsort(dim=1)
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(1, order, positions)
    return rank < n_keep[:, None]


class VideoLayout(NamedTuple):
    """Where each token of a ``[B, N = n_t * n_s]`` sequence comes from (time-major)."""

    patches: Tensor  # [B, N, t * ph * pw] pixels of each tubelet (zero in absent slices): the MAE target
    present: Tensor  # [B, N] bool: False where the tubelet's time slice has an absent frame
    time_ids: Tensor  # [N] long, time slice index
    space_ids: Tensor  # [N] long, row * gw + col on the spatial grid
    n_t: int  # time slices in this clip
    n_s: int  # tubelets per time slice


# ----------------------------------------------------------------------------- encoder


class VideoTransformer(TokenEncoder):
    """ViT encoder over tubelet tokens of a grayscale clip (see the module docstring).

    ``size``: frame height = width in pixels; ``frames``: the most frames a clip may have;
    ``tubelet``: ``(t, ph, pw)`` frames x pixels x pixels per token. ``pool``: ``"mean"`` (mean over
    present tokens) or ``"cls"`` (a learned CLS token). ``grad_checkpointing`` recomputes each
    block in the backward pass.
    """

    def __init__(
        self,
        *,
        size: int = 64,
        frames: int = 16,
        tubelet: Sequence[int] = (2, 8, 8),
        dim: int = 192,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        pool: str = "mean",
        grad_checkpointing: bool = False,
    ):
        super().__init__()
        if len(tubelet) != 3 or min(tubelet) < 1:
            raise ConfigError(f"tubelet must be 3 positive ints (frames, pixels, pixels), got {list(tubelet)}")
        t, ph, pw = (int(v) for v in tubelet)
        if size % ph or size % pw:
            raise ConfigError(f"size {size} is not divisible by the tubelet's {ph}x{pw} pixels")
        if frames % t:
            raise ConfigError(f"frames {frames} is not divisible by the tubelet's {t} frames")
        self.size = size
        self.frames = frames
        self.tubelet = (t, ph, pw)
        self.grid = (size // ph, size // pw)

        self.patch_embed = nn.Conv3d(1, dim, kernel_size=self.tubelet, stride=self.tubelet)
        self.register_buffer("time_embed", sincos_embedding(frames // t, dim), persistent=False)
        self.register_buffer("space_embed", sincos_embedding_2d(*self.grid, dim), persistent=False)
        self._init_trunk(dim, depth, heads, mlp_ratio, dropout, pool, grad_checkpointing)

        self.apply(init_weights)
        nn.init.trunc_normal_(self.patch_embed.weight, std=0.02)  # as the ECG model's linear patch embedding
        nn.init.zeros_(self.patch_embed.bias)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def embed(self, x: Tensor, frame_mask: Tensor | None = None) -> tuple[Tensor, VideoLayout]:
        """Tubelet tokens ``[B, N, D]`` (all of them, absent ones included) with their position
        embeddings, and their layout. Absent time slices are zeroed first, so NaNs there cannot leak."""
        if x.ndim != 4:
            raise ValueError(f"expected a clip [batch, frames, height, width], got shape {tuple(x.shape)}")
        b, n_frames, h, w = x.shape
        t, ph, pw = self.tubelet
        if (h, w) != (self.size, self.size):
            raise ValueError(f"frames are {h}x{w} pixels, the model was built for {self.size}x{self.size}")
        if n_frames % t or n_frames > self.frames:
            raise ValueError(
                f"a clip of {n_frames} frames: need a multiple of the tubelet's {t} frames, at most {self.frames}"
            )
        n_t, (gh, gw) = n_frames // t, self.grid
        n_s = gh * gw
        if frame_mask is None:
            present_t = torch.ones(b, n_t, dtype=torch.bool, device=x.device)
        else:
            if frame_mask.shape != (b, n_frames):
                raise ValueError(f"frame_mask has shape {tuple(frame_mask.shape)}, expected {(b, n_frames)}")
            frame_mask = frame_mask.to(device=x.device, dtype=torch.bool)
            present_t = frame_mask.view(b, n_t, t).all(-1)
            if not bool(present_t.any(1).all()):
                raise ValueError(f"every clip needs at least one time slice of {t} present frames")
            frame_present = present_t.repeat_interleave(t, dim=1)[..., None, None]  # whole absent slices
            x = torch.where(frame_present, x, torch.zeros((), dtype=x.dtype, device=x.device))

        patches = x.reshape(b, n_t, t, gh, ph, gw, pw).permute(0, 1, 3, 5, 2, 4, 6).reshape(b, n_t * n_s, t * ph * pw)
        present = present_t.repeat_interleave(n_s, dim=1)
        time_ids = torch.arange(n_t, device=x.device).repeat_interleave(n_s)
        space_ids = torch.arange(n_s, device=x.device).repeat(n_t)

        tokens = self.patch_embed(x[:, None]).flatten(2).transpose(1, 2)  # [B, n_t * n_s, D], time-major
        tokens = tokens + self.time_embed[time_ids] + self.space_embed[space_ids]
        return tokens, VideoLayout(patches, present, time_ids, space_ids, n_t, n_s)

    def _encode_present(self, tokens: Tensor, present: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """Encode only the ``present [B, N]`` tokens: ``(encoded [B, K, D], ids [B, K], valid [B, K], cls)``."""
        ids, valid = compact(present)
        encoded, cls = self.encode(_gather(tokens, ids), valid)
        return encoded, ids, valid, cls

    def forward_tokens(self, x: Tensor, frame_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Encoded tokens ``[B, N, D]`` (time-major, zero where absent) and their presence mask ``[B, N]``."""
        tokens, layout = self.embed(x, frame_mask)
        encoded, ids, valid, _ = self._encode_present(tokens, layout.present)
        encoded = torch.where(valid[..., None], encoded, torch.zeros((), dtype=encoded.dtype, device=encoded.device))
        full = encoded.new_zeros(tokens.shape).scatter(1, ids[..., None].expand_as(encoded), encoded)
        return full, layout.present

    def forward_features(self, x: Tensor, frame_mask: Tensor | None = None) -> Tensor:
        """Pooled embedding ``[B, D]``: the CLS output, or the mean over present tokens."""
        tokens, layout = self.embed(x, frame_mask)
        encoded, _, valid, cls = self._encode_present(tokens, layout.present)
        return self.pool_tokens(encoded, valid, cls)

    def forward(self, x: Tensor, frame_mask: Tensor | None = None) -> Tensor:
        return self.forward_features(x, frame_mask)


# ----------------------------------------------------------------------------- masked autoencoder


class VideoMAE(MaskedDecoder):
    """Masked autoencoder around a :class:`VideoTransformer` (see the module docstring).

    ``mask_ratio`` is the fraction hidden among the present tokens (``"random"``), the spatial
    positions (``"tube"``, in every present time slice) or the present time slices (``"frame"``),
    rounded to whole tokens; at least one token (or slice) per clip stays visible.
    """

    def __init__(
        self,
        encoder: VideoTransformer,
        *,
        decoder_dim: int = 128,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
        mask_mode: str = "tube",
        mask_ratio: float = 0.9,
        norm_pix: bool = True,
        target_grid: int | None = None,
    ):
        if not isinstance(encoder, VideoTransformer):
            raise ConfigError(f"video_mae needs a video transformer encoder (video_vit_*), got "
                              f"{type(encoder).__name__}: a CNN has no tokens to drop (train video_cnn contrastively)")
        if mask_mode not in MASK_MODES:
            raise ConfigError(f"mask_mode must be one of {', '.join(MASK_MODES)}, got {mask_mode!r}")
        if not 0.0 <= mask_ratio < 1.0:
            raise ConfigError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        t, ph, pw = encoder.tubelet
        if target_grid is not None and (target_grid < 1 or ph % target_grid or pw % target_grid):
            raise ConfigError(f"target_grid must divide the tubelet's {ph} x {pw} pixels, got {target_grid}")
        self.target_grid = target_grid
        g = target_grid
        super().__init__(encoder.embed_dim, decoder_dim, decoder_depth, decoder_heads, t * (ph * pw if g is None else g * g))
        self.encoder = encoder
        self.mask_mode = mask_mode
        self.mask_ratio = mask_ratio
        self.norm_pix = norm_pix
        self.register_buffer("decoder_time_embed", sincos_embedding(encoder.frames // t, decoder_dim), persistent=False)
        self.register_buffer("decoder_space_embed", sincos_embedding_2d(*encoder.grid, decoder_dim), persistent=False)

    def random_masking(
        self, layout: VideoLayout, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Choose the visible tokens per clip (from ``generator``, or torch's global RNG).

        Returns ``ids_keep [B, K]`` (token indices, K = the largest visible count in the batch),
        ``keep_valid [B, K]`` (False for the filler beyond a clip's own count) and ``mask [B, N]``
        (True = hidden and present: the tokens the loss scores).
        """
        present = layout.present
        b, device = present.shape[0], present.device
        keep_fraction = 1.0 - self.mask_ratio
        if self.mask_mode == "random":
            noise = torch.rand(present.shape, device=device, generator=generator)
            n_keep = torch.round(present.sum(1) * keep_fraction).long().clamp_min(1)
            visible = _keep_random(noise, present, n_keep)
        elif self.mask_mode == "tube":
            noise = torch.rand(b, layout.n_s, device=device, generator=generator)
            n_keep = torch.full((b,), max(1, round(layout.n_s * keep_fraction)), device=device)
            spatial = _keep_random(noise, torch.ones_like(noise, dtype=torch.bool), n_keep)  # [B, n_s]
            visible = present & spatial.repeat(1, layout.n_t)
        else:  # "frame"
            slice_present = present.view(b, layout.n_t, layout.n_s)[..., 0]
            noise = torch.rand(b, layout.n_t, device=device, generator=generator)
            n_keep = torch.round(slice_present.sum(1) * keep_fraction).long().clamp_min(1)
            visible = _keep_random(noise, slice_present, n_keep).repeat_interleave(layout.n_s, dim=1)
        ids_keep, keep_valid = compact(visible)
        return ids_keep, keep_valid, present & ~visible

    def forward(
        self, x: Tensor, frame_mask: Tensor | None = None, *, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """``pred`` and ``target`` ``[B, N, t * ph * pw]``, ``mask`` ``[B, N]`` (1 = hidden and present),
        ``loss`` (MSE over hidden tubelets; per-tubelet normalised target if ``norm_pix``).

        ``generator`` (on ``x``'s device) draws the masks, so a training step can be replayed
        exactly; without it torch's global RNG is used."""
        tokens, layout = self.encoder.embed(x, frame_mask)
        ids_keep, keep_valid, mask = self.random_masking(layout, generator)
        latent, cls = self.encoder.encode(_gather(tokens, ids_keep), keep_valid)
        pred = self._decode(latent, cls, ids_keep, keep_valid, layout)
        target = self.targets(layout.patches)
        loss = masked_patch_loss(pred, target, mask, norm_pix=self.norm_pix)
        return {"pred": pred, "target": target, "mask": mask.to(pred.dtype), "loss": loss}

    def targets(self, patches: Tensor) -> Tensor:
        """What the decoder predicts for tubelet pixels ``[B, N, t * ph * pw]``: the pixels, or with
        ``target_grid=g`` each frame's ``g x g`` block means ``[B, N, t * g * g]`` (module doc)."""
        if self.target_grid is None:
            return patches
        (t, ph, pw), g = self.encoder.tubelet, self.target_grid
        b, n, _ = patches.shape
        blocks = patches.reshape(b, n, t, g, ph // g, g, pw // g).mean(dim=(4, 6))
        return blocks.reshape(b, n, t * g * g)

    def _decode(
        self, latent: Tensor, cls: Tensor | None, ids_keep: Tensor, keep_valid: Tensor, layout: VideoLayout
    ) -> Tensor:
        position = self.decoder_time_embed[layout.time_ids] + self.decoder_space_embed[layout.space_ids]
        return self.decode(latent, cls, ids_keep, keep_valid, position, layout.present,
                           grad_checkpointing=self.encoder.grad_checkpointing)


# ----------------------------------------------------------------------------- registered presets


def _check_input_spec(cycles: float | None, fps: float, modality: str) -> None:
    if cycles is not None and not cycles > 0:
        raise ConfigError(f"cycles must be positive or None, got {cycles}")
    if not fps > 0:
        raise ConfigError(f"fps must be positive, got {fps}")
    if modality not in MODALITIES:
        raise ConfigError(f"modality must be one of {', '.join(MODALITIES)}, got {modality!r}")


# ``cycles`` / ``fps`` / ``modality`` / ``normalisation`` are metadata for whoever prepares the
# input (see the registry): a clip of ``cycles`` cardiac cycles (or at ``fps`` when cycles is None)
# resampled to ``frames`` frames of ``size`` x ``size`` pixels.
@register_model("video_vit")
@register_model("video_vit_tiny")
@register_model("video_vit_small", dim=384, depth=12, heads=6)
@register_model("video_vit_base", size=112, tubelet=(2, 16, 16), dim=768, depth=12, heads=12)
def video_vit(
    *,
    size: int = 64,
    frames: int = 16,
    tubelet: Sequence[int] = (2, 8, 8),
    cycles: float | None = 1.0,
    fps: float = 16.0,
    modality: str = "echo",
    normalisation: str = "per-clip z-score in field of view",
    dim: int = 192,
    depth: int = 4,
    heads: int = 4,
    mlp_ratio: float = 4.0,
    dropout: float = 0.0,
    pool: str = "mean",
    grad_checkpointing: bool = False,
) -> VideoTransformer:
    """The clip encoder. ``video_vit_tiny``: CPU-sized, 64 px, 16 frames, (2, 8, 8) tubelets (512
    tokens), dim 192, depth 4, 4 heads (1.80 M parameters); ``video_vit_small``: dim 384, depth 12,
    6 heads (21.3 M); ``video_vit_base``: ViT-B, 112 px, (2, 16, 16) tubelets (392 tokens), dim 768,
    depth 12, 12 heads (85.4 M)."""
    _check_input_spec(cycles, fps, modality)
    return VideoTransformer(
        size=size,
        frames=frames,
        tubelet=tubelet,
        dim=dim,
        depth=depth,
        heads=heads,
        mlp_ratio=mlp_ratio,
        dropout=dropout,
        pool=pool,
        grad_checkpointing=grad_checkpointing,
    )


@register_model("video_mae")
@register_model("video_mae_tiny")
@register_model("video_mae_base", encoder={"name": "video_vit_base"}, decoder_dim=384, decoder_depth=4, decoder_heads=6)
@legacy_keys(nest_flat_keys("encoder"))  # configs written before the encoder was nested held its keys flat
def video_mae(
    *,
    encoder: Mapping[str, Any] = {"name": "video_vit_tiny"},  # the registry copies defaults, never mutates them
    decoder_dim: int = 128,
    decoder_depth: int = 2,
    decoder_heads: int = 4,
    mask_mode: str = "tube",
    mask_ratio: float = 0.9,
    norm_pix: bool = True,
    target_grid: int | None = None,
) -> VideoMAE:
    """MAE pre-training of a :func:`video_vit` ``encoder`` (its model config). ``video_mae_tiny``:
    the tiny encoder with a 2-block, 128-wide decoder; ``video_mae_base``: the base encoder with
    VideoMAE-B's 4-block, 384-wide, 6-head decoder. ``target_grid``: coarse block-mean targets
    (module doc)."""
    # through the registry, so ``mae.encoder.model_config`` rebuilds the encoder on its own
    return VideoMAE(
        model_from_config(encoder),
        decoder_dim=decoder_dim,
        decoder_depth=decoder_depth,
        decoder_heads=decoder_heads,
        mask_mode=mask_mode,
        mask_ratio=mask_ratio,
        norm_pix=norm_pix,
        target_grid=target_grid,
    )


# ----------------------------------------------------------------------------- test configs


def video_example(model: nn.Module) -> tuple[tuple, dict]:
    """Two random clips of the model's size and frame count: ``((x,), {})``, plus a seeded mask
    ``generator`` for a masked autoencoder."""
    config = model.model_config.get("encoder", model.model_config)
    size, frames = config["size"], config["frames"]
    x = torch.randn(2, frames, size, size, generator=torch.Generator().manual_seed(0))
    kwargs = {"generator": torch.Generator().manual_seed(1)} if isinstance(model, VideoMAE) else {}
    return (x,), kwargs


_SMALL_VIT = {"size": 16, "frames": 4, "dim": 32, "depth": 1, "heads": 2}
_SMALL_BASE = {"size": 32, "frames": 4, "depth": 1}  # base width, heads and tubelet; one block
register_test("video_vit", "video_vit_tiny", "video_vit_small", example=video_example, **_SMALL_VIT)
register_test("video_vit_base", example=video_example, **_SMALL_BASE)
register_test("video_mae", "video_mae_tiny", example=video_example, encoder=_SMALL_VIT, decoder_dim=16,
              decoder_depth=1)
register_test("video_mae_base", example=video_example, encoder=_SMALL_BASE, decoder_depth=1)
