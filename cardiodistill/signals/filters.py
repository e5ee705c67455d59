"""Zero-phase ECG filters: band-pass, mains notch and baseline removal.

Every filter here runs forwards and backwards (``sosfiltfilt`` / ``filtfilt``), so it has zero
phase: QRS onset, ST level and the QT interval are not shifted or smeared in time, which a causal
filter would do by several milliseconds. The price is a squared magnitude response (a 4th-order
Butterworth band-pass behaves like an 8th-order one in attenuation, with -6 dB instead of -3 dB at
the cut-offs) and edge transients. SciPy's default edge padding (``padlen``: a few dozen samples of
odd extension) is far too short for a 0.5 Hz high-pass, whose impulse response lasts seconds: on a
real 10-s AliveCor strip, a 0.5-40 Hz band-pass with the default padding leaves errors of 0.37 mV
near the edges (against the same strip filtered inside a 60-s recording), and 0.02 mV with one
second of padding. So every filter here pads with ``round(fs / f_low)`` samples (one period of
its lowest cut-off; at most ``n_samples - 1``). A record no longer than SciPy's minimal padlen
raises :class:`DataError` instead of returning garbage.

* :func:`butter_sos` - a Butterworth design in second-order sections, computed once per (order, edges, type,
  rate) and kept (each caller gets a copy): designing it took a third of the edge runtime's preparation of a
  recording.
* :func:`sosfiltfilt` - SciPy's zero-phase filter of second-order sections along the last axis (odd padding),
  the same numbers, with each design's initial conditions (``sosfilt_zi``, a linear solve per section)
  computed once and kept: SciPy recomputes them on every call, a sixth of the runtime's preparation once the
  designs were kept.
* :func:`bandpass` - Butterworth, second-order sections (numerically stable at 0.5 Hz / 1000 Hz).
  The usual model-input band is 0.5-40 Hz (AHA monitoring band, what PTB-XL benchmarks use);
  diagnostic ECG keeps up to 150 Hz. Either edge may be ``None`` for a pure high- or low-pass.
* :func:`notch` - second-order IIR notch (``iirnotch``) at 50 or 60 Hz mains, quality ``q``
  (-3 dB width ``freq / q``: 1.7 Hz at 50 Hz for q = 30).
* :func:`remove_baseline` - baseline wander (respiration, electrode motion, < 0.5 Hz). Default
  ``method="highpass"``: zero-phase 2nd-order Butterworth high-pass at ``cutoff``; the AHA
  recommends <= 0.67 Hz (0.05 Hz for strict ST analysis), 0.5 Hz is the common compromise.
  ``method="median"``: the classical two-stage median filter (200 ms then 600 ms windows remove
  the QRS and then the T wave; what remains is the baseline, which is subtracted). It is
  non-linear and needs no padding, but it is built for ECG morphology, not for arbitrary signals:
  on a pure sine it removes 24 dB at 0.5 Hz and still 10 dB at 1 Hz.

Cut-offs at or above the Nyquist frequency raise :class:`SamplingRateError` naming the file
(filter after resampling to a rate that can carry them); an impossible band raises
:class:`ConfigError`.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import numpy as np
from scipy.ndimage import median_filter
from scipy.signal import butter, filtfilt, iirnotch, sosfilt, sosfilt_zi

from ..errors import ConfigError, DataError, SamplingRateError
from ..records import DEFAULT_BAND, EcgRecord  # noqa: F401  (DEFAULT_BAND: re-exported, the signal layer's default)
from .units import append_step

#: Butterworth order of :func:`bandpass` (per direction; the zero-phase response is squared).
BANDPASS_ORDER = 4
#: Butterworth order of the ``"highpass"`` method of :func:`remove_baseline`.
BASELINE_ORDER = 2
#: Median-filter windows (s) of the ``"median"`` method of :func:`remove_baseline`.
MEDIAN_WINDOWS_S = (0.2, 0.6)


def butter_sos(order: int, cutoff: float | tuple[float, float], btype: str, fs: float) -> np.ndarray:
    """``scipy.signal.butter(order, cutoff, btype, fs=fs, output="sos")``, designed once per argument set: a
    file's rate and the filters' edges repeat from one record to the next, so after the first record this is a
    copy of a few dozen numbers (a copy, because SciPy's ``sosfilt`` takes only writeable coefficients)."""
    return _butter_sos(order, cutoff, btype, fs).copy()


@lru_cache(maxsize=64)
def _butter_sos(order: int, cutoff: float | tuple[float, float], btype: str, fs: float) -> np.ndarray:
    sos = butter(order, cutoff, btype=btype, fs=fs, output="sos")
    sos.setflags(write=False)  # the cached design itself is never handed out
    return sos


def sosfiltfilt(sos: np.ndarray, x: np.ndarray, padlen: int) -> np.ndarray:
    """``scipy.signal.sosfiltfilt(sos, x, axis=-1, padlen=padlen)`` (odd extension, ``padlen`` samples at each
    end, at most ``x.shape[-1] - 1``), with the design's initial conditions kept from one call to the next."""
    padlen = int(padlen)
    if not 0 <= padlen < x.shape[-1]:
        raise ValueError(f"padlen must be in [0, {x.shape[-1] - 1}] for {x.shape[-1]} samples, got {padlen}")
    if padlen:
        first, last = x[..., :1], x[..., -1:]
        x = np.concatenate([2 * first - x[..., padlen:0:-1], x, 2 * last - x[..., -2:-padlen - 2:-1]], axis=-1)
    zi = _sosfilt_zi(np.ascontiguousarray(sos, dtype=np.float64).tobytes(), len(sos))
    zi = zi.reshape(len(sos), *([1] * (x.ndim - 1)), 2)
    y, _ = sosfilt(sos, x, axis=-1, zi=zi * x[..., :1])
    y, _ = sosfilt(sos, y[..., ::-1], axis=-1, zi=zi * y[..., -1:])
    y = y[..., ::-1]
    return y[..., padlen:-padlen] if padlen else y


@lru_cache(maxsize=64)
def _sosfilt_zi(sos_bytes: bytes, n_sections: int) -> np.ndarray:
    zi = sosfilt_zi(np.frombuffer(sos_bytes, dtype=np.float64).reshape(n_sections, 6))
    zi.setflags(write=False)
    return zi


def sos_padlen(sos: np.ndarray) -> int:
    """Default edge padding of :func:`scipy.signal.sosfiltfilt` (its documented formula)."""
    return 3 * (2 * len(sos) + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum())))


def _check_below_nyquist(record: EcgRecord, freq: float, what: str) -> None:
    if not freq > 0:
        raise ConfigError(f"{what} must be a positive frequency in Hz, got {freq!r}")
    if freq >= record.fs / 2:
        raise SamplingRateError(
            f"{what} {freq:g} Hz is not below the Nyquist frequency {record.fs / 2:g} Hz of a {record.fs:g} Hz "
            f"record; resample to a higher rate or lower the cut-off",
            record.source,
        )


def _check_length(record: EcgRecord, padlen: int, what: str) -> None:
    if record.n_samples <= padlen:
        raise DataError(
            f"record of {record.n_samples} samples is too short for the {what} (needs more than {padlen})",
            record.source,
        )


def _finite_signal(record: EcgRecord, what: str) -> np.ndarray:
    """The signal as float64, or :class:`DataError` if a NaN would spread over a whole lead."""
    if not np.isfinite(record.signal).all():
        raise DataError(f"cannot apply the {what} to a signal with NaN or infinite samples; interpolate or mask "
                        f"them first", record.source)
    return record.signal.astype(np.float64)


def _padlen(record: EcgRecord, minimal: int, f_low: float, what: str) -> int:
    """Edge padding: one period of the lowest cut-off ``f_low``, or :class:`DataError` when the
    record is not even longer than the filter's ``minimal`` padlen."""
    _check_length(record, minimal, what)
    return int(min(record.n_samples - 1, max(minimal, round(record.fs / f_low))))


def _apply_sos(record: EcgRecord, sos: np.ndarray, f_low: float, step: dict) -> EcgRecord:
    padlen = _padlen(record, sos_padlen(sos), f_low, step["op"])
    out = sosfiltfilt(sos, _finite_signal(record, step["op"]), padlen)
    return replace(record, signal=out.astype(np.float32), meta=append_step(record.meta, step))


def bandpass(
    record: EcgRecord, low: float | None = 0.5, high: float | None = 40.0, *, order: int = BANDPASS_ORDER
) -> EcgRecord:
    """Zero-phase Butterworth band-pass ``low``-``high`` Hz (``None`` drops that edge)."""
    if low is None and high is None:
        raise ConfigError("bandpass needs at least one of low and high")
    if low is not None:
        _check_below_nyquist(record, low, "band-pass low cut-off")
    if high is not None:
        _check_below_nyquist(record, high, "band-pass high cut-off")
    if low is not None and high is not None and low >= high:
        raise ConfigError(f"band-pass low cut-off {low:g} Hz must be below the high cut-off {high:g} Hz")
    if low is None:
        sos = butter_sos(order, float(high), "lowpass", float(record.fs))
    elif high is None:
        sos = butter_sos(order, float(low), "highpass", float(record.fs))
    else:
        sos = butter_sos(order, (float(low), float(high)), "bandpass", float(record.fs))
    step = {"op": "bandpass", "low": low, "high": high, "order": order, "filter": "butterworth, zero-phase"}
    return _apply_sos(record, sos, high if low is None else low, step)


def notch(record: EcgRecord, freq: float = 50.0, *, q: float = 30.0) -> EcgRecord:
    """Zero-phase IIR notch at ``freq`` Hz (mains: 50 in Europe/Asia, 60 in the Americas)."""
    _check_below_nyquist(record, freq, "notch frequency")
    if not q > 0:
        raise ConfigError(f"notch quality factor must be positive, got {q!r}")
    b, a = iirnotch(freq, q, fs=record.fs)
    # The notch rings for about q / freq seconds (its -3 dB width is freq / q).
    padlen = _padlen(record, 3 * max(len(a), len(b)), freq / q, "notch")
    out = filtfilt(b, a, _finite_signal(record, "notch"), axis=-1, padlen=padlen)
    step = {"op": "notch", "freq": float(freq), "q": float(q)}
    return replace(record, signal=out.astype(np.float32), meta=append_step(record.meta, step))


def remove_baseline(record: EcgRecord, cutoff: float = 0.5, *, method: str = "highpass") -> EcgRecord:
    """Remove baseline wander: ``"highpass"`` (zero-phase Butterworth at ``cutoff`` Hz, default) or
    ``"median"`` (two-stage 200/600 ms median filter; ``cutoff`` is unused). See module doc."""
    if method == "highpass":
        _check_below_nyquist(record, cutoff, "baseline cut-off")
        sos = butter_sos(BASELINE_ORDER, float(cutoff), "highpass", float(record.fs))
        step = {"op": "remove_baseline", "method": "highpass", "cutoff": float(cutoff), "order": BASELINE_ORDER}
        return _apply_sos(record, sos, cutoff, step)
    if method == "median":
        sizes = [max(1, round(w * record.fs) | 1) for w in MEDIAN_WINDOWS_S]  # odd, centred windows
        sig = _finite_signal(record, "baseline filter")
        baseline = sig
        for size in sizes:
            baseline = median_filter(baseline, size=(1, size), mode="nearest")
        step = {"op": "remove_baseline", "method": "median", "windows_s": list(MEDIAN_WINDOWS_S)}
        return replace(record, signal=(sig - baseline).astype(np.float32), meta=append_step(record.meta, step))
    raise ConfigError(f"unknown baseline method {method!r} (expected 'highpass' or 'median')")
