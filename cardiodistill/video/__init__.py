"""Echo and cine-MR preprocessing on :class:`~cardiodistill.records.VideoClip`.

* :mod:`.sector`: the field of view (ultrasound sector, MR frame) and burned-in overlays inside it;
* :mod:`.cycles`: the cardiac cycle length from the pixels, and windows of whole cycles;
* :mod:`.preprocess`: :func:`prepare_clip` (mask, crop, square, resize, resample in time to a
  :class:`ClipSpec`; :func:`prepare_windows` for several windows of one clip), :func:`normalise_frames` (per-clip z-score, NumPy or torch) and a figure to check them.
"""

from .cycles import cycle_window, estimate_cycle_period
from .preprocess import (
    ClipSpec,
    PreparedClip,
    normalise_frames,
    prepare_clip,
    prepare_windows,
    save_preprocessing_figure,
)
from .sector import field_of_view_and_overlay, find_field_of_view, overlay_mask

__all__ = [
    "ClipSpec", "PreparedClip", "cycle_window", "estimate_cycle_period", "field_of_view_and_overlay",
    "find_field_of_view", "normalise_frames", "overlay_mask", "prepare_clip", "prepare_windows",
    "save_preprocessing_figure",
]
