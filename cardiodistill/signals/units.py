"""Amplitude units: convert ECG samples to millivolts, and guess the unit of an unlabelled file.

Every :class:`~cardiodistill.records.EcgRecord` holds millivolts. Files come in volts (EDF, some
HL7 aECG), millivolts (WFDB physical units, most CSV exports), microvolts (DICOM, MUSE XML,
many device exports) or nanovolts (rare DICOM). A wrong factor of 1000 is the most common silent
error in ECG pipelines: a model sees a flat line or a clipped one and still outputs something.

Guessing the unit of a CSV without a header (:func:`guess_unit`) uses the physiology: the
robust peak-to-peak amplitude of a surface ECG lead (its 1st to 99th percentile range, which
ignores rare spikes) lies between about 0.2 mV (a low-voltage limb lead) and 5 mV (a tall
precordial R wave). The median of that range over leads is read as mV between 0.2 and 20 and as
uV between 200 and 20,000 (the two bands are a factor of ten apart, so they cannot both fit). Anything else (a flat or empty file, volts,
counts of an ADC without gain) is reported as unknown (``None``) rather than guessed.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import DataError

# Factor that takes a value in the unit to millivolts.
_TO_MV = {"v": 1e3, "mv": 1.0, "uv": 1e-3, "nv": 1e-6}
_SPELLINGS = {
    "volt": "v", "volts": "v",
    "millivolt": "mv", "millivolts": "mv",
    "microvolt": "uv", "microvolts": "uv",
    "nanovolt": "nv", "nanovolts": "nv",
}

#: Median-over-leads robust range (p99 - p1) that :func:`guess_unit` reads as millivolts ...
MV_RANGE = (0.2, 20.0)
#: ... and as microvolts.
UV_RANGE = (200.0, 20_000.0)


def unit_factor(unit: str, source: str | None = None) -> float:
    """Factor that converts ``unit`` (``"V"``, ``"mV"``, ``"uV"``/``"µV"``/``"μV"``, ``"nV"``, or the
    words, any case, spaces ignored) to millivolts. An unknown unit raises :class:`DataError`."""
    key = "".join(str(unit).split()).lower().replace("\u00b5", "u").replace("\u03bc", "u")
    key = _SPELLINGS.get(key, key)
    if key not in _TO_MV:
        raise DataError(f"unknown amplitude unit {unit!r} (expected V, mV, uV or nV)", source)
    return _TO_MV[key]


def to_millivolts(signal: np.ndarray, unit: str, *, source: str | None = None) -> np.ndarray:
    """``signal`` (any shape) in ``unit`` as float32 millivolts (a new array)."""
    factor = unit_factor(unit, source)
    return (np.asarray(signal, dtype=np.float64) * factor).astype(np.float32)


def robust_range(signal: np.ndarray) -> np.ndarray:
    """Per-lead 1st-to-99th percentile range of ``[n_leads, n_samples]``, ignoring non-finite
    samples (NaN for a lead with none)."""
    sig = np.asarray(signal, dtype=np.float64)
    if sig.shape[-1] == 0:
        return np.full(sig.shape[:-1], np.nan)
    finite = np.isfinite(sig)
    if finite.all():  # the usual case: the same numbers as below, without nanpercentile's lead-by-lead loop
        lo, hi = np.percentile(sig, [1.0, 99.0], axis=-1)
        return hi - lo
    sig = np.where(finite, sig, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN lead -> NaN, on purpose
        lo, hi = np.nanpercentile(sig, [1.0, 99.0], axis=-1)
    return hi - lo


def guess_unit(signal: np.ndarray) -> str | None:
    """``"mV"``, ``"uV"`` or ``None`` (cannot tell) for a ``[n_leads, n_samples]`` (or 1-D) signal
    of unknown unit, from the median over leads of the per-lead robust range (see module doc)."""
    sig = np.atleast_2d(np.asarray(signal, dtype=np.float64))
    ranges = robust_range(sig)
    ranges = ranges[np.isfinite(ranges) & (ranges > 0)]
    if ranges.size == 0:
        return None
    typical = float(np.median(ranges))
    if MV_RANGE[0] <= typical <= MV_RANGE[1]:
        return "mV"
    if UV_RANGE[0] <= typical <= UV_RANGE[1]:
        return "uV"
    return None


def append_step(meta: dict, step: dict) -> dict:
    """A copy of a record's ``meta`` with ``step`` appended to ``meta["steps"]``: the trail every
    record transform of this package leaves, so a model input can be traced back to its file."""
    return {**meta, "steps": [*meta.get("steps", []), step]}
