"""Plausibility bounds on what a clinical file may claim, checked by every reader before it allocates.

A corrupt or hostile header can claim anything: a sampling rate of 1e-300 or 1e300 Hz, four
billion frames, zero-width images, a pixel spacing of NaN. Readers check such fields here,
*before* any memory is allocated from them, and refuse what no real recording can be with a
one-line :class:`~cardiodistill.errors.DataError` (a :class:`SamplingRateError` for rates) naming
the file, the field and the bound. Each bound is wide enough for every real device we know of
and narrow enough that a refusal means the file is damaged; ``docs/reliability.md`` gives the
reasoning and the fuzzing figures behind them.

ECG
    * sampling rate :data:`ECG_FS_HZ` = 25 Hz to 50 kHz. The QRS complex lasts 80-120 ms and carries
      its energy at 5-30 Hz; below 25 Hz it spans two or three samples and no beat can be located
      (the R-peak detector's 5 Hz high-pass needs more than 11 Hz). Clinical carts sample at
      250-1000 Hz, Holters at 128-1000 Hz, handhelds at 125-512 Hz, old databases at 100 Hz;
      research amplifiers built to see pacemaker spikes go to 16-32 kHz.
    * channels :data:`MAX_CHANNELS` = 256 (body-surface potential maps use up to ~250 electrodes).
    * duration :data:`MAX_ECG_SECONDS` = 14 days (the longest ambulatory patches), and at most
      :data:`MAX_ECG_VALUES` = 2**28 samples over all channels (1 GiB as float32: a 24 h 3-lead
      Holter at 1 kHz is 2.6e8).
    * amplitude :data:`MAX_ABS_MV` = 100 V: surface potentials are millivolts and no ECG amplifier
      passes more than a few volts; a larger value means a corrupt gain or physical range.
Video
    * frame rate :data:`VIDEO_FPS` = 0.5 to 10,000 frames/s (slow real-time MR to ultrafast
      research ultrasound; clinical echo is 20-200, cine MR 15-60).
    * frame size :data:`MAX_FRAME_SIDE` = 4096 pixels a side (clinical frames are 128-1024), at
      least one pixel; at most :data:`MAX_FRAMES` = 100,000 frames and :data:`MAX_VIDEO_VOXELS` =
      2**30 pixels per clip (1 GiB as uint8).
    * pixel spacing: finite and in :data:`PIXEL_SPACING_MM` = 1 um to 100 mm.
Files
    * text headers (WFDB ``.hea``) at most :data:`MAX_HEADER_BYTES` = 1 MiB; XML exports
      (MUSE, aECG) at most :data:`MAX_XML_BYTES` = 32 MiB (a 10 s 12-lead MUSE file is ~0.2 MB);
      delimited text and ``.npy`` tables at most :data:`MAX_TABLE_BYTES` = 512 MiB.
"""

from __future__ import annotations

import math
from os import PathLike
from pathlib import Path

import numpy as np

from ..errors import DataError, SamplingRateError

__all__ = [
    "ECG_FS_HZ",
    "MAX_ABS_MV",
    "MAX_CHANNELS",
    "MAX_ECG_SECONDS",
    "MAX_ECG_VALUES",
    "MAX_FRAMES",
    "MAX_FRAME_SIDE",
    "MAX_HEADER_BYTES",
    "MAX_TABLE_BYTES",
    "MAX_VIDEO_VOXELS",
    "MAX_XML_BYTES",
    "PIXEL_SPACING_MM",
    "VIDEO_FPS",
    "check_ecg_amplitude",
    "check_ecg_fs",
    "check_ecg_shape",
    "check_file_size",
    "check_fps",
    "check_pixel_spacing",
    "check_video_shape",
]

Where = str | PathLike[str] | None

ECG_FS_HZ = (25.0, 50_000.0)
MAX_CHANNELS = 256
MAX_ECG_SECONDS = 14 * 24 * 3600.0
MAX_ECG_VALUES = 2**28
MAX_ABS_MV = 1e5

VIDEO_FPS = (0.5, 10_000.0)
MAX_FRAME_SIDE = 4096
MAX_FRAMES = 100_000
MAX_VIDEO_VOXELS = 2**30
PIXEL_SPACING_MM = (1e-3, 100.0)

MAX_HEADER_BYTES = 1 << 20
MAX_XML_BYTES = 32 << 20
MAX_TABLE_BYTES = 512 << 20


def _is_number(value: object) -> bool:
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return False


def _show(value: object) -> str:
    """A number as ``%g`` (``2e+09``, ``nan``), anything else as its repr."""
    try:
        return f"{float(value):g}"  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return repr(value)[:40]


def check_ecg_fs(fs: object, where: Where, what: str = "sampling rate") -> float:
    """``fs`` as a float when it is a finite rate in :data:`ECG_FS_HZ`, else :class:`SamplingRateError`."""
    lo, hi = ECG_FS_HZ
    if not _is_number(fs) or not lo <= float(fs) <= hi:  # type: ignore[arg-type]
        raise SamplingRateError(f"{what} of {_show(fs)} Hz is not a plausible ECG rate ({lo:g}-{hi:g} Hz)", where)
    return float(fs)  # type: ignore[arg-type]


def check_ecg_shape(n_channels: int, n_samples: int, fs: float, where: Where) -> None:
    """Refuse a claimed ``[n_channels, n_samples]`` at ``fs`` beyond the channel, duration or size caps."""
    if not 1 <= n_channels <= MAX_CHANNELS:
        raise DataError(f"{n_channels} channels; an ECG file holds 1-{MAX_CHANNELS}", where)
    if n_samples < 1:
        raise DataError(f"{n_samples} samples per channel; an ECG needs at least one", where)
    if n_samples / fs > MAX_ECG_SECONDS:
        raise DataError(
            f"{n_samples} samples at {fs:g} Hz is {n_samples / fs / 86400:.3g} days; the limit is "
            f"{MAX_ECG_SECONDS / 86400:g} days",
            where,
        )
    if n_channels * n_samples > MAX_ECG_VALUES:
        raise DataError(
            f"{n_channels} channels x {n_samples} samples exceeds the {MAX_ECG_VALUES:,} sample limit", where
        )


def check_ecg_amplitude(signal: np.ndarray, where: Where) -> None:
    """Refuse infinite samples and ECG amplitudes beyond :data:`MAX_ABS_MV` (NaN = missing is fine)."""
    if signal.size == 0:
        return
    with np.errstate(invalid="ignore"):
        peak = float(np.nanmax(np.abs(signal))) if not np.isnan(signal).all() else 0.0
    if not math.isfinite(peak):
        raise DataError("sample values are infinite (overflow after scaling; corrupt gain or range?)", where)
    if peak > MAX_ABS_MV:
        raise DataError(
            f"sample values reach {peak:.3g} mV, beyond any ECG amplifier ({MAX_ABS_MV:g} mV); corrupt gain or range?",
            where,
        )


def check_fps(fps: object, where: Where, what: str = "frame rate") -> float:
    """``fps`` as a float when it is a finite rate in :data:`VIDEO_FPS`, else :class:`SamplingRateError`."""
    lo, hi = VIDEO_FPS
    if not _is_number(fps) or not lo <= float(fps) <= hi:  # type: ignore[arg-type]
        raise SamplingRateError(f"{what} of {_show(fps)} frames/s is not plausible ({lo:g}-{hi:g})", where)
    return float(fps)  # type: ignore[arg-type]


def check_video_shape(n_frames: int, height: int, width: int, where: Where) -> None:
    """Refuse a claimed clip of ``n_frames`` x ``height`` x ``width`` beyond the caps (before decoding)."""
    if not (1 <= height <= MAX_FRAME_SIDE and 1 <= width <= MAX_FRAME_SIDE):
        raise DataError(f"frame size {height}x{width} pixels; frames are 1-{MAX_FRAME_SIDE} pixels a side", where)
    if not 1 <= n_frames <= MAX_FRAMES:
        raise DataError(f"{n_frames} frames; a clip holds 1-{MAX_FRAMES:,}", where)
    if n_frames * height * width > MAX_VIDEO_VOXELS:
        raise DataError(
            f"{n_frames} frames of {height}x{width} pixels exceeds the {MAX_VIDEO_VOXELS:,} pixel limit", where
        )


def check_pixel_spacing(spacing: object, where: Where) -> tuple[float, float]:
    """``(row, column)`` millimetres from a two-value spacing, each finite and in :data:`PIXEL_SPACING_MM`."""
    try:
        values = [float(v) for v in spacing]  # type: ignore[union-attr]
    except (TypeError, ValueError, OverflowError):
        values = []
    lo, hi = PIXEL_SPACING_MM
    if len(values) != 2 or not all(math.isfinite(v) and lo <= v <= hi for v in values):
        raise DataError(f"pixel spacing {spacing!r} is not two values of {lo:g}-{hi:g} mm", where)
    return values[0], values[1]


def check_file_size(path: Path, limit: int, kind: str) -> int:
    """The size of ``path`` in bytes; :class:`DataError` naming the limit when it is larger."""
    try:
        size = path.stat().st_size
    except OSError as err:
        raise DataError(f"cannot open file: {err.strerror or err}", path) from None
    if size > limit:
        raise DataError(f"{kind} is {size:,} bytes; the limit is {limit:,} bytes", path)
    return size
