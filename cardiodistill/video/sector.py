"""Field of view of an echo or cine-MR clip, and the burned-in overlays inside it.

**Echo.** Scanners export the ultrasound sector inside a larger screen grab that also holds
static text, logos, a grey-scale bar and often a live ECG trace. What sets the sector apart is
that its pixels change over time: speckle decorrelates and tissue moves in every frame, while
burned-in graphics are constant. So the sector is found from the temporal standard deviation:

1. pixels whose SD over time exceeds :data:`MOTION_STD` (a clip with one frame, or with no
   moving pixels, falls back to "brighter than :data:`BLACK_LEVEL` in any frame");
2. a majority filter (a pixel is live if at least :data:`LIVE_DENSITY` of the square window around
   it is; radius :data:`WINDOW_FRACTION` of the shorter side, at least :data:`MIN_RADIUS` px)
   fills the speckle gaps of the image and removes thin moving structures, above all the sweep
   of an ECG trace (a few px wide);
3. the largest connected component, together with every component at least
   :data:`COMPONENT_SHARE` of its size (the near field can be split from the rest by a dark
   band), is the live image;
4. its convex hull, rasterised, is the sector. A sector (<= 180 degrees, or a linear-probe
   rectangle) is convex, so the hull also fills the blood pools and the dark far field whose
   pixels barely change.

**Cine MR.** MR has no sector: the field of view is the whole frame less its all-black margins
(zero padding up to the matrix size) and less burned-in static text.

**Overlays** inside the field of view (calipers, the colour-Doppler box outline, depth markers,
text) are static across all frames and bright: SD over time at most :data:`OVERLAY_MAX_STD` and
darkest value at least :data:`OVERLAY_MIN_GREY`, plus their static anti-aliased rim. Tissue never
qualifies: its speckle (echo) or thermal noise (MR) varies from frame to frame. With fewer than
:data:`OVERLAY_MIN_FRAMES` frames nothing can be called static, and no overlay is reported.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

from ..errors import DataError
from ..records import VideoClip

__all__ = [
    "BLACK_LEVEL",
    "COMPONENT_SHARE",
    "LIVE_DENSITY",
    "MIN_AREA_FRACTION",
    "MIN_RADIUS",
    "MOTION_STD",
    "OVERLAY_MAX_STD",
    "OVERLAY_MIN_FRAMES",
    "OVERLAY_MIN_GREY",
    "WINDOW_FRACTION",
    "field_of_view_and_overlay",
    "find_field_of_view",
    "overlay_mask",
]

BLACK_LEVEL = 8  # grey levels at or below this are background (lossy codecs leave a few levels of noise)
MOTION_STD = 1.0  # grey levels: a pixel whose SD over time exceeds this is live image
WINDOW_FRACTION = 0.015  # majority-filter radius, share of the frame's shorter side ...
MIN_RADIUS = 3  # ... and at least this many pixels
LIVE_DENSITY = 0.5  # share of a window that must be live for its centre to be live
COMPONENT_SHARE = 0.03  # components at least this share of the largest one belong to the image too
MIN_AREA_FRACTION = 0.02  # fewer moving pixels than this share of the frame: treat the clip as static
OVERLAY_MAX_STD = 2.0  # grey levels: an overlay pixel is constant up to codec noise
OVERLAY_MIN_GREY = 128  # an overlay pixel is at least this bright in every frame
OVERLAY_MIN_FRAMES = 3  # fewer frames cannot tell static graphics from tissue

_ROW_BLOCK = 64  # rows per block when computing temporal statistics (bounds float memory)


def _temporal_stats(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel SD (float32), minimum and maximum (uint8) over time of ``frames [T, H, W]``."""
    _, height, width = frames.shape
    std = np.empty((height, width), np.float32)
    for r in range(0, height, _ROW_BLOCK):
        std[r:r + _ROW_BLOCK] = frames[:, r:r + _ROW_BLOCK].astype(np.float32).std(axis=0)
    return std, frames.min(axis=0), frames.max(axis=0)


def _majority(region: np.ndarray, radius: int) -> np.ndarray:
    """Pixels where at least ``LIVE_DENSITY`` of the ``(2 radius + 1)^2`` window is in ``region``: fills
    the speckle gaps of the live image and drops lines thinner than about ``radius`` pixels."""
    density = ndimage.uniform_filter(region.astype(np.float32), size=2 * radius + 1, mode="nearest")
    return density >= LIVE_DENSITY


def _image_components(region: np.ndarray) -> np.ndarray:
    """The largest connected component of ``region`` and every one at least ``COMPONENT_SHARE`` of it."""
    labels, n = ndimage.label(region)
    if n == 0:
        return region
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero(sizes >= COMPONENT_SHARE * sizes.max()) + 1
    return np.isin(labels, keep)


def _convex_fill(region: np.ndarray) -> np.ndarray:
    """Rasterised convex hull of a non-empty boolean mask: pixels whose centre lies in the hull of
    the region's pixel squares (so every region pixel is inside)."""
    edge = region & ~ndimage.binary_erosion(region)
    rows, cols = np.nonzero(edge)
    corners = np.concatenate([np.stack([rows + dr, cols + dc], axis=1) for dr in (-0.5, 0.5) for dc in (-0.5, 0.5)])
    hull = ConvexHull(corners)  # never degenerate: pixel squares have area
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    rr, cc = np.mgrid[r0:r1, c0:c1]
    inside = np.ones(rr.shape, bool)
    for a, b, offset in hull.equations:  # a facet's half-plane: inside where a * row + b * col + offset <= 0
        inside &= a * rr + b * cc + offset <= 1e-9
    out = region.copy()
    out[r0:r1, c0:c1] |= inside
    return out


def _sector(frames: np.ndarray, std: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The echo sector (see the module docstring)."""
    height, width = std.shape
    live = std > MOTION_STD
    if frames.shape[0] == 1 or live.sum() < MIN_AREA_FRACTION * height * width:
        live = hi > BLACK_LEVEL
    live = _majority(live, max(MIN_RADIUS, round(WINDOW_FRACTION * min(height, width))))
    if not live.any():  # a blank clip: nothing to exclude
        return np.ones((height, width), bool)
    return _convex_fill(_image_components(live))


def _static_bright(std: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Burned-in graphics: static and bright in every frame, plus their static, non-black rim."""
    static = std <= OVERLAY_MAX_STD
    core = static & (lo >= OVERLAY_MIN_GREY)
    rim = ndimage.binary_dilation(core, structure=np.ones((3, 3), bool)) & static & (lo > BLACK_LEVEL)
    return core | rim


def _mr_field(frames: np.ndarray, std: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The whole MR frame less all-black margins and static text."""
    height, width = hi.shape
    fov = np.zeros((height, width), bool)
    content = hi > BLACK_LEVEL
    rows, cols = np.flatnonzero(content.any(axis=1)), np.flatnonzero(content.any(axis=0))
    if rows.size == 0:
        fov[:] = True
        return fov
    fov[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = True
    if frames.shape[0] >= OVERLAY_MIN_FRAMES:
        fov &= ~_static_bright(std, lo)
    return fov


def _check(clip: VideoClip) -> None:
    if clip.frames.shape[0] == 0 or min(clip.frames.shape[1:]) == 0:
        raise DataError(f"video clip has no pixels (shape {clip.frames.shape})", clip.source)


def field_of_view_and_overlay(clip: VideoClip) -> tuple[np.ndarray, np.ndarray]:
    """``(find_field_of_view(clip), overlay_mask(clip, fov))`` with the temporal statistics computed once."""
    _check(clip)
    frames = clip.frames
    std, lo, hi = _temporal_stats(frames)
    fov = _mr_field(frames, std, lo, hi) if clip.modality == "cmr" else _sector(frames, std, hi)
    return fov, _overlay(frames, fov, std, lo)


def find_field_of_view(clip: VideoClip) -> np.ndarray:
    """Bool ``[H, W]``: the pixels that hold the image (echo sector, or MR frame less margins and text).

    Burned-in text, logos, calipers outside the image and a live ECG trace are excluded; the
    method and its thresholds are described in the module docstring.
    """
    _check(clip)
    std, lo, hi = _temporal_stats(clip.frames)
    return _mr_field(clip.frames, std, lo, hi) if clip.modality == "cmr" else _sector(clip.frames, std, hi)


def _overlay(frames: np.ndarray, fov: np.ndarray, std: np.ndarray, lo: np.ndarray) -> np.ndarray:
    if frames.shape[0] < OVERLAY_MIN_FRAMES:
        return np.zeros(fov.shape, bool)
    return _static_bright(std, lo) & fov


def overlay_mask(clip: VideoClip, fov: np.ndarray) -> np.ndarray:
    """Bool ``[H, W]``: burned-in overlay pixels inside ``fov`` (static over all frames and bright),
    to be blanked. Empty for clips with fewer than :data:`OVERLAY_MIN_FRAMES` frames."""
    _check(clip)
    fov = np.asarray(fov, bool)
    if fov.shape != clip.frames.shape[1:]:
        raise DataError(f"field of view {fov.shape} does not match the frames {clip.frames.shape[1:]}", clip.source)
    std, lo, _ = _temporal_stats(clip.frames)
    return _overlay(clip.frames, fov, std, lo)
