"""The torch-free edge runtime: EdgeModel (leads, resampling, windows, quality, abstention), predict_file /
predict_paths on files and folders, the `predict` command, and that none of it imports PyTorch."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from cardiodistill.config import SynthConfig
from cardiodistill.deploy import export_onnx
from cardiodistill.edge import METADATA_KEY, EdgeModel, EdgeSpec, find_records, predict_file, predict_paths
from cardiodistill.edge.command import predict_cmd
from cardiodistill.edge.predict import RESULT_KEYS
from cardiodistill.edge.runtime import DEFAULT_MODEL, MODEL_ABSTAINS
from cardiodistill.errors import DataError, LeadError
from cardiodistill.io import write_csv_ecg, write_wfdb
from cardiodistill.models import create_model
from cardiodistill.records import EcgRecord
from cardiodistill.signals import LEADS_12, bandpass, resample
from cardiodistill.synth.ecg import render_12lead, sample_ecg_params
from cardiodistill.synth.population import sample_population
from cardiodistill.synth.rhythm import sample_beats

CINC = Path(__file__).resolve().parents[2] / "shared" / "data" / "cinc2017"
OUTPUTS = ("normal", "af", "other", "noisy")
NUMBERS = ("probabilities", "triage_probability", "lvef")  # model outputs: equal up to float rounding


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny 1-lead (I) student at 100 Hz x 10 s exported with its EdgeSpec; its "noisy" output is biased
    low so that the model itself does not abstain on clean recordings."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = create_model("ecg_student", backbone={"name": "student_cnn_tiny", "in_leads": 1, "fs": 100.0,
                                                  "seconds": 10.0}, outputs=list(OUTPUTS)).eval()
    with torch.no_grad():
        model.logits.bias[OUTPUTS.index("noisy")] = -6.0
    spec = EdgeSpec(model_id="test-student", version="1.0", leads=("I",), fs=100.0, seconds=10.0, outputs=OUTPUTS,
                    task="multiclass", triage="af", abstain_outputs=("noisy",), lvef_mean=55.0, lvef_std=10.0)
    path = tmp_path_factory.mktemp("model") / "student.onnx"
    export_onnx(model, torch.zeros(1, 1, 1000), path, metadata={METADATA_KEY: spec.to_json()})
    return model, path


@pytest.fixture(scope="module")
def edge(exported):
    return EdgeModel.load(exported[1])


def simulated(seconds: float, fs: float, seed: int = 0) -> np.ndarray:
    """A simulated 12-lead ECG ``[12, seconds * fs]`` in mV (LEADS_12 order), normal conduction."""
    rng = np.random.default_rng(seed)
    pop = sample_population(1, SynthConfig().prevalence.model_copy(update={"bbb": 0.0}), rng)
    beats = sample_beats(pop, seconds, rng)
    return render_12lead(pop, beats, sample_ecg_params(pop, rng), fs, rng, noise=0.3)[0]


def record_of(signal: np.ndarray, fs: float, leads, source: str | None = None) -> EcgRecord:
    rows = [LEADS_12.index(lead) for lead in leads]
    return EcgRecord(signal[rows], fs, tuple(leads), source=source)


def zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=-1, keepdims=True)) / x.std(axis=-1, keepdims=True)


def test_12_lead_wfdb_reads_lead_i(edge, tmp_path):
    header = write_wfdb(record_of(simulated(25.0, 500.0), 500.0, LEADS_12), tmp_path / "rec12")
    row = predict_file(edge, header)
    assert tuple(row) == RESULT_KEYS
    assert row["leads_used"] == ["I"] and row["derived_leads"] == {} and row["fs_in"] == 500.0
    assert row["duration_s"] == 25.0 and row["windows"] == 3  # 2 full windows + a 5-s tail (half a window)
    assert set(row["quality"]) == {"I"} and row["quality"]["I"]["usable"] and row["quality"]["I"]["issues"] == []
    assert not row["abstain"] and row["abstain_reason"] is None and row["error"] is None
    probs = row["probabilities"]
    assert list(probs) == list(OUTPUTS) and row["triage_probability"] == probs["af"]
    assert row["prediction"] == max(probs, key=probs.get) and row["prediction"] != "noisy"
    assert isinstance(row["lvef"], float) and row["model_id"] == "test-student" and row["precision"] == "fp32"
    json.dumps(row, allow_nan=False)  # valid JSON, no NaN


def test_derives_lead_i_from_ii_and_iii(edge):
    signal = simulated(20.0, 300.0)
    record = record_of(signal, 300.0, ("II", "III"), source="two_leads.hea")
    windows, info = edge.prepare(record)
    assert info.derived == {"I": "from II, III"} and windows.shape == (2, 1, 1000)
    lead_i = signal[LEADS_12.index("II")] - signal[LEADS_12.index("III")]
    expected = bandpass(resample(EcgRecord(lead_i[None], 300.0, ("I",)), 100.0), 0.5, 40.0).signal[0]
    np.testing.assert_allclose(windows[:, 0], zscore(expected.reshape(2, 1000)), atol=1e-4)
    assert edge.predict(record)[0].abstain is False


def test_missing_lead_names_the_file(edge):
    record = record_of(simulated(12.0, 500.0), 500.0, ("V1", "V2"), source="chest_only.hea")
    with pytest.raises(LeadError, match="chest_only.hea.*lacks lead"):
        edge.prepare(record)


def test_resamples_to_the_model_rate(edge):
    """A 5 Hz sine at 300 Hz is a 5 Hz sine at 100 Hz in the model input: a wrong rate would change it."""
    t = np.arange(20 * 300) / 300.0
    record = EcgRecord(np.sin(2 * np.pi * 5.0 * t)[None], 300.0, ("I",))
    windows, info = edge.prepare(record)
    assert info.fs_in == 300.0 and windows.shape == (2, 1, 1000)
    expected = zscore(np.sin(2 * np.pi * 5.0 * np.arange(1000) / 100.0))
    np.testing.assert_allclose(windows[0, 0, 100:-100], expected[100:-100], atol=0.02)  # away from filter edges


@pytest.mark.parametrize("seconds, n_windows", [(25.0, 3), (24.0, 2), (10.0, 1), (6.0, 1), (3.0, 1)])
def test_window_count_and_padding(edge, seconds, n_windows):
    signal = simulated(seconds, 100.0)
    windows, info = edge.prepare(record_of(signal, 100.0, ("I",)))
    assert windows.shape == (n_windows, 1, 1000) and info.n_windows == n_windows
    if seconds >= 10.0:  # a full first window: z-scored
        assert windows[0, 0].mean() == pytest.approx(0.0, abs=1e-4)
        assert windows[0, 0].std() == pytest.approx(1.0, abs=1e-3)
    real = min(int(seconds * 100) - 1000 * (n_windows - 1), 1000)
    assert np.all(windows[-1, 0, real:] == 0)  # padding stays 0 after the z-score
    short = any("shorter than the 5 s minimum" in r for r in info.reasons)
    assert short == (seconds < 5.0)


@pytest.mark.parametrize("damage, issue", [("flat", "flat"), ("noise", "noisy"), ("gap", "nan")])
def test_unusable_lead_abstains_with_reason(edge, damage, issue):
    rng = np.random.default_rng(1)
    signal = simulated(15.0, 300.0)[[LEADS_12.index("I")]].copy()
    if damage == "flat":
        signal[:] = 0.0
    elif damage == "noise":
        signal = rng.normal(0.0, 0.5, signal.shape).astype(np.float32)
    else:
        signal[0, 1500:1800] = np.nan  # 1 s: too long to interpolate
    prediction, info = edge.predict(EcgRecord(signal, 300.0, ("I",)))
    assert prediction.abstain and prediction.prediction is None
    assert issue in info.quality["I"].reasons and not info.quality["I"].usable
    assert any(r.startswith("lead I unusable") and issue in r for r in prediction.reasons)
    assert set(prediction.probabilities) == set(OUTPUTS)  # probabilities are still reported


def test_model_output_abstains_and_multilabel_thresholds(edge):
    record = record_of(simulated(12.0, 300.0), 300.0, ("I",))
    prediction, _ = edge.predict(record)
    top = max(prediction.probabilities, key=prediction.probabilities.get)
    says_noisy = EdgeModel(edge.session, replace(edge.spec, abstain_outputs=(top,)), edge.path)
    abstained, _ = says_noisy.predict(record)
    assert abstained.abstain and abstained.reasons == (MODEL_ABSTAINS,) and abstained.prediction is None

    probs = prediction.probabilities
    thresholds = {name: p - 0.01 if name in ("af", "other") else p + 0.01 for name, p in probs.items()}
    multilabel = EdgeModel(edge.session, replace(edge.spec, task="multilabel", thresholds=thresholds), edge.path)
    assert multilabel.predict(record)[0].prediction == ["af", "other"]


def test_spec_that_does_not_match_the_graph_is_refused(edge):
    with pytest.raises(DataError, match="does not match the spec"):
        EdgeModel(edge.session, replace(edge.spec, leads=("I", "II")), edge.path)


def test_matches_the_torch_model(exported, edge):
    model, _ = exported
    windows, info = edge.prepare(record_of(simulated(32.0, 500.0, seed=4), 500.0, LEADS_12))
    outputs = edge.run(windows)
    with torch.no_grad():
        expected = model.predict(torch.from_numpy(windows)).numpy()
    np.testing.assert_allclose(outputs, expected, atol=1e-4)
    prediction = edge.interpret(outputs, info)
    np.testing.assert_allclose(list(prediction.probabilities.values()), expected[:, :4].mean(axis=0), atol=1e-4)
    assert prediction.lvef == pytest.approx(55.0 + 10.0 * expected[:, 4].mean(), abs=1e-3)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Good records in three formats (one WFDB pair, one in a subfolder), a corrupt WFDB record, a text
    file that is no ECG and a hidden file."""
    root = tmp_path_factory.mktemp("batch")
    write_wfdb(record_of(simulated(25.0, 500.0, seed=1), 500.0, LEADS_12), root / "a_12lead")
    (root / "sub").mkdir()
    write_wfdb(record_of(simulated(36.0, 300.0, seed=2), 300.0, ("I",)), root / "sub" / "b_handheld")
    write_csv_ecg(record_of(simulated(12.0, 250.0, seed=3), 250.0, ("I", "II")), root / "c_export.csv")
    write_wfdb(record_of(simulated(10.0, 500.0, seed=5), 500.0, ("I", "II")), root / "d_corrupt")
    os.truncate(root / "d_corrupt.dat", 101)
    (root / "e_notes.txt").write_text("patient felt palpitations\n")
    (root / ".DS_Store").write_bytes(b"\x00\x01binary")
    return root


def test_folder_reports_bad_files_and_goes_on(edge, folder):
    files = find_records([folder])
    assert [f.relative_to(folder).as_posix() for f in files] == [
        "a_12lead.hea", "c_export.csv", "d_corrupt.hea", "e_notes.txt", "sub/b_handheld.hea"]
    calls = []
    rows = list(predict_paths([folder], edge, progress=lambda done, total: calls.append((done, total)),
                              batch_windows=2))
    assert calls[-1] == (5, 5) and [Path(r["file"]).name for r in rows] == [f.name for f in files]
    by_name = {Path(r["file"]).name: r for r in rows}
    for bad, fragment in (("d_corrupt.hea", "truncated or corrupt"), ("e_notes.txt", "cannot tell the format")):
        assert set(by_name[bad]) == {"file", "error"} and fragment in by_name[bad]["error"]
        assert "\n" not in by_name[bad]["error"]
    for good in ("a_12lead.hea", "c_export.csv", "b_handheld.hea"):
        row = by_name[good]
        assert row["error"] is None and row["windows"] >= 1
        single = predict_file(edge, row["file"])  # batching several recordings changes nothing
        same = {k: v for k, v in row.items() if k not in NUMBERS}
        assert same == {k: v for k, v in single.items() if k not in NUMBERS}
        assert row["probabilities"] == pytest.approx(single["probabilities"], abs=2e-4)
        assert row["lvef"] == pytest.approx(single["lvef"], abs=1e-2)
    assert by_name["b_handheld.hea"]["windows"] == 4 and by_name["c_export.csv"]["fs_in"] == 250.0


def tiny_app() -> typer.Typer:
    app = typer.Typer()
    app.command("predict")(predict_cmd)
    return app


def test_command_prints_json_lines_and_summary(exported, folder, tmp_path):
    runner = CliRunner()
    result = runner.invoke(tiny_app(), [str(folder), "--model", str(exported[1])])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 5 and sum(r["error"] is not None for r in rows) == 2
    assert result.stderr.strip().splitlines()[-1] == "5 recordings: 3 ok, 0 abstained, 2 errors"

    out = tmp_path / "preds.jsonl"
    result = runner.invoke(tiny_app(), [str(folder / "a_12lead.hea"), "--model", str(exported[1]), "--out", str(out)])
    assert result.exit_code == 0 and result.stdout == ""
    assert json.loads(out.read_text())["leads_used"] == ["I"]


def test_command_fails_when_nothing_can_be_read(exported, folder, tmp_path):
    runner = CliRunner()
    result = runner.invoke(tiny_app(), [str(folder / "e_notes.txt"), "--model", str(exported[1])])
    assert isinstance(result.exception, DataError) and "none of the 1 files could be read" in str(result.exception)
    result = runner.invoke(tiny_app(), [str(folder / "a_12lead.hea"), "--model", str(tmp_path / "none.onnx")])
    assert isinstance(result.exception, DataError) and "no such model file" in str(result.exception)
    (tmp_path / "empty").mkdir()
    result = runner.invoke(tiny_app(), [str(tmp_path / "empty"), "--model", str(exported[1])])
    assert isinstance(result.exception, DataError) and "no files found" in str(result.exception)


def test_the_bundled_model_reads_held_out_cinc2017_recordings():
    """The shipped model works out of the box: its spec, its card, and its calls on CinC 2017
    recordings of its own test split (benchmarks/ship_cinc2017_student.py), never trained on."""
    weights = resources.files("cardiodistill") / "weights"
    model = EdgeModel.load()
    spec = model.spec
    assert spec.model_id == "cinc2017-lead1" and spec.leads == ("I",) and spec.task == "multiclass"
    assert spec.outputs == ("normal", "af", "other", "noisy") and spec.abstain_outputs == ("noisy",)
    assert spec.lvef_mean is None and spec.gate["precision"] == spec.precision
    assert spec.model_id in (weights / "cinc2017_lead1.md").read_text()
    root = CINC
    if not root.is_dir():
        pytest.skip("../shared/data/cinc2017 is not here")
    shipped = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "results" /
                          "cinc2017_shipped.json").read_text())
    labels = dict(line.split(",") for line in (root / "REFERENCE.csv").read_text().split())
    names = {"N": "normal", "A": "af", "O": "other", "~": "noisy"}
    records = shipped["test_records"][:40]
    rows = list(predict_paths([root / f"{r}.hea" for r in records], model))
    called = [(row["prediction"] or "noisy", names[labels[r]]) for row, r in zip(rows, records)]
    assert all(row["error"] is None for row in rows)
    assert np.mean([p == t for p, t in called]) >= 0.7, called


_NO_TORCH = """
import importlib.abc, json, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("torch", "lightning", "sklearn"):
            raise ImportError("blocked " + name)

sys.meta_path.insert(0, Block())
import typer
import cardiodistill.cli
from cardiodistill.edge import EdgeModel, predict_file
from cardiodistill.edge.command import predict_cmd

model, record = sys.argv[1:3]
print(json.dumps(predict_file(EdgeModel.load(model), record)))
app = typer.Typer()
app.command()(predict_cmd)
app([record, "--model", model], standalone_mode=False)
assert not {"torch", "lightning", "sklearn"} & set(sys.modules), sorted(sys.modules)
"""


def test_predict_runs_without_torch(exported, folder):
    """Importing torch, lightning or sklearn fails in the child; the CLI module, predict_file and the
    command still run. (A meta-path blocker, not ``sys.modules["torch"] = None``: SciPy's array-API
    helpers look torch up in sys.modules and fail on None.)"""
    proc = subprocess.run([sys.executable, "-c", _NO_TORCH, str(exported[1]), str(folder / "a_12lead.hea")],
                          check=False, capture_output=True, text=True,
                          env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    assert proc.returncode == 0, proc.stderr
    first, second = (json.loads(line) for line in proc.stdout.splitlines())
    assert first == second and first["error"] is None and first["leads_used"] == ["I"]


def test_real_cinc2017_record(edge):
    header = CINC / "A00001.hea"
    if not header.is_file():
        pytest.skip(f"CinC 2017 sample {header} not available")
    row = predict_file(edge, header)
    assert row["fs_in"] == 300.0 and row["duration_s"] == 30.0 and row["windows"] == 3
    assert row["leads_used"] == ["I"] and "I" in row["derived_leads"]  # the channel is named "ECG"
    assert row["quality"]["I"]["usable"] and not row["abstain"]
