"""Privacy of what the data layer writes and reads: no identifier in any cache file (planted MRNs),
splits unchanged by pseudonyms, manifest paths confined to the cohort folder and bounded in size."""

from __future__ import annotations

import json
import os
import shutil
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cardiodistill.data.cache import (
    MAX_FILE_BYTES,
    in_fraction,
    is_val_record,
    manifest_file,
    read_bounded,
    redact,
    split_bucket,
)
from cardiodistill.data.ecg_windows import EcgSource, WindowSpec, build_window_cache
from cardiodistill.data.paired import PairedCache, PairedSpec, build_paired_cache
from cardiodistill.data.video_clips import VideoSource, build_clip_cache
from cardiodistill.errors import DataError
from cardiodistill.io import read_wfdb, write_wfdb
from cardiodistill.privacy import pseudonym
from cardiodistill.video import ClipSpec

MRNS = [f"MRN1234{i}" for i in range(4)]  # patient ids, also in every file name
ACCESSIONS = [f"ACC-99887{i}" for i in range(4)]  # study ids
BROKEN = "MRN99999"  # only in the names of unreadable files
PLANTED = (*MRNS, *ACCESSIONS, BROKEN)
OUTSIDE = "the text of a file outside the cohort"
ALLOW = "CARDIODISTILL_ALLOW_OUTSIDE_PATHS"


def _labelled_by_real_ids(patient_ids, share: float) -> np.ndarray:
    """The labelled-subset rule as the pipeline applies it to real patient ids."""
    return np.array([zlib.crc32(str(p).encode()) % 100_000 < share * 100_000 for p in patient_ids])


@pytest.fixture(scope="module")
def planted(small_cohort, tmp_path_factory) -> Path:
    """Four studies of the simulated cohort renamed to MRN-like ids and files, plus unreadable files
    whose names carry another MRN."""
    root = tmp_path_factory.mktemp("cohort")
    source = pd.read_csv(small_cohort / "manifest.csv", dtype=str).iloc[:4].reset_index(drop=True)
    labs = pd.read_csv(small_cohort / "labs.csv", dtype=str).set_index("patient_id").loc[source["patient_id"]]
    for sub in ("ecg", "mobile", "echo", "notes"):
        (root / sub).mkdir()
    manifest = source.copy()
    for i, mrn in enumerate(MRNS):
        for column, sub in (("ecg_path", "ecg"), ("mobile_path", "mobile")):
            write_wfdb(read_wfdb(small_cohort / source.loc[i, column]), root / sub / f"{mrn}_{sub}")
            manifest.loc[i, column] = f"{sub}/{mrn}_{sub}"
        shutil.copy(small_cohort / source.loc[i, "echo_path"], root / "echo" / f"{mrn}_echo.dcm")
        shutil.copy(small_cohort / source.loc[i, "note_path"], root / "notes" / f"{mrn}.txt")
        manifest.loc[i, ["echo_path", "note_path"]] = [f"echo/{mrn}_echo.dcm", f"notes/{mrn}.txt"]
    manifest["patient_id"], manifest["study_id"] = MRNS, ACCESSIONS
    (root / "echo" / f"{BROKEN}_echo.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    manifest.loc[3, "echo_path"] = f"echo/{BROKEN}_echo.dcm"
    (root / "ecg" / f"{BROKEN}.hea").write_text("this is not a WFDB header\n")
    manifest.to_csv(root / "manifest.csv", index=False)
    labs.index = MRNS
    labs.rename_axis("patient_id").to_csv(root / "labs.csv")
    return root


@pytest.fixture(scope="module")
def caches(planted, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("caches")
    build_paired_cache(planted, out / "paired", PairedSpec())
    build_window_cache(out / "windows", [EcgSource("cohort", str(planted)),
                                         EcgSource("files", str(planted / "ecg"), pattern="*.hea")],
                       WindowSpec(100.0, 10.0), val_fraction=0.5)
    build_clip_cache(out / "clips", [VideoSource("cohort", str(planted))], ClipSpec(size=32, frames=8),
                     val_fraction=0.5)
    return out


def test_no_planted_identifier_in_any_cache_file(planted, caches):
    files = [p for p in caches.rglob("*") if p.is_file()]
    assert {p.parent.name for p in files} == {"paired", "windows", "clips"}
    for path in files:
        data = path.read_bytes()
        for value in PLANTED:
            assert value.encode() not in data, f"{value} leaked into {path.relative_to(caches)}"
    # the ids are there as pseudonyms, and the unreadable files were reported, by pseudonym
    paired = PairedCache(caches / "paired")
    assert paired.table["patient_id"].tolist() == [pseudonym(m) for m in MRNS]
    assert paired.table["study_id"].tolist() == [pseudonym(a) for a in ACCESSIONS]
    assert [(pid, m) for pid, m, _ in paired.meta["skipped"]] == [(pseudonym(MRNS[3]), "echo")]
    (reason,) = json.loads((caches / "windows" / "cache.json").read_text())["skipped"]
    assert reason.startswith(pseudonym(BROKEN) + ": ")
    records = set(pd.read_csv(caches / "windows" / "items.csv")["record"])
    assert {pseudonym(f"{planted.name}/ecg/{MRNS[0]}_ecg"), pseudonym(f"{MRNS[0]}_ecg")} <= records


def test_splits_hash_the_real_ids(planted, caches):
    paired = PairedCache(caches / "paired")
    assert paired.table["split_bucket"].tolist() == [split_bucket(m) for m in MRNS]
    for share in (0.0, 0.3, 0.5, 0.9, 1.0):
        np.testing.assert_array_equal(in_fraction(paired.table["split_bucket"], share),
                                      _labelled_by_real_ids(MRNS, share))
    clips = pd.read_csv(caches / "clips" / "items.csv")
    records = [f"{planted.name}/{m}" for m in MRNS[:3]]  # the fourth echo is unreadable
    assert clips["record"].tolist() == [pseudonym(r) for r in records]
    assert clips["split"].tolist() == ["val" if is_val_record(r, 0.5) else "train" for r in records]
    assert clips["split_bucket"].tolist() == [split_bucket(r) for r in records]
    windows = pd.read_csv(caches / "windows" / "items.csv").drop_duplicates("record")
    real = {pseudonym(f"{planted.name}/{sub}/{m}_{sub}"): f"{planted.name}/{sub}/{m}_{sub}"
            for m in MRNS for sub in ("ecg", "mobile")} | {pseudonym(f"{m}_ecg"): f"{m}_ecg" for m in MRNS}
    assert set(windows["record"]) == set(real)
    for record, split in zip(windows["record"], windows["split"]):
        assert split == ("val" if is_val_record(real[record], 0.5) else "train")


def test_the_bucket_rule_is_the_hash_rule():
    ids = [f"P{i:06d}" for i in range(2000)] + ["7", "NA", "MRN-0042", "é"]
    buckets = [split_bucket(i) for i in ids]
    for share in (0.01, 0.1, 0.25, 0.5):
        np.testing.assert_array_equal(in_fraction(buckets, share), _labelled_by_real_ids(ids, share))
        assert in_fraction(buckets, share).tolist() == [is_val_record(i, share) for i in ids]


def test_real_ids_only_when_asked_and_never_mixed(planted, caches, tmp_path, monkeypatch):
    real = build_paired_cache(planted, tmp_path / "real", PairedSpec(), real_ids=True)
    assert real.table["patient_id"].tolist() == MRNS and real.table["study_id"].tolist() == ACCESSIONS
    assert real.table["split_bucket"].tolist() == PairedCache(caches / "paired").table["split_bucket"].tolist()
    with pytest.raises(DataError, match="in the way"):  # a cache of real ids is never reused as pseudonymous
        build_paired_cache(planted, tmp_path / "real", PairedSpec())
    monkeypatch.setenv("CARDIODISTILL_REAL_IDS", "1")
    assert build_paired_cache(planted, tmp_path / "real", PairedSpec()).meta == real.meta  # the same opt-in
    monkeypatch.delenv("CARDIODISTILL_REAL_IDS")
    monkeypatch.setenv("CARDIODISTILL_PSEUDONYM_KEY", "site secret")
    with pytest.raises(DataError, match="in the way"):  # another key, other pseudonyms: not the same cache
        build_paired_cache(planted, caches / "paired", PairedSpec())
    keyed = build_paired_cache(planted, tmp_path / "keyed", PairedSpec())
    assert keyed.table["patient_id"].tolist() == [pseudonym(m) for m in MRNS]
    assert keyed.table["patient_id"].tolist() != PairedCache(caches / "paired").table["patient_id"].tolist()


# ----------------------------------------------------------------------------------- manifest paths


@pytest.fixture
def notes_cohort(tmp_path) -> Path:
    """A manifest-only cohort whose notes point at everything a note must not be."""
    root = tmp_path / "cohort"
    (root / "notes").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    secret = tmp_path / "outside" / "secret.txt"
    secret.write_text(OUTSIDE)
    (root / "notes" / "link.txt").symlink_to(secret)
    (root / "notes" / "ok.txt").write_text("a note")
    os.mkfifo(root / "notes" / "fifo.txt")
    with open(root / "notes" / "huge.txt", "wb") as f:  # sparse: no disk used
        f.truncate(MAX_FILE_BYTES["note"] + 1)
    notes = {"up": "../../../../../../../../etc/passwd", "relative": "../outside/secret.txt",
             "absolute": str(secret), "link": "notes/link.txt", "zero": "/dev/zero", "fifo": "notes/fifo.txt",
             "folder": "notes", "huge": "notes/huge.txt", "inside": "notes/../notes/ok.txt"}
    rows = [{"patient_id": pid, "study_id": "", "split": "train", "note_path": path, "ecg_path": "",
             "echo_path": ""} for pid, path in notes.items()]
    rows.append({**rows[-1], "patient_id": "devices", "note_path": "", "ecg_path": "notes/fifo.txt",
                 "echo_path": "/dev/zero"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root


def _reasons(cache: PairedCache) -> dict[tuple[str, str], str]:
    ids = {pseudonym(p): p for p in ("up", "relative", "absolute", "link", "zero", "fifo", "folder", "huge",
                                     "inside", "devices")}
    return {(ids[pid], modality): reason for pid, modality, reason in cache.meta["skipped"]}


def test_manifest_paths_stay_inside_the_cohort_and_are_bounded(notes_cohort, tmp_path):
    cache = build_paired_cache(notes_cohort, tmp_path / "cache", PairedSpec())
    reasons = _reasons(cache)
    for name in ("up", "relative", "absolute", "link", "zero"):
        assert "outside the cohort folder" in reasons[(name, "note")], name
    for name in ("fifo", "folder"):
        assert reasons[(name, "note")].startswith("not a regular file"), name
    assert reasons[("huge", "note")].startswith("larger than 1 MiB")
    assert reasons[("devices", "ecg")].startswith("not a regular file")
    assert "outside the cohort folder" in reasons[("devices", "echo")]
    assert ("inside", "note") not in reasons and cache.table["note"].tolist()[-2] == "a note"
    assert cache.present["note"].tolist() == [False] * 8 + [True, False]
    items = (cache.folder / "items.csv").read_text()
    assert OUTSIDE not in items and "root:" not in items and "/etc" not in str(cache.meta["skipped"])


def test_outside_paths_when_the_user_opts_in(notes_cohort, tmp_path, monkeypatch):
    monkeypatch.setenv(ALLOW, "1")
    cache = build_paired_cache(notes_cohort, tmp_path / "cache", PairedSpec())
    notes = dict(zip(["up", "relative", "absolute", "link"], cache.table["note"].tolist()))
    assert notes["relative"] == notes["absolute"] == notes["link"] == OUTSIDE
    reasons = _reasons(cache)
    assert reasons[("zero", "note")].startswith("not a regular file")  # still never read
    assert reasons[("devices", "echo")].startswith("not a regular file")
    assert cache.meta["outside_paths"] is True
    monkeypatch.delenv(ALLOW)
    with pytest.raises(DataError, match="in the way"):  # built with other rules: not reused
        build_paired_cache(notes_cohort, tmp_path / "cache", PairedSpec())


def test_bounded_reads_refuse_devices_fifos_and_large_files(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    for path in (tmp_path / "fifo", Path("/dev/zero"), tmp_path):
        with pytest.raises(DataError, match="not a regular file") as info:
            read_bounded(path, 1 << 20, "note")
        assert str(info.value).startswith(str(path))
    (tmp_path / "five").write_bytes(b"12345")
    assert read_bounded(tmp_path / "five", 5) == b"12345"
    with pytest.raises(DataError, match="larger than"):
        read_bounded(tmp_path / "five", 4)
    with pytest.raises(DataError, match="file not found"):
        read_bounded(tmp_path / "nothing", 4)
    (tmp_path / "rec.hea").write_text("rec 1 100 10\n")
    assert manifest_file(tmp_path, "rec", what="ecg", max_bytes=100, or_suffix=".hea") == tmp_path / "rec.hea"
    with pytest.raises(DataError, match="not a usable path"):
        manifest_file(tmp_path, "a\0b", what="note", max_bytes=100)
    with pytest.raises(DataError) as info:
        manifest_file(tmp_path, "nothing.txt", what="note", max_bytes=100)
    assert info.value.path is None and str(info.value) == "file not found"  # no path: names can identify


def test_redact_takes_file_names_out_of_reasons():
    assert redact("signal file MRN12345.dat not found for MRN12345.hea", "ward7/MRN12345.hea") == (
        "signal file <file>.dat not found for <file>")
    assert redact("bad header", "ab") == "bad header"  # names shorter than 3 characters are left alone


def test_a_paired_cache_of_the_former_version_is_refused(caches, tmp_path):
    old = Path(shutil.copytree(caches / "paired", tmp_path / "old"))
    meta = json.loads((old / "cache.json").read_text())
    (old / "cache.json").write_text(json.dumps({**meta, "version": 1}))  # real ids, no split_bucket
    with pytest.raises(DataError, match="version 1.*delete it"):
        PairedCache(old)
