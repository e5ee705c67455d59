"""Beat features of a whole recording (P waves, ectopy, noise): what each one reads, and a student that takes them
beside the rhythm features through export and the edge runtime."""

import numpy as np
import pytest

from cardiodistill.errors import ConfigError
from cardiodistill.signals.beats import BEAT_FEATURES, MIN_BEATS, beat_features
from cardiodistill.signals.rhythm import RECORDING_FEATURES, RHYTHM_FEATURES, check_rhythm_names, signal_rhythm

FS = 100.0


def _ecg(rr_s, *, p_wave=True, f_waves=0.0, odd=(), width_s=0.012, noise=0.01, seed=0):
    """One lead in mV and its R-peak samples: a QRS (R then S) after each interval of ``rr_s``, a T wave, a P wave
    160 ms before each QRS (``p_wave``), fibrillatory waves of amplitude ``f_waves`` between, and the beats whose
    index is in ``odd`` wide and inverted (ventricular ectopy)."""
    rng = np.random.default_rng(seed)
    beats = np.cumsum(np.r_[1.0, rr_s])
    t = np.arange(int((beats[-1] + 1.0) * FS)) / FS
    x = noise * rng.standard_normal(len(t))
    if f_waves:  # 5-7 Hz activity with a wandering phase: not locked to the QRS
        phase = np.cumsum(2 * np.pi * rng.uniform(5.0, 7.0, len(t)) / FS)
        x += f_waves * np.sin(phase)
    for i, b in enumerate(beats):
        sign, w = (-1.0, 4 * width_s) if i in odd else (1.0, width_s)
        x += sign * (1.2 * np.exp(-0.5 * ((t - b) / w) ** 2) - 0.3 * np.exp(-0.5 * ((t - b - 2.5 * w) / w) ** 2))
        x += 0.25 * np.exp(-0.5 * ((t - b - 0.28) / 0.04) ** 2)
        if p_wave and i not in odd:
            x += 0.15 * np.exp(-0.5 * ((t - b + 0.16) / 0.02) ** 2)
    return x.astype(np.float32), np.round(beats * FS).astype(int)


def _features(x, peaks):
    return dict(zip(BEAT_FEATURES, beat_features(x, peaks, FS)))


def test_a_p_wave_locked_to_the_qrs_and_fibrillatory_waves_read_as_such():
    sinus = _features(*_ecg(np.full(30, 0.8)))
    rng = np.random.default_rng(1)
    af = _features(*_ecg(rng.uniform(0.45, 1.1, 40), p_wave=False, f_waves=0.06))
    assert sinus["p_coherence"] > 0.8 and af["p_coherence"] < 0.5
    assert sinus["p_amp_ratio"] > 0.08 and af["p_amp_ratio"] < sinus["p_amp_ratio"]
    slow = _features(*_ecg(np.full(30, 1.0)))  # at 75 a minute the T wave runs into the next P: no TQ measured
    assert sinus["tq_slope_ratio"] == 0.0 and 0 < 1.3 * slow["tq_slope_ratio"] < af["tq_slope_ratio"]
    assert sinus["beat_corr_median"] > 0.95 and sinus["beat_corr_low_share"] == 0.0
    assert sinus["qrs_amp_mv"] == pytest.approx(1.5, rel=0.15) and 0.1 < sinus["t_amp_ratio"] < 0.3
    assert sinus["premature_odd_share"] == sinus["premature_same_share"] == 0.0


def test_ectopic_beats_are_told_by_their_timing_and_shape():
    rr = np.full(40, 0.8)
    rr[4::5] = 0.5  # every fifth beat comes early...
    rr[5::5] = 1.1  # ...and is followed by a pause
    early = set(range(5, 41, 5))
    ventricular = _features(*_ecg(rr, odd=early))
    atrial = _features(*_ecg(rr))
    assert ventricular["premature_odd_share"] == pytest.approx(len(early) / 41, abs=0.03)
    assert ventricular["premature_same_share"] == 0.0 and ventricular["beat_corr_low_share"] > 0.15
    assert atrial["premature_same_share"] == pytest.approx(len(early) / 41, abs=0.03)
    assert atrial["premature_odd_share"] == 0.0
    narrow, wide = _features(*_ecg(np.full(20, 0.8))), _features(*_ecg(np.full(20, 0.8), width_s=0.03))
    assert wide["qrs_width_s"] > 1.8 * narrow["qrs_width_s"]


def test_noise_bursts_and_flat_stretches():
    x, peaks = _ecg(np.full(30, 0.8))
    clean = _features(x, peaks)
    noisy = x + 0.6 * np.random.default_rng(2).standard_normal(len(x)).astype(np.float32)
    assert _features(noisy, peaks)["beat_snr_log"] < clean["beat_snr_log"] - 2
    assert _features(noisy, peaks)["kurtosis_log"] < clean["kurtosis_log"]
    burst = x.copy()
    burst[500:700] += 8.0 * np.sin(np.arange(200) / 3.0)
    assert _features(burst, peaks)["burst_share"] == pytest.approx(2 / (len(x) // 100), abs=1e-6)
    flat = x.copy()
    flat[1000:1400] = 0.0
    assert _features(flat, peaks)["flat_share"] == pytest.approx(4 / (len(x) // 100), abs=1e-6)
    assert clean["burst_share"] == clean["flat_share"] == 0.0


def test_too_few_beats_keep_the_signal_level_values():
    x, peaks = _ecg(np.full(30, 0.8))
    few = _features(x, peaks[: MIN_BEATS - 1])
    signal_level = {"kurtosis_log", "burst_share", "flat_share"}
    assert all(v == 0.0 for k, v in few.items() if k not in signal_level)
    assert few["kurtosis_log"] == _features(x, peaks)["kurtosis_log"] > 0
    # beats whose window runs off either end are not cut
    assert _features(x, np.r_[1, peaks, len(x) - 2]) == _features(x, peaks)
    picked = beat_features(x, peaks, FS, ["qrs_width_s", "p_coherence"])
    np.testing.assert_array_equal(picked, [_features(x, peaks)[n] for n in ("qrs_width_s", "p_coherence")])
    with pytest.raises(ConfigError, match="unknown beat features"):
        beat_features(x, peaks, FS, ["p_coherence", "p_axis"])


def test_recording_features_are_the_rhythm_and_the_beat_features_of_the_same_peaks():
    x, _ = _ecg(np.full(30, 0.8), seed=3)
    both = signal_rhythm(x[None], FS, names=RECORDING_FEATURES)
    assert RECORDING_FEATURES == RHYTHM_FEATURES + BEAT_FEATURES and len(set(RECORDING_FEATURES)) == 27
    np.testing.assert_array_equal(both[: len(RHYTHM_FEATURES)], signal_rhythm(x[None], FS))
    values = dict(zip(RECORDING_FEATURES, both))
    assert values["p_coherence"] > 0.8 and values["rr_mean_s"] == pytest.approx(0.8, abs=0.02)
    mixed = ("p_coherence", "rr_cv", "kurtosis_log")
    np.testing.assert_array_equal(signal_rhythm(x[None], FS, names=mixed), [values[n] for n in mixed])
    assert check_rhythm_names(list(mixed)) == mixed
    short = dict(zip(RECORDING_FEATURES, signal_rhythm(x[None, :50], FS, names=RECORDING_FEATURES)))
    assert short["few_beats"] == 1.0 and short["p_coherence"] == 0.0


def test_a_student_reading_beat_features_exports_and_the_runtime_computes_them(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import torch

    from cardiodistill.deploy.commands import Precision, export_cmd
    from cardiodistill.edge import EdgeModel
    from cardiodistill.models import create_model
    from cardiodistill.records import EcgRecord
    from cardiodistill.signals.prepare import prepare
    from cardiodistill.train.checkpoints import save_model

    names = ["rr_cv", "p_coherence", "qrs_width_s", "tq_slope_ratio"]
    torch.manual_seed(0)
    model = create_model("ecg_student", backbone={"name": "student_cnn_tiny", "in_leads": 1, "seconds": 10.0},
                         outputs=["af", "normal"], rhythm=names).eval()
    path = save_model(model, tmp_path / "student.pt", task="multiclass", triage=None, leads=["I"],
                      outputs=["af", "normal"], lvef=False, band_hz=[0.5, 40.0])
    rng = np.random.default_rng(0)
    rows, features, y = [], [], []
    for i in range(16):
        af = i % 2
        x, _ = _ecg(rng.uniform(0.45, 1.1, 20) if af else np.full(20, 0.8), p_wave=not af, f_waves=0.06 * af, seed=i)
        rows.append((x[:1000] - x[:1000].mean()) / x[:1000].std())
        features.append(signal_rhythm(x[None], FS, names=names))
        y.append([af, 1 - af])
    np.savez(tmp_path / "val.npz", x=np.stack(rows)[:, None], y=np.array(y, np.float32), rhythm=np.stack(features))
    export_cmd([path], data=tmp_path / "val.npz", out=tmp_path / "m.onnx", precision=Precision.fp32, margin=0.02,
               strict=False)
    edge = EdgeModel.load(tmp_path / "m.onnx")
    assert edge.spec.rhythm == tuple(names)
    x, _ = _ecg(rng.uniform(0.45, 1.1, 30), p_wave=False, f_waves=0.06, seed=99)
    record = EcgRecord(np.repeat(x, 3)[None], 300.0, ("I",))  # a 300 Hz handheld recording
    prediction, info = edge.predict(record)
    prepared = prepare(record, edge.spec.input_spec)
    np.testing.assert_allclose(info.rhythm, signal_rhythm(prepared.filtered.signal, edge.spec.fs, names=names))
    with torch.no_grad():
        r = torch.from_numpy(np.repeat(info.rhythm[None], len(prepared.windows), 0))
        expected = model.predict(torch.from_numpy(prepared.windows), r)[:, :2].mean(0).numpy()
    np.testing.assert_allclose([prediction.probabilities["af"], prediction.probabilities["normal"]], expected,
                               atol=1e-4)
