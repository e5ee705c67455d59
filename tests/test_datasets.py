"""Public ECG dataset adapters, checked against the real files in ``../shared/data``.

Every test that needs the shared data skips when it is absent (package users do not have it).
The PhysioNet PTB-XL layout is checked on a tiny fake folder built here from 3 real metadata rows.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb
from scipy.signal import butter, find_peaks, sosfiltfilt

from cardiodistill.data.datasets import MITBIH, PTBXL, CinC2017, CinC2021
from cardiodistill.data.datasets.snomed import SNOMED_TO_SCP, map_snomed
from cardiodistill.errors import DataError
from cardiodistill.io.wfdb import read_wfdb

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PTBXL_DIR = DATA / "ptbxl"
STATEMENTS = PTBXL_DIR / "scp_statements.csv"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared real data (../shared/data) not available")
SUPER = ["CD", "HYP", "MI", "NORM", "STTC"]


# --------------------------------------------------------------------------- PTB-XL
@needs_data
def test_ptbxl_subset_folds_labels_and_zscored_records():
    ds = PTBXL(PTBXL_DIR)  # auto: finds subset100/signals.npy next to the full metadata
    assert ds.layout == "subset" and isinstance(ds.signals, np.memmap)
    folds = ds.frame["strat_fold"].value_counts().sort_index()
    assert folds.to_dict() == {1: 169, 2: 188, 3: 179, 4: 188, 5: 185, 6: 188, 7: 185, 8: 160, 9: 183}
    assert len(ds.split("train")) == 1442 and len(ds.split("val")) == 183
    with pytest.raises(DataError, match="folds"):
        ds.split("test")  # fold 10 is held out of the shared data

    assert ds.labels == SUPER
    counts = dict(zip(ds.labels, ds.targets.sum(0)))
    assert max(counts, key=counts.get) == "NORM" and 0.45 < counts["NORM"] / len(ds) < 0.65
    assert all(counts[c] > 100 for c in SUPER)

    record, y = ds[0]
    assert record.signal.shape == (12, 1000) and record.signal.dtype == np.float32 and record.fs == 100.0
    assert record.leads[:3] == ("I", "II", "III") and record.meta["units"] == "z-score"
    # labels come from this row's scp_codes through the SCP table
    codes = ast.literal_eval(ds.frame.loc[0, "scp_codes"])
    assert y.dtype == np.float32 and y[ds.labels.index("NORM")] == float("NORM" in codes)
    # z-scored per lead: unit variance, zero mean, in every lead of every record sampled
    sig = np.stack([ds[i][0].signal for i in range(0, len(ds), 80)])
    np.testing.assert_allclose(sig.std(axis=2), 1.0, atol=0.01)
    np.testing.assert_allclose(sig.mean(axis=2), 0.0, atol=0.01)
    with pytest.raises(DataError, match="sampling rates"):
        PTBXL(PTBXL_DIR, sampling_rate=500)


@needs_data
def test_ptbxl_label_aggregation_reproduces_the_published_counts():
    """Over all 21,837 records, the benchmark convention (every statement, any likelihood) gives
    the superclass counts of the PTB-XL paper (Wagner et al. 2020, Table 3)."""
    ds = PTBXL(PTBXL_DIR, layout="standard")  # metadata only: no records folder here
    assert len(ds) == 21430 and ds.labels == SUPER  # 407 records have no diagnostic statement
    assert dict(zip(ds.labels, ds.targets.sum(0).astype(int))) == {
        "NORM": 9528, "MI": 5486, "STTC": 5250, "CD": 4907, "HYP": 2655,
    }  # fmt: skip
    n_classes = {
        t: len(PTBXL(PTBXL_DIR, layout="standard", task=t).labels)
        for t in ("diagnostic", "subdiagnostic", "form", "rhythm", "all")
    }
    assert n_classes == {"diagnostic": 44, "subdiagnostic": 23, "form": 19, "rhythm": 12, "all": 71}
    rare = PTBXL(PTBXL_DIR, layout="standard", task="rhythm", min_count=100)
    assert "SR" in rare.labels and len(rare.labels) < 12 and rare.targets.sum(0).min() >= 100
    with pytest.raises(DataError, match="records500"):
        ds[0]  # signals are read lazily, so a missing file is only reported when asked for


@needs_data
def test_ptbxl_standard_layout_reads_wfdb_records(tmp_path):
    rows = pd.read_csv(PTBXL_DIR / "ptbxl_database.csv").iloc[:3].copy()
    rows["strat_fold"] = [1, 9, 10]
    t = np.arange(5000) / 500.0
    truth = {}
    for i, ecg_id in enumerate(rows["ecg_id"]):
        for rate, suffix, folder in ((100, "lr", "records100"), (500, "hr", "records500")):
            name = f"{ecg_id:05d}_{suffix}"
            rows.loc[i, f"filename_{suffix}"] = f"{folder}/00000/{name}"
            (tmp_path / folder / "00000").mkdir(parents=True, exist_ok=True)
            tt = t[:: 500 // rate]
            sig = np.stack([(k + 1) * 0.1 * np.sin(2 * np.pi * (i + 1) * tt) for k in range(12)], axis=1)
            wfdb.wrsamp(name, fs=rate, units=["mV"] * 12, sig_name=["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"],
                        p_signal=sig, fmt=["16"] * 12, adc_gain=[1000.0] * 12, baseline=[0] * 12,
                        write_dir=str(tmp_path / folder / "00000"))  # fmt: skip
            truth[(ecg_id, rate)] = sig.T
    rows.to_csv(tmp_path / "ptbxl_database.csv", index=False)
    (tmp_path / "scp_statements.csv").write_bytes(STATEMENTS.read_bytes())

    ds = PTBXL(tmp_path, task="all")
    assert ds.layout == "standard" and ds.sampling_rate == 500 and len(ds) == 3
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [1, 1, 1]
    record, y = ds.split("test")[0]
    ecg_id = int(rows.loc[2, "ecg_id"])
    assert record.meta["ecg_id"] == ecg_id and record.meta["units"] == "mV" and record.fs == 500
    assert record.leads[3:6] == ("aVR", "aVL", "aVF")
    np.testing.assert_allclose(record.signal, truth[(ecg_id, 500)], atol=1e-3)
    expected = set(ast.literal_eval(rows.loc[2, "scp_codes"]))
    assert {c for c, v in zip(ds.labels, y) if v} == expected
    low = PTBXL(tmp_path, sampling_rate=100)[0][0]
    assert low.signal.shape == (12, 1000) and low.fs == 100


# --------------------------------------------------------------------------- SNOMED + CinC 2021
@needs_data
def test_snomed_targets_exist_in_the_scp_table():
    statements = pd.read_csv(STATEMENTS, index_col=0)
    assert set(SNOMED_TO_SCP.values()) <= set(statements.index)
    assert SNOMED_TO_SCP["164889003"] == "AFIB" and SNOMED_TO_SCP["59118001"] == SNOMED_TO_SCP["713427006"] == "CRBBB"
    assert "NORM" not in SNOMED_TO_SCP.values()  # no SNOMED code means "normal ECG"
    assert map_snomed(["426783006", "164865005", "426783006"]) == (["SR"], ["164865005"])


@needs_data
def test_cinc2021_labels_agree_with_ptbxl_for_the_same_recordings():
    ds = CinC2021(DATA / "cinc2021_sample", scp_statements=STATEMENTS)
    assert len(ds) == 50 and ds.labels == SUPER
    meta = pd.read_csv(DATA / "cinc2021_sample" / "meta.csv").set_index("record")
    assert all(",".join(dx) == meta.loc[r, "dx_snomed"] for r, dx in zip(ds.frame["record"], ds.frame["dx"]))

    # HR0xxxx are PTB-XL ecg_id xxxx: labels from SNOMED must agree with PTB-XL's own SCP labels
    ptbxl = PTBXL(PTBXL_DIR, layout="standard").frame.set_index("ecg_id")["labels"]
    hr = ds.frame[ds.frame["record"].str.startswith("HR")]
    exact = 0
    for record, labels in zip(hr["record"], hr["labels"]):
        reference = set(ptbxl.loc[int(record[2:])])
        assert labels and set(labels) <= reference, (record, labels, reference)
        exact += set(labels) == reference
    assert len(hr) == 10 and exact >= 9  # HR06002 is NORM + IRBBB in PTB-XL; NORM is not derivable there

    i = int(np.flatnonzero(ds.frame["record"] == "JS20002")[0])
    record, y = ds[i]
    assert record.signal.shape == (12, 5000) and record.fs == 500 and record.meta["units"] == "mV"
    assert record.meta["unmapped"] == ["251187003"] and "INVT" in record.meta["scp"]
    assert y.sum() == 0  # an unknown code blocks NORM; T-wave findings are form, not diagnostic
    # the same recording as the PTB-XL WFDB sample, sample for sample
    j = int(np.flatnonzero(ds.frame["record"] == "HR06000")[0])
    np.testing.assert_array_equal(ds[j][0].signal, read_wfdb(PTBXL_DIR / "wfdb_sample" / "HR06000").signal)

    rhythm = CinC2021(
        DATA / "cinc2021_sample", scp_statements=STATEMENTS, task="rhythm", labels=["AFIB", "STACH", "SR"]
    )
    assert rhythm.targets.shape == (50, 3)
    assert rhythm.targets[:, 1].sum() == (meta["dx_snomed"].str.contains("427084000")).sum() == 23


# --------------------------------------------------------------------------- CinC 2017
@needs_data
def test_cinc2017_split_is_stratified_deterministic_and_af_is_irregular():
    ds = CinC2017(DATA / "cinc2017")
    assert ds.frame["label"].value_counts().to_dict() == {"N": 3613, "O": 1688, "A": 501, "~": 198}
    train, val = ds.split("train"), ds.split("val")
    assert len(train) == 4800 and len(val) == 1200
    assert set(train.frame["record"]).isdisjoint(val.frame["record"])
    assert list(CinC2017(DATA / "cinc2017").split("val").frame["record"]) == list(val.frame["record"])
    share = val.frame["label"].value_counts(normalize=True) - ds.frame["label"].value_counts(normalize=True)
    assert share.abs().max() < 0.005
    with pytest.raises(DataError, match="A06001"):
        ds.split("test")

    record, target = ds[0]
    assert record.leads == ("I",) and record.fs == 300 and 9 <= record.duration_s <= 61
    assert ds.labels[target] == "N" and record.meta["label"] == "N"

    def rr_cv(rec) -> float:  # coefficient of variation of R-R intervals
        sos = butter(2, [5, 25], btype="band", fs=rec.fs, output="sos")
        x = sosfiltfilt(sos, rec.signal[0].astype(np.float64))
        x = x if np.abs(x.max()) >= np.abs(x.min()) else -x  # handheld leads are often inverted
        peaks, _ = find_peaks(x, distance=int(0.3 * rec.fs), height=0.4 * np.percentile(x, 99))
        rr = np.diff(peaks)
        return float(rr.std() / rr.mean())

    cv = {label: [rr_cv(train[i][0]) for i in np.flatnonzero(train.frame["label"] == label)[:15]] for label in "NA"}
    assert np.median(cv["A"]) > 2 * np.median(cv["N"]), cv


# --------------------------------------------------------------------------- MIT-BIH
@needs_data
def test_mitbih_record_100_beats_in_aami_classes_sit_on_r_peaks():
    ds = MITBIH(DATA / "wfdb_formats")
    assert ds.records == ["100"] and len(ds.split("test")) == 1  # 100 is in DS2
    with pytest.raises(DataError, match="train"):
        ds.split("train")
    record, beats = ds[0]
    assert record.leads == ("II", "V5") and record.fs == 360 and record.signal.shape == (2, 650000)
    names, counts = np.unique(beats.aami, return_counts=True)
    assert dict(zip(names, counts)) == {"N": 2239, "S": 33, "V": 1}  # the '+' rhythm mark is not a beat
    assert beats.symbol[beats.target == 1].tolist() == ["A"] * 33
    # annotations are on the R peak: the largest deflection within +-100 ms lies within 20 ms
    lead = record.lead("II") - np.median(record.lead("II"))
    inner = beats.sample[(beats.sample > 36) & (beats.sample < record.n_samples - 36)]
    windows = np.abs(lead[inner[:, None] + np.arange(-36, 37)])
    offset = np.abs(windows.argmax(axis=1) - 36)
    assert np.mean(offset <= 7) > 0.99
    rr = np.diff(beats.sample) / record.fs
    assert 0.7 < np.median(rr) < 0.9  # 2,273 beats in 30 min: ~76 bpm
