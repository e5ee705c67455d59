"""One beat train per patient, shared by every modality.

The 12-lead ECG, the mobile ECG and the echo cine are all rendered from the same
:class:`BeatTrain`, so electrical and mechanical events line up the way they do in a patient:

* the R-peak of beat ``k`` is at ``r[k]`` seconds, which is also end-diastole (largest LV volume);
* ventricular depolarisation starts at ``qrs_onset[k] = r[k] - 0.45 * QRS``;
* the T wave ends at ``t_end[k] = qrs_onset[k] + QT_k`` with ``QT_k = QTc * RR_k^(1/3)``
  (Fridericia, RR of the preceding interval in seconds); this is end-systole (smallest volume).
  In the rare short cycle of atrial fibrillation where the next beat would arrive before that,
  systole is cut short: ``t_end`` is capped at ``ES_MAX_FRAC`` of the way to the next R-peak.

Sinus rhythm has respiratory sinus arrhythmia (a few per cent of RR at 0.2-0.33 Hz), smaller with
age and blunted in heart failure (vagal withdrawal: heart-rate variability falls with the LVEF);
atrial fibrillation has independent, gamma-distributed RR intervals (coefficient of variation
~0.2), which is what makes it "irregularly irregular". Premature ventricular complexes
(``ectopic``) arrive at ``Population.pvc_per_min``: early, at a fixed coupling of 55-75 % of the
patient's cycle, followed in sinus rhythm by a full compensatory pause (the sinus node is not
reset); never two in a row. An ectopic beat starts its (broad) QRS ``PVC_ONSET_S`` before its
R-peak and its QT is ``PVC_QT_EXTRA_S`` longer. Beats start before 0 s and end after the
recording so that waves at the edges are complete.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .population import Population

EDGE_S = 1.6  # beats are generated this far beyond both ends of the recording
MIN_RR_S = 0.33
ES_MAX_FRAC = 0.8  # end-systole no later than this fraction of the following RR interval
PVC_ONSET_S = 0.06  # an ectopic beat's QRS onset before its R-peak
PVC_QT_EXTRA_S = 0.04


@dataclass
class BeatTrain:
    """Beat times in seconds, ``[n_patients, n_beats]``, NaN where a patient has fewer beats."""

    r: np.ndarray
    rr: np.ndarray  # interval ending at this beat (s)
    qrs_onset: np.ndarray
    t_end: np.ndarray
    duration_s: float
    ectopic: np.ndarray  # bool, a premature ventricular complex

    @property
    def valid(self) -> np.ndarray:
        return np.isfinite(self.r)

    def take(self, index) -> BeatTrain:
        return BeatTrain(self.r[index], self.rr[index], self.qrs_onset[index], self.t_end[index], self.duration_s,
                         self.ectopic[index])

    def r_peak_samples(self, fs: float) -> list[np.ndarray]:
        """R-peak sample indices inside the recording ``[0, duration)`` at rate ``fs``, per patient."""
        return events_to_samples(self.r, 0.0, self.duration_s, fs)

    def mean_heart_rate(self) -> np.ndarray:
        """Beats per minute from the RR intervals that end inside the recording."""
        inside = self.valid & (self.r >= 0) & (self.r < self.duration_s)
        rr = np.where(inside, self.rr, np.nan)
        return 60.0 / np.nanmean(rr, axis=1)


def events_to_samples(times: np.ndarray, t0: np.ndarray | float, t1: np.ndarray | float, fs: float) -> list[np.ndarray]:
    """Convert event times ``[n, k]`` to integer sample (or frame) indices within ``[t0, t1)``."""
    t0 = np.broadcast_to(np.asarray(t0, float), (times.shape[0],))
    t1 = np.broadcast_to(np.asarray(t1, float), (times.shape[0],))
    n_max = np.floor((t1 - t0) * fs + 1e-9).astype(int)
    out = []
    for row, a, b, m in zip(times, t0, t1, n_max):
        row = row[np.isfinite(row) & (row >= a) & (row < b)]
        idx = np.round((row - a) * fs).astype(np.int64)
        out.append(idx[idx < m])
    return out


def sample_beats(pop: Population, duration_s: float, rng: np.random.Generator) -> BeatTrain:
    n = len(pop)
    rr_mean = 60.0 / pop.heart_rate
    span = duration_s + 2 * EDGE_S
    n_beats = int(np.ceil(span / MIN_RR_S)) + 2

    # sinus: respiratory sinus arrhythmia, smaller in the elderly, plus beat-to-beat jitter
    resp_hz = rng.uniform(0.2, 0.33, n)
    resp_phase = rng.uniform(0.0, 2 * np.pi, n)
    rsa = np.clip(0.05 - 0.0006 * (pop.age - 20.0), 0.01, 0.05) * np.clip((pop.lvef - 10.0) / 45.0, 0.3, 1.0)
    beat_k = np.arange(n_beats)
    approx_t = beat_k[None, :] * rr_mean[:, None]
    sinus = rr_mean[:, None] * (1.0 + rsa[:, None] * np.sin(2 * np.pi * resp_hz[:, None] * approx_t + resp_phase[:, None]))
    sinus = sinus * (1.0 + 0.008 * rng.standard_normal((n, n_beats)))

    # AF: independent gamma RR intervals, CV ~0.2
    cv = rng.uniform(0.15, 0.28, n)
    shape = 1.0 / cv**2
    af = rng.gamma(shape[:, None], (rr_mean / shape)[:, None], size=(n, n_beats))
    rr = np.where(pop.af[:, None], af, sinus).clip(MIN_RR_S, 2.0)

    # ectopy: a premature beat at a fixed coupling, then (in sinus rhythm) the compensatory pause
    ectopic = rng.random((n, n_beats)) < (pop.pvc_per_min * rr_mean / 60.0)[:, None]
    ectopic[:, 0] = False
    ectopic[:, 1:] &= ~ectopic[:, :-1]  # no couplets
    coupling = rng.uniform(0.55, 0.75, n)[:, None] * rr
    after = np.concatenate([np.zeros((n, 1), bool), ectopic[:, :-1]], axis=1)
    pause = np.where(pop.af[:, None], rr, 2.0 * np.roll(rr, 1, axis=1) - np.roll(coupling, 1, axis=1))
    rr = np.where(ectopic, coupling, np.where(after, pause, rr)).clip(MIN_RR_S, 2.5)

    first = -EDGE_S + rng.uniform(0.0, 1.0, n) * rr_mean
    r = first[:, None] + np.concatenate([np.zeros((n, 1)), np.cumsum(rr[:, 1:], axis=1)], axis=1)
    r = np.where(r <= duration_s + EDGE_S, r, np.nan)
    rr = np.where(np.isfinite(r), rr, np.nan)

    ectopic &= np.isfinite(r)
    qrs_onset = np.where(ectopic, r - PVC_ONSET_S, r - 0.45 * pop.qrs_ms[:, None] / 1000.0)
    qt = pop.qtc_ms[:, None] / 1000.0 * np.cbrt(rr) + PVC_QT_EXTRA_S * ectopic
    r_next = np.concatenate([r[:, 1:], np.full((n, 1), np.nan)], axis=1)
    cap = r + ES_MAX_FRAC * (r_next - r)
    t_end = np.where(np.isfinite(cap), np.minimum(qrs_onset + qt, cap), qrs_onset + qt)
    return BeatTrain(r=r, rr=rr, qrs_onset=qrs_onset, t_end=t_end, duration_s=float(duration_s), ectopic=ectopic)
