"""Change the sampling rate of an ECG exactly, or refuse.

ECGs arrive at 250, 257 (INCART), 300, 360 (MIT-BIH), 400, 500 and 1000 Hz; a model is trained at
one rate. :func:`resample` uses polyphase filtering (:func:`scipy.signal.resample_poly`) with an
exact rational factor ``fs_out / fs_in = up / down``. That filter is a Kaiser-windowed low-pass at
the lower of the two Nyquist frequencies, so content the new rate cannot carry (mains hum at
60 Hz going to 100 Hz, EMG above 125 Hz going to 250 Hz) is removed instead of being folded back
as an alias. The window's beta is 8 rather than SciPy's default 5: passband ripple drops from
about 1e-3 to 3e-5 (a 500 -> 360 -> 500 Hz round trip of a 10 Hz sine is exact to 1e-4 instead of
2e-3) and the stopband from -80 to -95 dB, for a slightly wider transition band just below the
new Nyquist frequency, where an ECG has no diagnostic content.

Two silent mistakes of other toolkits are ruled out:

* a ratio that is only approximately rational (``fs_in = 499.7``) is not rounded to a nearby one,
  which would stretch time and shift every heart rate: when ``up / down`` with a denominator of
  at most ``max_denominator`` misses the true ratio by more than 1e-6 (relative), the rate
  cannot be honoured and :class:`SamplingRateError` is raised;
* the output length is always ``round(n_samples * up / down)``, so durations agree to within one
  output sample, however long the record.

The signal is extended linearly at both ends before filtering (``padtype="line"``), so a DC
offset or a slow baseline does not produce a step at the edges; the first and last ~20 ms can
still carry an edge error of up to ~1 % of the amplitude.
"""

from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction
from functools import lru_cache

import numpy as np
from scipy.signal import firwin, resample_poly

from ..errors import DataError, SamplingRateError
from ..records import EcgRecord
from .units import append_step

#: Largest denominator tried for the rational ratio (1000 covers every clinical pair of rates).
MAX_DENOMINATOR = 1000
#: Largest relative error of ``up / down`` against ``fs_out / fs_in`` that is still "exact".
RATIO_TOLERANCE = 1e-6
#: Anti-aliasing FIR window for :func:`scipy.signal.resample_poly` (see module doc).
WINDOW = ("kaiser", 8.0)


def _check_rate(fs: float, what: str, source: str | None) -> float:
    try:
        fs = float(fs)
    except (TypeError, ValueError):
        raise SamplingRateError(f"{what} sampling rate must be a number, got {fs!r}", source) from None
    if not math.isfinite(fs) or fs <= 0:
        raise SamplingRateError(f"{what} sampling rate must be a positive number, got {fs!r}", source)
    return fs


def rational_ratio(
    fs_in: float, fs_out: float, *, max_denominator: int = MAX_DENOMINATOR, source: str | None = None
) -> tuple[int, int]:
    """``(up, down)`` with ``up / down == fs_out / fs_in`` to within :data:`RATIO_TOLERANCE`, or
    :class:`SamplingRateError` when no such pair has ``down <= max_denominator``."""
    fs_in = _check_rate(fs_in, "input", source)
    fs_out = _check_rate(fs_out, "output", source)
    ratio = fs_out / fs_in
    frac = Fraction(ratio).limit_denominator(max_denominator)
    if frac == 0 or abs(float(frac) - ratio) > RATIO_TOLERANCE * ratio:
        raise SamplingRateError(
            f"cannot resample {fs_in:g} Hz to {fs_out:g} Hz exactly: the ratio {ratio:.9g} has no "
            f"fraction with denominator <= {max_denominator} (closest {frac}); resample to a nearby "
            f"rate that has one first",
            source,
        )
    return frac.numerator, frac.denominator


@lru_cache(maxsize=32)
def _anti_alias(up: int, down: int) -> np.ndarray:
    """The low-pass FIR that ``resample_poly(..., window=WINDOW)`` designs for ``up / down`` (its own length and
    cut-off), designed once per ratio: SciPy designs it again on every call."""
    rate = max(up, down)
    h = firwin(2 * 10 * rate + 1, 1.0 / rate, window=WINDOW)
    h.setflags(write=False)  # resample_poly copies it before scaling
    return h


def resample(record: EcgRecord, fs_out: float, *, max_denominator: int = MAX_DENOMINATOR) -> EcgRecord:
    """``record`` at ``fs_out`` Hz, anti-aliased, with ``round(n * fs_out / fs_in)`` samples.

    Raises :class:`SamplingRateError` for an invalid rate or a ratio that cannot be honoured and
    :class:`DataError` for non-finite samples (interpolate or mask them first: a NaN would spread
    over the whole filter length).
    """
    up, down = rational_ratio(record.fs, fs_out, max_denominator=max_denominator, source=record.source)
    fs_out = float(fs_out)
    if up == down:
        step = {"op": "resample", "fs_in": record.fs, "fs_out": fs_out, "up": 1, "down": 1}
        return replace(record, fs=fs_out, meta=append_step(record.meta, step))
    if not np.isfinite(record.signal).all():
        raise DataError("cannot resample a signal with NaN or infinite samples; interpolate or mask them first",
                        record.source)
    n_in = record.n_samples
    n_out = (2 * n_in * up + down) // (2 * down)  # round half up, in exact integer arithmetic
    if n_out < 1:
        raise DataError(f"{n_in} samples at {record.fs:g} Hz is too short to resample to {fs_out:g} Hz",
                        record.source)
    out = resample_poly(record.signal.astype(np.float64), up, down, axis=-1, padtype="line",
                        window=_anti_alias(up, down))[:, :n_out]
    step = {"op": "resample", "fs_in": record.fs, "fs_out": fs_out, "up": up, "down": down,
            "n_in": n_in, "n_out": n_out}
    meta = append_step(record.meta, step)
    if "valid_samples" in meta:  # padding marked by crop_or_pad: same interval in the new samples
        meta["valid_samples"] = tuple(min(n_out, (2 * i * up + down) // (2 * down)) for i in meta["valid_samples"])
    return replace(record, signal=out.astype(np.float32), fs=fs_out, meta=meta)
