"""Rhythm features of a whole recording, and a student that reads them beside the ECG: training, export, runtime."""

import numpy as np
import pytest
import torch

from cardiodistill.edge.spec import EdgeSpec
from cardiodistill.errors import ConfigError, DataError
from cardiodistill.models import create_model, model_from_config
from cardiodistill.records import EcgRecord
from cardiodistill.signals.rhythm import MIN_BEATS, RHYTHM_FEATURES, rhythm_features, signal_rhythm
from cardiodistill.train.checkpoints import load_model, save_model
from cardiodistill.train.supervised import ArrayDataset, fit_array_student, predict_arrays


def _features(peaks, fs=100.0, duration=None, names=RHYTHM_FEATURES):
    peaks = np.asarray(peaks)
    duration = duration if duration is not None else (peaks[-1] + fs) / fs
    return dict(zip(names, rhythm_features(peaks, fs, duration, names)))


def _spiky_ecg(rr_s: np.ndarray, fs: float, seed: int = 0) -> np.ndarray:
    """One lead in mV: a narrow QRS-like spike after each interval of ``rr_s``, faint noise between."""
    beats = np.cumsum(np.r_[0.5, rr_s])
    t = np.arange(int((beats[-1] + 0.8) * fs)) / fs
    x = 0.02 * np.random.default_rng(seed).standard_normal(len(t))
    for b in beats:
        x += 1.2 * np.exp(-0.5 * ((t - b) / 0.012) ** 2) - 0.3 * np.exp(-0.5 * ((t - b - 0.03) / 0.012) ** 2)
    return x[None].astype(np.float32)


def test_regular_and_irregular_rhythms_read_as_such():
    regular = _features(np.arange(20) * 80)  # 0.8 s RR at 100 Hz
    assert regular["rr_mean_s"] == pytest.approx(0.8)
    assert regular["rr_cv"] == pytest.approx(0.0, abs=1e-9) and regular["pnn50"] == 0.0
    assert regular["rr_min_max_ratio"] == pytest.approx(1.0) and regular["few_beats"] == 0.0
    rng = np.random.default_rng(0)
    chaotic = _features(np.cumsum(rng.integers(40, 120, 40)))  # AF-like: RR 0.4-1.2 s at random
    assert chaotic["rr_cv"] > 0.2 and chaotic["pnn50"] > 0.5 and chaotic["rr_outlier_share"] > 0.3
    assert abs(chaotic["rr_lag1_corr"]) < 0.4
    # a smooth trend (sinus arrhythmia) is irregular too, but each RR follows the last
    trend = _features(np.cumsum(80 + 15 * np.sin(np.arange(40) / 3)).round())
    assert trend["rr_lag1_corr"] > 0.7 and trend["drr_sign_changes"] < chaotic["drr_sign_changes"]


def test_too_few_beats_and_names():
    few = _features(np.arange(MIN_BEATS - 1) * 100, duration=10.0)
    assert few["few_beats"] == 1.0 and few["beats_per_s"] == pytest.approx(0.4)
    assert all(v == 0.0 for k, v in few.items() if k not in ("few_beats", "beats_per_s"))
    picked = rhythm_features(np.arange(10) * 100, 100.0, 10.0, ["rr_mean_s", "beats_per_s"])
    np.testing.assert_allclose(picked, [1.0, 1.0])
    with pytest.raises(ConfigError, match="unknown rhythm features"):
        rhythm_features(np.arange(10), 100.0, 1.0, ["rr_mean_s", "heart_rate"])
    with pytest.raises(ValueError, match="unknown rhythm features"):
        EdgeSpec(model_id="m", version="0", leads=("I",), fs=100.0, seconds=10.0, outputs=("a",), rhythm=("hr",))


def test_signal_rhythm_finds_the_beats_of_a_recording():
    features = dict(zip(RHYTHM_FEATURES, signal_rhythm(_spiky_ecg(np.full(24, 0.75), 100.0), 100.0)))
    assert features["rr_mean_s"] == pytest.approx(0.75, abs=0.02) and features["rr_cv"] < 0.03
    # only the first ``length`` samples count: the padded rest of a cached row adds no beats
    x = _spiky_ecg(np.full(24, 0.75), 100.0)
    padded = np.concatenate([x, np.zeros((1, 3000), np.float32)], axis=1)
    np.testing.assert_allclose(signal_rhythm(padded, 100.0, x.shape[1]), signal_rhythm(x, 100.0), atol=1e-6)
    short = dict(zip(RHYTHM_FEATURES, signal_rhythm(x[:, :50], 100.0)))
    assert short["few_beats"] == 1.0


def test_the_student_needs_its_rhythm_input():
    model = create_model("ecg_student", backbone={"name": "student_cnn_tiny", "in_leads": 1, "seconds": 5.0},
                         outputs=["a", "b"], rhythm=["rr_cv", "pnn50"]).eval()
    assert model.rhythm_names == ("rr_cv", "pnn50")
    x = torch.randn(3, 1, 500)
    out = model(x, torch.rand(3, 2))
    assert out["logits"].shape == (3, 2) and out["embedding"].shape == (3, model.dim)
    with pytest.raises(ValueError, match="rhythm features"):
        model(x)
    with pytest.raises(ConfigError, match="unknown rhythm features"):
        create_model("ecg_student", rhythm=["bpm"])


@pytest.fixture(scope="module")
def rhythm_student(tmp_path_factory):
    """A tiny lead-I student trained on a task only the rhythm tells: ``irregular`` (random RR) vs regular
    recordings whose windows look alike; with its cached arrays, rhythm features and labels."""
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    rows, lengths, y = [], [], []
    for i in range(64):
        irregular = i % 2
        rr = rng.uniform(0.45, 1.1, 30) if irregular else np.full(30, rng.uniform(0.6, 0.9))
        x = _spiky_ecg(rr, 100.0, seed=i)[:, :2000]
        rows.append(np.pad(x, ((0, 0), (0, 2000 - x.shape[1]))))
        lengths.append(x.shape[1])
        y.append([irregular, 1 - irregular])
    x, lengths, y = np.stack(rows).astype(np.float16), np.array(lengths), np.array(y, np.float32)
    rhythm = np.stack([signal_rhythm(r, 100.0, n) for r, n in zip(x, lengths)])
    train = ArrayDataset(x[:48], y[:48], {"rhythm": rhythm[:48]}, lengths=lengths[:48], crop=1000, repeats=4)
    val = ArrayDataset(x[48:], y[48:], {"rhythm": rhythm[48:]}, lengths=lengths[48:], crop=1000, random_crop=False)
    from cardiodistill.config import load_config

    cfg = load_config("quick", overrides=["distill.epochs=1", "distill.min_steps=40", "trainer.threads=2",
                                          "distill.backbone.name=student_cnn_tiny", "trainer.checkpoint_every=20"])
    folder = tmp_path_factory.mktemp("rhythm-student")
    model = fit_array_student(train, val, folder, outputs=["irregular", "regular"], n_leads=1, config=cfg,
                              rhythm=RHYTHM_FEATURES)
    path = save_model(model, folder / "student.pt", task="multiclass", triage=None, leads=["I"],
                      outputs=["irregular", "regular"], lvef=False, band_hz=[0.5, 40.0])
    return path, x, lengths, y, rhythm


def test_a_rhythm_student_trains_and_predicts(rhythm_student):
    path, x, lengths, y, rhythm = rhythm_student
    model = load_model(path)
    assert model.rhythm_names == RHYTHM_FEATURES
    probs = predict_arrays(model, x[48:], lengths=lengths[48:], window=1000, rhythm=rhythm[48:])["probs"]
    assert ((probs[:, 0] > probs[:, 1]) == (y[48:, 0] == 1)).mean() >= 0.9  # the rhythm alone tells them apart
    with pytest.raises(ValueError, match="rhythm features"):
        predict_arrays(model, x[48:], lengths=lengths[48:], window=1000)
    with pytest.raises(ConfigError, match="rhythm names"):
        fit_array_student(ArrayDataset(x, y, crop=1000), None, path.parent / "again", outputs=["a", "b"], n_leads=1,
                          rhythm=RHYTHM_FEATURES)


def test_export_and_runtime_feed_the_rhythm(rhythm_student, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from cardiodistill.deploy import export_student_model
    from cardiodistill.edge import EdgeModel
    from cardiodistill.signals.prepare import prepare

    path, x, lengths, y, rhythm = rhythm_student
    model = load_model(path)
    val = np.stack([np.asarray(r[:, :1000], np.float32) for r in x])
    val = (val - val.mean(-1, keepdims=True)) / val.std(-1, keepdims=True)
    with pytest.raises(DataError, match="takes rhythm features"):
        export_student_model(path, tmp_path / "m.onnx", val_x=val, val_y=y, precision="fp32")
    gate = export_student_model(path, tmp_path / "m.onnx", val_x=val, val_y=y, val_rhythm=rhythm, precision="int8",
                                margin=0.05)
    edge = EdgeModel.load(gate["path"])
    assert edge.spec.rhythm == RHYTHM_FEATURES and gate["precision"] in ("int8", "fp32")
    record = EcgRecord(_spiky_ecg(np.random.default_rng(5).uniform(0.45, 1.1, 40), 300.0, seed=9), 300.0, ("I",))
    prediction, info = edge.predict(record)
    prepared = prepare(record, edge.spec.input_spec)
    expected_rhythm = signal_rhythm(prepared.filtered.signal, edge.spec.fs)
    np.testing.assert_allclose(info.rhythm, expected_rhythm)
    with torch.no_grad():
        r = torch.from_numpy(np.repeat(expected_rhythm[None], len(prepared.windows), 0))
        torch_probs = model.predict(torch.from_numpy(prepared.windows), r)[:, :2].mean(0).numpy()
    atol = 1e-4 if edge.spec.precision == "fp32" else 0.1
    np.testing.assert_allclose([prediction.probabilities["irregular"], prediction.probabilities["regular"]],
                               torch_probs, atol=atol)
    with pytest.raises(ValueError, match="rhythm features"):
        edge.run(prepared.windows)

    # the export command reads the rhythm features from the validation .npz beside x and y
    from cardiodistill.deploy.commands import Precision, export_cmd
    from cardiodistill.deploy.student import student_arrays_npz

    np.savez(tmp_path / "val.npz", x=val, y=y, rhythm=rhythm)
    export_cmd([path], data=tmp_path / "val.npz", out=tmp_path / "cli.onnx", precision=Precision.fp32, margin=0.02,
               strict=False)
    assert EdgeModel.load(tmp_path / "cli.onnx").spec.rhythm == RHYTHM_FEATURES
    np.savez(tmp_path / "plain.npz", x=val, y=y)
    assert student_arrays_npz(tmp_path / "plain.npz", rhythm=True)[2] is None
    np.savez(tmp_path / "short.npz", x=val, y=y, rhythm=rhythm[:3])
    with pytest.raises(DataError, match=r"short\.npz: expected rhythm \[N, features\]"):
        student_arrays_npz(tmp_path / "short.npz", rhythm=True)


def test_an_ensemble_gives_each_member_its_own_rhythm_columns():
    """Members that read different rhythm features (or none): the ensemble takes their union in the canonical
    order and its prediction is the mean of the members' on their own columns."""
    torch.manual_seed(0)
    backbone = {"name": "student_cnn_tiny", "in_leads": 1, "seconds": 5.0}
    a = create_model("ecg_student", backbone=backbone, outputs=["x", "y"], rhythm=["pnn50", "rr_cv"]).eval()
    b = create_model("ecg_student", backbone=backbone, outputs=["x", "y"]).eval()
    ensemble = create_model("student_ensemble", members=[a.model_config, b.model_config]).eval()
    ensemble.members[0].load_state_dict(a.state_dict())
    ensemble.members[1].load_state_dict(b.state_dict())
    assert ensemble.rhythm_names == ("rr_cv", "pnn50") and ensemble.rhythm_columns(1) is None
    x, r = torch.randn(4, 1, 500), torch.rand(4, 2)
    with torch.no_grad():
        expected = (a.predict(x, r[:, [1, 0]]) + b.predict(x)) / 2
        torch.testing.assert_close(ensemble.predict(x, r), expected)
    with pytest.raises(ValueError, match=r"rhythm features \[batch, 2\]"):
        ensemble.predict(x)
    with pytest.raises(ConfigError, match="outputs"):
        create_model("student_ensemble", members=[a.model_config, {**b.model_config, "outputs": ["x"]}])
    with pytest.raises(ConfigError, match="input"):
        create_model("student_ensemble", members=[a.model_config, {**b.model_config,
                                                                   "backbone": {**backbone, "seconds": 10.0}}])


def _runtime_and_torch(edge, model, seed):
    """The runtime's probabilities (irregular, regular) on an irregular 300 Hz recording, and the PyTorch model's
    mean over the same prepared windows and rhythm features."""
    from cardiodistill.signals.prepare import prepare

    rr = np.random.default_rng(seed).uniform(0.45, 1.1, 40)
    record = EcgRecord(_spiky_ecg(rr, 300.0, seed=seed - 3), 300.0, ("I",))
    prediction, read = edge.predict(record)
    prepared = prepare(record, edge.spec.input_spec)
    with torch.no_grad():
        r = torch.from_numpy(np.repeat(read.rhythm[None], len(prepared.windows), 0)).float()
        expected = model.predict(torch.from_numpy(prepared.windows), r)[:, :2].mean(0).numpy()
    return [prediction.probabilities["irregular"], prediction.probabilities["regular"]], expected


def test_an_ensemble_of_students_exports_and_runs_as_one_model(rhythm_student, tmp_path):
    """A rhythm student and a plain one, written as one model file (``ensemble_students``) and exported by the
    command as one graph: the runtime's probabilities are the mean of the members' in PyTorch."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from cardiodistill.deploy import ensemble_students
    from cardiodistill.deploy.commands import Precision, export_cmd
    from cardiodistill.edge import EdgeModel

    path, x, lengths, y, rhythm = rhythm_student
    rhythm_model = load_model(path)
    torch.manual_seed(1)
    plain = model_from_config({**rhythm_model.model_config, "rhythm": []})
    info = {"task": "multiclass", "triage": None, "leads": ["I"], "outputs": ["irregular", "regular"], "lvef": False,
            "band_hz": [0.5, 40.0]}
    plain_path = save_model(plain, tmp_path / "plain.pt", **info)
    ensemble = load_model(ensemble_students([path, plain_path], tmp_path / "ensemble.pt"))
    assert ensemble.rhythm_names == RHYTHM_FEATURES
    probs = [predict_arrays(m, x[48:], lengths=lengths[48:], window=1000, rhythm=r)["probs"]
             for m, r in ((ensemble, rhythm[48:]), (rhythm_model, rhythm[48:]), (load_model(plain_path), None))]
    np.testing.assert_allclose(probs[0], (probs[1] + probs[2]) / 2, atol=1e-6)
    with pytest.raises(DataError, match=r"rhythm features \[N, 13\]"):
        predict_arrays(ensemble, x[48:], lengths=lengths[48:], window=1000, rhythm=rhythm[48:, :5])

    val = np.stack([np.asarray(r[:, :1000], np.float32) for r in x])
    val = (val - val.mean(-1, keepdims=True)) / val.std(-1, keepdims=True)
    np.savez(tmp_path / "val.npz", x=val, y=y, rhythm=rhythm)
    export_cmd([path, plain_path], data=tmp_path / "val.npz", out=tmp_path / "m.onnx", precision=Precision.fp32,
               margin=0.02, strict=False)
    assert (tmp_path / "m-ensemble.pt").is_file() and path.is_file()  # beside the file; no member overwritten
    edge = EdgeModel.load(tmp_path / "m.onnx")
    assert edge.spec.rhythm == RHYTHM_FEATURES
    assert [m["source"] for m in edge.spec.provenance["members"]] == [str(path), str(plain_path)]
    np.testing.assert_allclose(*_runtime_and_torch(edge, ensemble, seed=6), atol=1e-4)
    other = save_model(plain, tmp_path / "other.pt", **{**info, "band_hz": [1.0, 40.0]})
    with pytest.raises(ConfigError, match="band_hz"):
        ensemble_students([path, other], tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match="at least two"):
        ensemble_students([path], tmp_path / "bad.pt")


def test_an_ensemble_with_feature_trees_exports_with_float_features_and_runs(rhythm_student, tmp_path):
    """A rhythm student and gradient-boosted trees on the same features, written as one model file and exported
    at int8: the rhythm input stays float32 (no node reads it quantised), the trees' subgraph stays float, and the
    runtime's probabilities follow PyTorch's."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import onnx

    from cardiodistill.deploy import ensemble_students, export_student_model
    from cardiodistill.edge import EdgeModel
    from cardiodistill.train.trees import fit_feature_trees

    path, x, lengths, y, rhythm = rhythm_student
    trees = fit_feature_trees(rhythm[:48], 1 - y[:48, 0].astype(int), rhythm=RHYTHM_FEATURES,
                              outputs=["irregular", "regular"], n_estimators=20)
    info = {"task": "multiclass", "triage": None, "leads": ["I"], "outputs": ["irregular", "regular"], "lvef": False,
            "band_hz": [0.5, 40.0]}
    trees_path = save_model(trees, tmp_path / "trees.pt", **info)
    ensemble = load_model(ensemble_students([path, trees_path], tmp_path / "ensemble.pt"))
    probs = predict_arrays(ensemble, x[48:], lengths=lengths[48:], window=1000, rhythm=rhythm[48:])["probs"]
    assert ((probs[:, 0] > probs[:, 1]) == (y[48:, 0] == 1)).mean() >= 0.9

    val = np.stack([np.asarray(r[:, :1000], np.float32) for r in x])
    val = (val - val.mean(-1, keepdims=True)) / val.std(-1, keepdims=True)
    gate = export_student_model(tmp_path / "ensemble.pt", tmp_path / "m.onnx", val_x=val, val_y=y, val_rhythm=rhythm,
                                precision="int8", margin=1.0, min_class=1)
    assert gate["precision"] == "int8"
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    readers = [n.op_type for n in graph.node if "rhythm" in n.input]
    assert readers and "QuantizeLinear" not in readers  # the features enter every reader in float32
    np.testing.assert_allclose(*_runtime_and_torch(EdgeModel.load(tmp_path / "m.onnx"), ensemble, seed=7), atol=0.1)


def test_the_benchmark_times_a_student_that_reads_rhythm_features(rhythm_student):
    """``cardiodistill bench`` on a rhythm student: PyTorch, float32 and int8 each fed the window and its features."""
    pytest.importorskip("onnxruntime")
    from cardiodistill.deploy import bench_student

    path, x, lengths, y, rhythm = rhythm_student
    windows = np.stack([np.asarray(r[:, :1000], np.float32) for r in x[:8]])
    windows = (windows - windows.mean(-1, keepdims=True)) / windows.std(-1, keepdims=True)
    result = bench_student(path, windows, threads=(1,), n=2, memory=False)
    assert set(result["backends"]) == {"torch", "onnx_fp32", "onnx_int8"}
    assert result["input"].endswith(f"and its {len(RHYTHM_FEATURES)} rhythm features")
