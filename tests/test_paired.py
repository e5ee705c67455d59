"""The paired multimodal cache and Dataset: stage-1 preprocessing per modality, gaps, bad files, phases, batching."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, default_collate

from cardiodistill.config import load_config
from cardiodistill.data import paired
from cardiodistill.data.cache import split_bucket
from cardiodistill.data.ecg_windows import WindowSpec, record_windows
from cardiodistill.data.paired import PairedCache, PairedDataset, PairedSpec, build_paired_cache
from cardiodistill.errors import ConfigError, DataError
from cardiodistill.io import read_wfdb, write_wfdb
from cardiodistill.privacy import pseudonym
from cardiodistill.records import EcgRecord
from cardiodistill.signals.leads import LEADS_12
from cardiodistill.synth.cohort import write_cohort
from cardiodistill.video import ClipSpec

torch.set_num_threads(2)

SPEC = PairedSpec()
NOTE = 'Echo: LV dilated, EF 35%.\r\nPlan, "urgent" review;\nNA\n'
# patients the fixture alters; the others are the simulator's own
NO_ECHO, BAD_ECHO, ODD_NOTE, UNLABELLED, NO_ECG, ONE_LEAD, MISSING_NOTE = range(7)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    write_cohort(load_config("quick", ["synth.patients=10", "synth.chunk_size=10", "synth.echo.size=64"]), root)
    manifest = pd.read_csv(root / "manifest.csv", dtype=str)
    manifest.loc[NO_ECHO, "echo_path"] = ""
    echo = root / manifest.loc[BAD_ECHO, "echo_path"]
    echo.write_bytes(echo.read_bytes()[:2000])  # truncated DICOM
    (root / manifest.loc[ODD_NOTE, "note_path"]).write_bytes(NOTE.encode())
    manifest.loc[UNLABELLED, ["triage", "lvef", "dx_mi"]] = ""
    manifest.loc[NO_ECG, "ecg_path"] = ""
    mobile = read_wfdb(root / manifest.loc[ONE_LEAD, "mobile_path"])
    write_wfdb(EcgRecord(mobile.signal[:1], mobile.fs, ("I",)), root / manifest.loc[ONE_LEAD, "mobile_path"])
    manifest.loc[MISSING_NOTE, "note_path"] = "notes/nobody.txt"
    manifest.to_csv(root / "manifest.csv", index=False)
    return root


@pytest.fixture(scope="module")
def cache(cohort, tmp_path_factory) -> PairedCache:
    done: list[int] = []
    built = build_paired_cache(cohort, tmp_path_factory.mktemp("paired") / "cache", SPEC, progress=done.append,
                               chunk_studies=4)
    assert done[-1] == 10 and done == sorted(done)
    return built


def test_spec_round_trip_and_validation():
    spec = PairedSpec(WindowSpec(250.0, 5.0, None), ClipSpec(size=32, frames=8), ("I", "II"))
    assert PairedSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert PairedSpec.from_dict({}) == PairedSpec()
    with pytest.raises(ConfigError, match="mobile_leads"):
        PairedSpec(mobile_leads=("I", "X"))
    with pytest.raises(ConfigError, match="no field"):
        PairedSpec.from_dict({"ecg_fs": 100})


def test_shapes_dtypes_and_table(cache):
    s, f, size = SPEC.ecg.n_samples, SPEC.clip.frames, SPEC.clip.size
    expected = {"ecg": (np.float16, (12, s)), "ecg_present": (np.bool_, (12,)), "mobile": (np.float16, (6, s)),
                "mobile_present": (np.bool_, (6,)), "echo": (np.uint8, (f, size, size)),
                "echo_mask": (np.bool_, (size, size)), "labs": (np.float32, (len(cache.lab_names),)),
                **{name: (np.int32, (2,)) for name in paired.PHASES},
                **{f"has_{m}": (np.bool_, ()) for m in paired.MODALITIES}}
    assert set(cache.meta["arrays"]) == set(expected)
    assert len(cache.meta["chunks"]) == 3  # 4 + 4 + 2 studies
    for name, (dtype, shape) in expected.items():
        array = cache.load(name)
        assert array.dtype == dtype and array.shape == (10, *shape), name
    assert list(cache.table.columns[:6]) == ["patient_id", "study_id", "split", "sex", "age", "note"]
    assert cache.dx_names and all(c.startswith("dx_") for c in cache.dx_names)
    assert list(cache.table.columns[6:]) == ["triage", *cache.dx_names, "lvef", "split_bucket"]
    assert cache.table["patient_id"].tolist() == [pseudonym(f"P{i:06d}") for i in range(10)]
    assert cache.meta["counts"] == {"ecg": 9, "mobile": 10, "echo": 8, "labs": 10, "note": 9}


def test_ecg_and_mobile_are_the_stage1_windows(cohort, cache):
    manifest = pd.read_csv(cohort / "manifest.csv", dtype=str)
    for i in (0, 3):
        windows, present, starts = record_windows(read_wfdb(cohort / manifest.loc[i, "ecg_path"]), SPEC.ecg)
        assert starts[0] == 0.0
        np.testing.assert_array_equal(cache.item("ecg", i), windows[0].astype(np.float16))
        np.testing.assert_array_equal(cache.item("ecg_present", i), present[0])
        windows, present, _ = record_windows(read_wfdb(cohort / manifest.loc[i, "mobile_path"]), SPEC.ecg)
        rows = [LEADS_12.index(lead) for lead in SPEC.mobile_leads]
        np.testing.assert_array_equal(cache.item("mobile", i), windows[0][rows].astype(np.float16))
        assert cache.item("mobile_present", i).all()
    assert cache.item("mobile_present", ONE_LEAD).tolist() == [True] + [False] * 5
    assert not np.any(cache.item("mobile", ONE_LEAD)[1:])


def test_absent_modalities_are_zeros_and_flagged(cache):
    assert not cache.present["echo"][NO_ECHO] and not np.any(cache.item("echo", NO_ECHO))
    assert cache.item("echo_phase", NO_ECHO).tolist() == [-1, -1]
    assert not cache.present["ecg"][NO_ECG] and not cache.item("ecg_present", NO_ECG).any()
    item = PairedDataset(cache)[NO_ECG]
    assert not item["has_ecg"] and not item["ecg_present"].any() and not item["ecg"].any()
    assert item["ecg_phase"].tolist() == [-1, -1] and item["has_mobile"] and item["has_echo"]
    # the study keeps its row and everything else
    assert cache.table["patient_id"][NO_ECHO] == pseudonym("P000000") and cache.present["ecg"][NO_ECHO]


def test_unreadable_files_are_skipped_with_a_reason(cache):
    skipped = {(pid, modality): reason for pid, modality, reason in cache.meta["skipped"]}
    bad_echo, missing_note = pseudonym(f"P{BAD_ECHO:06d}"), pseudonym(f"P{MISSING_NOTE:06d}")
    assert set(skipped) == {(bad_echo, "echo"), (missing_note, "note")}
    assert all("/" not in reason and "\n" not in reason and reason for reason in skipped.values())
    assert skipped[(missing_note, "note")] == "file not found"
    assert not cache.present["echo"][BAD_ECHO] and cache.present["ecg"][BAD_ECHO] and cache.present["note"][BAD_ECHO]
    assert not cache.present["note"][MISSING_NOTE] and cache.table["note"][MISSING_NOTE] == ""


def test_labs_nan_preserved(cohort, cache):
    labs = pd.read_csv(cohort / "labs.csv", dtype={"patient_id": str}).set_index("patient_id")
    assert cache.lab_names == list(labs.columns)
    stored = cache.load("labs")
    manifest = pd.read_csv(cohort / "manifest.csv", dtype={"patient_id": str})
    expected = labs.loc[manifest["patient_id"], cache.lab_names].to_numpy(np.float32)
    assert np.isnan(expected).any(), "the simulator leaves some labs missing"
    np.testing.assert_array_equal(stored, expected)  # NaN where missing, same places
    assert np.isnan(PairedDataset(cache)[0]["labs"].numpy()).tolist() == np.isnan(expected[0]).tolist()


def test_blank_labels_are_nan(cache):
    dataset = PairedDataset(cache)
    item = dataset[UNLABELLED]
    assert torch.isnan(item["triage"]) and torch.isnan(item["lvef"])
    assert torch.isnan(item["dx"][cache.dx_names.index("dx_mi")]) and not torch.isnan(item["dx"][1:]).any()
    targets = dataset.targets()
    assert targets["dx"].shape == (10, len(cache.dx_names)) and targets["triage"].dtype == np.float32
    assert np.isnan(targets["lvef"]).tolist() == [i == UNLABELLED for i in range(10)]
    subset = PairedDataset(cache, [UNLABELLED, 0])
    assert subset.targets([1])["lvef"].tolist() == [np.float32(cache.table["lvef"][0])]


def test_notes_with_commas_quotes_and_newlines_round_trip(cohort, cache):
    assert cache.table["note"][ODD_NOTE] == NOTE
    reopened = PairedCache(cache.folder)
    assert reopened.table["note"].tolist() == cache.table["note"].tolist()
    assert reopened.table["note"][0] == (cohort / "notes" / "P000000.txt").read_text()
    assert PairedDataset(cache)[ODD_NOTE]["note"] == NOTE


def test_reuse_and_refuse(cohort, cache, monkeypatch):
    def fail(*args):
        raise AssertionError("an existing cache was rebuilt")

    monkeypatch.setattr(paired, "_study_arrays", fail)
    again = build_paired_cache(cohort, cache.folder, SPEC)
    assert len(again) == 10 and again.meta == cache.meta
    with pytest.raises(DataError, match="another spec"):
        build_paired_cache(cohort, cache.folder, PairedSpec(clip=ClipSpec(frames=8)))
    manifest = cohort / "manifest.csv"
    stat = manifest.stat()
    os.utime(manifest, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    try:
        with pytest.raises(DataError, match="other sources"):
            build_paired_cache(cohort, cache.folder, SPEC)
    finally:
        os.utime(manifest, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(DataError, match="manifest.csv not found"):
        build_paired_cache(cohort / "ecg", cache.folder, SPEC)


def test_failed_phase_detection_keeps_the_modality(cohort, monkeypatch):
    def fail(*args, **kwargs):
        raise DataError("no cardiac cycle")

    monkeypatch.setattr(paired, "ecg_phases", fail)
    monkeypatch.setattr(paired, "echo_phases", fail)
    manifest = pd.read_csv(cohort / "manifest.csv", dtype=str)
    timing = json.loads((cohort / "timing.jsonl").read_text().splitlines()[9])
    study = paired._Study("P000009", {m: manifest.loc[9, c] for m, c in paired.PATH_COLUMNS.items()}, None, timing)
    arrays, note, skipped = paired._study_arrays(cohort, SPEC, study)
    assert not skipped and note and arrays["has_ecg"] and arrays["has_echo"] and arrays["echo"].any()
    assert arrays["ecg_phase"].tolist() == [-1, -1] and arrays["echo_phase"].tolist() == [-1, -1]
    assert (arrays["gt_echo_phase"] >= 0).all()  # the truth does not depend on detection
    r, t_end = arrays["gt_ecg_phase"]  # without a detection: the true beat nearest the middle with a known T end
    assert 0 <= r < t_end < SPEC.ecg.n_samples


def test_manifest_only_cohort_and_bad_tables(tmp_path):
    root = tmp_path / "cohort"
    root.mkdir()
    rows = "patient_id,study_id,split,ecg_path,triage,dx_af,lvef\n7,S1,train,,1,0,55.5\nNA,S2,val,,,1,\n"
    (root / "manifest.csv").write_text(rows)
    cache = build_paired_cache(root, tmp_path / "cache", SPEC)
    assert cache.table["patient_id"].tolist() == [pseudonym("7"), pseudonym("NA")]
    assert cache.table["split_bucket"].tolist() == [split_bucket("7"), split_bucket("NA")]
    assert cache.table["sex"].tolist() == ["", ""]
    assert cache.lab_names == [] and cache.load("labs").shape == (2, 0) and cache.dx_names == ["dx_af"]
    assert not any(cache.present[m].any() for m in paired.MODALITIES) and not cache.meta["skipped"]
    assert (cache.load("gt_ecg_phase") == -1).all()
    item = PairedDataset(cache)[1]
    assert item["labs"].shape == (0,) and torch.isnan(item["triage"]) and item["dx"].tolist() == [1.0]
    (root / "manifest.csv").write_text(rows.replace("55.5", "high"))
    with pytest.raises(DataError, match="column 'lvef' is not numeric"):
        build_paired_cache(root, tmp_path / "other", SPEC)
    (root / "manifest.csv").write_text(rows)
    (root / "labs.csv").write_text("patient,potassium\n7,4.1\n")
    with pytest.raises(DataError, match="labs.csv has no patient_id column"):
        build_paired_cache(root, tmp_path / "other", SPEC)


def test_detected_phases_agree_with_the_truth(cache):
    detected, truth = cache.load("ecg_phase"), cache.load("gt_ecg_phase")
    found = (detected[:, 0] >= 0) & (truth[:, 0] >= 0)
    assert found.sum() >= 8  # every study with an ECG
    assert np.mean(np.abs(detected[found, 0] - truth[found, 0]) <= 3) >= 0.8
    both = found & (truth[:, 1] >= 0)  # T-end truth exists for the beats the echo covers
    assert both.sum() >= 2 and np.median(np.abs(detected[both, 1] - truth[both, 1])) <= 4
    detected, truth = cache.load("echo_phase"), cache.load("gt_echo_phase")
    assert (truth[cache.present["echo"], 0] >= 0).all()  # a one-cycle window always holds an end-diastole
    for k in (0, 1):  # ED, ES
        found = (detected[:, k] >= 0) & (truth[:, k] >= 0)
        assert found.sum() >= (6 if k == 0 else 3)
        assert np.mean(np.abs(detected[found, k] - truth[found, k]) <= 1) >= 0.75
    assert (cache.load("gt_echo_phase")[~cache.present["echo"]] == -1).all()


def test_workers_give_the_same_cache(cohort, cache, tmp_path):
    parallel = build_paired_cache(cohort, tmp_path / "parallel", SPEC, workers=2)
    for name in cache.meta["arrays"]:
        np.testing.assert_array_equal(parallel.load(name), cache.load(name), err_msg=name)
    pd.testing.assert_frame_equal(parallel.table, cache.table)
    assert parallel.meta["skipped"] == cache.meta["skipped"]


def test_dataset_items_collate(cache):
    dataset = PairedDataset(cache)
    batch = next(iter(DataLoader(dataset, batch_size=4, collate_fn=default_collate)))
    s, f, size = SPEC.ecg.n_samples, SPEC.clip.frames, SPEC.clip.size
    assert batch["ecg"].shape == (4, 12, s) and batch["ecg"].dtype == torch.float32
    assert batch["mobile"].shape == (4, 6, s) and batch["mobile_present"].dtype == torch.bool
    assert batch["echo"].shape == (4, f, size, size) and batch["echo_mask"].shape == (4, size, size)
    assert batch["labs"].shape == (4, len(cache.lab_names)) and batch["dx"].shape == (4, len(cache.dx_names))
    assert batch["ecg_phase"].dtype == torch.long and batch["gt_echo_phase"].shape == (4, 2)
    assert batch["index"].tolist() == [0, 1, 2, 3] and isinstance(batch["note"], list) and len(batch["note"]) == 4
    assert batch["has_echo"].tolist() == [False, False, True, True]  # no echo, truncated echo, two cines
    echo = batch["echo"][2][:, batch["echo_mask"][2]]
    assert abs(float(echo.mean())) < 1e-3 and abs(float(echo.std()) - 1.0) < 1e-2  # z-scored inside the mask
    ecg_only = PairedDataset(cache, [3, 5], modalities=("ecg", "note"))
    item = ecg_only[0]
    assert item["has_ecg"] and not item["has_echo"] and not item["echo"].any()
    assert item["echo_phase"].tolist() == [-1, -1]
    assert not item["has_labs"] and not item["labs"].any() and item["note"] and item["index"] == 3
    with pytest.raises(ConfigError, match="unknown modalities"):
        PairedDataset(cache, modalities=("ecg", "text"))


def test_a_cache_committed_by_another_process_first_is_kept(tmp_path):
    """Every rank of a torchrun / SLURM job builds the same cache; the first in place wins and is never
    deleted under the others (their builds are dropped)."""
    from cardiodistill.data.cache import CacheBuilder

    folder = tmp_path / "cache"
    first, second = CacheBuilder(folder, {"x": np.float32}), CacheBuilder(folder, {"x": np.float32})
    second.tmp = folder.with_name(".cache.tmp-other-rank")  # a second process has its own temporary folder
    with first, second:
        for builder, value in ((first, 1.0), (second, 2.0)):
            builder.add([{"i": 0}], x=np.full((1, 3), value, np.float32))
        assert first.commit({"who": "first"}) == folder
        kept = (folder / "cache.json").stat().st_ino
        assert second.commit({"who": "second"}) == folder
    assert (folder / "cache.json").stat().st_ino == kept and json.loads((folder / "cache.json").read_text())["who"] == "first"
    assert not second.tmp.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
