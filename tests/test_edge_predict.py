"""The torch-free edge runtime: EdgeModel (leads, resampling, windows, quality, abstention), predict_file /
predict_paths on files and folders, the `predict` command, and that none of it imports PyTorch."""

import json
import os
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
from cardiodistill.edge import (
    ERROR_KEYS,
    METADATA_KEY,
    EdgeModel,
    EdgeSpec,
    find_records,
    predict_file,
    predict_paths,
    result_keys,
    scan_paths,
)
from cardiodistill.edge.command import predict_cmd
from cardiodistill.edge.runtime import MODEL_ABSTAINS
from cardiodistill.errors import DataError, LeadError
from cardiodistill.io import write_csv_ecg, write_wfdb
from cardiodistill.models import create_model
from cardiodistill.records import EcgRecord
from cardiodistill.signals import LEADS_12, bandpass, resample
from cardiodistill.synth.ecg import render_12lead, sample_ecg_params
from cardiodistill.synth.population import sample_population
from cardiodistill.synth.rhythm import sample_beats

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CINC = SHARED / "cinc2017"
OUTPUTS = ("normal", "af", "other", "noisy")
NUMBERS = ("class_probabilities", "scores", "triage_probability", "lvef")  # model outputs: equal up to float rounding


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
    assert tuple(row) == result_keys(edge.spec)
    assert row["leads_used"] == ["I"] and row["derived_leads"] == {} and row["fs_in"] == 500.0
    assert row["duration_s"] == 25.0 and row["windows"] == 3  # 2 full windows + a 5-s tail (half a window)
    assert set(row["quality"]) == {"I"} and row["quality"]["I"]["usable"] and row["quality"]["I"]["issues"] == []
    assert not row["abstain"] and row["abstain_reason"] is None and row["error"] is None
    probs, scores = row["class_probabilities"], row["scores"]  # multiclass: a distribution, and the sigmoids
    assert list(probs) == list(scores) == list(OUTPUTS) and sum(probs.values()) == pytest.approx(1.0, abs=1e-3)
    total = sum(scores.values())
    assert probs == pytest.approx({k: v / total for k, v in scores.items()}, abs=2e-4)
    assert row["triage_probability"] == probs["af"]
    assert row["prediction"] == max(probs, key=probs.get) == max(scores, key=scores.get) != "noisy"
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


def test_a_multiclass_abstention_threshold_abstains_below_the_argmax(edge):
    """An abstain output's threshold (chosen on validation data) makes a multiclass model abstain when that
    output's score reaches it, though another class is more probable; thresholds on other classes are refused."""
    record = record_of(simulated(12.0, 300.0), 300.0, ("I",))
    prediction, _ = edge.predict(record)
    noisy = prediction.probabilities["noisy"]
    assert max(prediction.probabilities, key=prediction.probabilities.get) != "noisy" and not prediction.abstain
    for threshold, abstains in ((noisy * 0.99, True), (min(1.0, noisy * 1.01), False)):
        model = EdgeModel(edge.session, replace(edge.spec, thresholds={"noisy": threshold}), edge.path)
        got, _ = model.predict(record)
        assert got.abstain == abstains and got.probabilities == prediction.probabilities
        assert (got.reasons, got.prediction) == (((MODEL_ABSTAINS,), None) if abstains else ((), prediction.prediction))
    with pytest.raises(ValueError, match="abstain outputs only"):
        replace(edge.spec, thresholds={"af": 0.3})
    with pytest.raises(ValueError, match=r"thresholds must be in \[0, 1\]"):
        replace(edge.spec, thresholds={"noisy": 1.5})


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
    """Good records in three formats (one WFDB pair, one in a subfolder), a corrupt WFDB record, a hidden
    file, and what a PhysioNet download holds besides recordings: an index, labels, a note, metadata."""
    root = tmp_path_factory.mktemp("batch")
    write_wfdb(record_of(simulated(25.0, 500.0, seed=1), 500.0, LEADS_12), root / "a_12lead")
    (root / "sub").mkdir()
    write_wfdb(record_of(simulated(36.0, 300.0, seed=2), 300.0, ("I",)), root / "sub" / "b_handheld")
    write_csv_ecg(record_of(simulated(12.0, 250.0, seed=3), 250.0, ("I", "II")), root / "c_export.csv")
    write_wfdb(record_of(simulated(10.0, 500.0, seed=5), 500.0, ("I", "II")), root / "d_corrupt")
    os.truncate(root / "d_corrupt.dat", 101)
    (root / "e_notes.txt").write_text("patient felt palpitations\n")
    (root / ".DS_Store").write_bytes(b"\x00\x01binary")
    (root / "RECORDS").write_text("a_12lead\nd_corrupt\nsub/b_handheld\n")
    (root / "REFERENCE.csv").write_text("a_12lead,N\nd_corrupt,A\n")
    (root / "meta.json").write_text('{"device": "simulated"}\n')
    return root


def test_folder_reports_bad_files_skips_non_recordings_and_goes_on(edge, folder):
    scan = scan_paths([folder])
    assert [f.relative_to(folder).as_posix() for f in scan.files] == [
        "a_12lead.hea", "c_export.csv", "d_corrupt.hea", "sub/b_handheld.hea"]
    assert sorted(f.name for f in scan.skipped) == ["RECORDS", "REFERENCE.csv", "e_notes.txt", "meta.json"]
    assert find_records([folder]) == scan.files
    assert scan_paths([folder / "e_notes.txt"]).files == [folder / "e_notes.txt"]  # a file asked for is read
    files = scan.files
    calls = []
    rows = list(predict_paths([folder], edge, progress=lambda done, total: calls.append((done, total)),
                              batch_windows=2))
    assert calls[-1] == (4, 4) and [Path(r["file"]).name for r in rows] == [f.name for f in files]
    by_name = {Path(r["file"]).name: r for r in rows}
    bad = by_name["d_corrupt.hea"]
    assert tuple(bad) == ERROR_KEYS and "truncated" in bad["error"] and "\n" not in bad["error"]
    for good in ("a_12lead.hea", "c_export.csv", "b_handheld.hea"):
        row = by_name[good]
        assert row["error"] is None and row["windows"] >= 1
        single = predict_file(edge, row["file"])  # batching several recordings changes nothing
        same = {k: v for k, v in row.items() if k not in NUMBERS}
        assert same == {k: v for k, v in single.items() if k not in NUMBERS}
        assert row["scores"] == pytest.approx(single["scores"], abs=2e-4)
        assert row["lvef"] == pytest.approx(single["lvef"], abs=1e-2)
    assert by_name["b_handheld.hea"]["windows"] == 4 and by_name["c_export.csv"]["fs_in"] == 250.0


def test_wfdb_record_named_without_extension(edge, folder):
    row = predict_file(edge, folder / "a_12lead")
    assert row["error"] is None and row["file"] == str(folder / "a_12lead.hea")


def test_any_failure_on_one_file_is_its_error_row(edge, folder, tmp_path, monkeypatch):
    """Untyped failures anywhere (a reader's own exception, MemoryError, the model's run, interpretation)
    become the row of the file at fault; every good file is still scored. Only KeyboardInterrupt stops."""
    from cardiodistill.edge import predict as predict_module

    good = [folder / "a_12lead.hea", folder / "c_export.csv", folder / "sub" / "b_handheld.hea"]
    victims = {name: tmp_path / name for name in ("reader.hea", "memory.hea", "run.hea", "interpret.hea")}
    for path in victims.values():
        write_wfdb(record_of(simulated(12.0, 300.0, seed=7), 300.0, ("I",)), path.with_suffix(""))
    real_read, real_prepare = predict_module.read_ecg, EdgeModel.prepare
    real_run, real_interpret = EdgeModel.run, EdgeModel.interpret

    def read(path, **kwargs):
        if Path(path).name == "reader.hea":
            raise KeyError("lead table")  # a reader bug, not a typed error
        if Path(path).name == "memory.hea":
            raise MemoryError()
        return real_read(path, **kwargs)

    def prepare(self, record):
        windows, info = real_prepare(self, record)
        return (windows[..., :-1] if Path(record.source).name == "run.hea" else windows), info  # a bad shape

    def run(self, windows, rhythm=None):
        if windows.shape[-1] != self.spec.samples:
            raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions\nfor input")
        return real_run(self, windows, rhythm)

    def interpret(self, outputs, info):
        if Path(info.source).name == "interpret.hea":
            raise FloatingPointError("overflow")
        return real_interpret(self, outputs, info)

    monkeypatch.setattr(predict_module, "read_ecg", read)
    monkeypatch.setattr(EdgeModel, "prepare", prepare)
    monkeypatch.setattr(EdgeModel, "run", run)
    monkeypatch.setattr(EdgeModel, "interpret", interpret)
    order = [good[0], victims["reader.hea"], good[1], victims["memory.hea"], victims["run.hea"], good[2],
             victims["interpret.hea"], tmp_path / "missing.hea"]
    rows = list(predict_paths(order, edge, batch_windows=64))  # one batch: the run failure is isolated
    assert [r["file"] for r in rows] == list(map(str, order))
    for row in rows[:-1]:
        if Path(row["file"]) in good:
            assert row["error"] is None and row["windows"] >= 1
    errors = {Path(r["file"]).name: r["error"] for r in rows if r["error"] is not None}
    assert set(errors) == {*victims, "missing.hea"}
    for name, fragment in (("reader.hea", "KeyError: 'lead table'"), ("memory.hea", "MemoryError"),
                           ("run.hea", "RuntimeError: [ONNXRuntimeError]"), ("interpret.hea", "FloatingPointError"),
                           ("missing.hea", "not found")):
        assert errors[name].startswith(str(victims.get(name, tmp_path / name))) and fragment in errors[name]
        assert "\n" not in errors[name]

    def interrupt(path, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(predict_module, "read_ecg", interrupt)
    with pytest.raises(KeyboardInterrupt):
        list(predict_paths(good, edge))


def _any_format_files(root: Path) -> dict[str, Path]:
    """One file per format the readers accept: written here from known signals, plus real files from
    ../shared/data when it is present."""
    from test_io_readers import MUSE_LEADS, synthetic_ecg_uv, write_aecg, write_muse

    signal = simulated(12.0, 500.0, seed=8)
    files = {
        "wfdb .hea/.dat": write_wfdb(record_of(signal, 500.0, LEADS_12), root / "w"),
        "csv": write_csv_ecg(record_of(signal, 500.0, ("I", "II")), root / "c.csv"),
    }
    uv = synthetic_ecg_uv(MUSE_LEADS, 500.0, 10.0)
    files["muse xml"] = write_muse(root / "m.xml", {lead: np.rint(row / 4.88).astype(np.int16)
                                                     for lead, row in zip(MUSE_LEADS, uv)}, 500.0, 4.88)
    uv12 = synthetic_ecg_uv(LEADS_12, 500.0, 10.0, seed=2)
    files["hl7 aecg"] = write_aecg(root / "a.xml", {lead: np.rint(row / 2.5).astype(int)
                                                     for lead, row in zip(LEADS_12, uv12)}, 0.002, 0.0, 2.5)
    np.save(root / "n.npy", signal[:2])
    files["npy (no rate: an error row)"] = root / "n.npy"
    for name, path in (("wfdb .mat", SHARED / "cinc2017" / "A00001.hea"),
                       ("wfdb .mat 12-lead", SHARED / "ptbxl" / "wfdb_sample" / "HR06000.hea"),
                       ("dicom waveform", SHARED / "dicom" / "waveform_ecg.dcm"),
                       ("edf", SHARED / "wfdb_formats" / "test_generator_2.edf"),
                       ("wfdb 212", SHARED / "wfdb_formats" / "100.hea")):
        if path.is_file():
            files[name] = path
    return files


def test_predict_reads_every_format_the_readers_accept(tmp_path):
    """The bundled model over one file of each format: a result row, or (a record without lead I or a
    rate) an error row naming the file; never an exception."""
    files = _any_format_files(tmp_path)
    rows = dict(zip(files, predict_paths(list(files.values()), EdgeModel.load())))
    failed = {name: row["error"] for name, row in rows.items() if row["error"] is not None}
    expected_errors = {"npy (no rate: an error row)": "sampling rate", "wfdb 212": "lacks lead"}
    assert set(failed) == set(expected_errors) & set(files), failed
    for name, error in failed.items():
        assert error.startswith(str(files[name])) and expected_errors[name] in error and "\n" not in error
    for name, row in rows.items():
        if name not in failed:
            assert row["prediction"] in OUTPUTS
            assert sum(row["class_probabilities"].values()) == pytest.approx(1, abs=1e-3)


def tiny_app() -> typer.Typer:
    app = typer.Typer()
    app.command("predict")(predict_cmd)
    return app


def test_command_prints_json_lines_and_summary(exported, folder, tmp_path):
    runner = CliRunner()
    result = runner.invoke(tiny_app(), [str(folder), "--model", str(exported[1])])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 4 and sum(r["error"] is not None for r in rows) == 1
    first, last = result.stderr.strip().splitlines()[0], result.stderr.strip().splitlines()[-1]
    assert first == "skipped 4 files that are not recordings: RECORDS, REFERENCE.csv, e_notes.txt, meta.json"
    assert last == "4 recordings: 3 ok, 0 abstained, 1 error"

    out = tmp_path / "new" / "preds.jsonl"  # missing folders are made
    result = runner.invoke(tiny_app(), [str(folder / "a_12lead"), "--model", str(exported[1]), "--out", str(out)])
    assert result.exit_code == 0 and result.stdout == ""
    assert json.loads(out.read_text())["leads_used"] == ["I"]
    assert result.stderr.strip() == f"1 recording: 1 ok, 0 abstained, 0 errors; written to {out}"
    result = runner.invoke(tiny_app(), [str(folder), "--model", str(exported[1]), "--out", str(tmp_path)])
    assert result.exit_code == 0 and len((tmp_path / "predictions.jsonl").read_text().splitlines()) == 4


def test_rate_and_leads_of_headerless_files_are_given_on_the_command_line(exported, tmp_path):
    """A .npy array states neither rate nor leads: without --fs its row says what to give; with --fs and
    --leads it is scored, and the options leave files that state their own (WFDB) alone."""
    np.save(tmp_path / "bare.npy", simulated(12.0, 300.0, seed=4)[:1])  # lead I, mV
    write_wfdb(record_of(simulated(12.0, 500.0, seed=6), 500.0, ("I",)), tmp_path / "other")
    runner = CliRunner()
    result = runner.invoke(tiny_app(), [str(tmp_path / "bare.npy"), "--model", str(exported[1])])
    assert isinstance(result.exception, DataError) and "give fs (--fs)" in str(result.exception)
    result = runner.invoke(tiny_app(), [str(tmp_path), "--model", str(exported[1]), "--fs", "300", "--leads", "I"])
    assert result.exit_code == 0, result.output
    rows = {Path(r["file"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert rows["bare.npy"]["error"] is None and rows["bare.npy"]["fs_in"] == 300.0
    assert rows["other.hea"]["error"] is None and rows["other.hea"]["fs_in"] == 500.0


def test_out_is_written_line_by_line(exported, folder, tmp_path, monkeypatch):
    """A run that dies keeps every line written before: each row is flushed to --out as it is scored."""
    from cardiodistill.edge import command

    out = tmp_path / "preds.jsonl"
    seen = []

    def rows_then_crash(paths, model, progress=None, **options):
        for row in predict_paths(paths, model, **options):
            seen.append(len(out.read_text().splitlines()))  # what is on disk before this row is written
            yield row
            if len(seen) == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(command, "predict_paths", rows_then_crash)
    result = CliRunner().invoke(tiny_app(), [str(folder), "--model", str(exported[1]), "--out", str(out)])
    assert isinstance(result.exception, KeyboardInterrupt) or result.exit_code != 0
    assert seen == [0, 1] and [json.loads(line)["file"] for line in out.read_text().splitlines()] == [
        str(folder / "a_12lead.hea"), str(folder / "c_export.csv")]


def test_command_fails_when_nothing_can_be_read(exported, folder, tmp_path):
    runner = CliRunner()
    result = runner.invoke(tiny_app(), [str(folder / "e_notes.txt"), "--model", str(exported[1])])
    assert isinstance(result.exception, DataError) and str(result.exception).startswith(str(folder / "e_notes.txt"))
    assert "cannot tell the format" in str(result.exception) and result.stderr == ""
    result = runner.invoke(tiny_app(), [str(folder / "a_12lead.hea"), "--model", str(tmp_path / "none.onnx")])
    assert isinstance(result.exception, DataError) and "no such model file" in str(result.exception)
    result = runner.invoke(tiny_app(), [str(folder / "a_12lead.hea"), str(tmp_path / "typo.hea"),
                                        "--model", str(exported[1])])
    assert isinstance(result.exception, DataError)
    assert str(result.exception) == f"{tmp_path / 'typo.hea'}: file not found"
    assert result.stdout == ""  # checked before the run
    (tmp_path / "empty").mkdir()
    result = runner.invoke(tiny_app(), [str(tmp_path / "empty"), "--model", str(exported[1])])
    assert isinstance(result.exception, DataError) and "no recordings found" in str(result.exception)


def test_the_bundled_model_reads_held_out_cinc2017_recordings():
    """The shipped model works out of the box: its spec, its card, and its calls on CinC 2017
    recordings it was never trained on (its validation tenth, benchmarks/ship_cinc2017_student.py)."""
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
    records = shipped["validation_records"][:40]
    rows = list(predict_paths([root / f"{r}.hea" for r in records], model))
    called = [(row["prediction"] or "noisy", names[labels[r]]) for row, r in zip(rows, records)]
    assert all(row["error"] is None for row in rows)
    assert np.mean([p == t for p, t in called]) >= 0.7, called


_PREDICT = """
import json, sys
import typer
import cardiodistill.cli
from cardiodistill.edge import EdgeModel, predict_file
from cardiodistill.edge.command import predict_cmd

model, record = sys.argv[1:3]
print(json.dumps(predict_file(EdgeModel.load(model), record)))
app = typer.Typer()
app.command()(predict_cmd)
app([record, "--model", model], standalone_mode=False)
"""


def test_predict_runs_without_torch(exported, folder, run_without_torch):
    """Importing torch, lightning or sklearn fails in the child; the CLI module, predict_file and the
    command still run."""
    proc = run_without_torch(_PREDICT, str(exported[1]), str(folder / "a_12lead.hea"))
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
