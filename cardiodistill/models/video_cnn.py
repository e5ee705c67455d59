"""A small (2+1)-D convolutional echo encoder, beside the video transformer (stage 1).

Input
    The same call as :class:`~cardiodistill.models.VideoTransformer`: ``x [B, T, H, W]`` float, a clip of
    whole cardiac cycles z-scored inside the ultrasound sector and 0 outside, ``H = W = size``, ``T`` a
    multiple of the stem's frames up to ``frames``, and an optional ``frame_mask [B, T]`` (True = frame
    present).

Input channels
    Each frame becomes up to three channels: the frame itself; with ``motion``, its temporal difference
    ``x[t] - x[t-1]`` (0 for the first frame, and wherever either frame is not shown), which is where the
    walls move; and a *shown* channel, 1 where the pixel is shown to the encoder and 0 where it is absent or
    hidden (stages 2-3 hide tubelets; see below), so the network can tell a hidden region from a dark one.
    The motion channel gives the first layer what the no-model baseline of docs/benchmarks.md reads
    directly (the SD over time of 16 x 16 block means: how much each region moves), instead of asking the
    network to learn frame differencing from one grayscale channel, as a tubelet embedding must.

Trunk ((2+1)-D, Tran et al. 2018; MobileNet-style depthwise-separable convolutions)
    A patchifying stem: one convolution with kernel = stride = ``stem`` (default 2 frames x 4 x 4 pixels,
    the blocks of the pixels baseline, where speckle averages out), BN, act. Then ``depth_per_stage``
    residual blocks per width; each has a spatial part (depthwise 3 x 3, stride 2 in the first block of
    every stage after the first, pointwise to the stage width, BN, act) and a temporal part (depthwise
    ``kernel_t`` x 1 x 1 over time slices, pointwise, BN started at zero so the block begins as its
    shortcut). A pointwise layer, BN and act map the last stage to ``dim``. Everything runs on the stem's
    coarse grid: on one CPU thread a full-resolution stage (32 x 32 pixels x 16 frames) alone cost more
    than a whole step of this one, and a SimCLR step of ``video_cnn`` on 2 x 32 clips of 16 x 64 x 64
    takes about 1.6 s. The activations of absent time slices are zeroed after every block, as the
    convolutions' own zero padding is, so a clip whose last frames are absent gives the same tokens as the
    clip cut short.

Tokens
    Each position of the last feature map is a token: ``tubelet = (t, ph, pw)`` (the stem's frames, and its
    pixels times ``2 ** (len(widths) - 1)``: (2, 8, 8) by default, as video_vit_tiny's) and ``grid = (size //
    ph, size // pw)`` name the downsampling, exactly as the transformer's tubelets do, so ``forward_tokens``
    returns ``[B, n_t * n_s, dim]`` time-major (``n_t = T // t``) with a presence mask, and the
    ``mean+temporal_std`` readout of the video evaluation, the echo masks of stage 2 and the MultiMAE
    decoder's tubelet targets (:meth:`VideoConvEncoder.layout`) need no change.
    A token sees more than its tubelet (the receptive field of the stack); a time slice with any absent
    frame is absent. The pooled embedding is the mean of the present tokens.

In stages 2-3
    The fusion model hides echo tubelets for masked modelling and reads one token per time slice. A CNN
    cannot drop tokens, so :meth:`VideoConvEncoder.encode_tubelets` zeroes the hidden tubelets in the input
    with their shown channel (and the motion channel wherever it would read a hidden pixel), treats a time
    slice with nothing shown as absent, and averages the kept tokens: per slice for the time tokens, over
    all for the pooled embedding - the transformer's ``encode_subset`` followed by the same group means.

Why a CNN here
    Every video transformer pretrained on two CPU cores lost to the pixels baseline in the frozen-probe
    evaluation (docs/benchmarks.md, "Stage 1 video"); for the ECG a small convolutional encoder with a
    contrastive objective learned where the transformer MAE did not (:mod:`~cardiodistill.models.ecg_cnn`).
    Convolutions bring the locality and translation equivariance a 1.8 M-parameter ViT has to learn from
    few steps, and a SimCLR step of ``video_cnn`` costs a fraction of the ViT's. ``video_cnn`` is the CPU
    encoder, ``video_cnn_base`` a wider one for GPU presets. Only the contrastive objective trains it in
    stage 1 (a CNN has no tokens to drop, which the masked autoencoder's speed rests on).

Measured (quick preset's 300 simulated echos, one CPU thread; the frozen-probe evaluation of 400 patients,
seed 101): after 400 SimCLR steps (11.6 min) LVEF MAE 3.1 % and macro AUROC 0.901 at 100 % of the labels,
against 3.1 % and 0.936 for the pixels baseline and 4.0-4.7 % / 0.81-0.85 for the pretrained ViTs. With
``motion=False`` (150 steps) it did as well at 100 % and better at 10 % of the labels: the 2-frame stem
can take the difference itself: the motion channel is an option (``motion=True``), off by default until it is
shown to help. (docs/benchmarks.md, "Stage 1 video: a convolutional encoder".)

Parameter counts (``tests/test_video_cnn.py``): ``video_cnn`` 0.08 M, ``video_cnn_base`` 0.28 M.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .registry import register_model, register_test
from .student import _activation
from .transformer import masked_mean
from .video_transformer import VideoLayout, _check_input_spec, video_example

__all__ = ["VideoConvEncoder", "video_cnn"]


def _bn(channels: int, zero: bool = False) -> nn.BatchNorm3d:
    bn = nn.BatchNorm3d(channels)
    if zero:
        nn.init.zeros_(bn.weight)
    return bn


class Factorised3dBlock(nn.Module):
    """Residual (2+1)-D block ``[B, c_in, T, H, W] -> [B, c_out, T, H / stride, W / stride]`` (module doc)."""

    def __init__(self, c_in: int, c_out: int, *, stride: int, kernel_t: int, act: str):
        super().__init__()
        s = stride
        self.spatial = nn.Sequential(
            nn.Conv3d(c_in, c_in, (1, 3, 3), stride=(1, s, s), padding=(0, 1, 1), groups=c_in, bias=False),
            nn.Conv3d(c_in, c_out, 1, bias=False), _bn(c_out), _activation(act),
        )
        self.temporal = nn.Sequential(
            nn.Conv3d(c_out, c_out, (kernel_t, 1, 1), padding=(kernel_t // 2, 0, 0), groups=c_out, bias=False),
            nn.Conv3d(c_out, c_out, 1, bias=False), _bn(c_out, zero=True),
        )
        shortcut: list[nn.Module] = []
        if s != 1:
            shortcut.append(nn.AvgPool3d((1, s, s)))
        if c_in != c_out:
            shortcut += [nn.Conv3d(c_in, c_out, 1, bias=False), _bn(c_out)]
        self.shortcut = nn.Sequential(*shortcut)
        self.act = _activation(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.temporal(self.spatial(x)) + self.shortcut(x))


class VideoConvEncoder(nn.Module):
    """Frame, motion and shown channels through a factorised (2+1)-D CNN; tokens on a tubelet grid (module doc)."""

    def __init__(
        self,
        *,
        size: int = 64,
        frames: int = 16,
        stem: Sequence[int] = (2, 4, 4),
        widths: Sequence[int] = (48, 96),
        dim: int = 256,
        depth_per_stage: int = 2,
        kernel_t: int = 3,
        motion: bool = False,
        act: str = "relu",
    ):
        super().__init__()
        if not widths or depth_per_stage < 1 or dim < 1:
            raise ConfigError(f"need at least one stage of one block and a positive dim, got widths={list(widths)}, "
                              f"depth_per_stage={depth_per_stage}, dim={dim}")
        if kernel_t < 1 or kernel_t % 2 == 0:
            raise ConfigError(f"kernel_t must be odd and positive, got {kernel_t}")
        if len(stem) != 3 or min(stem) < 1:
            raise ConfigError(f"stem must be (frames, height, width) of its patches, got {list(stem)}")
        t, sh, sw = (int(v) for v in stem)
        ph, pw = sh * 2 ** (len(widths) - 1), sw * 2 ** (len(widths) - 1)
        if frames % t or size % ph or size % pw:
            raise ConfigError(f"a {frames} x {size} x {size} clip does not divide into tokens of {t} x {ph} x {pw} "
                              f"(the stem's {list(stem)} and a 2x spatial stride per stage after the first)")
        self.size, self.frames, self.motion = size, frames, motion
        self.tubelet = (t, ph, pw)
        self.grid = (size // ph, size // pw)
        self.embed_dim = dim
        self.in_channels = 3 if motion else 2
        self.stem = nn.Sequential(nn.Conv3d(self.in_channels, widths[0], (t, sh, sw), stride=(t, sh, sw), bias=False),
                                  _bn(widths[0]), _activation(act))
        blocks, c_in = [], widths[0]
        for i, width in enumerate(widths):
            for j in range(depth_per_stage):
                blocks.append(Factorised3dBlock(c_in, width, stride=2 if j == 0 and i > 0 else 1, kernel_t=kernel_t,
                                                act=act))
                c_in = width
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Sequential(nn.Conv3d(c_in, dim, 1, bias=False), _bn(dim), _activation(act))
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    # ------------------------------------------------------------------------------- input

    def _check(self, x: Tensor, frame_mask: Tensor | None) -> Tensor:
        """The frame mask ``[B, T]`` (all True when None) after checking the clip's shape."""
        if x.ndim != 4:
            raise ValueError(f"expected a clip [batch, frames, height, width], got shape {tuple(x.shape)}")
        b, n_frames, h, w = x.shape
        t = self.tubelet[0]
        if (h, w) != (self.size, self.size):
            raise ValueError(f"frames are {h}x{w} pixels, the model was built for {self.size}x{self.size}")
        if n_frames % t or n_frames > self.frames or n_frames == 0:
            raise ValueError(f"a clip of {n_frames} frames: need a positive multiple of the stem's {t} frames, "
                             f"at most {self.frames}")
        if frame_mask is None:
            return torch.ones(b, n_frames, dtype=torch.bool, device=x.device)
        if frame_mask.shape != (b, n_frames):
            raise ValueError(f"frame_mask has shape {tuple(frame_mask.shape)}, expected {(b, n_frames)}")
        frame_mask = frame_mask.to(device=x.device, dtype=torch.bool)
        if not bool(frame_mask.view(b, n_frames // t, t).all(-1).any(1).all()):
            raise ValueError(f"every clip needs at least one time slice of {t} present frames")
        return frame_mask

    def channels(self, x: Tensor, shown: Tensor) -> Tensor:
        """``[B, C, T, H, W]``: the shown pixels of ``x`` (zero elsewhere), with ``motion`` their difference
        from the previous frame where both are shown, and the ``shown [B, T, H, W]`` mask itself."""
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        frame = torch.where(shown, x, zero)
        parts = [frame]
        if self.motion:
            both = shown[:, 1:] & shown[:, :-1]
            diff = torch.where(both, x[:, 1:] - x[:, :-1], zero)
            parts.append(torch.cat([torch.zeros_like(diff[:, :1]), diff], 1))
        parts.append(shown.to(x.dtype))
        return torch.stack(parts, 1)

    # ------------------------------------------------------------------------------- trunk

    def _feature_map(self, channels: Tensor, slice_present: Tensor) -> Tensor:
        """The last feature map ``[B, dim, n_t, gh, gw]``; the activations of absent time slices
        (``slice_present [B, n_t]`` False) are zeroed after every block (module doc)."""
        keep = slice_present[:, None, :, None, None]
        zero = torch.zeros((), dtype=channels.dtype, device=channels.device)
        h = torch.where(keep, self.stem(channels), zero)
        for block in self.blocks:
            h = torch.where(keep, block(h), zero)
        return torch.where(keep, self.head(h), zero)

    def _tokens(self, fmap: Tensor) -> Tensor:
        return fmap.flatten(3).permute(0, 2, 3, 1).flatten(1, 2)  # [B, n_t * n_s, dim], time-major

    def forward_tokens(self, x: Tensor, frame_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Tokens ``[B, n_t * n_s, dim]`` (time-major, zero where absent) and their presence mask ``[B, n_t * n_s]``."""
        frame_mask = self._check(x, frame_mask)
        t, n_s = self.tubelet[0], self.grid[0] * self.grid[1]
        present_t = frame_mask.view(len(x), -1, t).all(-1)
        shown = present_t.repeat_interleave(t, 1)[..., None, None].expand_as(x)  # whole absent slices
        fmap = self._feature_map(self.channels(x, shown), present_t)
        return self._tokens(fmap), present_t.repeat_interleave(n_s, dim=1)

    def forward_features(self, x: Tensor, frame_mask: Tensor | None = None) -> Tensor:
        """Pooled embedding ``[B, dim]``: the mean over present tokens."""
        tokens, present = self.forward_tokens(x, frame_mask)
        return masked_mean(tokens, present)

    def forward(self, x: Tensor, frame_mask: Tensor | None = None) -> Tensor:
        return self.forward_features(x, frame_mask)

    # ------------------------------------------------------------------------------- stages 2-3

    def layout(self, x: Tensor, frame_mask: Tensor | None = None) -> VideoLayout:
        """The tubelet layout of ``x`` as :meth:`VideoTransformer.embed` gives it: tubelet pixels ``[B, N,
        t * ph * pw]`` (the MultiMAE decoder's targets; absent slices zeroed), presence, ids and grid sizes."""
        frame_mask = self._check(x, frame_mask)
        b, n_frames = frame_mask.shape
        (t, ph, pw), (gh, gw) = self.tubelet, self.grid
        n_t, n_s = n_frames // t, gh * gw
        present_t = frame_mask.view(b, n_t, t).all(-1)
        x = torch.where(present_t.repeat_interleave(t, 1)[..., None, None], x,
                        torch.zeros((), dtype=x.dtype, device=x.device))
        patches = x.reshape(b, n_t, t, gh, ph, gw, pw).permute(0, 1, 3, 5, 2, 4, 6).reshape(b, n_t * n_s, t * ph * pw)
        time_ids = torch.arange(n_t, device=x.device).repeat_interleave(n_s)
        space_ids = torch.arange(n_s, device=x.device).repeat(n_t)
        return VideoLayout(patches, present_t.repeat_interleave(n_s, 1), time_ids, space_ids, n_t, n_s)

    def encode_tubelets(self, x: Tensor, keep: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The fusion model's view (module doc, "In stages 2-3").

        ``keep [B, n_t * n_s]`` (time-major): the tubelets the encoder may see; the rest are zeroed in the
        input with their shown channel. Returns ``(pooled [B, dim], time tokens [B, n_t, dim], time present
        [B, n_t])``: the mean of the kept tokens, overall and per time slice; a row with nothing kept gets a
        zero embedding and no present slice.
        """
        self._check(x, None)
        b, n_frames = x.shape[:2]
        (t, ph, pw), (gh, gw) = self.tubelet, self.grid
        n_t, n_s = n_frames // t, gh * gw
        if keep.shape != (b, n_t * n_s):
            raise ValueError(f"keep has shape {tuple(keep.shape)}, expected {(b, n_t * n_s)} for {n_frames} frames "
                             f"in tubelets of {self.tubelet}")
        keep = keep.to(device=x.device, dtype=torch.bool)
        grid = keep.view(b, n_t, gh, gw)
        shown = grid.repeat_interleave(t, 1).repeat_interleave(ph, 2).repeat_interleave(pw, 3)
        slice_kept = grid.flatten(2).any(2)  # [B, n_t]
        fmap = self._feature_map(self.channels(x, shown), slice_kept)
        tokens = self._tokens(fmap)
        per_slice = tokens.view(b, n_t, n_s, -1)
        k = grid.view(b, n_t, n_s, 1).to(tokens.dtype)
        time = (per_slice * k).sum(2) / k.sum(2).clamp_min(1.0)
        return masked_mean(tokens, keep), time, slice_kept


# ``cycles`` / ``fps`` / ``modality`` / ``normalisation`` are metadata for whoever prepares the input, as for
# video_vit: a clip of ``cycles`` cardiac cycles (or at ``fps``) resampled to ``frames`` frames of ``size`` px.
@register_model("video_cnn")
@register_model("video_cnn_base", widths=(96, 192), dim=384)
def video_cnn(
    *,
    size: int = 64,
    frames: int = 16,
    cycles: float | None = 1.0,
    fps: float = 16.0,
    modality: str = "echo",
    normalisation: str = "per-clip z-score in field of view",
    stem: Sequence[int] = (2, 4, 4),
    widths: Sequence[int] = (48, 96),
    dim: int = 256,
    depth_per_stage: int = 2,
    kernel_t: int = 3,
    motion: bool = False,
    act: str = "relu",
) -> VideoConvEncoder:
    """The (2+1)-D CNN clip encoder. ``video_cnn``: 64 px, 16 frames, a (2, 4, 4) stem, two blocks each of
    widths 48 and 96, dim 256: tokens on video_vit_tiny's 8 x 8 x 8 grid of (2, 8, 8) tubelets;
    ``video_cnn_base``: widths 96 and 192, dim 384. ``motion``: add the frame-difference channel (module doc;
    off by default: it did not help when measured)."""
    _check_input_spec(cycles, fps, modality)
    return VideoConvEncoder(size=size, frames=frames, stem=stem, widths=widths, dim=dim,
                            depth_per_stage=depth_per_stage, kernel_t=kernel_t, motion=motion, act=act)


register_test("video_cnn", "video_cnn_base", example=video_example, size=16, frames=4, widths=(8, 16), dim=16)
