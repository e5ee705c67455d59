"""Regressions from the external fuzzing campaign (issue 18): each case is the reduced reproduction
of a defect, now a typed one-line error (or a clean read) instead of a traceback, an absurd value,
an unbounded allocation or an unsafe XML parse."""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from test_fuzz_video import _clip
from test_io_fuzz import write_edf
from test_io_readers import MUSE_LEADS, synthetic_ecg_uv, write_aecg, write_muse

from cardiodistill.errors import DataError, LeadError, SamplingRateError
from cardiodistill.io import read_ecg, read_video, write_video, write_wfdb
from cardiodistill.io.dicom import echo_view, write_echo_dicom
from cardiodistill.io.video import write_nifti_cine
from cardiodistill.records import EcgRecord
from cardiodistill.signals.leads import LEADS_12
from cardiodistill.signals.rpeaks import detect_r_peaks

IO = Path(__file__).resolve().parents[1] / "cardiodistill" / "io"


def _wfdb(folder: Path, fs: float = 250.0, leads=("I", "II"), seconds: float = 3.0) -> Path:
    uv = synthetic_ecg_uv(leads, fs, seconds)
    return write_wfdb(EcgRecord((uv / 1000).astype(np.float32), fs, leads), folder / "rec")


def _edit(path: Path, old: str, new: str) -> Path:
    path.write_text(path.read_text().replace(old, new, 1))
    return path


def _muse(folder: Path, fs: float = 250.0) -> Path:
    adc = {lead: np.rint(row / 4.88).astype(np.int16) for lead, row in zip(MUSE_LEADS, synthetic_ecg_uv(MUSE_LEADS, fs, 2.0))}
    return write_muse(folder / "m.xml", adc, fs, 4.88)


def _aecg(folder: Path) -> Path:
    uv = synthetic_ecg_uv(LEADS_12, 250.0, 2.0)
    return write_aecg(folder / "a.xml", {k: np.rint(r / 2.5).astype(int) for k, r in zip(LEADS_12, uv)}, 0.004, 0.0, 2.5)


def _one_line(err: pytest.ExceptionInfo, path: Path) -> str:
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    return message


# ----------------------------------------------------------------------------- untyped errors


def test_wfdb_signal_line_without_description(tmp_path):
    header = _edit(_wfdb(tmp_path), " 0 II\n", " 0\n")  # the second signal line loses its name
    rec = read_ecg(header, ecg_only=False)
    assert rec.leads == ("I", "signal 2")
    assert read_ecg(header).leads == ("I",) and read_ecg(header).meta["dropped_channels"] == ["signal 2"]


def test_npy_without_rate_or_leads_says_so_in_one_line(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((2, 500), np.float32))
    with pytest.raises(SamplingRateError, match="does not say its sampling rate; give fs") as err:
        read_ecg(path)
    _one_line(err, path)
    with pytest.raises(LeadError, match="does not name its leads; give leads"):
        read_ecg(path, fs=250)
    with pytest.raises(DataError, match="group does not apply to a NumPy .npy file"):
        read_ecg(path, fs=250, leads=["I", "II"], group="rhythm")
    proc = subprocess.run([sys.executable, "-m", "cardiodistill.cli", "inspect", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--fs" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_dicom_cine_with_one_pixel_spacing_value(tmp_path):
    path = write_echo_dicom(_clip(), tmp_path / "c.dcm", patient_id="P")
    ds = pydicom.dcmread(path)
    ds.PixelSpacing = [0.3]
    ds.save_as(path)
    with pytest.raises(DataError, match=r"pixel spacing .* is not two values") as err:
        read_video(path)
    _one_line(err, path)


@pytest.mark.parametrize("exponent", ["400", "-400", "12"])
def test_muse_sample_exponent_out_of_range(tmp_path, exponent):
    path = _edit(_muse(tmp_path), "<SampleExponent>0<", f"<SampleExponent>{exponent}<")
    with pytest.raises(SamplingRateError, match="implausible sampling rate|not a plausible ECG rate"):
        read_ecg(path)


def test_avi_claiming_four_billion_frames_reads_its_real_frames(tmp_path):
    data = bytearray(write_video(_clip(), tmp_path / "c.avi").read_bytes())
    assert data[24:28] == b"avih"
    data[48:52] = (0xFFFFFFFF).to_bytes(4, "little")  # dwTotalFrames: 49 TiB at 32x32 before the fix
    (tmp_path / "c.avi").write_bytes(bytes(data))
    clip = read_video(tmp_path / "c.avi")
    assert clip.frames.shape == (8, 32, 32)


def test_r_peaks_on_a_record_too_slow_for_the_filters(tmp_path):
    with pytest.raises(SamplingRateError, match="3.3 Hz is too low for R-peak detection"):
        detect_r_peaks(EcgRecord(np.random.default_rng(0).normal(size=(1, 40)).astype(np.float32), 3.3, ("I",)))
    header = _edit(_wfdb(tmp_path), " 250 750", " 3.3 750")
    with pytest.raises(SamplingRateError, match="3.3 Hz is not a plausible ECG rate") as err:
        read_ecg(header)
    _one_line(err, header)


# --------------------------------------------------------------------- absurd values accepted


@pytest.mark.parametrize("fs", ["1e-300", "1e300", "0.001", "100000"])
def test_wfdb_implausible_rates(tmp_path, fs):
    header = _edit(_wfdb(tmp_path), " 250 750", f" {fs} 750")
    with pytest.raises(SamplingRateError, match="not a plausible ECG rate"):
        read_ecg(header)


def test_edf_record_duration_of_1e_minus_300(tmp_path):
    uv = synthetic_ecg_uv(("I",), 250, 2.0)
    path = write_edf(tmp_path / "e.edf", {"ECG I": uv[0]}, 250)
    data = bytearray(path.read_bytes())
    data[244:252] = b"1e-300  "
    path.write_bytes(bytes(data))
    with pytest.raises(SamplingRateError, match="not a plausible ECG rate"):
        read_ecg(path)


def test_aecg_increment_giving_an_absurd_rate(tmp_path):
    path = _edit(_aecg(tmp_path), 'value="0.004" unit="s"', 'value="1e-300" unit="s"')
    with pytest.raises(SamplingRateError, match="not a plausible ECG rate"):
        read_ecg(path)


def test_dicom_cine_at_two_billion_frames_per_second(tmp_path):
    path = write_echo_dicom(_clip(), tmp_path / "c.dcm", patient_id="P")
    ds = pydicom.dcmread(path)
    ds.FrameTime = "5e-7"
    ds.save_as(path)
    with pytest.raises(SamplingRateError, match="frame rate of 2e\\+09 frames/s is not plausible"):
        read_video(path)


def test_nifti_with_a_zero_width_frame_and_zero_time_step(tmp_path):
    path = write_nifti_cine(_clip(), tmp_path / "c.nii")
    data = bytearray(path.read_bytes())
    data[42:44] = (0).to_bytes(2, "little")  # dim[1] = 0: frames zero pixels wide
    path.write_bytes(bytes(data))
    with pytest.raises(DataError):
        read_video(path)


def test_dicom_cine_claiming_more_frames_than_a_clip_can_hold(tmp_path):
    path = write_echo_dicom(_clip(), tmp_path / "c.dcm", patient_id="P")
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 2**31 - 1
    ds.save_as(path)
    with pytest.raises(DataError, match="2147483647 frames; a clip holds"):
        read_video(path)


def test_infinite_samples_after_scaling_are_refused(tmp_path):
    header = _edit(_wfdb(tmp_path), "1000(0)/mV", "1e-300(0)/mV")  # the ADC gain of lead I
    with pytest.raises(DataError, match="infinite|beyond any ECG amplifier"):
        read_ecg(header)


# ---------------------------------------------------------------------------- unbounded work


def test_oversized_wfdb_header_is_refused_quickly(tmp_path):
    header = _wfdb(tmp_path)
    with open(header, "a") as fh:
        fh.write("# padding comment line\n" * 200_000)  # 4.6 MB
    start = time.perf_counter()
    with pytest.raises(DataError, match="WFDB header is [0-9,]+ bytes; the limit is 1,048,576 bytes"):
        read_ecg(header)
    assert time.perf_counter() - start < 1.0


def test_header_with_thousands_of_signal_lines_is_refused_before_wfdb_parses_it(tmp_path):
    header = _wfdb(tmp_path)
    line = header.read_text().splitlines()[1]
    header.write_text(header.read_text() + "\n".join([line] * 16_000) + "\n")  # wfdb's parser: ~2 s
    start = time.perf_counter()
    with pytest.raises(DataError, match="describes 16002 signals; an ECG file holds 1-256"):
        read_ecg(header)
    assert time.perf_counter() - start < 1.0


def test_huge_xml_export_is_refused_before_it_is_read(tmp_path):
    path = _muse(tmp_path)
    with open(path, "r+b") as fh:
        fh.truncate(300 << 20)  # a sparse 300 MB file: nothing is allocated when it is refused
    with pytest.raises(DataError, match="GE MUSE XML file is 314,572,800 bytes; the limit is 33,554,432"):
        read_ecg(path, format="muse")


# ---------------------------------------------------------------------------------------- XML


def _utf16(path: Path, extra: str = "") -> Path:
    text = path.read_text(encoding="latin-1").replace('encoding="ISO-8859-1"', 'encoding="UTF-16"')
    text = text.replace('encoding="utf-8"', 'encoding="UTF-16"').replace("'utf-8'", "'UTF-16'")
    if extra:
        head, sep, rest = text.partition("?>")
        text = head + sep + extra + rest
    path.write_bytes(text.encode("utf-16"))
    return path


def test_utf16_muse_and_aecg_are_recognised_and_read(tmp_path):
    muse = read_ecg(_utf16(_muse(tmp_path)))
    assert muse.meta["format"] == "muse-xml" and muse.leads == LEADS_12 and muse.fs == 250
    aecg = read_ecg(_utf16(_aecg(tmp_path)))
    assert aecg.meta["format"] == "hl7-aecg" and aecg.leads == LEADS_12 and aecg.fs == 250


def test_utf16_muse_with_an_internal_entity_is_refused(tmp_path):
    path = _utf16(_muse(tmp_path), '\n<!DOCTYPE RestingECG [<!ENTITY a "aaaaaaaaaa">]>\n')
    with pytest.raises(DataError, match="declares a DOCTYPE/ENTITY, refused for safety"):
        read_ecg(path)


# ------------------------------------------------------------------------------ messages, ids


def test_messages_name_what_the_file_holds_not_python_keywords(tmp_path):
    header = _edit(_edit(_wfdb(tmp_path), " 0 I\n", " 0 PLETH\n"), " 0 II\n", " 0 ABP\n")
    with pytest.raises(DataError, match=r"holds no ECG lead, only other channels \(PLETH, ABP\)") as err:
        read_ecg(header)
    assert "ecg_only" not in str(err.value)
    echo = write_echo_dicom(_clip(), tmp_path / "echo.dcm", patient_id="P")
    with pytest.raises(DataError, match=r"holds an image \(Ultrasound Multi-frame Image Storage\), not an ECG waveform"):
        read_ecg(echo)


def test_free_text_series_description_never_becomes_the_view(tmp_path):
    clip = _clip()
    for description, view in (("DOE^JANE 1961-02-03", "unknown"), ("Apical 4 chamber - Doe^Jane", "a4c"), ("cine SA", "sax")):
        path = write_echo_dicom(clip, tmp_path / "c.dcm", patient_id="P")
        ds = pydicom.dcmread(path)
        ds.SeriesDescription = description
        ds.save_as(path)
        assert read_video(path).view == view
    assert echo_view("PLAX zoom") == "plax" and echo_view("2CH_cine") == "2ch" and echo_view("") == "unknown"


def test_readers_never_import_the_dispatcher():
    """Issue 14: the shared reader rules live in io/common.py, so no reader imports io/detect.py."""
    for module in IO.glob("*.py"):
        if module.name in ("detect.py", "__init__.py"):
            continue
        imported = {node.module for node in ast.walk(ast.parse(module.read_text())) if isinstance(node, ast.ImportFrom)}
        assert "detect" not in imported and "cardiodistill.io.detect" not in imported, module.name
