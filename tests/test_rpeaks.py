"""R-peak detection and delineation, validated against MIT-BIH annotations, the simulator's ground
truth timing (12-lead and handheld), resampling, and neurokit2 on real 12-lead recordings."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from scipy import signal as sps

from cardiodistill.config import PrevalenceConfig
from cardiodistill.errors import DataError
from cardiodistill.records import EcgRecord
from cardiodistill.signals.delineate import delineate
from cardiodistill.signals.leads import LEADS_12
from cardiodistill.signals.rpeaks import detect_r_peaks, heart_rate, rr_intervals
from cardiodistill.synth.ecg import MOBILE_LEADS, render_12lead, render_mobile, sample_ecg_params
from cardiodistill.synth.population import Population, sample_population
from cardiodistill.synth.rhythm import sample_beats

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MITDB_100 = DATA / "wfdb_formats" / "100"
CINC = DATA / "cinc2021_sample" / "wfdb"
BEAT_SYMBOLS = list("NLRVAaJSFejE/fQ")
CONDITIONS = ("mi", "cardiomyopathy", "lvh", "af", "bbb", "ischaemia", "hyperkalaemia", "ckd", "anaemia", "valve")
DURATION = 10.0
EDGE_S = 0.15  # beats this close to either end of a simulated recording are not scored


def match(detected: np.ndarray, reference: np.ndarray, tol: float) -> list[tuple[int, int]]:
    """Greedy one-to-one matching (nearest unused detection within ``tol`` samples): (ref, det) pairs."""
    used = np.zeros(len(detected), bool)
    pairs = []
    for i, r in enumerate(reference):
        k = np.searchsorted(detected, r)
        near = [j for j in (k - 1, k) if 0 <= j < len(detected) and not used[j] and abs(detected[j] - r) <= tol]
        if near:
            j = min(near, key=lambda j: abs(detected[j] - r))
            used[j] = True
            pairs.append((i, j))
    return pairs


def se_ppv(detected: np.ndarray, reference: np.ndarray, tol: float) -> tuple[float, float]:
    tp = len(match(detected, reference, tol))
    return tp / max(len(reference), 1), tp / max(len(detected), 1)


# --------------------------------------------------------------------------------------------
# basic behaviour


def test_flat_short_and_rate_helpers():
    flat = EcgRecord(np.zeros((2, 5000)), 500.0, ("I", "II"))
    assert detect_r_peaks(flat).size == 0
    assert {k: v.size for k, v in delineate(flat).items()} == dict.fromkeys(("r_peak", "qrs_onset", "qrs_offset", "t_end"), 0)
    with pytest.raises(DataError, match="short.wfdb"):
        detect_r_peaks(EcgRecord(np.ones((1, 400)), 500.0, ("I",), source="short.wfdb"))
    peaks = np.array([0, 500, 1000, 1500])
    assert np.allclose(rr_intervals(peaks, 500.0), 1.0)
    assert heart_rate(peaks, 500.0) == pytest.approx(60.0)
    assert np.isnan(heart_rate(np.array([3]), 500.0))


# --------------------------------------------------------------------------------------------
# 1. MIT-BIH arrhythmia database, record 100 (30 min, MLII and V5 at 360 Hz)


@pytest.mark.skipif(not MITDB_100.with_suffix(".dat").exists(), reason="shared MIT-BIH record 100 not available")
def test_mitbih_record_100():
    wfdb = pytest.importorskip("wfdb")
    rec = wfdb.rdrecord(str(MITDB_100))
    ann = wfdb.rdann(str(MITDB_100), "atr")
    reference = ann.sample[np.isin(ann.symbol, BEAT_SYMBOLS)]
    record = EcgRecord(rec.p_signal.T, rec.fs, ("II", "V5"), source=str(MITDB_100))
    tol = 0.150 * rec.fs
    for leads, method in ((None, "fused"), (["II"], "fused"), (None, "vote")):
        peaks = detect_r_peaks(record, leads=leads, method=method)
        se, ppv = se_ppv(peaks, reference, tol)
        errors = [abs(peaks[j] - reference[i]) / rec.fs * 1000 for i, j in match(peaks, reference, tol)]
        print(f"MIT-BIH 100 {leads or 'II+V5'} {method}: {len(reference)} beats, {len(peaks)} detected, "
              f"Se {se:.4%} +P {ppv:.4%} median |error| {np.median(errors):.1f} ms")
        assert se > 0.995 and ppv > 0.995
        assert np.median(errors) < 10.0


# --------------------------------------------------------------------------------------------
# 2. simulator ground truth


def _cohort(n: int, seed: int, **prevalence) -> Population:
    config = PrevalenceConfig(**{**dict.fromkeys(CONDITIONS, 0.0), **prevalence})
    return sample_population(n, config, np.random.default_rng(seed))


def _concat(pops: list[Population]) -> Population:
    return Population(**{f.name: np.concatenate([getattr(p, f.name) for p in pops]) for f in fields(Population)})


@pytest.fixture(scope="module")
def simulated():
    left_axis = _cohort(6, 5)
    left_axis.qrs_axis_deg[:] = np.linspace(-75.0, -35.0, 6)  # left axis: lead II small or inverted
    pop = _concat([
        _cohort(8, 1), _cohort(8, 2, af=1.0), _cohort(8, 3, bbb=1.0, lbbb_fraction=0.5),
        _cohort(6, 4, hyperkalaemia=1.0), left_axis, sample_population(6, PrevalenceConfig(), np.random.default_rng(9)),
    ])
    beats = sample_beats(pop, DURATION, np.random.default_rng(11))
    params = sample_ecg_params(pop, np.random.default_rng(12))
    ecgs = {"12-lead": (render_12lead(pop, beats, params, 500.0, np.random.default_rng(13), noise=1.0), 500.0, LEADS_12)}
    for device in MOBILE_LEADS:
        sig = render_mobile(pop, beats, params, 300.0, np.random.default_rng(14), device=device)
        ecgs[device] = (sig, 300.0, MOBILE_LEADS[device])
    return pop, beats, ecgs


def _score(pop: Population, beats, sig: np.ndarray, fs: float, leads) -> dict:
    tp = n_det = n_ref = 0
    err = {"normal": [], "bbb": []}
    onset_err, tend_err = [], []
    for p in range(len(pop)):
        record = EcgRecord(sig[p], fs, leads)
        edge = EDGE_S * fs
        found = detect_r_peaks(record)
        ref = beats.r_peak_samples(fs)[p]
        ref = ref[(ref >= edge) & (ref < sig.shape[-1] - edge)]
        det = found[(found >= edge) & (found < sig.shape[-1] - edge)]
        pairs = match(det, ref, 0.050 * fs)
        tp, n_det, n_ref = tp + len(pairs), n_det + len(det), n_ref + len(ref)
        err["bbb" if pop.bbb[p] else "normal"] += [abs(det[j] - ref[i]) / fs * 1000 for i, j in pairs]
        if pop.bbb[p]:
            continue
        marks = delineate(record, det)
        for i, j in pairs:
            k = np.nanargmin(np.abs(beats.r[p] - ref[i] / fs))
            if marks["qrs_onset"][j] >= 0:
                onset_err.append(abs(marks["qrs_onset"][j] / fs - beats.qrs_onset[p, k]) * 1000)
            if marks["t_end"][j] >= 0:
                tend_err.append(abs(marks["t_end"][j] / fs - beats.t_end[p, k]) * 1000)
    return {"se": tp / n_ref, "ppv": tp / n_det, "n": n_ref, "r_normal": np.median(err["normal"]), "r_bbb": np.median(err["bbb"]),
                "onset": np.median(onset_err), "tend": np.median(tend_err),
                "onset_found": len(onset_err) / max(len(err["normal"]), 1), "tend_found": len(tend_err) / max(len(err["normal"]), 1)}


@pytest.mark.parametrize("device", ["12-lead", "six_lead", "single_lead"])
def test_simulated_cohort(simulated, device):
    pop, beats, ecgs = simulated
    sig, fs, leads = ecgs[device]
    s = _score(pop, beats, sig, fs, leads)
    print(f"{device} @ {fs:g} Hz, {len(pop)} patients, {s['n']} beats: Se {s['se']:.2%} +P {s['ppv']:.2%}; "
          f"median |R error| normal {s['r_normal']:.1f} ms, BBB {s['r_bbb']:.1f} ms; "
          f"no BBB: QRS onset {s['onset']:.1f} ms ({s['onset_found']:.0%} found), "
          f"T end {s['tend']:.1f} ms ({s['tend_found']:.0%} found)")
    # lead I alone has almost no QRS when the axis is near +90 deg: a known limit of a single lead; the
    # handheld devices add thumb-contact artefacts, and an ectopic beat's broad QRS may peak on its S wave
    floor = {"12-lead": 0.99, "six_lead": 0.985, "single_lead": 0.97}[device]
    assert s["se"] > floor and s["ppv"] > floor
    assert s["r_normal"] <= 4.0 and s["r_bbb"] <= 30.0
    assert s["onset"] < 20.0 and s["tend"] < 40.0
    assert s["onset_found"] > 0.9 and s["tend_found"] > 0.8


# --------------------------------------------------------------------------------------------
# 3. resampling robustness


def test_same_beats_at_any_sampling_rate(simulated):
    pop, beats, _ = simulated
    pick = np.array([0, 9, 17, 26, 31])  # normal, AF, BBB, hyperkalaemia, left axis
    sub, sub_beats = pop.take(pick), beats.take(pick)
    params = sample_ecg_params(sub, np.random.default_rng(21))
    high = render_12lead(sub, sub_beats, params, 1000.0, np.random.default_rng(22), noise=1.0)
    for p in range(len(pick)):
        base = detect_r_peaks(EcgRecord(high[p], 1000.0, LEADS_12)) / 1000.0
        for fs in (250, 360, 500):
            x = sps.resample_poly(high[p], fs, 1000, axis=-1)
            t = detect_r_peaks(EcgRecord(x, float(fs), LEADS_12)) / fs
            worst = max(np.abs(t[j] - base[i]) for i, j in match(t, base, 0.05)) * 1000
            print(f"patient {pick[p]} at {fs} Hz: {len(t)} vs {len(base)} beats, worst shift {worst:.1f} ms")
            assert len(t) == len(base) and len(match(t, base, 0.010)) == len(base)


# --------------------------------------------------------------------------------------------
# 4. real 12-lead recordings (CinC 2021 / PTB-XL-like sample)


@pytest.mark.skipif(not CINC.exists(), reason="shared CinC 2021 sample not available")
def test_heart_rate_agrees_with_neurokit_on_real_12_lead():
    wfdb = pytest.importorskip("wfdb")
    nk = pytest.importorskip("neurokit2")
    agree, disagreements = 0, []
    headers = sorted(CINC.glob("*.hea"))
    for header in headers:
        rec = wfdb.rdrecord(str(header.with_suffix("")))
        record = EcgRecord(rec.p_signal.T, rec.fs, tuple(rec.sig_name), source=str(header))
        ours = heart_rate(detect_r_peaks(record), rec.fs)
        cleaned = nk.ecg_clean(record.lead("II"), sampling_rate=int(rec.fs))
        _, info = nk.ecg_peaks(cleaned, sampling_rate=int(rec.fs), method="neurokit")
        theirs = heart_rate(np.asarray(info["ECG_R_Peaks"]), rec.fs)
        if abs(ours - theirs) <= 5.0:
            agree += 1
        else:
            disagreements.append(f"{header.stem}: ours {ours:.1f} vs neurokit {theirs:.1f} bpm")
    print(f"CinC 2021 sample: {agree}/{len(headers)} records within 5 bpm of neurokit2 (lead II)")
    for line in disagreements:
        print("  ", line)
    assert agree >= 0.9 * len(headers)
