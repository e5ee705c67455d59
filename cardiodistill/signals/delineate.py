"""QRS onset, QRS offset and T-wave end of each beat, measured on all leads at once.

End of T is end-systole for the toolkit's ECG-echo alignment, so it must be measured the same
way on a 12-lead and on a single-lead handheld. Both measurements below use lead-independent
quantities, so the polarity of any one lead (an inverted T, a QS complex) does not matter.

QRS onset and offset: spatial velocity
    ``v(t) = sqrt(sum_leads (dx/dt)^2)`` of the 0.5-40 Hz filtered leads (mV/s), lightly smoothed.
    Within a beat it is large during the QRS and small on the isoelectric PR and ST segments. With
    ``v_qrs`` the beat's largest velocity within +-100 ms of the R-peak and ``v_0`` the record's
    median velocity (the slow, isoelectric part), the threshold is ``v_0 + 0.1 (v_qrs - v_0)``.
    The onset is the end of the last stretch of at least 10 ms below threshold before the QRS
    up-stroke; the offset is the start of the first such stretch after the down-stroke. Asking
    for a stretch, not a single sample, stops the search at the instant a single lead turns
    (the apex of a q or of an R, where its slope is zero for a moment).

T end: tangent method on the spatial magnitude
    Each lead is referred to its own isoelectric level (the median over the 40 ms before the QRS
    onset) and low-passed to 15 Hz; ``m(t) = sqrt(sum_leads x^2)`` is then a positive T hump
    whatever the T polarity in each lead. The T peak is the largest ``m`` between the QRS offset
    (+40 ms) and the latest plausible T end, ``R + 0.65 RR^(1/3)`` s (Fridericia, a QTc up to
    ~650 ms) but before the next QRS. T end is where the tangent at the steepest descent after
    the peak meets the magnitude's isoelectric level (its median over the same PR window), as a
    cardiologist draws it on paper. A beat without a clear descent or whose tangent lands past
    the next R-peak gets -1.

Indices are samples at ``record.fs``; -1 marks a measurement that could not be made (also when a
beat's window runs off either end of the recording).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from ..records import EcgRecord
from .rpeaks import SHAPE_BAND_HZ, band_limited, carries_signal, detect_r_peaks, index_windows, lead_matrix

__all__ = ["delineate"]

QRS_HALF_WINDOW_S = 0.10  # where the QRS peak velocity is looked for, around the R-peak
ONSET_SEARCH_S = 0.16  # how far before the R-peak the QRS may start (wide QRS included)
OFFSET_SEARCH_S = 0.20  # how far after the R-peak it may end
QRS_THRESHOLD_FRAC = 0.10
QUIET_S = 0.010
VELOCITY_SMOOTH_S = 0.008
T_LOWPASS_HZ = 15.0
PR_WINDOW_S = 0.040
T_START_AFTER_QRS_S = 0.04
QT_MAX_FRIDERICIA_S = 0.65  # latest T end after the R-peak: 0.65 * RR^(1/3) s
T_MIN_GAP_TO_NEXT_R_S = 0.06


def _samples(seconds: float, fs: float) -> int:
    return max(round(seconds * fs), 1)


def spatial_velocity(x_shape: np.ndarray, fs: float) -> np.ndarray:
    """``sqrt(sum (dx/dt)^2)`` over leads ``[k, n]`` -> ``[n]`` mV/s, smoothed over 8 ms."""
    slope = np.gradient(x_shape, axis=-1) * fs
    v = np.sqrt(np.sum(slope * slope, axis=0))
    width = _samples(VELOCITY_SMOOTH_S, fs)
    return np.convolve(v, np.ones(width) / width, mode="same")


def _quiet_runs(below: np.ndarray, k: int, backward: bool) -> np.ndarray:
    """``[beats, L]``: True where ``below`` holds for the ``k`` samples ending (``backward``) or
    starting (forward) at that sample."""
    csum = np.concatenate([np.zeros((len(below), 1), int), np.cumsum(below, axis=1)], axis=1)
    counts = np.zeros(below.shape, int)
    if backward:  # samples t-k+1 .. t
        counts[:, k - 1 :] = csum[:, k:] - csum[:, :-k]
    else:  # samples t .. t+k-1
        counts[:, : below.shape[1] - k + 1] = csum[:, k:] - csum[:, :-k]
    return counts >= k


def _qrs_bounds(v: np.ndarray, r: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    n = len(v)
    floor = np.median(v)
    h = _samples(QRS_HALF_WINDOW_S, fs)
    near, _ = index_windows(r, -h, h + 1, n)
    v_qrs = v[near].max(axis=1)
    thr = floor + QRS_THRESHOLD_FRAC * (v_qrs - floor)
    k = _samples(QUIET_S, fs)

    # onset: before the up-stroke (the velocity maximum in the 100 ms before R)
    pre = _samples(ONSET_SEARCH_S, fs)
    idx, inside = index_windows(r, -pre, 1, n)
    seg = v[idx]
    anchor = np.argmax(np.where(np.arange(pre + 1) >= pre - h, seg, -np.inf), axis=1)
    quiet = _quiet_runs(seg < thr[:, None], k, backward=True) & (np.arange(pre + 1) <= anchor[:, None])
    last = np.where(quiet, np.arange(pre + 1), -1).max(axis=1)
    onset = np.where((last >= 0) & inside.all(axis=1), idx[np.arange(len(r)), np.maximum(last, 0)], -1)

    # offset: after the down-stroke (the velocity maximum in the 100 ms after R)
    post = _samples(OFFSET_SEARCH_S, fs)
    idx, inside = index_windows(r, 0, post + 1, n)
    seg = v[idx]
    anchor = np.argmax(np.where(np.arange(post + 1) <= h, seg, -np.inf), axis=1)
    quiet = _quiet_runs(seg < thr[:, None], k, backward=False) & (np.arange(post + 1) >= anchor[:, None])
    first = np.where(quiet, np.arange(post + 1), post + 1).min(axis=1)
    offset = np.where((first <= post) & inside.all(axis=1), idx[np.arange(len(r)), np.minimum(first, post)], -1)
    return onset.astype(np.int64), offset.astype(np.int64)


def _t_end(x_t: np.ndarray, r: np.ndarray, onset: np.ndarray, offset: np.ndarray, fs: float) -> np.ndarray:
    n = x_t.shape[-1]
    n_beats = len(r)
    rr_prev = np.diff(r, prepend=r[0] - np.median(np.diff(r))) / fs if n_beats > 1 else np.full(1, 1.0)
    rr_next = np.append(np.diff(r), n + 10 * fs) / fs if n_beats > 1 else np.full(1, np.inf)
    latest = np.minimum(QT_MAX_FRIDERICIA_S * np.cbrt(np.clip(rr_prev, 0.25, 2.5)), rr_next - T_MIN_GAP_TO_NEXT_R_S)

    # one window per beat from the PR segment to the latest T end: [beats, L]
    pr = _samples(PR_WINDOW_S, fs)
    start = -_samples(0.25, fs)
    stop = _samples(float(latest.max()), fs) + 1
    idx, inside = index_windows(r, start, stop, n)
    rel = np.arange(start, stop)  # samples relative to R
    onset_rel = np.where(onset >= 0, onset - r, -_samples(0.06, fs))
    pr_mask = (rel[None, :] >= onset_rel[:, None] - pr) & (rel[None, :] < onset_rel[:, None])
    seg = x_t[:, idx]  # [k, beats, L]
    with warnings.catch_warnings():  # a beat whose PR window is empty gets NaN, hence -1 below
        warnings.simplefilter("ignore", RuntimeWarning)
        base = np.nanmedian(np.where(pr_mask, seg, np.nan), axis=-1)  # [k, beats]
        mag = np.sqrt(np.sum((seg - base[..., None]) ** 2, axis=0))  # [beats, L]
        iso = np.nanmedian(np.where(pr_mask, mag, np.nan), axis=-1)

    t_from = np.where(offset >= 0, offset - r, _samples(0.06, fs)) + _samples(T_START_AFTER_QRS_S, fs)
    t_to = np.round(latest * fs).astype(int)
    in_t = (rel[None, :] >= t_from[:, None]) & (rel[None, :] <= t_to[:, None])
    peak = np.argmax(np.where(in_t, mag, -np.inf), axis=1)
    slope = np.gradient(mag, axis=1)  # per sample
    descent = in_t & (np.arange(len(rel))[None, :] >= peak[:, None])
    steep = np.argmin(np.where(descent, slope, np.inf), axis=1)
    rows = np.arange(n_beats)
    s = slope[rows, steep]
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = rel[steep] + (iso - mag[rows, steep]) / s  # samples after R
    ok = (s < 0) & np.isfinite(cross) & (cross > rel[peak]) & (cross < rr_next * fs) & inside.all(axis=1)
    return np.where(ok, r + np.round(np.where(ok, cross, 0)).astype(np.int64), -1)


def delineate(
    record: EcgRecord, r_peaks: np.ndarray | None = None, *, leads: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Per-beat ``r_peak``, ``qrs_onset``, ``qrs_offset`` and ``t_end`` sample indices (int64, -1 if
    not found), from ``r_peaks`` (detected with :func:`detect_r_peaks` when not given)."""
    if r_peaks is None:
        r_peaks = detect_r_peaks(record, leads=leads)
    r = np.asarray(r_peaks, np.int64)
    x = lead_matrix(record, leads)
    empty = {name: np.zeros(0, np.int64) for name in ("r_peak", "qrs_onset", "qrs_offset", "t_end")}
    if len(r) == 0:
        return empty
    x_shape = band_limited(x, record.fs, SHAPE_BAND_HZ, order=4)
    ok = carries_signal(x_shape)
    if not ok.any():
        return {**empty, "r_peak": r, **{k: np.full(len(r), -1, np.int64) for k in ("qrs_onset", "qrs_offset", "t_end")}}
    x_shape = x_shape[ok]
    onset, offset = _qrs_bounds(spatial_velocity(x_shape, record.fs), r, record.fs)
    x_t = band_limited(x[ok], record.fs, (SHAPE_BAND_HZ[0], T_LOWPASS_HZ), order=4)
    return {"r_peak": r, "qrs_onset": onset, "qrs_offset": offset, "t_end": _t_end(x_t, r, onset, offset, record.fs)}
