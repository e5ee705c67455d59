"""ECG processing: units, resampling, filters, windows, lead selection, quality, preprocessing.

Numbers, not shapes: attenuation in dB of synthetic sines, exact identities of derived leads,
exact lengths, one-line errors naming the file; quality flags validated on real PTB-XL records
and on corruptions of them.
"""

from pathlib import Path

import numpy as np
import pytest

from cardiodistill.errors import DataError, LeadError, SamplingRateError
from cardiodistill.records import EcgRecord
from cardiodistill.signals.filters import bandpass, butter_sos, notch, remove_baseline
from cardiodistill.signals.leads import LEADS_12, LIMB_LEADS, derive_limb_leads
from cardiodistill.signals.preprocess import PreprocessConfig, canonicalize, fill_gaps, preprocess, select_leads
from cardiodistill.signals.quality import lead_quality
from cardiodistill.signals.resample import resample
from cardiodistill.signals.units import guess_unit, to_millivolts
from cardiodistill.signals.windows import crop_or_pad, fixed_windows, valid_mask

SRC = "/data/patient 7/ecg.csv"
PTBXL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ptbxl" / "wfdb_sample"


def sine(freq, fs, seconds, leads=("I",), amp=1.0):
    t = np.arange(round(fs * seconds)) / fs
    sig = np.tile(amp * np.sin(2 * np.pi * freq * t), (len(leads), 1))
    return EcgRecord(sig, fs, leads, source=SRC)


def gain_db(out, ref, edge):
    """Gain in dB measured away from the edges (``edge`` samples dropped at both ends)."""
    return 20 * np.log10(np.std(out[..., edge:-edge]) / np.std(ref[..., edge:-edge]))


def one_line_naming_source(err):
    msg = str(err.value)
    assert "\n" not in msg and SRC in msg, msg
    return msg


def limb_record(rng, n=2000, leads=LEADS_12):
    """A consistent 12-lead record: limb leads from random I, II; precordial leads random."""
    i, ii = rng.normal(size=(2, n))
    sig = np.concatenate([derive_limb_leads(i, ii), rng.normal(size=(6, n))])
    full = EcgRecord(sig, 500, LEADS_12, source=SRC)
    keep = [LEADS_12.index(lead) for lead in leads]
    return full, EcgRecord(full.signal[keep], 500, tuple(leads), source=SRC)


# ---------------------------------------------------------------- units


@pytest.mark.parametrize("unit, factor", [("V", 1e3), ("mV", 1.0), ("MV", 1.0), ("uV", 1e-3), ("µV", 1e-3),
                                          ("μV", 1e-3), (" u V ", 1e-3), ("nV", 1e-6), ("microvolts", 1e-3)])
def test_to_millivolts_scales_every_spelling(unit, factor):
    out = to_millivolts(np.array([[1000.0, -250.0]]), unit)
    assert out.dtype == np.float32 and np.allclose(out, np.array([[1000.0, -250.0]]) * factor)


def test_unknown_unit_and_guessed_units():
    with pytest.raises(DataError) as err:
        to_millivolts(np.zeros(3), "mmHg", source=SRC)
    assert "unknown amplitude unit 'mmHg'" in one_line_naming_source(err)
    rng = np.random.default_rng(0)
    ecg_mv = np.sin(np.linspace(0, 60, 5000))[None] * rng.uniform(0.3, 1.5, size=(12, 1))  # ranges 0.6-3 mV
    assert guess_unit(ecg_mv) == "mV"
    assert guess_unit(ecg_mv * 1000) == "uV"
    assert guess_unit(ecg_mv * 1e-3) is None and guess_unit(np.zeros((2, 100))) is None


# ---------------------------------------------------------------- resampling


def test_resample_round_trip_and_lengths():
    rec = sine(10.0, 500, 10.0)
    there = resample(rec, 360)
    back = resample(there, 500)
    assert there.n_samples == 3600 and back.n_samples == 5000 and there.fs == 360.0
    edge = 10  # the first and last 20 ms carry the padding error
    assert np.abs(back.signal - rec.signal)[:, edge:-edge].max() < 1e-3
    assert [s["op"] for s in back.meta["steps"]] == ["resample", "resample"]
    for fs_in, fs_out, n in [(257, 500, 2571), (300, 500, 2999), (1000, 360, 7777)]:
        out = resample(EcgRecord(np.zeros((1, n)), fs_in, ("I",)), fs_out)
        assert out.n_samples == round(n * fs_out / fs_in)
        assert abs(out.duration_s - n / fs_in) <= 0.5 / fs_out


@pytest.mark.parametrize("fs_in, fs_out", [(300, 100), (257, 100), (100, 500), (360, 250)])
def test_resampling_is_scipys_with_its_anti_alias_filter_kept(fs_in, fs_out):
    from fractions import Fraction

    from scipy.signal import resample_poly

    from cardiodistill.signals.resample import WINDOW

    x = np.random.default_rng(fs_in).normal(size=(2, int(fs_in * 7.3))).astype(np.float32)
    ratio = Fraction(fs_out, fs_in)
    for _ in range(2):  # designed, then kept
        out = resample(EcgRecord(x, fs_in, ("I", "II")), fs_out)
        expected = resample_poly(x.astype(np.float64), ratio.numerator, ratio.denominator, axis=-1, padtype="line",
                                 window=WINDOW)[:, : out.n_samples]
        np.testing.assert_array_equal(out.signal, expected.astype(np.float32))


def test_the_robust_range_of_finite_and_of_gappy_signals():
    import warnings

    from cardiodistill.signals.units import robust_range

    rng = np.random.default_rng(0)
    for x in (rng.normal(size=(3, 900)), rng.normal(size=(2, 5, 40)).astype(np.float32), rng.normal(size=(2, 300))):
        x = x.copy()
        if x.shape == (2, 300):
            x[0, 7], x[1] = np.nan, np.inf  # a gap, and a lead with no finite sample
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanpercentile(np.where(np.isfinite(x), x, np.nan).astype(np.float64), [1, 99], axis=-1)
        np.testing.assert_array_equal(robust_range(x), hi - lo)


def test_resample_removes_what_the_new_rate_cannot_carry():
    rec = sine(257.0, 1000, 10.0)
    out = resample(rec, 250)
    assert gain_db(out.signal, rec.signal, 25) < -40  # would alias to 7 Hz, inside the ECG band
    kept = sine(20.0, 1000, 10.0)
    assert abs(gain_db(resample(kept, 250).signal, kept.signal, 25)) < 0.01


@pytest.mark.parametrize("fs_out", [0.0, -5.0, float("nan"), float("inf")])
def test_resample_rejects_bad_rates(fs_out):
    with pytest.raises(SamplingRateError) as err:
        resample(sine(10, 500, 1), fs_out)
    one_line_naming_source(err)


def test_resample_refuses_inexact_ratio_and_nan():
    with pytest.raises(SamplingRateError) as err:
        resample(EcgRecord(np.zeros((1, 500)), 499.7, ("I",), source=SRC), 500)
    assert "cannot resample 499.7 Hz to 500 Hz exactly" in one_line_naming_source(err)
    rec = sine(10, 500, 1)
    rec.signal[0, 10] = np.nan
    with pytest.raises(DataError) as err:
        resample(rec, 250)
    one_line_naming_source(err)


# ---------------------------------------------------------------- filters


@pytest.mark.parametrize("freq, lo_db, hi_db", [(0.1, -200, -40), (5.0, -0.1, 0.1), (20.0, -0.1, 0.1),
                                                (100.0, -200, -40)])
def test_bandpass_attenuation(freq, lo_db, hi_db):
    rec = sine(freq, 500, 20.0)
    g = gain_db(bandpass(rec, 0.5, 40.0).signal, rec.signal, 2500)
    assert lo_db <= g <= hi_db, g


def test_notch_and_baseline_attenuation():
    hum, ecg, wander = sine(50.0, 500, 20.0), sine(10.0, 500, 20.0), sine(0.1, 500, 20.0)
    assert gain_db(notch(hum, 50.0).signal, hum.signal, 2500) < -40
    assert abs(gain_db(notch(ecg, 50.0).signal, ecg.signal, 2500)) < 0.01
    assert gain_db(remove_baseline(wander).signal, wander.signal, 2500) < -40
    assert abs(gain_db(remove_baseline(ecg).signal, ecg.signal, 2500)) < 0.01
    # The median method: the baseline under a spiky "ECG" (narrow 1 mV pulses) goes, the spikes stay.
    t = np.arange(10000) / 500
    spikes = (np.abs((t % 1.0) - 0.5) < 0.02).astype(float)
    rec = EcgRecord((spikes + 0.8 * np.sin(2 * np.pi * 0.2 * t))[None], 500, ("I",))
    out = remove_baseline(rec, method="median").signal[0]
    assert np.abs(out - spikes)[500:-500].max() < 0.05


def test_filter_errors_name_the_file():
    with pytest.raises(SamplingRateError) as err:
        bandpass(sine(10, 100, 5), 0.5, 50.0)
    assert "Nyquist" in one_line_naming_source(err)
    with pytest.raises(SamplingRateError) as err:
        notch(sine(10, 100, 5), 60.0)
    one_line_naming_source(err)
    with pytest.raises(DataError) as err:
        bandpass(sine(10, 500, 0.04), 0.5, 40.0)
    assert "too short" in one_line_naming_source(err)


def test_filters_do_not_mutate_and_stay_float32():
    rec = sine(10, 500, 4, leads=("I", "II"))
    before = rec.signal.copy()
    out = bandpass(rec)
    assert out.signal.dtype == np.float32 and np.array_equal(rec.signal, before) and out is not rec
    assert "steps" not in rec.meta and out.meta["steps"][0]["op"] == "bandpass"


# ---------------------------------------------------------------- windows


def test_a_filter_is_designed_once_and_each_caller_gets_its_own_writeable_copy(monkeypatch):
    from scipy.signal import butter

    from cardiodistill.signals import filters

    filters._butter_sos.cache_clear()
    calls = []
    monkeypatch.setattr(filters, "butter", lambda *a, **k: calls.append(a) or butter(*a, **k))
    first = butter_sos(4, (0.5, 40.0), "bandpass", 300.0)
    np.testing.assert_array_equal(first, butter(4, (0.5, 40.0), btype="bandpass", fs=300.0, output="sos"))
    first[:] = 0  # a caller's copy: changing it leaves the design alone
    second = butter_sos(4, (0.5, 40.0), "bandpass", 300.0)
    assert len(calls) == 1 and second.flags.writeable and np.abs(second).sum() > 0
    butter_sos(4, (0.5, 40.0), "bandpass", 500.0)  # another rate: designed anew
    assert len(calls) == 2
    x = EcgRecord(np.random.default_rng(0).normal(size=(1, 3000)).astype(np.float32), 300.0, ["I"])
    filters._butter_sos.cache_clear()
    np.testing.assert_array_equal(bandpass(x).signal, bandpass(x).signal)  # designed, then from the cache


@pytest.mark.parametrize("shape", [(3000,), (2, 3000), (4, 2, 700)])
@pytest.mark.parametrize("padlen", [0, 1, 27, 600, 699])
def test_the_zero_phase_filter_is_scipys_with_its_initial_conditions_kept(shape, padlen, monkeypatch):
    from scipy import signal as sps

    from cardiodistill.signals import filters

    x = np.random.default_rng(padlen).normal(size=shape)
    for sos in (butter_sos(4, (0.5, 40.0), "bandpass", 300.0), butter_sos(2, 0.5, "highpass", 100.0)):
        np.testing.assert_array_equal(filters.sosfiltfilt(sos, x, padlen),
                                      sps.sosfiltfilt(sos, x, axis=-1, padlen=padlen))
    filters._sosfilt_zi.cache_clear()
    calls = []
    monkeypatch.setattr(filters, "sosfilt_zi", lambda sos: calls.append(1) or sps.sosfilt_zi(sos))
    for _ in range(3):
        filters.sosfiltfilt(butter_sos(4, (0.5, 40.0), "bandpass", 300.0), x, padlen)
    assert len(calls) == 1
    with pytest.raises(ValueError, match="padlen"):
        filters.sosfiltfilt(butter_sos(4, (0.5, 40.0), "bandpass", 300.0), x, x.shape[-1])


def test_fixed_windows_cover_the_record_with_masked_padding():
    n = 5 * 500 + 123
    rec = EcgRecord(np.arange(2 * n, dtype=float).reshape(2, n), 500, ("I", "II"))
    win = fixed_windows(rec, 2.0, stride=1.0)
    assert win.signal.shape == (5, 2, 1000) and list(win.starts) == [0, 500, 1000, 1500, 2000]
    assert np.array_equal(win.signal[3, 1], rec.signal[1, 1500:2500])
    assert win.valid[:4].all() and win.valid[4].sum() == n - 2000 and not win.signal[4, :, n - 2000:].any()
    edge = fixed_windows(rec, 2.0, stride=1.0, pad="edge")
    assert np.all(edge.signal[4, 0, n - 2000:] == rec.signal[0, -1])
    full = fixed_windows(rec, 2.0, pad="none")
    assert full.signal.shape == (2, 2, 1000) and full.valid.all()


def test_crop_or_pad_policies():
    rec = EcgRecord(np.arange(12 * 500, dtype=float)[None], 500, ("I",), source=SRC)
    centre = crop_or_pad(rec, 10.0)
    assert centre.n_samples == 5000 and centre.signal[0, 0] == 500 and centre.meta["valid_samples"] == (0, 5000)
    assert crop_or_pad(rec, 10.0, policy="start").signal[0, 0] == 0
    short = crop_or_pad(EcgRecord(np.ones((1, 3000)), 500, ("I",)), 10.0)
    mask = valid_mask(short)
    assert short.n_samples == 5000 and mask.sum() == 3000 and mask[:3000].all()
    assert not short.signal[0, 3000:].any()
    assert valid_mask(resample(short, 250)).sum() == 1500
    with pytest.raises(DataError) as err:
        crop_or_pad(EcgRecord(np.ones((1, 2000)), 500, ("I",), source=SRC), 10.0)
    assert "shorter than the 5 s minimum" in one_line_naming_source(err)


# ---------------------------------------------------------------- leads


def test_canonicalize_renames_orders_and_drops_non_ecg():
    rng = np.random.default_rng(0)
    rec = EcgRecord(rng.normal(size=(4, 100)), 500, ("V1", "PLETH", "MLII", "lead I"), source=SRC)
    out = canonicalize(rec)
    assert out.leads == ("I", "II", "V1") and out.meta["dropped_channels"] == ["PLETH"]
    assert np.array_equal(out.signal, rec.signal[[3, 2, 0]])
    with pytest.raises(LeadError) as err:
        canonicalize(EcgRecord(np.zeros((2, 10)), 500, ("II", "MLII"), source=SRC))
    one_line_naming_source(err)


@pytest.mark.parametrize("pair", [("I", "II"), ("I", "III"), ("II", "III"), ("aVR", "aVF"), ("III", "aVL")])
def test_limb_leads_derived_from_any_two(pair):
    full, partial = limb_record(np.random.default_rng(1), leads=(*pair, "V1"))
    out = select_leads(partial, LIMB_LEADS)
    assert out.leads == LIMB_LEADS
    assert np.abs(out.signal - full.signal[:6]).max() < 1e-5
    for lead in pair:  # recorded leads pass through untouched
        assert np.array_equal(out.lead(lead), partial.lead(lead))
    assert set(out.meta["derived_leads"]) == set(LIMB_LEADS) - set(pair)


def test_missing_lead_policy():
    _, partial = limb_record(np.random.default_rng(2), leads=("I", "II", "V2"))
    with pytest.raises(LeadError) as err:
        select_leads(partial, LEADS_12)
    msg = one_line_naming_source(err)
    assert "V1" in msg and "V3" in msg and "V2," not in msg.split("has")[0]
    zero = select_leads(partial, LEADS_12, missing="zero")
    assert zero.meta["missing_leads"] == ["V1", "V3", "V4", "V5", "V6"]
    assert not zero.lead("V1").any() and np.array_equal(zero.lead("V2"), partial.lead("V2"))
    with pytest.raises(LeadError):
        select_leads(partial, ("III",), derive=False)


def test_fill_gaps_interpolates_short_runs_only():
    rec = EcgRecord(np.tile(np.linspace(0, 1, 1000), (2, 1)), 500, ("I", "II"), source=SRC)
    rec.signal[0, 100:110] = np.nan  # 20 ms
    rec.signal[1, 200:400] = np.nan  # 400 ms
    with pytest.raises(DataError) as err:
        fill_gaps(rec)
    assert "lead II has a gap of 200" in one_line_naming_source(err)
    out = fill_gaps(rec, missing="zero")
    assert np.allclose(out.signal[0], np.linspace(0, 1, 1000), atol=1e-6)
    assert out.meta["missing_leads"] == ["II"] and not out.signal[1].any()


# ---------------------------------------------------------------- quality on real recordings


def _ptbxl_records():
    wfdb = pytest.importorskip("wfdb")
    if not PTBXL.is_dir():
        pytest.skip("shared/data/ptbxl/wfdb_sample is not present")
    out = []
    for hea in sorted(PTBXL.glob("*.hea")):
        r = wfdb.rdrecord(str(hea.with_suffix("")))
        out.append(EcgRecord(r.p_signal.T, r.fs, tuple(r.sig_name), source=str(hea)))
    return out


def test_clean_real_recordings_are_usable():
    records = _ptbxl_records()
    verdicts = [q for rec in records for q in lead_quality(rec).values()]
    assert len(verdicts) >= 96
    assert np.mean([q.usable for q in verdicts]) >= 0.95
    assert all(0.1 < q.amplitude_mv < 6 for q in verdicts)


def test_corruptions_of_real_recordings_are_flagged():
    rng = np.random.default_rng(0)
    expected = {"I": "flat", "II": "clipped", "V1": "noisy", "V2": "nan", "V3": "lead_off"}
    for rec in _ptbxl_records():
        sig = rec.signal.copy()
        sig[0] = 0.0  # zeroed lead
        sig[1] = np.clip(sig[1], None, np.percentile(sig[1], 95))  # amplifier rail on every R wave
        sig[6] += rng.normal(0.0, 0.5, sig.shape[1]).astype(np.float32)  # 0.5 mV white noise
        sig[7, 1000:1250] = np.nan  # half a second dropped
        sig[8, sig.shape[1] // 2:] = 5.0  # electrode comes off onto a +5 mV rail
        quality = lead_quality(EcgRecord(sig, rec.fs, rec.leads, source=rec.source))
        for lead, reason in expected.items():
            assert reason in quality[lead].reasons and not quality[lead].usable, (rec.source, lead, quality[lead])
        assert quality["V1"].hf_noise_ratio > 0.5
        untouched = [quality[lead].usable for lead in ("III", "aVR", "aVL", "aVF", "V4", "V5", "V6")]
        assert sum(untouched) >= 6


# ---------------------------------------------------------------- preprocess


def test_preprocess_end_to_end_is_traceable():
    records = _ptbxl_records()
    rec = records[0]
    names = ("lead I", "MDC_ECG_LEAD_II", "V1", "v2", "C3", "V4", "V5", "V6", "PLETH")
    rows = [0, 1, 6, 7, 8, 9, 10, 11, 0]
    raw = EcgRecord(rec.signal[rows][:, :4500], rec.fs, names, source=SRC)  # 9 s, no III/aVR/aVL/aVF
    out = preprocess(raw, fs=250.0, seconds=10.0)
    assert out.leads == LEADS_12 and out.signal.shape == (12, 2500) and out.fs == 250.0
    assert out.meta["valid_samples"] == (0, 2250) and out.meta["dropped_channels"] == ["PLETH"]
    ops = [s["op"] for s in out.meta["steps"]]
    assert ops == ["canonicalize", "select_leads", "resample", "bandpass", "crop_or_pad"]
    # the derived limb leads obey Einthoven after every linear step
    assert np.abs(out.lead("III") - (out.lead("II") - out.lead("I"))).max() < 1e-4
    # a microvolt file read as millivolts is refused, not silently scaled
    with pytest.raises(DataError) as err:
        preprocess(EcgRecord(rec.signal * 1000, rec.fs, rec.leads, source=SRC))
    assert "microvolts" in one_line_naming_source(err)
    single = EcgRecord(rec.signal[:1], rec.fs, ("I",), source=SRC)
    cfg = PreprocessConfig(fs=500.0, missing="zero", notch=50.0)
    masked = cfg(single)
    assert masked.meta["missing_leads"] == list(LEADS_12[1:]) and not masked.signal[6:].any()
    assert "notch" in [s["op"] for s in masked.meta["steps"]]


def test_forgetting_the_filter_designs_makes_the_next_preparation_design_them_again(monkeypatch):
    import importlib

    from scipy import signal as sps

    from cardiodistill.signals import filters
    from cardiodistill.signals.prepare import InputSpec, forget_filter_designs, prepare

    resample = importlib.import_module("cardiodistill.signals.resample")  # the module, not the package's function

    designs = []
    monkeypatch.setattr(filters, "butter", lambda *a, **k: designs.append("band") or sps.butter(*a, **k))
    monkeypatch.setattr(resample, "firwin", lambda *a, **k: designs.append("fir") or sps.firwin(*a, **k))
    record = EcgRecord(np.random.default_rng(0).normal(size=(1, 3000)).astype(np.float32), 300.0, ["I"])
    spec = InputSpec(100.0, 10.0, (0.5, 40.0), leads=("I",))
    forget_filter_designs()
    first = prepare(record, spec)
    assert sorted(set(designs)) == ["band", "fir"]  # a cold start designs both
    n = len(designs)
    prepare(record, spec)
    assert len(designs) == n  # then keeps them
    forget_filter_designs()
    again = prepare(record, spec)
    assert len(designs) == 2 * n  # forgotten: designed anew, to the same windows
    np.testing.assert_array_equal(first.windows, again.windows)
