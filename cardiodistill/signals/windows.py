"""Fixed-length model inputs: cut a record into windows, or crop / pad it to one length.

A model takes ``[n_leads, seconds * fs]``; records are 9-61 s (handheld), 10 s (resting 12-lead)
or hours (Holter). The padding policy, the same in both functions:

* **Long records** are cropped: :func:`crop_or_pad` keeps the centre (``policy="center"``, the
  default: the first and last second of a recording are the most often disturbed by electrode
  contact and filter edges) or the start (``policy="start"``); :func:`fixed_windows` cuts windows
  of ``seconds`` every ``stride`` seconds from the start.
* **Short records** (and the tail after the last full window) are padded **at the end**, with
  zeros by default (``pad="zero"``: after baseline removal, 0 mV is the isoelectric line, so the
  padding reads as "no activity") or by repeating the last sample (``pad="edge"``), and the
  padded samples are marked: :func:`fixed_windows` returns a boolean ``valid`` mask per window,
  :func:`crop_or_pad` stores the interval of real samples as ``meta["valid_samples"] = (start,
  stop)`` (:func:`valid_mask` turns it into a mask), so a model or a loss can ignore them.
  ``pad="none"`` keeps full windows only and drops the tail.
* **Too-short records** are refused: padding a 2-s strip to 10 s would make a model input that is
  mostly padding. A record shorter than ``min_seconds`` (default :data:`MIN_FRACTION` of the
  target length) raises :class:`DataError` naming the file.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import ConfigError, DataError
from ..records import EcgRecord
from .units import append_step

#: Shortest record that is padded rather than refused, as a fraction of the target length.
MIN_FRACTION = 0.5
_PADS = ("zero", "edge", "none")


class Windows(NamedTuple):
    """Windows of one record, ready to batch."""

    signal: np.ndarray  #: float32 ``[n_windows, n_leads, n_samples]`` in mV
    starts: np.ndarray  #: int64 ``[n_windows]``: index in the record of each window's first sample
    valid: np.ndarray  #: bool ``[n_windows, n_samples]``: False on padding


def _n_samples(record: EcgRecord, seconds: float, what: str) -> int:
    if not math.isfinite(seconds) or round(float(seconds) * record.fs) < 1:
        raise ConfigError(f"{what} must be a positive number of seconds, got {seconds!r}")
    return round(float(seconds) * record.fs)


def _check_pad(pad: str) -> None:
    if pad not in _PADS:
        raise ConfigError(f"unknown pad mode {pad!r} (expected one of {', '.join(_PADS)})")


def _check_min_length(record: EcgRecord, seconds: float, min_seconds: float | None) -> None:
    min_seconds = MIN_FRACTION * seconds if min_seconds is None else float(min_seconds)
    if record.duration_s < min_seconds:
        raise DataError(
            f"record is {record.duration_s:.3g} s long, shorter than the {min_seconds:.3g} s minimum for "
            f"{seconds:g}-s inputs",
            record.source,
        )


def valid_interval(record: EcgRecord) -> tuple[int, int]:
    """``(start, stop)`` of the real (not padded) samples of ``record``."""
    start, stop = record.meta.get("valid_samples", (0, record.n_samples))
    return int(start), int(stop)


def valid_mask(record: EcgRecord) -> np.ndarray:
    """Boolean ``[n_samples]``: True on real samples, False on padding added by :func:`crop_or_pad`."""
    start, stop = valid_interval(record)
    idx = np.arange(record.n_samples)
    return (idx >= start) & (idx < stop)


def _pad_end(signal: np.ndarray, n_pad: int, pad: str) -> np.ndarray:
    if n_pad <= 0:
        return signal
    return np.pad(signal, ((0, 0), (0, n_pad)), mode="constant" if pad == "zero" else "edge")


def fixed_windows(
    record: EcgRecord,
    seconds: float,
    *,
    stride: float | None = None,
    pad: str = "zero",
    min_seconds: float | None = None,
) -> Windows:
    """Windows of ``seconds`` every ``stride`` seconds (default: ``seconds``, no overlap).

    With ``pad="zero"``/``"edge"`` the last window is padded at the end so every sample is in a
    window; with ``pad="none"`` only full windows are kept (:class:`DataError` if there is none).
    """
    _check_pad(pad)
    win = _n_samples(record, seconds, "window length")
    step = win if stride is None else _n_samples(record, stride, "window stride")
    n = record.n_samples
    if pad == "none":
        if n < win:
            raise DataError(f"record has {n} samples, fewer than one {seconds:g}-s window ({win})", record.source)
        n_windows = (n - win) // step + 1
    else:
        _check_min_length(record, seconds, min_seconds)
        n_windows = 1 if n <= win else -(-(n - win) // step) + 1  # ceil division
    padded = _pad_end(record.signal, (n_windows - 1) * step + win - n, pad)
    views = sliding_window_view(padded, win, axis=-1)[:, ::step][:, :n_windows]  # [L, W, S], no copy
    signal = np.ascontiguousarray(views.transpose(1, 0, 2), dtype=np.float32)
    starts = np.arange(n_windows, dtype=np.int64) * step
    idx = starts[:, None] + np.arange(win)
    lo, hi = valid_interval(record)
    return Windows(signal, starts, (idx >= lo) & (idx < hi))


def crop_or_pad(
    record: EcgRecord,
    seconds: float,
    *,
    policy: str = "center",
    pad: str = "zero",
    min_seconds: float | None = None,
) -> EcgRecord:
    """``record`` with exactly ``round(seconds * fs)`` samples: cropped (centre or start) or padded
    at the end (see the module doc); ``meta["valid_samples"]`` marks the real samples."""
    if policy not in ("center", "start"):
        raise ConfigError(f"unknown crop policy {policy!r} (expected 'center' or 'start')")
    _check_pad(pad)
    if pad == "none":
        raise ConfigError("crop_or_pad needs a pad mode ('zero' or 'edge'), not 'none'")
    target = _n_samples(record, seconds, "input length")
    n = record.n_samples
    lo, hi = valid_interval(record)
    if n >= target:
        start = (n - target) // 2 if policy == "center" else 0
        signal = record.signal[:, start : start + target]
        lo, hi = max(lo - start, 0), min(hi - start, target)
    else:
        _check_min_length(record, seconds, min_seconds)
        start = 0
        signal = _pad_end(record.signal, target - n, pad)
    step = {"op": "crop_or_pad", "seconds": float(seconds), "policy": policy, "pad": pad, "n_in": n,
            "n_out": target, "crop_start": start, "n_padded": max(target - n, 0)}
    meta = {**append_step(record.meta, step), "valid_samples": (lo, hi)}
    return replace(record, signal=np.ascontiguousarray(signal), meta=meta)


def window_starts(length: int, window: int, min_fraction: float = MIN_FRACTION, *, keep_short: bool = True
                  ) -> list[int]:
    """Starts of the non-overlapping ``window``-sample windows of a ``length``-sample recording: every full
    window, plus the last, partial one if it holds at least ``min_fraction`` of a window. A recording shorter
    than that gives one padded window with ``keep_short`` (scoring: every recording gets a reading), none
    without (training: a window of mostly padding teaches nothing). The one windowing rule of training
    caches, the array trainer and the edge runtime."""
    n_full, tail = divmod(int(length), int(window))
    starts = list(range(0, n_full * window, window))
    if tail >= min_fraction * window or (keep_short and not starts):
        starts.append(n_full * window)
    return starts


#: A lead whose standard deviation in a window is at most this is flat: left at zero, marked absent.
FLAT_STD = 1e-6


def zscore_windows(windows: np.ndarray, n_valid: np.ndarray) -> np.ndarray:
    """Z-score each lead of each window ``windows [W, L, S]`` (float32, changed in place) over its first
    ``n_valid[w]`` samples, the real ones (the rest is padding). Padding and flat leads (standard
    deviation at most :data:`FLAT_STD`) become 0. Returns ``present`` bool ``[W, L]``: the leads that
    were not flat. Training windows, the real-data students and the edge runtime all use this one
    function, so a model sees at inference exactly what it saw in training."""
    win = windows.shape[-1]
    real = np.arange(win)[None, :] < np.asarray(n_valid)[:, None]  # [W, S]
    weights = real[:, None, :].astype(np.float64)
    count = np.maximum(weights.sum(-1), 1.0)
    mean = (windows * weights).sum(-1) / count
    std = np.sqrt((((windows - mean[..., None]) * weights) ** 2).sum(-1) / count)
    present = std > FLAT_STD
    scale = np.where(present, std, 1.0)
    windows -= mean[..., None].astype(np.float32)
    windows /= scale[..., None].astype(np.float32)
    windows *= (real[:, None, :] & present[..., None]).astype(np.float32)
    return present
