"""Beat features of a whole recording: how alike its beats are, whether a P wave leads them, how clean it is.

The RR statistics of :mod:`.rhythm` say how irregular a recording's rhythm is; they do not say what an
irregular recording's beats look like, which is what separates atrial fibrillation (no P wave locked to the
QRS, fibrillatory activity between beats) from ectopic beats (a premature beat of another shape, or of the
same shape) and from noise (beats unlike each other, bursts, flat stretches). The CinC 2017 entries that
scored best gave their classifiers such morphology and signal-quality features beside the RR statistics
(Teijeiro et al., Datta et al., CinC 2017). Here they travel the same way as the rhythm features: a student
takes them as the second input (``rhythm=`` names), and the edge runtime computes them from the same
prepared signal (:func:`cardiodistill.signals.rhythm.signal_rhythm`, which calls :func:`beat_features`).

They are measured on one lead (the first of the prepared signal: lead I on a handheld), on beats cut around
the R-peaks the rhythm features use, each referred to its own PR level (the median over 100-30 ms before
its R-peak); the median of those beats is the recording's template. Every value is a ratio, a share or a
log, of order one, so no training-set statistics travel with a model. :data:`BEAT_FEATURES`:

* ``beat_corr_median``: median correlation of each beat (-0.2 to +0.4 s) with the template;
* ``beat_corr_low_share``: share of beats correlating under :data:`LOW_CORR` with it;
* ``p_coherence``: power of the mean P window (-0.28 to -0.08 s) over the mean power of the beats' P windows:
  near 1 when a P wave is locked to every QRS, near 0 when what precedes the QRS is not (f-waves, noise);
* ``p_amp_ratio``, ``t_amp_ratio``: peak-to-peak of the template's P window and T window (+0.15 to +0.45 s)
  over that of its QRS (-0.06 to +0.07 s);
* ``qrs_width_s``: how long the template's QRS stays above half its largest deflection, in seconds;
* ``qrs_amp_mv``: median peak-to-peak QRS amplitude of the beats, in mV;
* ``tq_slope_ratio``: median over the RR intervals of the SD of the signal's slope (mV/s) from 0.45 s after
  a beat to 0.3 s before the next, over the QRS amplitude: fibrillatory waves and noise between beats. Only
  intervals over 0.83 s leave such a stretch (of at least 80 ms), so at a regular rate over 72 a minute it is 0;
  in an irregular rhythm the long intervals give it;
* ``beat_snr_log``: log of the template's power over the mean power of the beats' departures from it;
* ``premature_odd_share``, ``premature_same_share``: share of beats that come early (RR under
  :data:`PREMATURE_FRAC` of the median) and are unlike (ventricular ectopy) or like (atrial ectopy) the template;
* ``kurtosis_log``: log of the signal's (Pearson) kurtosis: an ECG is peaky, noise is not;
* ``burst_share``, ``flat_share``: share of the recording's seconds whose peak-to-peak is over
  :data:`BURST_RATIO` or under :data:`FLAT_RATIO` times the median second's.

With fewer than :data:`MIN_BEATS` whole beats the beat-level values are 0 (the
rhythm features' ``few_beats`` says so) and the signal-level ones (the last three) are still measured.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError, check_known

__all__ = ["BEAT_FEATURES", "MIN_BEATS", "beat_features"]

BEAT_FEATURES = (
    "beat_corr_median", "beat_corr_low_share", "p_coherence", "p_amp_ratio", "t_amp_ratio", "qrs_width_s",
    "qrs_amp_mv", "tq_slope_ratio", "beat_snr_log", "premature_odd_share", "premature_same_share",
    "kurtosis_log", "burst_share", "flat_share",
)
MIN_BEATS = 5  # four RR intervals, three successive differences: the least the rhythm statistics need
LOW_CORR = 0.8
PREMATURE_FRAC = 0.85
BURST_RATIO, FLAT_RATIO = 3.0, 0.2
# Windows around the R-peak, in seconds.
BEAT_S = (-0.30, 0.45)
BASELINE_S = (-0.10, -0.03)
CORE_S = (-0.20, 0.40)
P_S = (-0.28, -0.08)
QRS_S = (-0.06, 0.07)
T_S = (0.15, 0.45)
WIDTH_S = (-0.12, 0.13)
TQ_AFTER_S, TQ_BEFORE_S, TQ_MIN_S = 0.45, 0.30, 0.08
_EPS = 1e-9


def _signal_level(x: np.ndarray, fs: float) -> dict[str, float]:
    second = max(int(round(fs)), 1)
    out = {"burst_share": 0.0, "flat_share": 0.0, "kurtosis_log": 0.0}
    centred = x - x.mean()
    power = np.mean(centred**2)
    if power > 0:
        out["kurtosis_log"] = float(np.log(np.mean(centred**4) / power**2))
    if len(x) >= second:
        ptp = np.ptp(x[: len(x) // second * second].reshape(-1, second), axis=1)
        typical = np.median(ptp) + _EPS
        out.update(burst_share=float(np.mean(ptp > BURST_RATIO * typical)),
                   flat_share=float(np.mean(ptp < FLAT_RATIO * typical)))
    return out


def _span(fs: float, window: tuple[float, float], origin: int) -> slice:
    """Samples of ``window`` (seconds around the R-peak) in a beat whose R-peak is at ``origin``."""
    return slice(origin + int(round(window[0] * fs)), origin + int(round(window[1] * fs)))


def _beat_level(x: np.ndarray, peaks: np.ndarray, fs: float) -> dict[str, float]:
    before, after = -int(round(BEAT_S[0] * fs)), int(round(BEAT_S[1] * fs))
    whole = peaks[(peaks - before >= 0) & (peaks + after <= len(x))]
    if len(whole) < MIN_BEATS:
        return {}
    beats = x[whole[:, None] + np.arange(-before, after)[None]]
    beats = beats - np.median(beats[:, _span(fs, BASELINE_S, before)], axis=1, keepdims=True)
    template = np.median(beats, axis=0)
    core = _span(fs, CORE_S, before)
    b = beats[:, core] - beats[:, core].mean(axis=1, keepdims=True)
    t = template[core] - template[core].mean()
    corr = (b * t).sum(axis=1) / (np.sqrt((b**2).sum(axis=1) * (t**2).sum()) + _EPS)
    qrs = _span(fs, QRS_S, before)
    qrs_amp = np.ptp(template[qrs]) + _EPS
    p = beats[:, _span(fs, P_S, before)]
    p = p - p.mean(axis=1, keepdims=True)
    deflection = np.abs(template[_span(fs, WIDTH_S, before)])
    above = np.flatnonzero(deflection > 0.5 * deflection.max())
    departures = beats[:, core] - template[core]
    slopes = []
    for start, stop in zip(whole[:-1], whole[1:]):
        a, z = start + int(round(TQ_AFTER_S * fs)), stop - int(round(TQ_BEFORE_S * fs))
        if z - a >= TQ_MIN_S * fs:
            slopes.append(np.std(np.diff(x[a:z])) * fs)
    premature = np.r_[False, np.diff(whole) < PREMATURE_FRAC * np.median(np.diff(whole))]
    return {
        "beat_corr_median": float(np.median(corr)), "beat_corr_low_share": float(np.mean(corr < LOW_CORR)),
        "p_coherence": float(np.var(p.mean(axis=0)) / (np.mean(np.var(p, axis=1)) + _EPS)),
        "p_amp_ratio": float(np.ptp(template[_span(fs, P_S, before)]) / qrs_amp),
        "t_amp_ratio": float(np.ptp(template[_span(fs, T_S, before)]) / qrs_amp),
        "qrs_width_s": float((above[-1] - above[0] + 1) / fs) if len(above) else 0.0,
        "qrs_amp_mv": float(np.median(np.ptp(beats[:, qrs], axis=1))),
        "tq_slope_ratio": float(np.median(slopes) / qrs_amp) if slopes else 0.0,
        "beat_snr_log": float(np.log((np.var(template[core]) + _EPS) / (np.mean(np.var(departures, axis=1)) + _EPS))),
        "premature_odd_share": float(np.mean(premature & (corr < LOW_CORR))),
        "premature_same_share": float(np.mean(premature & (corr >= LOW_CORR))),
    }


def beat_features(x: np.ndarray, r_peaks: np.ndarray, fs: float,
                  names: Sequence[str] = BEAT_FEATURES) -> np.ndarray:
    """float32 ``[len(names)]``: the beat features ``names`` (module doc) of one lead ``x [T]`` (mV, band-passed
    as the model's input is) whose R-peaks are ``r_peaks`` (samples at ``fs`` Hz)."""
    check_known(names, BEAT_FEATURES, "beat features")
    if not fs > 0:
        raise ConfigError(f"fs must be positive, got {fs}")
    signal = np.nan_to_num(np.asarray(x, np.float64).ravel())
    values = dict.fromkeys(BEAT_FEATURES, 0.0)
    values.update(_signal_level(signal, float(fs)))
    values.update(_beat_level(signal, np.asarray(r_peaks, np.int64), float(fs)))
    return np.array([values[n] for n in names], np.float32)
