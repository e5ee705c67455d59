"""Rhythm features of a whole recording: how regular its RR intervals are.

A convolutional student reads 10-s windows and pools them, which suits the shape of a beat but not the rhythm
of a recording: whether each RR interval differs from the last by chance (atrial fibrillation) or follows a
smooth trend (sinus arrhythmia) is a property of the sequence of beats over the whole recording, and the
pooled feature map has lost that order. The CinC 2017 entries that scored best gave their classifiers such
RR statistics beside the waveform (Datta et al., Teijeiro et al., Zabihi et al., CinC 2017); here the
student takes them as a second input (:class:`~cardiodistill.models.student.StudentModel`, ``rhythm=``) and
the edge runtime computes them from the same prepared signal the windows are cut from.

:func:`rhythm_features` returns, for the R-peaks of :func:`~cardiodistill.signals.rpeaks.detect_r_peaks`
over the whole recording, the values named in :data:`RHYTHM_FEATURES`, all of them ratios or rates of order
one (so no training-set statistics have to travel with a model):

* ``beats_per_s``: detected beats per second of recording (about HR / 60; noise adds or hides beats);
* ``rr_mean_s``: mean RR interval in seconds;
* ``rr_cv``: SD / mean of the RR intervals;
* ``rmssd_ratio``: root mean square of successive RR differences / mean RR;
* ``pnn50``: share of successive RR differences over 50 ms;
* ``drr_median_ratio``: median absolute successive difference / median RR;
* ``rr_p10_ratio``, ``rr_p90_ratio``: 10th and 90th percentile RR / median RR;
* ``rr_outlier_share``: share of RR intervals more than 15 % from the median;
* ``rr_min_max_ratio``: shortest / longest RR;
* ``rr_lag1_corr``: correlation of each RR interval with the next (a trend is positive, chaos near 0);
* ``drr_sign_changes``: share of successive differences whose sign flips (alternation);
* ``few_beats``: 1 when fewer than :data:`MIN_BEATS` beats were found (every other value is then 0).

Beside them a model may take the beat features of :mod:`.beats` (what the beats look like: P waves, ectopy,
noise), measured on the same R-peaks: :data:`RECORDING_FEATURES` names both sets, and every function here
that takes ``names`` accepts any of them (a model's spec lists the ones it reads, in its input order).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError, check_known
from ..records import EcgRecord
from .beats import BEAT_FEATURES, MIN_BEATS, beat_features
from .leads import LEADS_12
from .rpeaks import detect_r_peaks

__all__ = ["MIN_BEATS", "RECORDING_FEATURES", "RHYTHM_FEATURES", "check_rhythm_names", "record_rhythm",
           "rhythm_features", "signal_rhythm"]

RHYTHM_FEATURES = (
    "beats_per_s", "rr_mean_s", "rr_cv", "rmssd_ratio", "pnn50", "drr_median_ratio", "rr_p10_ratio",
    "rr_p90_ratio", "rr_outlier_share", "rr_min_max_ratio", "rr_lag1_corr", "drr_sign_changes", "few_beats",
)
#: every feature of a whole recording a model can take beside its windows: the rhythm's, then the beats'
RECORDING_FEATURES = RHYTHM_FEATURES + BEAT_FEATURES
OUTLIER_FRAC = 0.15
NN50_S = 0.05


def check_rhythm_names(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` as a tuple, each one of :data:`RECORDING_FEATURES` (ConfigError otherwise)."""
    return check_known(names, RECORDING_FEATURES, "rhythm features")


def _all_features(r_peaks: np.ndarray, fs: float, duration_s: float) -> dict[str, float]:
    peaks = np.asarray(r_peaks, np.float64)
    out = dict.fromkeys(RHYTHM_FEATURES, 0.0)
    if len(peaks) < MIN_BEATS:
        out["beats_per_s"] = len(peaks) / duration_s
        out["few_beats"] = 1.0
        return out
    rr = np.diff(peaks) / fs
    d = np.diff(rr)
    mean, median = rr.mean(), np.median(rr)
    p10, p90 = np.percentile(rr, [10, 90])
    lag1 = np.corrcoef(rr[:-1], rr[1:])[0, 1] if rr[:-1].std() > 0 and rr[1:].std() > 0 else 0.0
    out.update(
        beats_per_s=len(peaks) / duration_s, rr_mean_s=mean, rr_cv=rr.std() / mean,
        rmssd_ratio=np.sqrt(np.mean(d**2)) / mean, pnn50=np.mean(np.abs(d) > NN50_S),
        drr_median_ratio=np.median(np.abs(d)) / median, rr_p10_ratio=p10 / median, rr_p90_ratio=p90 / median,
        rr_outlier_share=np.mean(np.abs(rr - median) > OUTLIER_FRAC * median), rr_min_max_ratio=rr.min() / rr.max(),
        rr_lag1_corr=lag1, drr_sign_changes=np.mean(np.sign(d[1:]) != np.sign(d[:-1])) if len(d) > 1 else 0.0,
    )
    return out


def rhythm_features(r_peaks: np.ndarray, fs: float, duration_s: float,
                    names: Sequence[str] = RHYTHM_FEATURES) -> np.ndarray:
    """float32 ``[len(names)]``: the rhythm features ``names`` (:data:`RHYTHM_FEATURES`, module doc) of R-peaks
    ``r_peaks`` (samples at ``fs`` Hz) found in a recording of ``duration_s`` seconds."""
    if not duration_s > 0:
        raise ConfigError(f"duration_s must be positive, got {duration_s}")
    check_known(names, RHYTHM_FEATURES, "rhythm features", "the RR statistics")
    values = _all_features(r_peaks, float(fs), float(duration_s))
    return np.array([values[n] for n in names], np.float32)


def _named(peaks: np.ndarray, lead: np.ndarray, fs: float, duration_s: float, names: Sequence[str]) -> np.ndarray:
    """The features ``names`` of a recording of ``duration_s`` seconds with R-peaks ``peaks``, the beat features
    measured on ``lead [T]`` (only when ``names`` asks for one)."""
    names = check_rhythm_names(names)
    values = dict(zip(RHYTHM_FEATURES, rhythm_features(peaks, fs, duration_s)))
    if any(n in BEAT_FEATURES for n in names):
        values.update(zip(BEAT_FEATURES, beat_features(lead, peaks, fs)))
    return np.array([values[n] for n in names], np.float32)


def record_rhythm(record: EcgRecord, names: Sequence[str] = RHYTHM_FEATURES,
                  leads: Sequence[str] | None = None) -> np.ndarray:
    """The features ``names`` (:data:`RECORDING_FEATURES`) of a whole record: R-peaks fused over ``leads``
    (default all), the beat features measured on the first of them."""
    peaks = detect_r_peaks(record, leads=leads)
    lead = record.signal[record.leads.index(leads[0]) if leads else 0]
    return _named(peaks, lead, record.fs, record.n_samples / record.fs, names)


def signal_rhythm(x: np.ndarray, fs: float, length: int | None = None,
                  names: Sequence[str] = RHYTHM_FEATURES) -> np.ndarray:
    """The features ``names`` (:data:`RECORDING_FEATURES`) of a prepared signal ``x [L, T]`` in mV (the students'
    cached arrays, the edge runtime's band-passed signal; the detector's flat-lead check is in mV) whose first
    ``length`` samples are real (default all). Shorter than a second: the few-beats row."""
    length = x.shape[-1] if length is None else int(length)
    signal = np.asarray(x[:, :length], np.float32)
    if length < fs:  # too short to look for beats: what a recording without beats gives
        return _named(np.zeros(0), signal[0], fs, max(length, 1) / fs, names)
    if len(signal) > len(LEADS_12):
        raise ConfigError(f"a signal of {len(signal)} leads: at most {len(LEADS_12)}")
    return record_rhythm(EcgRecord(signal, fs, LEADS_12[: len(signal)]), names)  # lead names: detection ignores them
