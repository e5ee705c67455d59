"""Per-lead signal quality: is this lead an ECG a model can use, and if not, why.

A missing electrode must not crash a model or, worse, be read as an ECG. :func:`lead_quality`
checks each lead of a record (in mV) for five failures, each with a threshold below (module
constants, in physical units). All statistics are robust (percentiles, medians, per-second
segments), so a single ectopic beat or pacing spike does not flag a lead.

* ``nan`` - any NaN or infinite sample (dropped samples, a gap in a CSV). The other checks run on
  the finite samples (non-finite ones replaced by the lead's median).
* ``flat`` - the electrode records nothing: the peak-to-peak range of at least
  :data:`FLAT_FRACTION` of the 1-s segments is below :data:`FLAT_MV` (10 uV; a real ECG segment
  always holds a QRS of >= 100 uV, and the amplifier noise of a connected electrode is ~10 uV).
* ``clipped`` - the amplifier saturated: more than :data:`CLIP_FRACTION` of the samples sit within
  :data:`CLIP_TOLERANCE` of the lead's range from its minimum or maximum *and* repeat the value
  of a neighbouring sample (a rail is a run of identical values; a sharp R peak is not), in at
  least :data:`CLIP_MIN_RUNS` separate runs.
* ``lead_off`` - the electrode came off: a flat stretch held away from zero (more than
  :data:`LEAD_OFF_LEVEL_MV`: the input drifted to a rail or an offset), or a jump of the
  baseline (median of consecutive 1-s segments) larger than :data:`DC_STEP_MV`.
* ``noisy`` - the ratio of spectral power above :data:`HF_BAND_HZ` to the power above 0.5 Hz
  exceeds :data:`HF_NOISE_MAX` (muscle tremor, mains hum, white noise), or the baseline (1-s
  segment medians) wanders over more than :data:`WANDER_MAX_MV`.

A lead is ``usable`` when none of the flags is set; ``reasons`` lists those that are.

The thresholds were chosen on real recordings. On the 10 PTB-XL 12-lead records of
``shared/data/ptbxl/wfdb_sample`` (500 Hz, 120 leads, raw, unfiltered) the leads have an
``hf_noise_ratio`` of at most 0.187 (median 0.010; the maximum is a 0.28-mV lead III with mains
hum), a baseline wander of at most 0.84 mV, 1-s segment ranges of at least 0.05 mV, baseline steps
of at most 0.53 mV and at most 1.2 % rail samples, in a single run: all 120 are usable. In the 50
CinC 2021 records (Georgia, Ningbo) the same thresholds flag the Ningbo leads that are all-zero
(flat), heavy mains or EMG noise (ratio 0.25-0.94) and a 4-mV electrode-motion jump (lead_off).
The corruptions of ``tests/test_signals_processing.py`` (a zeroed lead, a lead clipped at its
95th percentile, added 0.5 mV white noise (ratio 0.73-0.84), a 0.5-s NaN run, a lead that comes
off onto a +5 mV rail) each raise the flag they should on all 10 PTB-XL records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..records import EcgRecord
from .units import robust_range

#: Length of the segments for the flat, lead-off and wander checks (s).
SEGMENT_S = 1.0
#: Peak-to-peak range (mV) below which a 1-s segment is flat.
FLAT_MV = 0.01
#: Fraction of flat segments that makes a lead ``flat``.
FLAT_FRACTION = 0.5
#: Distance from the extreme values, as a fraction of the lead's range, that counts as "at the rail".
CLIP_TOLERANCE = 0.005
#: Fraction of repeated at-the-rail samples that makes a lead ``clipped`` ...
CLIP_FRACTION = 0.01
#: ... when they form at least this many separate runs (a saturating amplifier cuts beat after beat;
#: one constant stretch, such as the held last 120 ms of PTB-XL record HR06006, is not clipping).
CLIP_MIN_RUNS = 3
#: Level (mV) of a flat stretch that marks a lead that came off onto an offset or a rail.
LEAD_OFF_LEVEL_MV = 1.0
#: Jump (mV) of the baseline between consecutive 1-s segments that marks a lead that came off.
DC_STEP_MV = 2.0
#: Lower edge (Hz) of the band counted as high-frequency noise (the top of the ECG model band).
HF_BAND_HZ = 40.0
#: Largest ``hf_noise_ratio`` of a usable lead.
HF_NOISE_MAX = 0.25
#: Largest baseline wander (mV, range of the 1-s segment medians) of a usable lead.
WANDER_MAX_MV = 2.0

FLAGS = ("nan", "flat", "clipped", "lead_off", "noisy")


@dataclass(frozen=True)
class LeadQuality:
    """Quality of one lead: the five flags, the numbers behind them, and the verdict."""

    nan: bool
    flat: bool
    clipped: bool
    lead_off: bool
    noisy: bool
    amplitude_mv: float  #: robust peak-to-peak amplitude (1st-99th percentile range), mV
    hf_noise_ratio: float  #: power above HF_BAND_HZ / power above 0.5 Hz (NaN when fs <= 2 * HF_BAND_HZ)
    baseline_wander_mv: float  #: range of the 1-s segment medians, mV
    clipped_fraction: float  #: fraction of repeated samples at the rails
    usable: bool  #: no flag is set
    reasons: list[str] = field(default_factory=list)  #: the flags that are set, in the order of FLAGS


def _fill_nonfinite(signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signal as float64 with non-finite samples set to their lead's median; and the finite mask."""
    sig = np.asarray(signal, dtype=np.float64)
    finite = np.isfinite(sig)
    if finite.all():
        return sig, finite
    masked = np.where(finite, sig, np.nan)
    with np.errstate(all="ignore"):
        fill = np.nan_to_num(np.nanmedian(masked, axis=-1, keepdims=True)) if finite.any() else 0.0
    return np.where(finite, sig, fill), finite


def _segments(sig: np.ndarray, fs: float) -> np.ndarray:
    """``[n_leads, n_segments, seg]`` 1-s segments (the remainder is dropped; one segment if shorter)."""
    seg = max(1, min(sig.shape[-1], round(SEGMENT_S * fs)))
    k = sig.shape[-1] // seg
    return sig[:, : k * seg].reshape(sig.shape[0], k, seg)


def _hf_ratio(sig: np.ndarray, fs: float) -> np.ndarray:
    """Power above HF_BAND_HZ over power above 0.5 Hz, per lead, from the periodogram."""
    n = sig.shape[-1]
    if fs / 2 <= HF_BAND_HZ or n < 4:
        return np.full(sig.shape[0], np.nan)
    power = np.abs(np.fft.rfft(sig - sig.mean(axis=-1, keepdims=True), axis=-1)) ** 2
    freqs = np.fft.rfftfreq(n, 1.0 / fs)
    total = power[:, freqs >= 0.5].sum(axis=-1)
    high = power[:, freqs >= HF_BAND_HZ].sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, high / total, 0.0)


def _rail_samples(sig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per lead: fraction of samples near the lead's min or max that repeat a neighbour's exact
    value, and the number of separate runs they form."""
    hi = sig.max(axis=-1, keepdims=True)
    lo = sig.min(axis=-1, keepdims=True)
    tol = CLIP_TOLERANCE * (hi - lo)
    at_rail = (sig >= hi - tol) | (sig <= lo + tol)
    same = np.zeros_like(at_rail)
    eq = sig[:, 1:] == sig[:, :-1]
    same[:, 1:] |= eq
    same[:, :-1] |= eq
    rail = at_rail & same
    runs = (np.diff(rail.astype(np.int8), axis=-1, prepend=0) == 1).sum(axis=-1)
    return rail.mean(axis=-1), runs


def lead_quality(record: EcgRecord) -> dict[str, LeadQuality]:
    """Quality of every lead of ``record``, keyed by lead name (see the module doc)."""
    sig, finite = _fill_nonfinite(record.signal)
    if sig.shape[-1] == 0:
        empty = LeadQuality(True, True, False, False, False, np.nan, np.nan, np.nan, 0.0, False, ["nan", "flat"])
        return {lead: empty for lead in record.leads}
    has_nan = ~finite.all(axis=-1)
    amplitude = robust_range(sig)

    segs = _segments(sig, record.fs)
    seg_range = np.ptp(segs, axis=-1)  # [L, K]
    seg_level = np.median(segs, axis=-1)  # [L, K]: the baseline of each second
    flat_seg = seg_range < FLAT_MV
    flat = flat_seg.mean(axis=-1) >= FLAT_FRACTION
    off_level = np.where(flat_seg, np.abs(seg_level), 0.0).max(axis=-1) > LEAD_OFF_LEVEL_MV
    step = np.abs(np.diff(seg_level, axis=-1)).max(axis=-1, initial=0.0)
    lead_off = off_level | (step > DC_STEP_MV)
    wander = np.ptp(seg_level, axis=-1)

    rail, rail_runs = _rail_samples(sig)
    clipped = (rail > CLIP_FRACTION) & (rail_runs >= CLIP_MIN_RUNS) & ~flat

    hf = _hf_ratio(sig, record.fs)
    noisy = ~flat & ((np.nan_to_num(hf) > HF_NOISE_MAX) | (wander > WANDER_MAX_MV))

    flags = np.stack([has_nan, flat, clipped, lead_off, noisy], axis=-1)  # [L, 5], order of FLAGS
    out = {}
    for i, lead in enumerate(record.leads):
        reasons = [name for name, on in zip(FLAGS, flags[i]) if on]
        out[lead] = LeadQuality(
            *(bool(v) for v in flags[i]),
            amplitude_mv=float(amplitude[i]),
            hf_noise_ratio=float(hf[i]),
            baseline_wander_mv=float(wander[i]),
            clipped_fraction=float(rail[i]),
            usable=not reasons,
            reasons=reasons,
        )
    return out
