"""Clinical ECG readers: DICOM waveform, GE MUSE XML, HL7 aECG, EDF, WFDB, CSV / NumPy, and
content-based format detection.

Real files come from ``../shared/data`` (skipped when absent). MUSE and aECG files are built
here from a known signal by small writers that follow each format's specification, so the
reader is checked against the specification rather than against itself.
"""

from __future__ import annotations

import base64
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cardiodistill.errors import DataError, LeadError, SamplingRateError
from cardiodistill.io import detect_format, read_ecg
from cardiodistill.io.dicom_waveform import read_dicom_ecg
from cardiodistill.io.edf import read_edf_ecg
from cardiodistill.io.hl7aecg import HL7_NS, read_hl7_aecg
from cardiodistill.io.muse import read_muse_xml
from cardiodistill.io.tabular import read_csv_ecg, read_npy_ecg, write_csv_ecg
from cardiodistill.io.wfdb import read_wfdb
from cardiodistill.records import EcgRecord
from cardiodistill.signals.leads import LEADS_12

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not available")
WFDB_DIR = DATA / "wfdb_formats"
DICOM_ECG = DATA / "dicom" / "waveform_ecg.dcm"
EDF_FILE = WFDB_DIR / "test_generator_2.edf"
MUSE_LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")  # what MUSE stores


# ------------------------------------------------------------------------ fixtures and writers


def synthetic_ecg_uv(leads: tuple[str, ...], fs: float, seconds: float, seed: int = 0) -> np.ndarray:
    """A beat-like test signal [n_leads, n] in microvolts: Gaussian P, QRS and T waves at 75 bpm
    with lead-specific amplitudes (about 1 mV R waves), plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * fs)) / fs
    phase = (t % 0.8)[None, :]
    gains = rng.uniform(0.4, 1.5, size=(len(leads), 3)) * rng.choice([-1, 1], size=(len(leads), 1))

    def wave(centre, width):
        return np.exp(-0.5 * ((phase - centre) / width) ** 2)

    beat = (
        gains[:, :1] * 150 * wave(0.1, 0.02)
        + gains[:, 1:2] * 1000 * wave(0.25, 0.012)
        + gains[:, 2:] * 300 * wave(0.5, 0.04)
    )
    return beat + rng.normal(0, 10, size=beat.shape)


def write_muse(
    path: Path, adc: dict[str, np.ndarray], fs: float, uv_per_bit: float, *, median: dict | None = None, extra: str = ""
) -> Path:
    """A GE MUSE XML export: <RestingECG> with patient/test demographics and one <Waveform>
    per type holding base64 little-endian int16 <WaveFormData> per <LeadData>."""
    root = ET.Element("RestingECG")
    demo = ET.SubElement(root, "PatientDemographics")
    for tag, value in (("PatientID", "PT-0042"), ("PatientAge", "63"), ("AgeUnits", "YEARS"), ("Gender", "FEMALE")):
        ET.SubElement(demo, tag).text = value
    test = ET.SubElement(root, "TestDemographics")
    ET.SubElement(test, "AcquisitionDate").text = "03-14-2021"
    for kind, leads in (("Median", median), ("Rhythm", adc)):  # median first: the reader must pick by type
        if leads is None:
            continue
        wf = ET.SubElement(root, "Waveform")
        ET.SubElement(wf, "WaveformType").text = kind
        ET.SubElement(wf, "SampleBase").text = f"{fs:g}"
        ET.SubElement(wf, "SampleExponent").text = "0"
        for lead, values in leads.items():
            ld = ET.SubElement(wf, "LeadData")
            ET.SubElement(ld, "LeadByteCountTotal").text = str(2 * values.size)
            ET.SubElement(ld, "LeadSampleCountTotal").text = str(values.size)
            ET.SubElement(ld, "LeadAmplitudeUnitsPerBit").text = f"{uv_per_bit:g}"
            ET.SubElement(ld, "LeadAmplitudeUnits").text = "MICROVOLTS"
            ET.SubElement(ld, "LeadID").text = lead
            ET.SubElement(ld, "WaveFormData").text = base64.b64encode(values.astype("<i2").tobytes()).decode("ascii")
    text = ET.tostring(root, encoding="unicode")
    path.write_text(f'<?xml version="1.0" encoding="ISO-8859-1"?>\n{extra}{text}', encoding="latin-1")
    return path


def write_aecg(
    path: Path,
    digits: dict[str, np.ndarray],
    increment_s: float,
    origin_uv: float,
    scale_uv: float,
    *,
    median: dict | None = None,
    increment_unit: str = "s",
) -> Path:
    """An HL7 v3 aECG: <AnnotatedECG> / component / series (RHYTHM) / component / sequenceSet
    with a GLIST time sequence and one SLIST_PQ sequence per lead (physical = origin + scale *
    digits); an optional derivedSeries of median beats; a trial subject with id and sex."""
    ns, xsi = HL7_NS, "http://www.w3.org/2001/XMLSchema-instance"
    ET.register_namespace("", ns)
    ET.register_namespace("xsi", xsi)

    def el(parent, tag, **attrs):
        return ET.SubElement(parent, f"{{{ns}}}{tag}", {k: str(v) for k, v in attrs.items()})

    def sequence_set(parent, leads):
        seq_set = el(el(parent, "component"), "sequenceSet")
        seq = el(el(seq_set, "component"), "sequence")
        el(seq, "code", code="TIME_RELATIVE", codeSystem="2.16.840.1.113883.5.4")
        value = el(seq, "value", **{f"{{{xsi}}}type": "GLIST_PQ"})
        el(value, "head", value="0", unit=increment_unit)
        el(value, "increment", value=f"{increment_s * (1000 if increment_unit == 'ms' else 1):g}", unit=increment_unit)
        for lead, ints in leads.items():
            seq = el(el(seq_set, "component"), "sequence")
            el(seq, "code", code=f"MDC_ECG_LEAD_{lead.upper()}", codeSystem="2.16.840.1.113883.6.24")
            value = el(seq, "value", **{f"{{{xsi}}}type": "SLIST_PQ"})
            el(value, "origin", value=f"{origin_uv:g}", unit="uV")
            el(value, "scale", value=f"{scale_uv:g}", unit="uV")
            el(value, "digits").text = " ".join(str(int(v)) for v in ints)

    root = ET.Element(f"{{{ns}}}AnnotatedECG")
    el(root, "code", code="93000", codeSystem="2.16.840.1.113883.6.12")
    el(el(root, "effectiveTime"), "low", value="20210314101500")
    subject = el(el(el(el(el(root, "componentOf"), "timepointEvent"), "componentOf"), "subjectAssignment"), "subject")
    trial = el(subject, "trialSubject")
    el(trial, "id", root="2.16.840.1.113883.3.1", extension="SUBJ-7")
    el(el(trial, "subjectDemographicPerson"), "administrativeGenderCode", code="M")
    series = el(el(root, "component"), "series")
    el(series, "code", code="RHYTHM", codeSystem="2.16.840.1.113883.5.4")
    sequence_set(series, digits)
    if median is not None:
        derived = el(el(series, "derivation"), "derivedSeries")
        el(derived, "code", code="REPRESENTATIVE_BEAT", codeSystem="2.16.840.1.113883.5.4")
        sequence_set(derived, median)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path


@pytest.fixture
def muse_case(tmp_path):
    uv = synthetic_ecg_uv(MUSE_LEADS, 500.0, 10.0)
    per_bit = 4.88
    adc = {lead: np.rint(row / per_bit).astype(np.int16) for lead, row in zip(MUSE_LEADS, uv)}
    median = {lead: a[:600] for lead, a in adc.items()}
    return write_muse(tmp_path / "muse.xml", adc, 500.0, per_bit, median=median), uv, per_bit


@pytest.fixture
def aecg_case(tmp_path):
    leads = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
    uv = synthetic_ecg_uv(leads, 500.0, 4.0, seed=3)
    origin, scale = 12.0, 2.5
    digits = {lead: np.rint((row - origin) / scale).astype(int) for lead, row in zip(leads, uv)}
    median = {lead: d[:500] for lead, d in digits.items()}
    return write_aecg(tmp_path / "ecg.xml", digits, 0.002, origin, scale, median=median), uv, origin, scale


def robust_ptp(signal: np.ndarray) -> np.ndarray:
    """Per-lead 0.5th-99.5th percentile range (mV): robust to a spike, big enough to see QRS."""
    p_lo, p_hi = np.nanpercentile(signal, [0.5, 99.5], axis=1)
    return p_hi - p_lo


# ------------------------------------------------------------------------------- DICOM waveform


@needs_data
def test_dicom_rhythm_group_is_12_leads_in_mv_with_sensitivity_applied():
    rec = read_dicom_ecg(DICOM_ECG)
    assert rec.leads == LEADS_12 and rec.fs == 1000.0 and rec.signal.shape == (12, 10_000)
    assert rec.signal.dtype == np.float32
    assert rec.meta["group"] == "RHYTHM" and rec.meta["units_found"] == ["uV"] * 12
    assert rec.meta["original_leads"][0] == "Lead I" and rec.meta["patient_id"] == "642341"
    # Independent check of the scaling: raw int16 * ChannelSensitivity (1.25 uV) * correction (1) + baseline (0)
    group = pydicom.dcmread(DICOM_ECG).WaveformSequence[0]  # 16-bit signed, channels interleaved
    raw = np.frombuffer(group.WaveformData, "<i2")[: 10_000 * 12].reshape(10_000, 12).T
    np.testing.assert_allclose(rec.signal, raw * 1.25e-3, atol=1e-6)
    ptp = robust_ptp(rec.signal)
    assert ((ptp > 0.2) & (ptp < 10)).all(), ptp  # 0.47-2.2 mV measured
    # Einthoven holds in the file: III = II - I to float precision (uniform scaling of all leads)
    np.testing.assert_allclose(rec.lead("III"), rec.lead("II") - rec.lead("I"), atol=1e-5)


@needs_data
def test_dicom_median_group_is_one_beat():
    rec = read_dicom_ecg(DICOM_ECG, group="median")
    assert rec.signal.shape == (12, 1200) and rec.meta["group"] == "MEDIAN BEAT"
    # The median beat of lead II peaks where the rhythm R waves peak in amplitude (~1 mV).
    rhythm = read_dicom_ecg(DICOM_ECG)
    assert abs(rec.lead("II").max() - np.percentile(rhythm.lead("II"), 99.9)) < 0.3
    with pytest.raises(DataError, match="group must be"):
        read_dicom_ecg(DICOM_ECG, group="beat")


# ------------------------------------------------------------------------------------- WFDB


@needs_data
@pytest.mark.parametrize(
    "path, shape, fs, leads",
    [
        ("wfdb_formats/100", (2, 650_000), 360.0, ("II", "V5")),
        ("wfdb_formats/s0010_re", (15, 38_400), 1000.0, LEADS_12 + ("vx", "vy", "vz")),
        ("wfdb_formats/a103l", (2, 82_500), 250.0, ("II", "V")),
        ("wfdb_formats/test01_00s", (4, 4000), 500.0, None),
        ("cinc2017/A00001", (1, 9000), 300.0, ("ECG",)),
        ("ptbxl/wfdb_sample/HR06000", (12, 5000), 500.0, LEADS_12),
        ("cinc2021_sample/wfdb/E07500", (12, 5000), 500.0, LEADS_12),
    ],
)
def test_real_wfdb_records_read_through_read_ecg(path, shape, fs, leads):
    rec = read_ecg(DATA / f"{path}.hea")
    assert rec.signal.shape == shape and rec.fs == fs and rec.meta["format"] == "wfdb"
    if leads is not None:
        assert rec.leads == leads
    ptp = robust_ptp(rec.signal)
    assert ((ptp > 0.2) & (ptp < 10)).all(), ptp


@needs_data
def test_wfdb_non_ecg_channel_dropped_only_when_asked():
    rec = read_ecg(WFDB_DIR / "a103l.mat")  # the .mat signal file finds its sibling header
    assert rec.leads == ("II", "V") and rec.meta["dropped_channels"] == ["PLETH"]
    with pytest.raises(DataError, match="'PLETH' has units 'NU'"):
        read_wfdb(WFDB_DIR / "a103l")  # all channels: PLETH is not a voltage
    with pytest.raises(DataError, match=r"holds no ECG lead, only other channels \(col 0, col 1, col 2\)"):
        read_ecg(WFDB_DIR / "flac_3_constant.hea")
    flac = read_ecg(WFDB_DIR / "flac_3_constant.hea", ecg_only=False)  # FLAC-compressed format 508
    assert flac.signal.shape == (3, 5_600_000) and np.isfinite(flac.signal).all()


@needs_data
def test_mitbih_annotated_r_peaks_are_lead_ii_maxima():
    import wfdb

    rec = read_ecg(WFDB_DIR / "100.hea")
    ann = wfdb.rdann(str(WFDB_DIR / "100"), "atr")
    r = ann.sample[np.isin(ann.symbol, ["N"])][5:200]
    windows = rec.lead("II")[r[:, None] + np.arange(-36, 37)[None, :]]  # +-100 ms
    offset = np.abs(windows.argmax(axis=1) - 36)
    assert np.median(offset) <= 3  # the cardiologist's beat marks sit on the lead-II R peak


# --------------------------------------------------------------------------------------- EDF


@needs_data
def test_edf_keeps_the_ecg_channel_and_scales_physical_range():
    rec = read_edf_ecg(EDF_FILE)
    assert rec.leads == ("ECG",) and rec.fs == 200.0 and rec.n_samples == 600 * 200
    assert "EDF Annotations" not in rec.meta["dropped_channels"] and "sine 1 Hz" in rec.meta["dropped_channels"]
    assert rec.meta["edf_type"] == "EDF+C" and rec.meta["units_found"] == ["uV"]
    every = read_edf_ecg(EDF_FILE, ecg_only=False)
    assert len(every.leads) == 11
    sine = every.lead("sine 1 Hz")  # in its own unit (uV): digital -32768..32767 -> -1000..1000 uV
    assert every.meta["units"][every.leads.index("sine 1 Hz")] == "uV"
    assert 99 < sine.max() < 101 and -101 < sine.min() < -99  # the generator's 100 uV sine
    crossings = np.count_nonzero(np.diff(np.signbit(sine[: 200 * 60]).astype(int)) != 0)
    assert 118 <= crossings <= 122  # 1 Hz: two zero crossings per second for 60 s


@needs_data
def test_edf_truncated_is_a_data_error(tmp_path):
    cut = tmp_path / "cut.edf"
    cut.write_bytes(EDF_FILE.read_bytes()[:100_000])
    with pytest.raises(DataError, match="truncated: header says 600 data records"):
        read_ecg(cut)


# ------------------------------------------------------------------------------------- MUSE


def test_muse_round_trip_within_one_step_and_derives_limb_leads(muse_case):
    path, uv, per_bit = muse_case
    rec = read_muse_xml(path)
    assert rec.leads == LEADS_12 and rec.fs == 500.0 and rec.n_samples == 5000
    assert rec.meta["derived_leads"] == ["III", "aVR", "aVL", "aVF"]
    for i, lead in enumerate(MUSE_LEADS):
        err = np.abs(rec.lead(lead) - uv[i] / 1000).max()
        assert err <= per_bit / 2000 + 1e-6, (lead, err)  # half a quantisation step, in mV
    np.testing.assert_allclose(rec.lead("III"), rec.lead("II") - rec.lead("I"), atol=1e-6)
    np.testing.assert_allclose(rec.lead("aVR"), -(rec.lead("I") + rec.lead("II")) / 2, atol=1e-6)
    assert rec.meta["patient_id"] == "PT-0042" and rec.meta["patient_sex"] == "FEMALE"
    assert rec.meta["patient_age"] == "63"
    median = read_muse_xml(path, waveform="median")
    assert median.n_samples == 600
    np.testing.assert_array_equal(median.signal, rec.signal[:, :600])
    assert detect_format(path) == "muse"


def test_muse_refuses_doctype_and_bad_payloads(tmp_path):
    adc = {"I": np.arange(10, dtype=np.int16), "II": np.arange(10, dtype=np.int16)}
    bomb = write_muse(tmp_path / "bomb.xml", adc, 500, 1.0, extra='<!DOCTYPE r [<!ENTITY a "aaaa">]>\n')
    with pytest.raises(DataError, match="DOCTYPE/ENTITY, refused"):
        read_muse_xml(bomb)
    short = write_muse(tmp_path / "short.xml", {"I": adc["I"], "II": adc["II"][:7]}, 500, 1.0)
    with pytest.raises(DataError, match="different or zero sample counts"):
        read_muse_xml(short)
    bad = tmp_path / "bad.xml"
    bad.write_text(
        write_muse(tmp_path / "ok.xml", adc, 500, 1.0)
        .read_text(encoding="latin-1")
        .replace("<SampleBase>500", "<SampleBase>abc")
    )
    with pytest.raises(DataError, match="SampleBase is 'abc'"):
        read_muse_xml(bad)


# ------------------------------------------------------------------------------------- aECG


def test_aecg_round_trip_origin_plus_scale_times_digits(aecg_case):
    path, uv, _origin, scale = aecg_case
    rec = read_hl7_aecg(path)
    assert rec.leads == LEADS_12 and rec.fs == 500.0 and rec.n_samples == 2000
    assert rec.meta["original_leads"][3] == "MDC_ECG_LEAD_AVR"
    np.testing.assert_allclose(rec.signal, uv / 1000, atol=scale / 2000 + 1e-6)
    assert rec.meta["patient_id"] == "SUBJ-7" and rec.meta["patient_sex"] == "M"
    assert rec.meta["acquisition_time"] == "20210314101500"
    median = read_hl7_aecg(path, series="median")
    assert median.n_samples == 500
    np.testing.assert_array_equal(median.signal, rec.signal[:, :500])
    assert detect_format(path) == "hl7aecg"


def test_aecg_interval_in_ms_and_missing_time_sequence(tmp_path):
    digits = {"I": np.arange(100), "II": np.arange(100) * 2}
    rec = read_hl7_aecg(write_aecg(tmp_path / "ms.xml", digits, 1 / 250, 0.0, 1000.0, increment_unit="ms"))
    assert rec.fs == pytest.approx(250.0) and rec.lead("II")[3] == pytest.approx(6.0)  # 6 * 1000 uV
    text = (tmp_path / "ms.xml").read_text().replace("TIME_RELATIVE", "SOMETHING_ELSE")
    (tmp_path / "notime.xml").write_text(text)
    with pytest.raises(SamplingRateError, match="TIME_ABSOLUTE/TIME_RELATIVE"):
        read_hl7_aecg(tmp_path / "notime.xml")


# ---------------------------------------------------------------------------------- CSV / NPY


def test_csv_round_trip_and_fs_from_time_column(tmp_path):
    uv = synthetic_ecg_uv(LEADS_12, 250.0, 4.0)
    rec = EcgRecord(uv / 1000, 250.0, LEADS_12, meta={})
    path = write_csv_ecg(rec, tmp_path / "ecg.csv")
    back = read_csv_ecg(path)  # fs inferred from time_s, units guessed as mV
    assert back.fs == 250.0 and back.leads == LEADS_12 and back.meta["units_found"] == "mV"
    np.testing.assert_allclose(back.signal, rec.signal, atol=1e-6)
    assert read_ecg(path).fs == 250.0 and detect_format(path) == "csv"


def test_csv_units_guessed_ms_time_missing_cells_and_aliases(tmp_path):
    uv = np.rint(synthetic_ecg_uv(("I", "II"), 500.0, 2.0)).astype(int)
    lines = ["time_ms;Lead I;D2"] + [f"{2 * i};{a};{b}" for i, (a, b) in enumerate(uv.T)]
    lines[10] = "18;;-5"  # an empty cell is a missing sample
    (tmp_path / "uv.csv").write_text("\n".join(lines) + "\n")
    rec = read_csv_ecg(tmp_path / "uv.csv")
    assert rec.fs == 500.0 and rec.leads == ("I", "II") and rec.meta["units_found"] == "uV"
    assert np.isnan(rec.signal[0, 9]) and rec.meta["n_missing"] == 1
    assert rec.signal[1, 9] == pytest.approx(-0.005)
    np.testing.assert_allclose(rec.signal[:, 20:], uv[:, 20:] / 1000, atol=1e-6)


def test_csv_errors(tmp_path):
    good = "I,II\n" + "\n".join(f"{np.sin(i / 5):.3f},{np.cos(i / 5):.3f}" for i in range(200)) + "\n"

    def case(name, text, **kw):
        (tmp_path / name).write_text(text)
        return lambda: read_csv_ecg(tmp_path / name, **kw)

    with pytest.raises(LeadError, match="unknown lead name 'PLETH'"):
        case("pleth.csv", good.replace("I,II", "I,PLETH"), fs=100)()
    with pytest.raises(LeadError, match="no header row"):
        case("nohead.csv", good.split("\n", 1)[1], fs=100)()
    with pytest.raises(SamplingRateError, match=r"give fs \(--fs\)"):
        case("nofs.csv", good)()
    with pytest.raises(SamplingRateError, match="not uniformly sampled"):
        case("jitter.csv", "t,I\n0,0.1\n0.01,0.5\n0.03,-0.2\n0.04,0.3\n")()
    with pytest.raises(DataError, match="leads with no valid samples: II"):
        case("nan.csv", "I,II\n" + "\n".join(f"{np.sin(i)},nan" for i in range(50)), fs=100)()
    with pytest.raises(DataError, match="cannot guess the units"):
        case("volts.csv", "I\n" + "\n".join(f"{np.sin(i) * 1e-3}" for i in range(50)), fs=100)()
    with pytest.raises(DataError, match="non-numeric"):
        case("text.csv", good.replace("0.000,1.000", "abc,1.000"), fs=100)()
    assert (
        case("v.csv", "I\n" + "\n".join(f"{np.sin(i) * 1e-3}" for i in range(50)), fs=100, units="V")().signal.max()
        > 0.9
    )


def test_npy_either_orientation(tmp_path):
    uv = synthetic_ecg_uv(LEADS_12, 500.0, 2.0).astype(np.float32)
    np.save(tmp_path / "a.npy", uv)
    np.save(tmp_path / "b.npy", uv.T)
    a = read_npy_ecg(tmp_path / "a.npy", fs=500, leads=LEADS_12)
    b = read_ecg(tmp_path / "b.npy", fs=500, leads=LEADS_12)
    assert a.meta["units_found"] == "uV" and b.meta["transposed"]
    np.testing.assert_allclose(a.signal, uv / 1000, rtol=1e-6)
    np.testing.assert_array_equal(a.signal, b.signal)
    with pytest.raises(LeadError, match="lead axis"):
        read_npy_ecg(tmp_path / "a.npy", fs=500, leads=LEADS_12[:5])


# -------------------------------------------------------------------------- format detection


@needs_data
def test_detect_format_by_content_even_with_wrong_extensions(tmp_path, muse_case, aecg_case):
    expected = {
        DICOM_ECG: "dicom",
        EDF_FILE: "edf",
        WFDB_DIR / "100.hea": "wfdb",
        WFDB_DIR / "100.dat": "wfdb",
        WFDB_DIR / "a103l.mat": "wfdb",
        DATA / "cinc2017" / "A00002.mat": "wfdb",
        DATA / "ptbxl" / "wfdb_sample" / "HR06001.hea": "wfdb",
        muse_case[0]: "muse",
        aecg_case[0]: "hl7aecg",
    }
    for path, fmt in expected.items():
        assert detect_format(path) == fmt, path
    np.save(tmp_path / "x.npy", np.zeros((2, 10)))
    write_csv_ecg(read_ecg(DICOM_ECG), tmp_path / "x.csv")
    renamed = {
        DICOM_ECG: ("a.txt", "dicom"),
        EDF_FILE: ("b.dat", "edf"),
        muse_case[0]: ("c.csv", "muse"),
        aecg_case[0]: ("d.bin", "hl7aecg"),
        tmp_path / "x.npy": ("e.csv", "npy"),
        tmp_path / "x.csv": ("f.xml", "csv"),
        WFDB_DIR / "100.hea": ("g.txt", "wfdb"),
    }
    for source, (name, fmt) in renamed.items():
        shutil.copyfile(source, tmp_path / name)
        assert detect_format(tmp_path / name) == fmt, name
    rec = read_ecg(tmp_path / "a.txt")  # read through the detected format
    assert rec.leads == LEADS_12 and rec.fs == 1000.0
    with pytest.raises(DataError, match="must be named <record>.hea"):
        read_ecg(tmp_path / "g.txt")  # a renamed WFDB header no longer names its record


def test_unreadable_inputs_are_one_line_data_errors(tmp_path):
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "garbage.bin").write_bytes(np.random.default_rng(0).bytes(3000))
    (tmp_path / "other.xml").write_text("<?xml version='1.0'?><svg><g/></svg>")
    cases = {
        tmp_path / "empty.csv": "file is empty",
        tmp_path / "garbage.bin": "cannot tell the format",
        tmp_path / "other.xml": r"XML root element <svg>",
        tmp_path / "missing.dcm": "file not found",
    }
    for path, message in cases.items():
        with pytest.raises(DataError, match=message) as info:
            read_ecg(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(DataError, match="not a DICOM file"):
        read_dicom_ecg(tmp_path / "garbage.bin")
    with pytest.raises(DataError, match="not an EDF file"):
        read_edf_ecg(tmp_path / "garbage.bin")


@needs_data
def test_truncated_and_lying_files(tmp_path):
    data = DICOM_ECG.read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as info:
        read_ecg(tmp_path / "cut.dcm")
    assert "cut.dcm" in str(info.value)
    for suffix in (".hea", ".dat"):
        shutil.copyfile(WFDB_DIR / f"test01_00s{suffix}", tmp_path / f"lie{suffix}")
    header = (tmp_path / "lie.hea").read_text().replace("test01_00s", "lie")
    (tmp_path / "lie.hea").write_text(header.replace("500 4000", "500 40000", 1))  # claims 10x the samples
    with pytest.raises(DataError, match="truncated: the header says 40000 samples, the file holds 4000"):
        read_ecg(tmp_path / "lie.hea")


def test_multi_segment_wfdb_record_reads_as_one(tmp_path):
    """A fixed-layout multi-segment record (master header naming two segments) reads as one record."""
    from cardiodistill.io import read_ecg
    from cardiodistill.io.wfdb import write_wfdb
    from cardiodistill.records import EcgRecord

    rng = np.random.default_rng(0)
    parts = [rng.normal(0, 0.3, (2, n)).astype(np.float32) for n in (1500, 1000)]
    for k, part in enumerate(parts, start=1):
        write_wfdb(EcgRecord(part, 500.0, ("I", "II")), tmp_path / f"seg_{k}")
    # master header: "name/segments signals fs samples", then one "segment length" line per segment
    (tmp_path / "multi.hea").write_text("multi/2 2 500 2500\nseg_1 1500\nseg_2 1000\n")
    record = read_ecg(tmp_path / "multi.hea")
    assert record.leads == ("I", "II") and record.fs == 500 and record.n_samples == 2500
    assert np.abs(record.signal - np.concatenate(parts, axis=1)).max() <= 0.0005 + 1e-6
