"""Training and serving share one preparation: the same file through the training paths and through
``cardiodistill predict``'s runtime gives the same model input and, from an exported model, the same
probabilities. A mismatch here is the silent failure a clinical model must never have."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cardiodistill.data.ecg_windows import record_windows
from cardiodistill.deploy.student import export_student_model
from cardiodistill.edge import EdgeModel
from cardiodistill.io import read_ecg, write_csv_ecg, write_wfdb
from cardiodistill.models import create_model
from cardiodistill.records import EcgRecord
from cardiodistill.signals import LEADS_12, InputSpec
from cardiodistill.signals.leads import LIMB_LEADS
from cardiodistill.train.checkpoints import save_model
from cardiodistill.train.supervised import predict_arrays, records_to_arrays

CINC = Path(__file__).resolve().parents[2] / "shared" / "data" / "cinc2017"
OUTPUTS = ["triage", "af"]


@pytest.fixture(scope="module")
def recordings(tmp_path_factory, simulated_ecg):
    """Files a clinic could hand to ``predict``: a 12-lead WFDB record at 500 Hz, a two-lead CSV export
    (II, III at 250 Hz: lead I must be derived), and a real CinC 2017 handheld recording when the
    shared data is present (its one channel is called ``ECG``)."""
    root = tmp_path_factory.mktemp("recordings")
    signal = simulated_ecg(seconds=23.0, fs=500.0, seed=4)
    write_wfdb(EcgRecord(signal, 500.0, LEADS_12), root / "twelve")
    two = simulated_ecg(seconds=14.0, fs=250.0, seed=5)[[LEADS_12.index("II"), LEADS_12.index("III")]]
    write_csv_ecg(EcgRecord(two, 250.0, ("II", "III")), root / "export.csv")
    files = [root / "twelve.hea", root / "export.csv"]
    if (CINC / "A00001.hea").is_file():
        files.append(CINC / "A00001.hea")
    return files


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """A small lead-I student (100 Hz x 10 s, band-pass recorded in its config) saved and exported in fp32
    through the accuracy gate: the EdgeSpec in the file is derived from the model's own input spec."""
    torch.manual_seed(0)
    model = create_model("ecg_student", backbone={"name": "student_cnn_tiny", "in_leads": 1, "fs": 100.0,
                                                  "seconds": 10.0}, outputs=OUTPUTS).eval()
    root = tmp_path_factory.mktemp("student")
    save_model(model, root / "student.pt", leads=list(LIMB_LEADS[:1]))
    rng = np.random.default_rng(0)
    val_x = rng.standard_normal((40, 1, 1000)).astype(np.float32)
    val_y = (rng.random((40, len(OUTPUTS))) < 0.5).astype(np.float32)
    export_student_model(root / "student.pt", root / "student.onnx", val_x=val_x, val_y=val_y, precision="fp32")
    return model, EdgeModel.load(root / "student.onnx")


def test_the_exported_spec_is_the_models_input_spec(student):
    model, edge = student
    spec = InputSpec.from_model_config(model.backbone_config).with_leads(model.leads)
    assert edge.spec.input_spec == spec
    assert (edge.spec.fs, edge.spec.seconds, edge.spec.leads) == (100.0, 10.0, ("I",))


def test_array_trainer_and_runtime_see_the_same_windows_and_scores(student, recordings):
    model, edge = student
    spec = edge.spec
    for path in recordings:
        record = read_ecg(path)
        windows, info = edge.prepare(record)
        x, lengths = records_to_arrays([record], leads=spec.leads, fs=spec.fs, seconds=120.0, band=spec.band_hz)
        offline = predict_arrays(model, x, lengths=lengths, window=spec.samples)
        assert len(windows) == info.n_windows >= 1
        # the array trainer stores float16 mV, so its z-scored windows agree to float16 precision
        served = edge.interpret(edge.run(windows), info).probabilities
        np.testing.assert_allclose(offline["probs"][0], [served[name] for name in spec.outputs], atol=2e-3,
                                   err_msg=str(path))


def test_training_cache_windows_equal_the_served_windows(student, recordings):
    """The stage-1 / paired-cache path (12-slot layout) holds lead I exactly as the runtime feeds it."""
    _, edge = student
    cache_spec = InputSpec(edge.spec.fs, edge.spec.seconds, edge.spec.band_hz)
    for path in recordings:
        record = read_ecg(path)
        served, _ = edge.prepare(record)
        if len(record.leads) > 1 and "I" not in record.leads:
            continue  # lead I is derived for the runtime; the lead-agnostic cache keeps what was recorded
        trained, present, _ = record_windows(record, cache_spec)
        assert present[:, LEADS_12.index("I")].all()
        np.testing.assert_allclose(trained[:, LEADS_12.index("I")], served[: len(trained), 0], atol=1e-5,
                                   err_msg=str(path))
