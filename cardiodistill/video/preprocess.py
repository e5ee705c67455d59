"""From a raw cine loop to a fixed-size model input, and a figure to check it.

:func:`prepare_clip` turns any :class:`~cardiodistill.records.VideoClip` (an echo screen grab with
text and an ECG trace, a simulated sector, a cine MR) into ``spec.frames`` frames of
``spec.size x spec.size`` pixels:

* **space**: the field of view's bounding box (:mod:`.sector`) is cropped, padded to a square
  (in millimetres when the pixel spacing is known, so anatomy keeps its proportions) and resized
  with an anti-aliasing Gaussian (``sigma = (1 / zoom - 1) / 2`` per axis). Pixels outside the
  field of view and burned-in overlays are missing data: the Gaussian is applied as a normalised
  convolution that ignores them (so they neither darken nor brighten their neighbours, and a thin
  caliper line is filled in from the tissue around it), and output pixels that lie mostly outside
  the field of view or on an overlay are set to 0;
* **time**: with ``spec.cycles`` set, the output frames evenly sample that many cardiac cycles,
  first and last frame included (for one cycle they show the same phase), so a fast and a slow
  heart get the same number of frames per beat. The period comes from the pixels
  (:func:`.cycles.estimate_cycle_period`), else from the DICOM heart-rate tag
  (``clip.meta["heart_rate"]``), else from ``spec.default_hr``. With ``spec.cycles=None`` the clip
  is resampled to ``spec.fps`` and ``spec.frames`` consecutive frames are taken. Frames between
  source frames are linear interpolations.

:func:`normalise_frames` then z-scores each clip inside its mask, on NumPy arrays or torch tensors.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from ..errors import ConfigError, DataError
from ..io.atomic import atomic_path
from ..records import VideoClip
from .cycles import _place_window, estimate_cycle_period
from .sector import field_of_view_and_overlay

__all__ = [
    "NORMALISE_MIN_STD",
    "ClipSpec",
    "PreparedClip",
    "normalise_frames",
    "prepare_clip",
    "prepare_windows",
    "save_preprocessing_figure",
]

NORMALISE_MIN_STD = 1.0  # grey levels: a clip flatter than this is scaled as if its SD were this
_MAX_SIZE = 1024
_MAX_FRAMES = 1024
_HR_LIMITS = (20.0, 300.0)  # beats/min accepted for default_hr and for a heart-rate tag


@dataclass(frozen=True)
class ClipSpec:
    """What a model sees of a clip: ``frames`` frames of ``size x size`` pixels.

    ``cycles``: if set, the frames evenly sample this many cardiac cycles (temporal sampling
    adapts to the heart rate); if ``None``, the clip is resampled to ``fps`` frames/s and
    ``frames`` consecutive frames are taken. ``default_hr`` (beats/min) is the heart rate used when
    neither the pixels nor a DICOM tag give the period. Stored in model files via :meth:`to_dict`.
    """

    size: int = 64
    frames: int = 16
    cycles: float | None = 1.0
    fps: float = 16.0
    default_hr: float = 70.0

    def __post_init__(self) -> None:
        for name, top in (("size", _MAX_SIZE), ("frames", _MAX_FRAMES)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= top:
                raise ConfigError(f"ClipSpec.{name} must be an integer from 1 to {top}, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.size < 8:
            raise ConfigError(f"ClipSpec.size must be at least 8 pixels, got {self.size}")
        if self.cycles is not None:
            object.__setattr__(self, "cycles", _positive(self.cycles, "cycles"))
        object.__setattr__(self, "fps", _positive(self.fps, "fps"))
        hr = _positive(self.default_hr, "default_hr")
        if not _HR_LIMITS[0] <= hr <= _HR_LIMITS[1]:
            raise ConfigError(f"ClipSpec.default_hr must be {_HR_LIMITS[0]:g}-{_HR_LIMITS[1]:g} beats/min, got {hr:g}")
        object.__setattr__(self, "default_hr", hr)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``cycles`` may be ``None``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipSpec:
        """Inverse of :meth:`to_dict`; missing keys take their defaults, unknown keys are an error."""
        if not isinstance(data, dict):
            raise ConfigError(f"ClipSpec must be given as a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"ClipSpec has no field(s) {', '.join(unknown)}")
        return cls(**data)


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"ClipSpec.{name} must be a number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"ClipSpec.{name} must be a positive number, got {value!r}")
    return value


@dataclass(frozen=True)
class PreparedClip:
    """A clip ready for a model.

    ``frames`` uint8 ``[spec.frames, size, size]`` (0 outside the field of view and where overlays were);
    ``mask`` bool ``[size, size]``, the field of view in output pixels; ``times_s`` ``[spec.frames]``
    the source time of each output frame; ``period_s`` the cardiac cycle length used and
    ``period_source`` where it came from; ``window_s`` (start, end) seconds of the source sampled;
    ``crop_box`` (row0, row1, col0, col1), the half-open box of source pixels that was resized.
    """

    frames: np.ndarray
    mask: np.ndarray
    times_s: np.ndarray
    period_s: float
    period_source: Literal["pixels", "tag", "default"]
    window_s: tuple[float, float]
    crop_box: tuple[int, int, int, int]


def _tag_heart_rate(meta: dict) -> float | None:
    """A plausible heart rate (beats/min) from ``meta["heart_rate"]``, else None."""
    try:
        hr = float(meta.get("heart_rate") or 0.0)
    except (TypeError, ValueError):
        return None
    return hr if _HR_LIMITS[0] <= hr <= _HR_LIMITS[1] else None


def _cycle_period(clip: VideoClip, image: np.ndarray, spec: ClipSpec) -> tuple[float, str]:
    """(period in seconds, source): the pixels, else the heart-rate tag, else the spec's default."""
    period = estimate_cycle_period(clip.frames, clip.fps, image)
    if math.isfinite(period):
        return period, "pixels"
    hr = _tag_heart_rate(clip.meta)
    if hr is not None:
        return 60.0 / hr, "tag"
    return 60.0 / spec.default_hr, "default"


def _sample_times(clip: VideoClip, spec: ClipSpec, period_s: float, start_s: float | None) -> np.ndarray:
    """Source times (s) of the output frames, inside ``[0, (T - 1) / fps]``."""
    last = (clip.n_frames - 1) / clip.fps
    if spec.cycles is not None:
        t0, t1 = _place_window(last, spec.cycles * period_s, start_s)
        return np.linspace(t0, t1, spec.frames)
    t0, _ = _place_window(last, (spec.frames - 1) / spec.fps, start_s)
    return np.minimum(t0 + np.arange(spec.frames) / spec.fps, last)  # a short clip holds its last frame


def _interpolate_frames(frames: np.ndarray, fps: float, times_s: np.ndarray) -> np.ndarray:
    """Linear interpolation between the frames ``[T, h, w]`` at ``times_s``, float32 ``[F, h, w]``."""
    position = np.clip(times_s * fps, 0.0, frames.shape[0] - 1)
    i0 = np.floor(position).astype(int)
    i1 = np.minimum(i0 + 1, frames.shape[0] - 1)
    w = (position - i0).astype(np.float32)[:, None, None]
    return (1.0 - w) * frames[i0].astype(np.float32) + w * frames[i1].astype(np.float32)


@dataclass(frozen=True)
class _Fit:
    """How a ``[h, w]`` crop maps onto a ``size x size`` canvas: same physical scale on both axes, centred."""

    shape: tuple[int, int]  # resized crop, pixels
    offset: tuple[int, int]  # its top-left corner on the canvas
    sigma: tuple[float, float]  # anti-aliasing Gaussian SD per axis, source pixels
    size: int

    @classmethod
    def of(cls, h: int, w: int, size: int, spacing: tuple[float, float]) -> _Fit:
        extent = max(h * spacing[0], w * spacing[1])  # the longer side, mm (or pixels)
        zoom = (size * spacing[0] / extent, size * spacing[1] / extent)
        shape = (max(1, min(size, round(h * zoom[0]))), max(1, min(size, round(w * zoom[1]))))
        sigma = (max(0.0, (1.0 / zoom[0] - 1.0) / 2.0), max(0.0, (1.0 / zoom[1] - 1.0) / 2.0))
        return cls(shape, ((size - shape[0]) // 2, (size - shape[1]) // 2), sigma, size)

    def blur(self, a: np.ndarray) -> np.ndarray:
        """Anti-aliasing low-pass over the last two axes."""
        return ndimage.gaussian_filter(a, (0.0,) * (a.ndim - 2) + self.sigma) if max(self.sigma) > 0 else a

    def place(self, a: np.ndarray) -> np.ndarray:
        """Resize ``a [..., h, w]`` (bilinear, pixel-area aligned) and centre it on a zero canvas."""
        factors = (1.0,) * (a.ndim - 2) + (self.shape[0] / a.shape[-2], self.shape[1] / a.shape[-1])
        canvas = np.zeros(a.shape[:-2] + (self.size, self.size), np.float32)
        (top, left), (h, w) = self.offset, self.shape
        canvas[..., top:top + h, left:left + w] = ndimage.zoom(a, factors, order=1, grid_mode=True, mode="nearest")
        return canvas


def _pixel_spacing(clip: VideoClip) -> tuple[float, float]:
    """(row, column) pixel spacing in mm, or (1, 1) when unknown or invalid."""
    spacing = clip.meta.get("pixel_spacing_mm")
    try:
        row, col = (float(v) for v in np.broadcast_to(np.asarray(spacing, dtype=np.float64), (2,)))
    except (TypeError, ValueError):
        return 1.0, 1.0
    return (row, col) if math.isfinite(row) and math.isfinite(col) and row > 0 and col > 0 else (1.0, 1.0)


def prepare_clip(clip: VideoClip, spec: ClipSpec, *, start_s: float | None = None) -> PreparedClip:
    """Field-of-view masked, overlay-blanked, cropped, square, resized and time-resampled frames.

    ``start_s`` (seconds) is where the sampled window begins; ``None`` is the clip start, so the
    result is deterministic (training may pass random starts). A window that would run past the
    end is moved back to fit; a clip shorter than the window is used whole.
    """
    if start_s is not None and not math.isfinite(start_s):
        raise ConfigError(f"start_s must be a finite number of seconds, got {start_s!r}")
    return _prepare(clip, spec, [start_s])[0]


def prepare_windows(clip: VideoClip, spec: ClipSpec, n: int) -> list[PreparedClip]:
    """``n`` windows of ``clip`` with their starts evenly spread from its start to its end (the
    first is ``prepare_clip(clip, spec)``); the field of view, overlays and cycle length are found
    once for all of them."""
    if n < 1:
        raise ConfigError(f"the number of windows must be at least 1, got {n}")
    return _prepare(clip, spec, n)


def _prepare(clip: VideoClip, spec: ClipSpec, starts_s: Sequence[float | None] | int) -> list[PreparedClip]:
    """The windows at ``starts_s`` (seconds), or that many evenly spread ones."""
    if not isinstance(spec, ClipSpec):
        raise ConfigError(f"spec must be a ClipSpec, got {type(spec).__name__}")
    fov, overlay = field_of_view_and_overlay(clip)
    image = fov & ~overlay
    if not image.any():
        raise DataError("no image pixels: the whole field of view is burned-in overlay", clip.source)
    period_s, source = _cycle_period(clip, image, spec)
    if isinstance(starts_s, int):
        length = spec.cycles * period_s if spec.cycles is not None else (spec.frames - 1) / spec.fps
        slack = max(0.0, (clip.n_frames - 1) / clip.fps - length)
        starts_s = [slack * k / max(1, starts_s - 1) for k in range(starts_s)]

    rows, cols = np.flatnonzero(fov.any(axis=1)), np.flatnonzero(fov.any(axis=0))
    box = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
    crop = clip.frames[:, box[0]:box[1], box[2]:box[3]]
    keep = image[box[0]:box[1], box[2]:box[3]].astype(np.float32)
    fit = _Fit.of(*keep.shape, spec.size, _pixel_spacing(clip))
    # normalised convolution: the zeros outside the field of view and on overlays do not darken their neighbours
    support = fit.blur(keep)
    mask = fit.place(fov[box[0]:box[1], box[2]:box[3]].astype(np.float32)) >= 0.5
    shown = mask & (fit.place(keep) >= 0.5)  # outside the field of view and on overlays: 0
    prepared = []
    for start_s in starts_s:
        times = _sample_times(clip, spec, period_s, start_s)
        stack = fit.blur(_interpolate_frames(crop, clip.fps, times) * keep) / np.maximum(support, 1e-6)
        frames = fit.place(stack * (support > 1e-6)) * shown
        prepared.append(PreparedClip(
            frames=np.clip(np.rint(frames), 0, 255).astype(np.uint8),
            mask=mask,
            times_s=times,
            period_s=float(period_s),
            period_source=source,
            window_s=(float(times[0]), float(times[-1])),
            crop_box=box,
        ))
    return prepared


def normalise_frames(frames: Any, mask: Any) -> Any:
    """Per-clip z-score inside the mask, 0 outside: float32, same type (NumPy or torch) as ``frames``.

    ``frames`` uint8 (or float) ``[..., T, H, W]``, one clip per leading index; ``mask`` bool
    ``[H, W]`` or ``[..., H, W]`` (one per clip). Mean and SD are taken over the clip's frames and
    masked pixels; an SD below :data:`NORMALISE_MIN_STD` grey levels is replaced by it, so a flat
    clip becomes finite zeros rather than noise blown up.
    """
    torch = sys.modules.get("torch")  # torch tensors are handled without importing torch here
    if torch is not None and isinstance(frames, torch.Tensor):
        x = frames.to(torch.float32)
        m = torch.as_tensor(mask, device=x.device).to(torch.float32)
    else:
        x = np.asarray(frames, dtype=np.float32)
        m = np.asarray(mask, dtype=np.float32)
    if x.ndim < 3 or m.ndim < 2 or tuple(m.shape[-2:]) != tuple(x.shape[-2:]):
        shapes = f"{tuple(x.shape)} and {tuple(m.shape)}"
        raise DataError(f"frames [..., T, H, W] and mask [..., H, W] do not match: {shapes}")
    m = m[..., None, :, :]
    axes = (-3, -2, -1)
    n = (m.sum(axis=axes, keepdims=True) * x.shape[-3]).clip(min=1.0)
    mean = (x * m).sum(axis=axes, keepdims=True) / n
    centred = (x - mean) * m
    std = ((centred * centred).sum(axis=axes, keepdims=True) / n) ** 0.5
    return centred / std.clip(min=NORMALISE_MIN_STD)


def _pixelate(frame: np.ndarray, block: int) -> np.ndarray:
    """Block means of ``frame [H, W]`` repeated back to full size: burned-in text becomes unreadable."""
    h, w = frame.shape
    padded = np.pad(frame.astype(np.float32), ((0, -h % block), (0, -w % block)), mode="edge")
    means = padded.reshape(padded.shape[0] // block, block, padded.shape[1] // block, block).mean(axis=(1, 3))
    return np.repeat(np.repeat(means, block, axis=0), block, axis=1)[:h, :w]


def save_preprocessing_figure(clip: VideoClip, prepared: PreparedClip, path: str | PathLike[str]) -> Path:
    """Write a PNG that shows what :func:`prepare_clip` did to ``clip``; return its path.

    Top: the clip's first frame with the field of view (green), blanked overlays (red) and the
    crop box (dashed). Outside the field of view and on overlays the frame is pixelated, so
    burned-in text (names, dates) cannot be read; no patient attribute from ``clip.meta`` is drawn.
    Bottom: the prepared frames with their source times. Written atomically.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    fov, overlay = field_of_view_and_overlay(clip)
    first = clip.frames[0].astype(np.float32)
    hidden = ~fov | overlay
    shown = np.where(hidden, 0.6 * _pixelate(first, max(4, min(first.shape) // 40)), first)

    n_out = prepared.frames.shape[0]
    n_rows = 1 if n_out <= 4 else 2
    n_cols = -(-n_out // n_rows)
    height, width = first.shape
    raw_w = 5.5
    raw_h = raw_w * height / width
    strip_h = n_rows * (raw_h / 2 if n_rows == 2 else raw_h)
    fig = Figure(figsize=(raw_w + strip_h / n_rows * n_cols * 1.05, max(raw_h, strip_h) + 0.9))
    grid = fig.add_gridspec(1, 2, width_ratios=[raw_w, strip_h / n_rows * n_cols * 1.05], wspace=0.04)
    ax = fig.add_subplot(grid[0])
    ax.imshow(shown, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    rows, cols = np.arange(-1, height + 1), np.arange(-1, width + 1)  # padded, so edges on the border are drawn
    ax.contour(cols, rows, np.pad(fov, 1), levels=[0.5], colors="lime", linewidths=1.0)
    if overlay.any():
        ax.contour(cols, rows, np.pad(overlay, 1), levels=[0.5], colors="red", linewidths=0.8)
    r0, r1, c0, c1 = prepared.crop_box
    ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, ls="--", lw=0.8, color="yellow"))
    ax.set_title(f"first frame: field of view (green, {fov.mean():.0%}), overlay (red, {overlay.sum()} px), "
                 "crop (dashed)", fontsize=7)
    ax.axis("off")
    strip = grid[1].subgridspec(n_rows, n_cols, hspace=0.12, wspace=0.04)
    for i in range(n_out):
        sub = fig.add_subplot(strip[i // n_cols, i % n_cols])
        sub.imshow(prepared.frames[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        sub.set_title(f"{prepared.times_s[i]:.3f} s", fontsize=7, pad=2)
        sub.axis("off")
    size = prepared.frames.shape[-1]
    t0, t1 = prepared.window_s
    fig.suptitle(
        f"{clip.modality} '{clip.view}': {clip.n_frames} frames {height}x{width} px at {clip.fps:.1f} fps"
        f" -> {n_out} frames {size}x{size} px over {t0:.2f}-{t1:.2f} s; outside the field of view pixelated\n"
        f"cycle period {prepared.period_s:.3f} s ({60.0 / prepared.period_s:.0f} bpm) from {prepared.period_source}",
        fontsize=9,
    )
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    return path
