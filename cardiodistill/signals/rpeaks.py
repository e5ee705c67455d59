"""R-peak detection on 1- to 12-lead ECGs, fused across leads.

R-peaks anchor the toolkit's temporal alignment (ECG R-peak = echo end-diastole), so one detector
has to work on a clinical 12-lead at 500 Hz and on a noisy one- or six-lead handheld at 300 Hz.

Method (``method="fused"``)
---------------------------
1. **QRS energy.** Each usable lead (not flat) is band-passed to 5-30 Hz (zero-phase Butterworth),
   where the QRS complex carries most of its energy and baseline wander, P and T waves do not. The
   squared slopes (mV/s)^2 are summed over leads, i.e. the squared *spatial velocity* of the
   band-passed leads, and integrated over a 100 ms moving window (about one QRS). A beat seen
   well in any lead shows up; no single lead's polarity matters.
2. **Adaptive threshold.** The typical QRS height of the envelope is the running median (about
   10 s) of its 2 s running maxima; the noise level is the running median of the envelope itself.
   Peaks must rise a quarter of the way from the noise to the typical QRS, at least 250 ms apart
   (refractory period). Where an RR gap exceeds 1.6 median RR, the gap is searched back at half
   the threshold (as in Pan and Tompkins, IEEE TBME 1985). A peak less than 400 ms after a beat
   with under half its energy is that beat's T wave and is dropped.
3. **Refinement.** Each detection moves to the extremum, within +-75 ms, of the dominant lead on a
   0.5-40 Hz filtered copy: the lead whose QRS is most clearly one-signed (largest difference of
   its median positive and median negative QRS deflections), taken with that sign, so inverted
   complexes (aVR, lead II with a left axis, a QS in V1) give their true peak. A beat whose
   opposite deflection is more than twice as large (an ectopic beat of another shape) takes that one.
   Only true local extrema count, so a window reaching into an ST segment does not end on its
   edge, and a complex cut off by either end of the recording is dropped.

``method="vote"`` instead runs neurokit2's detector (``nk.ecg_peaks``, method ``"neurokit"``) on
every usable lead, clusters detections within 75 ms and keeps clusters seen in at least half the
leads, then refines them the same way.

Indices are samples at ``record.fs``; times in seconds, heart rate in beats per minute.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy import signal as sps

from ..errors import ConfigError, DataError, SamplingRateError
from ..records import EcgRecord
from .filters import butter_sos, sos_padlen, sosfiltfilt

__all__ = ["detect_r_peaks", "heart_rate", "rr_intervals"]

MIN_DURATION_S = 1.0
REFRACTORY_S = 0.25
QRS_BAND_HZ = (5.0, 30.0)
SHAPE_BAND_HZ = (0.5, 40.0)
INTEGRATION_S = 0.10
REFINE_S = 0.075
VOTE_S = 0.075
FLAT_MV = 0.005  # a lead whose band-passed standard deviation is below this carries no QRS
THRESHOLD_FRAC = 0.25
SEARCH_BACK_RR = 1.6
T_WAVE_S = 0.40  # a peak this soon after a beat, with little energy, is taken for its T wave
T_WAVE_RATIO = 0.5
_NYQUIST_MARGIN = 0.45  # filter edges stay below this fraction of the sampling rate
#: the lowest rate detection works at: the QRS band's lower edge must stay below the Nyquist margin
MIN_FS_HZ = QRS_BAND_HZ[0] / _NYQUIST_MARGIN


# --------------------------------------------------------------------------------------------
# array-level helpers shared with :mod:`.delineate`: tolerant by design (NaNs zeroed, the band
# edge kept below Nyquist) because detection must not fail on imperfect input. Record-level
# filtering with strict checks is :mod:`.filters`.


def band_limited(x: np.ndarray, fs: float, band: tuple[float, float], order: int = 2) -> np.ndarray:
    """Zero-phase Butterworth band-pass along the last axis; the upper edge is kept below Nyquist.
    :class:`SamplingRateError` when ``fs`` is too low to pass any of the band (at or under
    ``band[0] / 0.45`` Hz) or not a finite rate."""
    if not (np.isfinite(fs) and _NYQUIST_MARGIN * fs > band[0]):
        raise SamplingRateError(
            f"a sampling rate of {fs:g} Hz is too low for a {band[0]:g}-{band[1]:g} Hz filter "
            f"(it needs over {band[0] / _NYQUIST_MARGIN:.3g} Hz)"
        )
    high = min(band[1], _NYQUIST_MARGIN * fs)
    sos = butter_sos(order, (float(band[0]), float(high)), "bandpass", float(fs))
    # scipy's default edge padding, shortened for a record of only a few dozen samples (1 s at a low rate)
    return sosfiltfilt(sos, x, max(min(sos_padlen(sos), x.shape[-1] - 1), 0))


def lead_matrix(record: EcgRecord, leads: Sequence[str] | None) -> np.ndarray:
    """The chosen leads as float64 ``[k, n]`` (non-finite samples set to 0); DataError if < 1 s."""
    if record.duration_s < MIN_DURATION_S:
        raise DataError(
            f"ECG is {record.duration_s:.2f} s long; R-peak detection needs at least {MIN_DURATION_S:g} s",
            record.source,
        )
    rows = record.signal if leads is None else np.stack([record.lead(name) for name in leads])
    return np.nan_to_num(rows.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def carries_signal(x_band: np.ndarray) -> np.ndarray:
    """Boolean ``[k]``: leads that are not flat after band-passing."""
    return x_band.std(axis=-1) > FLAT_MV


def index_windows(centres: np.ndarray, start: int, stop: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Index matrix ``[len(centres), stop - start]`` around each centre, clipped to ``[0, n)``, and
    a mask of the entries that were inside."""
    idx = centres[:, None] + np.arange(start, stop)[None, :]
    return np.clip(idx, 0, n - 1), (idx >= 0) & (idx < n)


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    return ndimage.uniform_filter1d(x, size=max(int(width), 1), mode="nearest")


def _running_median(x: np.ndarray, fs: float, window_s: float) -> np.ndarray:
    """Median over ``window_s`` computed on 0.5 s blocks and interpolated back (cheap on long records)."""
    step = max(int(0.5 * fs), 1)
    coarse = x[: len(x) // step * step].reshape(-1, step) if len(x) >= step else x[None, :]
    coarse = np.median(coarse, axis=1) if coarse.shape[1] > 1 else coarse[:, 0]
    k = max(round(window_s / 0.5) | 1, 1)
    smooth = ndimage.median_filter(coarse, size=min(k, len(coarse) | 1), mode="mirror")
    centres = (np.arange(len(smooth)) + 0.5) * step
    return np.interp(np.arange(len(x)), centres, smooth)


# --------------------------------------------------------------------------------------------
# detection


def qrs_envelope(x_band: np.ndarray, fs: float) -> np.ndarray:
    """Moving-window integral of the summed squared slopes of band-passed leads ``[k, n]`` -> ``[n]``."""
    slope = np.diff(x_band, axis=-1, prepend=x_band[..., :1]) * fs
    return _moving_average(np.sum(slope * slope, axis=0), round(INTEGRATION_S * fs))


def _threshold(env: np.ndarray, fs: float) -> np.ndarray:
    qrs_level = _running_median(ndimage.maximum_filter1d(env, size=int(2 * fs), mode="mirror"), fs, 10.0)
    noise_level = _running_median(env, fs, 10.0)
    return noise_level + THRESHOLD_FRAC * np.maximum(qrs_level - noise_level, 0.0)


def _search_back(peaks: np.ndarray, env: np.ndarray, thr: np.ndarray, fs: float) -> np.ndarray:
    """Add beats inside long RR gaps from lower (half-threshold) candidates."""
    if len(peaks) < 3:
        return peaks
    rr_med = np.median(np.diff(peaks))
    gaps = np.flatnonzero(np.diff(peaks) > SEARCH_BACK_RR * rr_med)
    if len(gaps) == 0:
        return peaks
    cand, props = sps.find_peaks(env, height=0.5 * thr, distance=max(int(REFRACTORY_S * fs), 1))
    spacing = max(REFRACTORY_S * fs, 0.5 * rr_med)
    added = []
    for g in gaps:  # a handful of gaps per record
        lo, hi = peaks[g], peaks[g + 1]
        inside = (cand > lo + spacing) & (cand < hi - spacing)
        accepted: list[int] = []
        for c in cand[inside][np.argsort(-props["peak_heights"][inside])]:
            if all(abs(c - a) >= spacing for a in accepted):
                accepted.append(int(c))
        added.extend(accepted)
    return np.sort(np.concatenate([peaks, np.asarray(added, np.int64)]))


def _fused_candidates(x_band: np.ndarray, fs: float) -> np.ndarray:
    env = qrs_envelope(x_band, fs)
    if not np.any(env > 0):
        return np.zeros(0, np.int64)
    thr = _threshold(env, fs)
    # a zero on each side lets a complex cut by either end of the recording count as a peak
    padded = np.pad(env, 1)
    peaks, _ = sps.find_peaks(padded, height=np.pad(thr, 1), distance=max(int(REFRACTORY_S * fs), 1))
    peaks = np.clip(peaks - 1, 0, len(env) - 1).astype(np.int64)
    return _search_back(_drop_t_waves(peaks, env, fs), env, thr, fs)


def _drop_t_waves(peaks: np.ndarray, env: np.ndarray, fs: float) -> np.ndarray:
    """Drop a peak that follows the previous one by less than ``T_WAVE_S`` with under half its
    energy: the tall or peaked T wave of that beat, not a new QRS."""
    if len(peaks) < 2:
        return peaks
    close = np.diff(peaks) < T_WAVE_S * fs
    weak = env[peaks[1:]] < T_WAVE_RATIO * env[peaks[:-1]]
    return peaks[np.concatenate([[True], ~(close & weak)])]


def _vote_candidates(x: np.ndarray, fs: float) -> np.ndarray:
    import neurokit2 as nk  # heavy import, only for this method

    found = []
    for lead in x:
        cleaned = nk.ecg_clean(lead, sampling_rate=round(fs), method="neurokit")
        _, info = nk.ecg_peaks(cleaned, sampling_rate=round(fs), method="neurokit")
        found.append(np.asarray(info["ECG_R_Peaks"], np.int64))
    allp = np.sort(np.concatenate(found)) if found else np.zeros(0, np.int64)
    if len(allp) == 0:
        return allp
    cluster = np.concatenate([[0], np.cumsum(np.diff(allp) > VOTE_S * fs)])
    counts = np.bincount(cluster)
    centre = np.array([np.median(allp[cluster == c]) for c in range(len(counts))])  # one per beat
    keep = counts >= max(1, int(np.ceil(len(x) / 2)))
    return np.round(centre[keep]).astype(np.int64)


# --------------------------------------------------------------------------------------------
# refinement


def _local_maxima(seg: np.ndarray) -> np.ndarray:
    """Heights of strict interior local maxima of ``seg`` ``[..., L]`` (NaN = outside), else -inf."""
    mid, left, right = seg[..., 1:-1], seg[..., :-2], seg[..., 2:]
    peak = (mid >= left) & (mid > right)  # NaN neighbours compare False: no peak at a cut edge
    out = np.full(seg.shape, -np.inf)
    out[..., 1:-1] = np.where(peak, mid, -np.inf)
    return out


def _refine(peaks: np.ndarray, x_shape: np.ndarray, fs: float) -> np.ndarray:
    """Move each detection to the largest local extremum, within +-REFINE_S, of the dominant lead
    taken with its dominant polarity; drop detections without one (a complex cut by an end)."""
    if len(peaks) == 0:
        return peaks
    n = x_shape.shape[-1]
    w = max(round(REFINE_S * fs), 1)
    idx, inside = index_windows(peaks, -w, w + 1, n)
    pre_idx, pre_inside = index_windows(peaks, -int(0.2 * fs), -int(0.12 * fs), n)  # before the QRS
    pre = np.where(pre_inside, x_shape[:, pre_idx], 0.0)  # outside the record: 0, the high-passed baseline
    base = pre.sum(axis=-1) / np.maximum(pre_inside.sum(axis=-1), 1)
    seg = np.where(inside, x_shape[:, idx], np.nan) - base[..., None]  # [k, beats, 2w+1]
    up, down = _local_maxima(seg), _local_maxima(-seg)
    pos, neg = np.maximum(up.max(axis=-1), 0.0), np.maximum(down.max(axis=-1), 0.0)  # [k, beats]
    dominance = np.median(pos, axis=1) - np.median(neg, axis=1)
    lead = int(np.argmax(np.abs(dominance)))
    main, other = (up[lead], down[lead]) if dominance[lead] >= 0 else (down[lead], up[lead])
    flip = other.max(axis=1) > 2.0 * np.maximum(main.max(axis=1), 0.0)  # ectopic beat of the other shape
    chosen = np.where(flip[:, None], other, main)
    found = np.isfinite(chosen.max(axis=1))
    offset = np.argmax(chosen, axis=1)
    rows = np.arange(len(peaks))
    refined, height = idx[rows, offset][found], chosen[rows, offset][found]
    return _enforce_refractory(refined, height, fs)


def _enforce_refractory(peaks: np.ndarray, height: np.ndarray, fs: float) -> np.ndarray:
    """Drop the smaller of any two peaks closer than the refractory period (after refinement)."""
    order = np.argsort(peaks, kind="stable")
    peaks, height = peaks[order], height[order]
    keep = np.ones(len(peaks), bool)
    too_close = np.flatnonzero(np.diff(peaks) < REFRACTORY_S * fs)
    for i in too_close:  # rare: two detections that converged on one complex
        j = i + 1
        if keep[i] and keep[j]:
            keep[j if height[j] <= height[i] else i] = False
    return np.unique(peaks[keep])


# --------------------------------------------------------------------------------------------
# public API


def detect_r_peaks(record: EcgRecord, *, leads: Sequence[str] | None = None, method: str = "fused") -> np.ndarray:
    """R-peak sample indices (int64, ascending) of ``record`` at ``record.fs``.

    ``leads`` restricts detection to those lead names (default: all). ``method`` is ``"fused"``
    (multi-lead QRS energy, see the module docstring) or ``"vote"`` (neurokit2 per lead, voted).
    A flat record gives an empty array; a record shorter than 1 s raises :class:`DataError`, one
    sampled at :data:`MIN_FS_HZ` (11.1 Hz) or less :class:`~cardiodistill.errors.SamplingRateError`.
    """
    if method not in ("fused", "vote"):
        raise ConfigError(f"unknown R-peak method {method!r}; choose 'fused' or 'vote'")
    if not record.fs > MIN_FS_HZ:
        raise SamplingRateError(
            f"a sampling rate of {record.fs:g} Hz is too low for R-peak detection (it needs over {MIN_FS_HZ:.3g} Hz)",
            record.source,
        )
    x = lead_matrix(record, leads)
    fs = record.fs
    x_band = band_limited(x, fs, QRS_BAND_HZ)
    ok = carries_signal(x_band)
    if not ok.any():
        return np.zeros(0, np.int64)
    x_band, x = x_band[ok], x[ok]
    peaks = _fused_candidates(x_band, fs) if method == "fused" else _vote_candidates(x, fs)
    return _refine(peaks, band_limited(x, fs, SHAPE_BAND_HZ, order=4), fs).astype(np.int64)


def rr_intervals(r_peaks: np.ndarray, fs: float) -> np.ndarray:
    """Intervals between successive R-peaks in seconds (float64, one fewer than the peaks)."""
    return np.diff(np.asarray(r_peaks, np.float64)) / float(fs)


def heart_rate(r_peaks: np.ndarray, fs: float) -> float:
    """Mean heart rate in beats per minute (60 / mean RR); NaN with fewer than two peaks."""
    rr = rr_intervals(r_peaks, fs)
    return float(60.0 / rr.mean()) if len(rr) else float("nan")
