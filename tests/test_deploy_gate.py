"""The gated export (int8 / fp16 / fp32 behind an AUROC gate), quantisation, the benchmark and their commands."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from cardiodistill.deploy import (
    bench_rows,
    bench_student,
    convert_fp16,
    export_onnx,
    export_student_model,
    quantize_int8,
    student_arrays_npz,
)
from cardiodistill.deploy.student import MIN_GATE_CLASS
from cardiodistill.edge.spec import METADATA_KEY, EdgeSpec, read_spec
from cardiodistill.errors import ConfigError, DataError
from cardiodistill.models import create_model
from cardiodistill.synth.windows import simulated_windows
from cardiodistill.train.checkpoints import load_model, save_model

OUTPUTS = ["square", "noisy"]


def _windows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An easy two-output task on z-scored 10 s windows at 100 Hz: ``x [n, 1, 1000]``, ``y [n, 2]``.

    ``square``: a square wave rather than a sine; ``noisy``: strong rather than faint white noise.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(1000) / 100.0
    wave = np.sin(2 * np.pi * rng.uniform(0.8, 2.0, (n, 1)) * t + rng.uniform(0, 2 * np.pi, (n, 1)))
    y = rng.integers(0, 2, (n, 2)).astype(np.float32)
    x = np.where(y[:, :1] == 1, np.sign(wave), wave) + np.where(y[:, 1:] == 1, 0.8, 0.1) * rng.standard_normal((n, 1000))
    x = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)
    return x[:, None].astype(np.float32), y


def _tiny_student():
    return create_model("ecg_student", backbone={"name": "student_cnn_tiny", "in_leads": 1, "fs": 100.0,
                                                 "seconds": 10.0}, outputs=OUTPUTS)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny 1-lead student trained 20 steps on the easy task (validation AUROC ~0.99 and 1.0), saved, and
    its validation arrays."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = _tiny_student()
    x, y = map(torch.from_numpy, _windows(256, seed=0))
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        batch = torch.randint(0, len(x), (32,), generator=generator)
        loss = F.binary_cross_entropy_with_logits(model(x[batch])["logits"], y[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    folder = tmp_path_factory.mktemp("student")
    path = save_model(model.eval(), folder / "student.pt", steps=20, task="multilabel", triage="square")
    val_x, val_y = _windows(160, seed=1)
    val_y[::7, 1] = np.nan  # unknown labels are skipped
    return path, val_x, val_y


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".tmp-")]


# ------------------------------------------------------------------------------------------------ quantisation


def test_int8_is_smaller_runs_and_keeps_the_spec(tmp_path):
    # student_cnn rather than the tiny one: with 39 k weights the QDQ graph's own structure (~100 kB of node
    # and tensor names) outweighs what int8 weights save; the deployed student has 145 k. Seeded: an untrained
    # network drawn from whatever state earlier tests left can put one output where one int8 scale rounds it off
    torch.manual_seed(0)
    model = create_model("ecg_student", backbone={"name": "student_cnn", "in_leads": 1, "fs": 100.0,
                                                  "seconds": 10.0}, outputs=OUTPUTS).eval()
    spec = EdgeSpec(model_id="t", version="0", leads=("I",), fs=100.0, seconds=10.0, outputs=tuple(OUTPUTS),
                    triage="square")
    x = simulated_windows(24, ("I",), 100.0, 10.0, np.random.default_rng(0))
    assert x.shape == (24, 1, 1000) and x.dtype == np.float32
    np.testing.assert_allclose(x.std(-1), 1.0, atol=1e-3)
    fp32 = export_onnx(model, torch.from_numpy(x[:1]), tmp_path / "fp32.onnx", metadata={METADATA_KEY: spec.to_json()})
    int8 = quantize_int8(fp32, tmp_path / "int8.onnx", x[:16])
    fp16 = convert_fp16(fp32, tmp_path / "fp16.onnx")
    assert int8.stat().st_size < 0.6 * fp32.stat().st_size and fp16.stat().st_size < 0.6 * fp32.stat().st_size
    for path, precision in ((int8, "int8"), (fp16, "fp16")):
        got = read_spec(path)
        assert got.precision == precision and got.leads == ("I",) and got.outputs == tuple(OUTPUTS)
    with torch.no_grad():
        expected = model.predict(torch.from_numpy(x[16:])).numpy()
    # int8's error grows with the output's size (one scale per tensor, calibrated on 16 other windows)
    for path, atol, rtol in ((int8, 0.1, 0.1), (fp16, 1e-2, 0.0)):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {"ecg": x[16:]})[0]  # batch 8, inputs and outputs float32
        assert got.shape == (8, 3) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=atol, rtol=rtol)
    assert not _leftovers(tmp_path)


def test_quantize_refuses_windows_of_the_wrong_shape(tmp_path):
    model = _tiny_student().eval()
    fp32 = export_onnx(model, torch.zeros(1, 1, 1000), tmp_path / "fp32.onnx")
    with pytest.raises(DataError, match=r"calibration windows .*\[N, 1, T\].*\(4, 2, 1000\)"):
        quantize_int8(fp32, tmp_path / "int8.onnx", np.zeros((4, 2, 1000), np.float32))
    assert not (tmp_path / "int8.onnx").exists()


# ---------------------------------------------------------------------------------------------------- the gate


def test_gate_passes_int8_on_an_easy_task(trained, tmp_path):
    path, x, y = trained
    record = export_student_model(path, tmp_path / "student.onnx", val_x=x, val_y=y, model_id="tiny")
    assert record["requested"] == record["precision"] == "int8" and record["int8"]["passed"]
    assert record["fp32"]["macro_auroc"] > 0.95 and set(record["fp32"]["auroc"]) == set(OUTPUTS)
    assert record["int8"]["macro_drop"] <= 0.02 and record["int8"]["worst_drop"] <= 0.04
    assert record["n_validation"] == len(x) and "fp16" not in record  # int8 passed: nothing else tried
    assert record["judged"] == OUTPUTS and record["not_judged"] == {}
    drop = record["int8"]["macro_drop"]
    assert record["summary"] == f"int8 kept: macro AUROC {-drop:+.3f} vs fp32 over 2 judged outputs"
    spec = read_spec(tmp_path / "student.onnx")
    assert spec.precision == "int8" and spec.model_id == "tiny" and spec.triage == "square"
    assert spec.leads == ("I",) and spec.outputs == tuple(OUTPUTS) and (spec.fs, spec.seconds) == (100.0, 10.0)
    assert spec.gate == {k: v for k, v in record.items() if k not in ("path", "bytes")}
    assert spec.provenance["steps"] == 20 and len(spec.provenance["sha256"]) == 64
    assert record["bytes"] == (tmp_path / "student.onnx").stat().st_size
    assert not _leftovers(tmp_path)


def test_gate_falls_back_to_fp32_when_the_margin_cannot_be_met(trained, tmp_path):
    path, x, y = trained
    record = export_student_model(path, tmp_path / "student.onnx", val_x=x, val_y=y, margin=-1.0)
    assert record["precision"] == "fp32" and not record["int8"]["passed"]
    assert "passed" in record["fp16"] and not record["fp16"]["passed"]  # the installed converter was tried
    assert record["decision"].endswith("wrote fp32") and "int8 macro AUROC drop" in record["decision"]
    assert record["summary"].startswith("int8 refused (macro AUROC ") and "-> fp16 refused (" in record["summary"]
    assert record["summary"].endswith("-> fp32 kept")
    spec = read_spec(tmp_path / "student.onnx")
    assert spec.precision == "fp32" and spec.gate["precision"] == "fp32"


def test_outputs_with_few_validation_positives_are_not_judged(trained, tmp_path):
    path, x, y = trained
    y = y.copy()
    positives = np.flatnonzero(y[:, 1] == 1)
    y[positives[3:], 1] = np.nan  # "noisy": 3 known positives, too few to judge
    record = export_student_model(path, tmp_path / "student.onnx", val_x=x, val_y=y)
    assert record["min_class"] == MIN_GATE_CLASS == 10
    assert record["judged"] == ["square"]
    n_neg = int((y[:, 1] == 0).sum())
    assert record["not_judged"] == {"noisy": f"not judged (3 positives, {n_neg} negatives)"}
    fp32, int8 = record["fp32"], record["int8"]
    assert set(fp32["auroc"]) == set(OUTPUTS)  # still measured and recorded ...
    assert fp32["macro_auroc"] == fp32["auroc"]["square"] and int8["worst_output"] == "square"  # ... not judged
    assert record["precision"] == "int8" and record["summary"] == (
        f"int8 kept: macro AUROC {-int8['macro_drop']:+.3f} vs fp32 over 1 judged output; 1 output not judged "
        "(< 10 validation positives or negatives: noisy)")
    assert read_spec(tmp_path / "student.onnx").gate["summary"] == record["summary"]


def test_a_gate_that_can_judge_no_output_keeps_fp32(trained, tmp_path):
    path, x, y = trained
    record = export_student_model(path, tmp_path / "student.onnx", val_x=x, val_y=y, min_class=1000)
    assert record["judged"] == [] and set(record["not_judged"]) == set(OUTPUTS)
    assert record["precision"] == "fp32" and record["int8"]["passed"] is False
    counts = ", ".join(f"{k} {int(np.nansum(y[:, j]))}/{int(np.sum(y[:, j] == 0))}" for j, k in enumerate(OUTPUTS))
    assert record["summary"] == ("fp32 kept: cannot judge int8 or fp16, no output has 1000 validation positives and "
                                 f"1000 negatives (positives/negatives: {counts})")
    with pytest.raises(ConfigError, match="int8 cannot judge.*not written"):
        export_student_model(path, tmp_path / "strict.onnx", val_x=x, val_y=y, min_class=1000, fallback=False)
    assert not (tmp_path / "strict.onnx").exists()


def test_strict_gate_refuses_and_writes_nothing(trained, tmp_path):
    path, x, y = trained
    out = tmp_path / "student.onnx"
    with pytest.raises(ConfigError, match=r"student\.onnx: int8 macro AUROC drop .* exceeds the margin -1"):
        export_student_model(path, out, val_x=x, val_y=y, margin=-1.0, fallback=False)
    assert list(tmp_path.iterdir()) == []


def test_fp32_export_matches_torch(trained, tmp_path):
    path, x, y = trained
    record = export_student_model(path, tmp_path / "student.onnx", val_x=x, val_y=y, precision="fp32")
    assert record["precision"] == "fp32" and set(record) >= {"fp32", "decision"} and "int8" not in record
    session = ort.InferenceSession(str(tmp_path / "student.onnx"), providers=["CPUExecutionProvider"])
    model = load_model(path)
    for batch in (x[:8], x[:3, :, :500]):  # dynamic batch and samples axes
        with torch.no_grad():
            expected = model.predict(torch.from_numpy(np.ascontiguousarray(batch))).numpy()
        np.testing.assert_allclose(session.run(None, {"ecg": batch})[0], expected, atol=1e-4)


def test_a_student_saved_with_its_band_exports_and_a_contradicting_band_is_refused(trained, tmp_path):
    """The CinC 2017 trainer records ``band_hz`` with the student: export must take it (it once failed with
    'multiple values for band_hz'), and refuse, naming the file, a record that contradicts the model."""
    path, x, y = trained
    model = load_model(path)
    band = list(model.backbone_config.get("band") or (0.5, 40.0))
    good = save_model(model, tmp_path / "good.pt", task="multilabel", triage="square", band_hz=band)
    export_student_model(good, tmp_path / "good.onnx", val_x=x, val_y=y, precision="fp32")
    assert read_spec(tmp_path / "good.onnx").band_hz == tuple(band)
    bad = save_model(model, tmp_path / "bad.pt", task="multilabel", triage="square", band_hz=[1.0, 30.0])
    with pytest.raises(ConfigError, match=r"bad\.pt.*\[1\.0, 30\.0\] Hz band"):
        export_student_model(bad, tmp_path / "bad.onnx", val_x=x, val_y=y, precision="fp32")


def test_gate_refuses_bad_validation_data(trained, tmp_path):
    path, x, y = trained
    with pytest.raises(DataError, match=r"x \[N, 1, 1000\] and y \[N, 2\].*\(160, 2, 1000\)"):
        export_student_model(path, tmp_path / "a.onnx", val_x=np.repeat(x, 2, axis=1), val_y=y)
    with pytest.raises(DataError, match="no output has both classes"):
        export_student_model(path, tmp_path / "a.onnx", val_x=x, val_y=np.zeros_like(y), precision="fp32")
    with pytest.raises(ConfigError, match="precision must be one of"):
        export_student_model(path, tmp_path / "a.onnx", val_x=x, val_y=y, precision="int4")
    assert list(tmp_path.iterdir()) == []


def test_student_arrays_npz(tmp_path):
    np.savez(tmp_path / "ok.npz", x=np.zeros((3, 1, 10), np.float64), y=np.ones((3, 2)))
    x, y = student_arrays_npz(tmp_path / "ok.npz")
    assert x.dtype == y.dtype == np.float32 and x.shape == (3, 1, 10) and y.shape == (3, 2)
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 1, 10)))
    with pytest.raises(DataError, match=r"bad\.npz: expected arrays 'x' and 'y', found \['x'\]"):
        student_arrays_npz(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_text("not an archive")
    with pytest.raises(DataError, match=r"junk\.npz: not a readable \.npz"):
        student_arrays_npz(tmp_path / "junk.npz")


# ------------------------------------------------------------------------------------------------ benchmark


def test_bench_times_every_backend_on_one_and_two_threads(trained):
    path, x, _ = trained
    result = bench_student(path, x[:8], threads=(1, 2), n=5, memory=False)
    assert result["int8_calibration"] == "8 given windows"
    assert result["input_shape"] == [1, 1, 1000] and result["parameters"]["torch"] > result["parameters"]["onnx"] > 0
    assert set(result["backends"]) == {"torch", "onnx_fp32", "onnx_int8"}
    for backend in result["backends"].values():
        assert backend["bytes"] > 0 and set(backend["latency_ms"]) == {"1", "2"}
        for latency in backend["latency_ms"].values():
            assert 0 < latency["p50"] <= latency["p95"]
    assert len(bench_rows(result)) == 6
    with pytest.raises(DataError, match=r"benchmark windows must be .*\[N, 1, samples\].*\(2, 2, 1000\)"):
        bench_student(path, np.repeat(x[:2], 2, axis=1), threads=(1,), n=1, memory=False)


def test_deploy_does_not_import_the_simulator():
    import subprocess
    import sys

    code = ("import sys, cardiodistill.deploy.bench, cardiodistill.deploy.student, cardiodistill.deploy.commands; "
            "print(sorted(m for m in sys.modules if m.startswith('cardiodistill.synth')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_bench_of_an_exported_file_measures_memory(trained, tmp_path):
    path, x, y = trained
    export_student_model(path, tmp_path / "student.onnx", val_x=x, val_y=y, precision="fp32")
    result = bench_student(tmp_path / "student.onnx", x[:1], threads=(1,), n=5, calibration=x[:32])
    assert set(result["backends"]) == {"onnx_fp32", "onnx_int8"} and result["int8_calibration"] == "32 given windows"
    for backend in result["backends"].values():
        memory = backend["memory_mb"]
        assert 0 < memory["baseline"] <= memory["peak"] and memory["model"] == pytest.approx(
            memory["peak"] - memory["baseline"], abs=0.11)


# ------------------------------------------------------------------------------------------------- commands


@pytest.fixture(scope="module")
def cli():
    typer = pytest.importorskip("typer")
    from typer.testing import CliRunner

    from cardiodistill.deploy.commands import bench_command, export_cmd

    app = typer.Typer()
    app.command("export")(export_cmd)
    app.command("bench")(bench_command(simulated_windows))
    return lambda *args: CliRunner().invoke(app, [str(a) for a in args])


def test_export_and_bench_commands(trained, cli, tmp_path):
    path, x, y = trained
    np.savez(tmp_path / "val.npz", x=x, y=y)
    out = tmp_path / "model.onnx"
    result = cli("export", path, "--data", tmp_path / "val.npz", "--out", out)
    assert result.exit_code == 0, result.output
    assert "passed" in result.output and "wrote int8" in result.output and read_spec(out).precision == "int8"
    result = cli("bench", out, "--threads", 1, "--n", 5, "--json", tmp_path / "bench.json")
    assert result.exit_code == 0, result.output
    assert "onnx_int8" in result.output
    assert json.loads((tmp_path / "bench.json").read_text())["backends"]["onnx_int8"]["latency_ms"]["1"]["p50"] > 0


def test_export_command_errors_name_the_file(trained, cli, tmp_path):
    path, x, y = trained
    np.savez(tmp_path / "val.npz", x=x[:, :, :500], y=y)
    result = cli("export", path, "--data", tmp_path / "val.npz")
    assert isinstance(result.exception, DataError) and str(result.exception).startswith(str(tmp_path / "val.npz"))
    np.savez(tmp_path / "val.npz", x=x, y=y)
    result = cli("export", path, "--data", tmp_path / "val.npz", "--out", tmp_path / "m.onnx", "--margin", -1,
                 "--strict")
    assert isinstance(result.exception, ConfigError) and "strict" in str(result.exception)
    assert not (tmp_path / "m.onnx").exists()
