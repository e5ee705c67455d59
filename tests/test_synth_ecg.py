"""The dipole ECG simulator: lead algebra, timing against the beat train, and the physiology of each
condition, measured on the rendered signals the way an ECG reader would measure them."""

from __future__ import annotations

from dataclasses import fields, replace

import numpy as np
import pytest
from scipy import signal as sps

from cardiodistill.config import PrevalenceConfig
from cardiodistill.errors import ConfigError, SamplingRateError
from cardiodistill.signals.leads import LEADS_12
from cardiodistill.synth.ecg import (
    MOBILE_LEADS,
    EcgParams,
    render_12lead,
    render_dipole,
    render_mobile,
    sample_ecg_params,
)
from cardiodistill.synth.population import Population, sample_population
from cardiodistill.synth.rhythm import sample_beats

FS = 500.0
DURATION = 10.0
LEAD = {name: i for i, name in enumerate(LEADS_12)}
TERRITORY_LEADS = {1: ("V1", "V2", "V3", "V4"), 2: ("II", "III", "aVF"), 3: ("I", "aVL", "V5", "V6")}
CONDITIONS = ("mi", "cardiomyopathy", "lvh", "af", "bbb", "ischaemia", "hyperkalaemia", "ckd", "anaemia", "valve")


def cohort(n: int, seed: int, **prevalence) -> Population:
    """Patients with only the given conditions (every other prevalence 0)."""
    config = PrevalenceConfig(**{**dict.fromkeys(CONDITIONS, 0.0), **prevalence})
    return sample_population(n, config, np.random.default_rng(seed))


def concat(pops: list[Population]) -> Population:
    return Population(**{f.name: np.concatenate([getattr(p, f.name) for p in pops]) for f in fields(Population)})


def simulate(pop: Population, seed: int = 0, noise: float = 0.0, duration: float = DURATION, **kw):
    beats = sample_beats(pop, duration, np.random.default_rng(seed + 1))
    params = sample_ecg_params(pop, np.random.default_rng(seed + 2))
    ecg = render_12lead(pop, beats, params, FS, np.random.default_rng(seed + 3), noise=noise, **kw)
    return beats, params, ecg


def inner_beats(times: np.ndarray, margin: float = 0.6, duration: float = DURATION) -> np.ndarray:
    """Beat times (one patient) whose neighbourhood lies inside the recording."""
    return times[np.isfinite(times) & (times > margin) & (times < duration - margin)]


def segment(x: np.ndarray, start_s: float, length_s: float, fs: float = FS) -> np.ndarray:
    """``x[..., start:start + length]`` in seconds."""
    a = int(round(start_s * fs))
    return x[..., a : a + int(round(length_s * fs))]


def median_per_patient(ecg, beats, measure) -> np.ndarray:
    """``measure(ecg[i], beat_index)`` -> [n_leads] per beat, median over the patient's inner beats."""
    out = []
    for i in range(ecg.shape[0]):
        ks = np.nonzero(np.isin(beats.qrs_onset[i], inner_beats(beats.qrs_onset[i])))[0]
        out.append(np.median([measure(i, k) for k in ks], axis=0))
    return np.asarray(out)


def qrs_of(ecg: np.ndarray, beats, pop: Population):
    """``(i, k) ->`` the QRS of beat ``k`` of patient ``i``, ``[12, S]``."""
    return lambda i, k: segment(ecg[i], beats.qrs_onset[i, k], pop.qrs_ms[i] / 1000)


def t_wave_of(ecg: np.ndarray, beats):
    """``(i, k) ->`` the mean level ``[12]`` over 60 ms around the T peak (~90 ms before t_end)."""
    return lambda i, k: segment(ecg[i], beats.t_end[i, k] - 0.12, 0.06).mean(-1)


def initial_negativity(seg: np.ndarray, threshold: float = 0.05) -> np.ndarray:
    """Depth (mV) of the initial negative deflection of each lead's QRS ``[n_leads, S]`` (the Q wave):
    the deepest point before the signal first rises above ``threshold``; the whole complex if it never
    does (QS)."""
    above = seg > threshold
    first = np.where(above.any(-1), above.argmax(-1), seg.shape[-1])
    before = np.where(np.arange(seg.shape[-1]) < first[:, None], seg, 0.0)
    return np.clip(-before.min(-1), 0.0, None)


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def mixed():
    """A population with the default prevalences plus extra AF, rendered clean and noisy."""
    pop = sample_population(48, PrevalenceConfig(af=0.3), np.random.default_rng(11))
    beats, params, clean = simulate(pop, seed=20)
    noisy = render_12lead(pop, beats, params, FS, np.random.default_rng(99), noise=1.0)
    return pop, beats, params, clean, noisy


@pytest.fixture(scope="module")
def normals():
    pop = cohort(120, seed=5)
    beats, params, ecg = simulate(pop, seed=30)
    return pop, beats, params, ecg


# --------------------------------------------------------------------------------------------
# lead algebra, shapes, determinism


def limb_identity_errors(limb: np.ndarray) -> np.ndarray:
    """Max abs violation of III = II - I and the three Goldberger identities, ``limb [n, 6, S]``."""
    i, ii, iii, avr, avl, avf = (limb[:, k].astype(np.float64) for k in range(6))
    return np.array(
        [
            np.abs(iii - (ii - i)).max(),
            np.abs(avr + (i + ii) / 2).max(),
            np.abs(avl - (i - ii / 2)).max(),
            np.abs(avf - (ii - i / 2)).max(),
        ]
    )


def test_limb_lead_identities_hold_clean_and_noisy(mixed):
    pop, beats, params, clean, noisy = mixed
    six_clean = render_mobile(pop, beats, params, 300.0, np.random.default_rng(1), noise=0.0)
    six_noisy = render_mobile(pop, beats, params, 300.0, np.random.default_rng(1), noise=1.0)
    for limb, step_mv in ((clean[:, :6], 1e-3), (noisy[:, :6], 1e-3), (six_clean, 1e-2), (six_noisy, 1e-2)):
        scale = np.abs(limb).max()
        errors = limb_identity_errors(limb)
        assert np.all(errors <= 4 * np.finfo(np.float32).eps * scale), errors  # float32 rounding only
        assert np.all(errors < step_mv)
    # the recorded channels (I, II, V1-V6) lie on the ADC grid
    recorded = noisy[:, [0, 1, *range(6, 12)]] / 1e-3
    assert np.abs(recorded - np.round(recorded)).max() < 1e-2
    assert np.std(noisy - clean) > 0.005  # the noisy render really is noisy


def test_shapes_dtypes_and_mobile_devices(mixed):
    pop, beats, params, clean, _ = mixed
    n = len(pop)
    assert clean.shape == (n, 12, 5000) and clean.dtype == np.float32
    assert render_12lead(pop, beats, params, 250.0, np.random.default_rng(0), noise=0).shape == (n, 12, 2500)
    single = render_mobile(pop, beats, params, 300.0, np.random.default_rng(4), device="single_lead", noise=0.0)
    six = render_mobile(pop, beats, params, 300.0, np.random.default_rng(4), device="six_lead", noise=0.0)
    assert single.shape == (n, len(MOBILE_LEADS["single_lead"]), 3000) and six.shape == (n, 6, 3000)
    assert single.dtype == six.dtype == np.float32
    np.testing.assert_array_equal(single[:, 0], six[:, 0])  # same dipole, same lead I
    # mobile lead I is the 12-lead's lead I seen through the device: same beats, same morphology
    t300 = np.arange(3000) / 300.0
    resampled = np.stack([np.interp(t300, np.arange(5000) / FS, row) for row in clean[:, 0]])
    sos = sps.butter(2, (0.5, 40.0), btype="bandpass", fs=300.0, output="sos")
    reference = sps.sosfiltfilt(sos, resampled, axis=-1)
    corr = [np.corrcoef(a, b)[0, 1] for a, b in zip(single[:, 0], reference)]
    assert np.min(corr) > 0.97
    gain = np.std(single[:, 0], axis=-1) / np.std(reference, axis=-1)
    assert 0.83 < gain.min() and gain.max() < 1.02
    # the dipole at arbitrary times (e.g. video frames) equals the dipole on the sampling grid
    grid = np.arange(5000) / FS
    frames = np.array([10, 777, 2500, 4999])
    at_frames = render_dipole(pop, beats, params, grid[frames])
    assert at_frames.shape == (n, 3, 4) and at_frames.dtype == np.float32
    np.testing.assert_allclose(at_frames, render_dipole(pop, beats, params, grid)[..., frames], atol=1e-6)


def test_mobile_device_is_band_limited_and_noisier(mixed):
    pop, beats, params, clean, noisy = mixed
    six = render_mobile(pop, beats, params, 300.0, np.random.default_rng(5), noise=1.0)
    f, psd = sps.welch(six[:, 0], fs=300.0, nperseg=512, axis=-1)
    assert np.median(psd[:, f > 60].sum(-1) / psd.sum(-1)) < 0.01  # 0.5-40 Hz device band-pass
    six_clean = render_mobile(pop, beats, params, 300.0, np.random.default_rng(5), noise=0.0)
    mobile_noise = np.median(np.std(six[:, 0] - six_clean[:, 0], axis=-1))
    sos = sps.butter(2, (0.5, 40.0), btype="bandpass", fs=FS, output="sos")
    clinical_noise = np.median(np.std(sps.sosfiltfilt(sos, noisy[:, 0] - clean[:, 0], axis=-1), axis=-1))
    assert mobile_noise > 1.5 * clinical_noise  # muscle and thumb-contact noise, same band
    with pytest.raises(ConfigError):
        render_mobile(pop, beats, params, 300.0, np.random.default_rng(0), device="watch")
    with pytest.raises(SamplingRateError):
        render_12lead(pop, beats, params, 0.0, np.random.default_rng(0))


def test_noise_scales_with_the_noise_factor(mixed):
    pop, beats, params, clean, noisy = mixed
    doubled = render_12lead(pop, beats, params, FS, np.random.default_rng(99), noise=2.0)
    rms_1 = np.sqrt(np.mean((noisy - clean) ** 2, axis=-1))
    rms_2 = np.sqrt(np.mean((doubled - clean) ** 2, axis=-1))
    ratio = np.median(rms_2 / rms_1)
    assert 1.95 < ratio < 2.05
    assert 0.01 < np.median(rms_1) < 0.15  # mV: a usable resting ECG
    # baseline wander (< 1 Hz) and mains hum (50 or 60 Hz) are both present in the noise
    f, psd = sps.welch(noisy[:, 1] - clean[:, 1], fs=FS, nperseg=2500, axis=-1)
    low = psd[:, (f > 0) & (f < 1.0)].mean(-1)
    mid = psd[:, (f > 5) & (f < 15)].mean(-1)
    assert np.median(low / mid) > 20
    mains = np.maximum(psd[:, np.argmin(np.abs(f - 50))], psd[:, np.argmin(np.abs(f - 60))])
    near = psd[:, (f > 40) & (f < 70) & (np.abs(f - 50) > 2) & (np.abs(f - 60) > 2)].mean(-1)
    assert np.median(mains / near) > 5


def test_same_seed_same_output_different_seed_different_output():
    pop = sample_population(6, PrevalenceConfig(af=0.5), np.random.default_rng(3))
    beats = sample_beats(pop, 4.0, np.random.default_rng(4))

    def run(seed):
        params = sample_ecg_params(pop, np.random.default_rng(seed))
        ecg = render_12lead(pop, beats, params, FS, np.random.default_rng(seed + 1))
        mobile = render_mobile(pop, beats, params, 300.0, np.random.default_rng(seed + 2))
        return params, ecg, mobile

    (p1, e1, m1), (p2, e2, m2), (_p3, e3, m3) = run(7), run(7), run(8)
    for f in fields(EcgParams):
        np.testing.assert_array_equal(getattr(p1, f.name), getattr(p2, f.name))
    np.testing.assert_array_equal(e1, e2)
    np.testing.assert_array_equal(m1, m2)
    assert np.abs(e1 - e3).mean() > 0.01 and np.abs(m1 - m3).mean() > 0.01


# --------------------------------------------------------------------------------------------
# timing against the beat train


def test_heart_rate_and_r_peaks_found_by_an_independent_detector(mixed):
    nk = pytest.importorskip("neurokit2")
    pop, beats, _, _, noisy = mixed
    errors, hits, irregularity = [], [], []
    for i in range(len(pop)):
        cleaned = nk.ecg_clean(noisy[i, LEAD["II"]], sampling_rate=int(FS), method="neurokit")
        upright, _ = nk.ecg_invert(cleaned, sampling_rate=int(FS))  # lead II is mostly negative with left axis
        _, info = nk.ecg_peaks(upright, sampling_rate=int(FS), method="neurokit")
        peaks = np.asarray(info["ECG_R_Peaks"]) / FS
        rr = np.diff(peaks)
        errors.append(abs(60.0 / rr.mean() - beats.mean_heart_rate()[i]))
        irregularity.append(np.sqrt(np.mean(np.diff(rr) ** 2)) / rr.mean())  # RMSSD / mean RR
        true_r = inner_beats(beats.r[i], margin=0.3)
        hits.extend(np.min(np.abs(true_r[:, None] - peaks[None, :]), axis=1) < 0.040)
    errors, irregularity = np.array(errors), np.array(irregularity)
    assert np.median(errors) < 3.0 and np.mean(errors < 5.0) > 0.9
    assert np.mean(hits) > 0.95
    af, sinus = irregularity[pop.af], irregularity[~pop.af]
    assert pop.af.sum() >= 8
    assert np.median(af) > 4 * np.median(sinus)
    assert np.percentile(af, 10) > np.percentile(sinus, 90)


def test_t_wave_tangent_end_is_the_beat_trains_t_end():
    pop = cohort(6, seed=8)
    beats, _, ecg = simulate(pop, seed=40, resolution_uv=0.01)
    errors = []
    for i in range(len(pop)):
        lead = ecg[i, 6:][np.argmax(np.abs(ecg[i, 6:]).max(-1))]  # the precordial lead with the largest T
        slope = np.gradient(lead.astype(np.float64), 1.0 / FS)
        for t_end in inner_beats(beats.t_end[i]):
            window = np.arange(int((t_end - 0.25) * FS), int((t_end + 0.05) * FS))
            peak = window[np.argmax(lead[window])]
            down = np.arange(peak, int((t_end + 0.05) * FS))
            k = down[np.argmin(slope[down])]
            errors.append(k / FS + lead[k] / -slope[k] - t_end)
    errors = np.abs(errors)
    assert len(errors) > 40
    assert errors.max() < 1.0 / FS, errors.max()


def test_qrs_duration_from_the_dipole_tracks_the_population():
    pop = cohort(60, seed=9, bbb=0.4)
    beats = sample_beats(pop, DURATION, np.random.default_rng(1))
    params = sample_ecg_params(pop, np.random.default_rng(2))
    t = np.arange(int(DURATION * FS)) / FS
    # spatial velocity of the dipole: fast during depolarisation, slow over ST-T (robust to ST shifts)
    velocity = np.linalg.norm(np.gradient(render_dipole(pop, beats, params, t), axis=-1), axis=1) * FS
    measured = []
    for i in range(len(pop)):
        widths = []
        for onset in inner_beats(beats.qrs_onset[i]):
            seg = segment(velocity[i], onset - 0.04, pop.qrs_ms[i] / 1000 + 0.08)
            above = np.nonzero(seg > 0.08 * seg.max())[0]
            widths.append((above[-1] - above[0]) / FS * 1000)
        measured.append(np.median(widths))
    error = np.array(measured) - pop.qrs_ms
    assert pop.bbb.astype(bool).sum() >= 15
    assert np.corrcoef(measured, pop.qrs_ms)[0, 1] > 0.95
    assert abs(np.median(error)) < 10.0 and np.abs(error).max() < 20.0


# --------------------------------------------------------------------------------------------
# physiology


def test_normal_amplitudes_and_precordial_progression(normals):
    pop, beats, _, ecg = normals
    qrs = qrs_of(ecg, beats, pop)
    r_amp = median_per_patient(ecg, beats, lambda i, k: qrs(i, k).max(-1))
    s_amp = -median_per_patient(ecg, beats, lambda i, k: qrs(i, k).min(-1))
    t_amp = median_per_patient(ecg, beats, t_wave_of(ecg, beats))
    pr = pop.pr_ms / 1000
    p_amp = median_per_patient(ecg, beats, lambda i, k: segment(ecg[i], beats.qrs_onset[i, k] - pr[i], pr[i]).max(-1))
    assert 0.8 < np.median(r_amp[:, LEAD["II"]]) < 1.6
    assert 0.15 < np.median(t_amp[:, LEAD["II"]]) < 0.45
    assert 0.08 < np.median(p_amp[:, LEAD["II"]]) < 0.25
    assert np.mean(s_amp[:, LEAD["V1"]] > r_amp[:, LEAD["V1"]]) > 0.95  # rS in V1
    assert np.mean(r_amp[:, LEAD["V6"]] > s_amp[:, LEAD["V6"]]) > 0.95  # qR in V6
    assert np.median(t_amp[:, LEAD["aVR"]]) < -0.1  # inverted T in aVR
    dominant = r_amp[:, 6:] > s_amp[:, 6:]
    transition = np.where(dominant.any(1), dominant.argmax(1), 6) + 1  # first V lead with R > S
    assert np.mean((transition >= 3) & (transition <= 4)) > 0.8


def test_frontal_axis_follows_the_population(normals):
    pop, beats, _, ecg = normals
    qrs = qrs_of(ecg, beats, pop)
    net = median_per_patient(ecg, beats, lambda i, k: qrs(i, k).sum(-1))  # net QRS area per lead
    axis = np.degrees(np.arctan2(2 / np.sqrt(3) * net[:, LEAD["aVF"]], net[:, LEAD["I"]]))
    assert np.corrcoef(axis, pop.qrs_axis_deg)[0, 1] > 0.85
    assert np.median(np.abs(axis - pop.qrs_axis_deg)) < 15.0


def territory_cohort(n: int, seed: int, **prevalence) -> Population:
    """Patients with the condition, territories 1, 2, 3 in turn, plus the same number of controls."""
    sick = cohort(n, seed, **prevalence)
    territory = (np.arange(n) % 3 + 1).astype(np.int8)
    key = "mi_territory" if "mi" in prevalence else "ischaemia_territory"
    return concat([replace(sick, **{key: territory}), cohort(n, seed + 1)])


def test_prior_mi_gives_q_waves_and_t_inversion_in_the_territory():
    pop = territory_cohort(36, seed=12, mi=1.0)
    beats, _, ecg = simulate(pop, seed=50)
    qrs = qrs_of(ecg, beats, pop)
    q = median_per_patient(ecg, beats, lambda i, k: initial_negativity(qrs(i, k)))
    t = median_per_patient(ecg, beats, t_wave_of(ecg, beats))
    controls = pop.mi_territory == 0
    for territory, leads in TERRITORY_LEADS.items():
        idx = [LEAD[name] for name in leads]
        mi = pop.mi_territory == territory
        q_mi, q_ctrl = q[mi][:, idx].mean(1), q[controls][:, idx].mean(1)
        assert q_mi.mean() > q_ctrl.mean() + 0.12, (territory, q_mi.mean(), q_ctrl.mean())
        assert np.median(q_mi) > np.percentile(q_ctrl, 90), territory
        assert t[mi][:, idx].mean() < t[controls][:, idx].mean() - 0.1, territory


def test_acute_ischaemia_elevates_st_in_the_territory_with_reciprocal_depression():
    pop = territory_cohort(36, seed=13, ischaemia=1.0)
    beats, _, ecg = simulate(pop, seed=60)
    j_point = beats.qrs_onset + pop.qrs_ms[:, None] / 1000
    st = median_per_patient(ecg, beats, lambda i, k: segment(ecg[i], j_point[i, k] + 0.06, 0.002)[:, 0])  # J + 60 ms
    controls = pop.ischaemia_territory == 0
    reciprocal = {1: ("III", "aVF"), 2: ("I", "aVL"), 3: ("III", "aVF")}
    for territory, leads in TERRITORY_LEADS.items():
        sick = pop.ischaemia_territory == territory
        idx = [LEAD[name] for name in leads]
        st_sick = st[sick][:, idx].max(1)  # the most elevated territory lead (STEMI: >= 0.1 mV in two leads)
        assert np.median(st_sick) > 0.15 and np.mean(st_sick > 0.1) > 0.9, (territory, np.median(st_sick))
        assert np.median(st_sick) > np.median(st[controls][:, idx].max(1)) + 0.12
        opp = [LEAD[name] for name in reciprocal[territory]]
        assert np.median(st[sick][:, opp].min(1)) < np.median(st[controls][:, opp].min(1)) - 0.05, territory


def test_lvh_raises_sokolow_lyon_voltage():
    pop = concat([cohort(40, seed=14, lvh=1.0), cohort(40, seed=15)])
    beats, _, ecg = simulate(pop, seed=70)
    qrs = qrs_of(ecg, beats, pop)

    def sokolow(i, k):
        seg = qrs(i, k)
        return -seg[LEAD["V1"]].min() + max(seg[LEAD["V5"]].max(), seg[LEAD["V6"]].max())

    s = median_per_patient(ecg, beats, sokolow)
    lvh, ctrl = s[pop.lvh], s[~pop.lvh]
    assert lvh.mean() > ctrl.mean() + 1.0
    assert np.mean(lvh > 3.5) > 0.6 and np.mean(ctrl > 3.5) < 0.3
    t = median_per_patient(ecg, beats, t_wave_of(ecg, beats))
    assert np.median(t[pop.lvh, LEAD["V6"]]) < np.median(t[~pop.lvh, LEAD["V6"]]) - 0.1  # lateral strain


def test_bundle_branch_block_morphology():
    pop = concat([cohort(20, seed=16, bbb=1.0, lbbb_fraction=1.0), cohort(20, seed=17, bbb=1.0, lbbb_fraction=0.0)])
    beats, _, ecg = simulate(pop, seed=80)
    lbbb, rbbb = pop.bbb == 1, pop.bbb == 2
    qrs = qrs_of(ecg, beats, pop)
    r_amp = median_per_patient(ecg, beats, lambda i, k: qrs(i, k).max(-1))
    s_amp = -median_per_patient(ecg, beats, lambda i, k: qrs(i, k).min(-1))
    late = median_per_patient(ecg, beats, lambda i, k: qrs(i, k)[:, int(0.72 * qrs(i, k).shape[-1]) : -1].mean(-1))
    t = median_per_patient(ecg, beats, t_wave_of(ecg, beats))
    # LBBB: QS (or a tiny r) and a deep S in V1, tall broad R in V6 with discordant T
    v1, v6 = LEAD["V1"], LEAD["V6"]
    assert np.mean(r_amp[lbbb, v1] < 0.15 * s_amp[lbbb, v1]) > 0.9 and np.median(s_amp[lbbb, v1]) > 1.0
    assert np.median(r_amp[lbbb, v6]) > 0.8 and np.mean(t[lbbb, v6] < 0) > 0.9
    # RBBB: a terminal R' in V1, a terminal S in I and V6
    assert np.mean(late[rbbb, v1] > 0.15) > 0.9
    assert np.mean((late[rbbb, LEAD["I"]] < 0) & (late[rbbb, v6] < 0)) > 0.9


def test_af_removes_p_waves():
    pop = concat([cohort(20, seed=18, af=1.0), cohort(20, seed=19)])
    beats, params, ecg = simulate(pop, seed=90, duration=60.0)
    p_wave = []
    for i in range(len(pop)):
        # coherent average of the 160 ms before each QRS (after the previous T wave has ended):
        # P waves add up, f waves cancel
        onset, prev_t_end = beats.qrs_onset[i, 1:], beats.t_end[i, :-1]
        onsets = onset[np.isin(onset, inner_beats(onset, duration=60.0)) & (prev_t_end < onset - 0.18)]
        assert len(onsets) >= 10
        avg = np.mean([segment(ecg[i, LEAD["II"]], o - 0.18, 0.16) for o in onsets], axis=0)
        p_wave.append(np.abs(avg).max())
    p_wave = np.array(p_wave)
    assert p_wave[pop.af].max() < 0.03 and p_wave[~pop.af].min() > 0.05
    # f waves (the difference made by the fibrillating atria): 4-9 Hz, ~0.03-0.1 mV, largest in V1
    # and the inferior leads
    af = pop.take(pop.af)
    beats_af, params_af = beats.take(pop.af), params.take(pop.af)
    without = replace(params_af, f_amp=np.zeros(len(af)))
    rng = np.random.default_rng(0)  # unused when noise = 0
    with_f = render_12lead(af, beats_af, params_af, FS, rng, noise=0)
    f_waves = with_f - render_12lead(af, beats_af, without, FS, rng, noise=0)
    freq, psd = sps.welch(f_waves, fs=FS, nperseg=2048, axis=-1)
    dominant = freq[psd[:, LEAD["V1"]].argmax(-1)]
    assert np.all((dominant >= 4) & (dominant <= 9))
    peak = np.percentile(np.abs(f_waves), 99, axis=-1)
    assert 0.03 < np.median(peak[:, LEAD["V1"]]) < 0.12
    assert np.mean(peak[:, LEAD["V1"]] > peak[:, LEAD["V6"]]) > 0.9
    assert np.mean(peak[:, LEAD["aVF"]] > peak[:, LEAD["aVL"]]) > 0.9


def test_t_amplitude_rises_with_potassium():
    pop = sample_population(80, PrevalenceConfig(hyperkalaemia=0.5), np.random.default_rng(21))
    beats = sample_beats(pop, DURATION, np.random.default_rng(1))
    params = sample_ecg_params(pop, np.random.default_rng(2))
    t = np.arange(int(DURATION * FS)) / FS
    magnitude = np.linalg.norm(render_dipole(pop, beats, params, t), axis=1)
    t_amp = [
        np.median([segment(magnitude[i], t_end - 0.2, 0.2).max() for t_end in inner_beats(beats.t_end[i])])
        for i in range(len(pop))
    ]
    r = np.corrcoef(t_amp, pop.potassium)[0, 1]
    assert r > 0.6, r
