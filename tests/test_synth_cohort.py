"""The written cohort: real clinical files, same seed same cohort, resume after interruption."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pydicom
import pytest
import wfdb

from cardiodistill.config import load_config
from cardiodistill.runs import prepare_run_folder
from cardiodistill.synth.cohort import write_cohort

OVERRIDES = ["synth.patients=10", "synth.chunk_size=4"]


def _write(out, *extra):
    config = load_config("quick", OVERRIDES + list(extra))
    prepare_run_folder(out, config)
    return write_cohort(config, out)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort")
    manifest = _write(out)
    return out, manifest


def test_manifest_and_files(cohort):
    out, manifest = cohort
    assert len(manifest) == 10 and manifest["patient_id"].is_unique
    assert set(manifest["split"]) <= {"train", "val", "test"}
    for col in ("ecg_path", "mobile_path", "echo_path", "note_path", "triage", "lvef", "dx_af", "dx_mi"):
        assert col in manifest
    row = manifest.iloc[0]
    rec = wfdb.rdrecord(str(out / row.ecg_path))
    assert rec.fs == 500 and rec.sig_name == ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    assert rec.p_signal.shape == (5000, 12) and rec.units[0] == "mV"
    assert 0.3 < np.ptp(rec.p_signal[:, 1]) < 6  # lead II spans a physiological range in mV
    mobile = wfdb.rdrecord(str(out / row.mobile_path))
    assert mobile.fs == 300 and mobile.p_signal.shape == (3000, 6)
    ds = pydicom.dcmread(out / row.echo_path)
    assert ds.Modality == "US" and int(ds.NumberOfFrames) == 140 and ds.pixel_array.shape == (140, 112, 112)
    assert (out / row.note_path).read_text().strip()
    labs = pd.read_csv(out / "labs.csv")
    assert {"nt_probnp", "troponin_t_hs", "potassium", "creatinine", "haemoglobin"} <= set(labs.columns)
    assert json.loads((out / "lab_units.json").read_text())["potassium"] == "mmol/L"
    latent = pd.read_csv(out / "latent.csv")
    assert np.allclose(latent["lvef"].round(1), manifest["lvef"])
    assert not (out / ".parts").exists()


def test_timing_ground_truth_matches_files(cohort):
    out, manifest = cohort
    timing = [json.loads(line) for line in (out / "timing.jsonl").read_text().splitlines()]
    assert [t["patient_id"] for t in timing] == list(manifest["patient_id"])
    for t, row in zip(timing, manifest.itertuples()):
        rec = wfdb.rdrecord(str(out / row.ecg_path))
        deflection = np.abs(rec.p_signal - np.median(rec.p_signal, axis=0)).sum(axis=1)  # all 12 leads: any axis
        peaks = np.asarray(t["r_peaks"])
        assert len(peaks) >= 5
        # the labelled R-peak is where the QRS is: the deflection at the label beats the record's median by far
        assert np.median(deflection[peaks]) > 3 * np.median(deflection)
        # 12-lead and mobile R-peaks are the same heartbeats at the two rates
        mobile_t = np.asarray(t["mobile_r_peaks"]) / t["mobile_fs"]
        assert np.abs(mobile_t[: len(peaks)] - peaks[: len(mobile_t)] / t["ecg_fs"]).max() < 2.0 / 300
        assert len(t["ed_frames"]) >= 2 and len(t["es_frames"]) >= 2


def test_same_seed_same_cohort_whatever_the_workers(cohort, tmp_path):
    out, manifest = cohort
    again = _write(tmp_path / "again", "synth.workers=2")
    pd.testing.assert_frame_equal(manifest.reset_index(drop=True), again.reset_index(drop=True))
    for rel in (manifest.iloc[-1].ecg_path + ".dat", manifest.iloc[-1].echo_path, "labs.csv", "timing.jsonl"):
        assert (out / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes(), rel
    other = _write(tmp_path / "other", "synth.seed=1")
    assert not other["lvef"].equals(manifest["lvef"])


def test_interrupted_run_resumes_to_the_same_cohort(cohort, tmp_path):
    out, manifest = cohort
    config = load_config("quick", OVERRIDES)
    target = tmp_path / "resumed"
    prepare_run_folder(target, config)
    calls = []

    def interrupt(n):
        calls.append(n)
        if len(calls) == 2:  # first call reports 0 done; second = first chunk finished
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_cohort(config, target, progress=interrupt)
    assert len(list((target / ".parts").glob("manifest-*.csv"))) == 1
    done = []
    resumed = write_cohort(config, target, progress=done.append)
    assert done[0] == 4  # the finished chunk was kept, not regenerated
    pd.testing.assert_frame_equal(manifest.reset_index(drop=True), resumed.reset_index(drop=True))
    assert (out / "timing.jsonl").read_bytes() == (target / "timing.jsonl").read_bytes()


def test_cli_synth_and_refusal_to_overwrite(tmp_path):
    out = tmp_path / "c"
    cmd = [sys.executable, "-m", "cardiodistill.cli", "synth", "--patients", "3", "--out", str(out), "--set", "synth.echo.enabled=false"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "run.json").read_text())["patients"] == 3
    assert "echo_path" not in pd.read_csv(out / "manifest.csv")
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_gallery_examples_have_their_condition_and_nothing_else():
    from cardiodistill.synth.gallery import CONDITIONS, pick_examples

    pop, names = pick_examples(seed=0, pool=20000)
    assert names == list(CONDITIONS)
    row = dict(zip(names, range(len(names))))
    assert pop.af[row["af"]] and not pop.af[row["normal"]]
    assert pop.mi_territory[row["inferior_mi"]] == 2 and pop.lvh[row["lvh"]] and pop.bbb[row["lbbb"]] == 1
    assert pop.cardiomyopathy[row["cardiomyopathy"]] and pop.valve[row["valve"]] == 2
    others = ("mi", "lvh", "ischaemia", "hyperkalaemia", "cardiomyopathy")
    assert not any(getattr(pop, flag)[row["af"]] for flag in others)
