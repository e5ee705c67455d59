"""Clinical-format writers and readers: WFDB and DICOM round trips, atomic output, one-line errors."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import wfdb
from pydicom.pixels import apply_color_lut, get_decoder
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, UltrasoundMultiFrameImageStorage

import cardiodistill.io.wfdb as wfdb_io
from cardiodistill.errors import DataError, SamplingRateError
from cardiodistill.io import (
    atomic_path,
    read_video_dicom,
    read_wfdb,
    save_npz_atomic,
    write_echo_dicom,
    write_json_atomic,
    write_wfdb,
)
from cardiodistill.records import EcgRecord, VideoClip
from cardiodistill.signals.leads import LEADS_12, LIMB_LEADS

REAL_DICOM = Path(__file__).resolve().parents[2] / "shared" / "data" / "dicom"


def _ecg(leads, fs: float, seconds: float = 10.0, seed: int = 0) -> EcgRecord:
    """A band-limited random signal of a few mV: a worst case for quantisation (no flat parts)."""
    rng = np.random.default_rng(seed)
    n = int(fs * seconds)
    t = np.arange(n) / fs
    freqs = rng.uniform(0.5, 40.0, size=(len(leads), 8, 1))
    amps = rng.uniform(0.05, 0.4, size=(len(leads), 8, 1))
    phases = rng.uniform(0, 2 * np.pi, size=(len(leads), 8, 1))
    signal = (amps * np.sin(2 * np.pi * freqs * t + phases)).sum(axis=1)
    return EcgRecord(signal=signal.astype(np.float32), fs=fs, leads=tuple(leads))


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]


# ----------------------------------------------------------------------------------- WFDB


def test_wfdb_12_lead_round_trip_through_wfdb_itself(tmp_path):
    rec = _ecg(LEADS_12, fs=500.0)
    comments = ["Age: 63", "Sex: M", "Dx: sinus rhythm; LVH"]
    header = write_wfdb(rec, tmp_path / "p00001", comments=comments)
    assert header == tmp_path / "p00001.hea"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p00001.dat", "p00001.hea"]

    raw = wfdb.rdrecord(str(tmp_path / "p00001"))  # the reference reader, not ours
    assert raw.record_name == "p00001"
    assert raw.fs == 500 and raw.sig_len == 5000 and raw.n_sig == 12
    assert raw.sig_name == list(LEADS_12)
    assert raw.units == ["mV"] * 12
    assert raw.fmt == ["16"] * 12 and raw.adc_gain == [1000.0] * 12 and raw.baseline == [0] * 12
    assert raw.comments == comments
    # Quantisation error is at most half a step (0.5 uV) plus float32 rounding of the input.
    assert np.abs(raw.p_signal.T - rec.signal).max() <= 0.5e-3 + 1e-6

    back = read_wfdb(header)  # the .hea suffix is accepted too
    assert back.leads == LEADS_12 and back.fs == 500.0 and back.signal.dtype == np.float32
    assert np.abs(back.signal - rec.signal).max() <= 0.5e-3 + 1e-6
    assert back.meta["comments"] == comments
    assert back.meta["fields"] == {"age": "63", "sex": "M", "dx": "sinus rhythm; LVH"}
    assert back.source == str(header)


@pytest.mark.parametrize("leads", [("I",), LIMB_LEADS], ids=["1-lead", "6-lead"])
def test_wfdb_handheld_layouts_at_300_hz(tmp_path, leads):
    rec = _ecg(leads, fs=300.0, seconds=30.0, seed=len(leads))
    write_wfdb(rec, tmp_path / "handheld", resolution_uv=2.5)
    raw = wfdb.rdrecord(str(tmp_path / "handheld"))
    assert raw.fs == 300 and raw.sig_name == list(leads) and raw.sig_len == 9000
    assert raw.adc_gain == [400.0] * len(leads)  # 1000 / 2.5 ADC units per mV
    err = np.abs(raw.p_signal.T - rec.signal).max()
    assert 0.5 * 2.5e-3 * 0.5 < err <= 0.5 * 2.5e-3 + 1e-6  # the step really is 2.5 uV
    back = read_wfdb(tmp_path / "handheld")
    assert back.leads == leads and back.fs == 300.0


def test_wfdb_clips_out_of_range_with_a_warning_and_keeps_nan_as_missing(tmp_path):
    signal = np.zeros((2, 10), dtype=np.float32)
    signal[0, 2], signal[0, 3], signal[1, 4] = 40.0, -50.0, 32.0  # +-32.767 mV fits at 1 uV
    signal[1, 5] = np.nan
    rec = EcgRecord(signal=signal, fs=500.0, leads=("I", "II"))
    with pytest.warns(RuntimeWarning, match=r"2 samples exceed \+-32.767 mV .* clipped"):
        write_wfdb(rec, tmp_path / "big")
    digital = wfdb.rdrecord(str(tmp_path / "big"), physical=False).d_signal.T
    assert digital[0, 2] == 32767 and digital[0, 3] == -32767  # saturated, sign kept, no wrap
    assert digital[1, 4] == 32000
    assert digital[1, 5] == -32768  # WFDB's missing-sample marker
    back = read_wfdb(tmp_path / "big")
    assert back.signal[0, 2] == pytest.approx(32.767) and back.signal[0, 3] == pytest.approx(-32.767)
    assert np.isnan(back.signal[1, 5]) and np.isnan(back.signal).sum() == 1

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an in-range record writes without any warning
        write_wfdb(_ecg(("I",), 500.0, seconds=1.0), tmp_path / "small")


def test_read_wfdb_canonicalises_lead_names_and_converts_units(tmp_path):
    d_signal = np.array([[1000, -500, 250, 7]] * 3, dtype=np.int16)  # [n_samples, n_channels]
    wfdb.wrsamp(
        "other",
        fs=250,
        units=["uV", "mV", "V", "mV"],
        sig_name=["i", "avr", "v1", "MLII"],
        d_signal=d_signal,
        fmt=["16"] * 4,
        adc_gain=[1.0, 1000.0, 1000.0, 100.0],
        baseline=[0] * 4,
        write_dir=str(tmp_path),
    )
    rec = read_wfdb(tmp_path / "other")
    assert rec.leads == ("I", "aVR", "V1", "II")  # MLII (modified lead II) is lead II
    # 1000 uV = 1 mV; -500 / 1000 mV; 250 / 1000 V = 250 mV; 7 / 100 mV.
    np.testing.assert_allclose(rec.signal[:, 0], [1.0, -0.5, 250.0, 0.07], rtol=1e-6)


def test_read_wfdb_rejects_unknown_units(tmp_path):
    adc = np.zeros((5, 1), np.int16)
    wfdb.wrsamp("bp", 100, ["mmHg"], ["ABP"], d_signal=adc, fmt=["16"], adc_gain=[1], baseline=[0], write_dir=tmp_path)
    with pytest.raises(DataError, match=r"bp\.hea: signal 'ABP' has units 'mmHg'"):
        read_wfdb(tmp_path / "bp")


def test_write_wfdb_is_atomic_when_the_write_fails(tmp_path, monkeypatch):
    old = _ecg(LEADS_12, 500.0, seconds=2.0, seed=1)
    write_wfdb(old, tmp_path / "rec", comments=["Age: 40"])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    real_header = wfdb_io._format16_header

    def header_then_fail(*args, **kwargs):  # the .dat is fully written, then the disk fills up
        real_header(*args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(wfdb_io, "_format16_header", header_then_fail)
    new = _ecg(LEADS_12, 500.0, seconds=4.0, seed=2)
    with pytest.raises(OSError, match="disk full"):
        write_wfdb(new, tmp_path / "rec", comments=["Age: 41"])
    with pytest.raises(OSError, match="disk full"):
        write_wfdb(new, tmp_path / "fresh")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # old kept, nothing new
    assert read_wfdb(tmp_path / "rec").meta["comments"] == ["Age: 40"]


def test_atomic_helpers_replace_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".tmp-") and tmp.suffix == ".txt"
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old" and _no_temp_files(tmp_path)
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and _no_temp_files(tmp_path)
    (tmp_path / "plain.txt").write_text("x")  # same permissions as a plain write (not mkstemp's 0600)
    assert os.stat(target).st_mode == os.stat(tmp_path / "plain.txt").st_mode

    write_json_atomic(tmp_path / "m.json", {"auc": np.float32(0.75), "n": np.int64(3), "v": np.arange(2)})
    assert json.loads((tmp_path / "m.json").read_text()) == {"auc": 0.75, "n": 3, "v": [0, 1]}
    save_npz_atomic(tmp_path / "a.npz", x=np.arange(3))
    with np.load(tmp_path / "a.npz") as z:
        np.testing.assert_array_equal(z["x"], np.arange(3))
    with pytest.raises(ValueError):
        save_npz_atomic(tmp_path / "o.npz", x=np.array([{}], dtype=object))  # no pickles
    assert not (tmp_path / "o.npz").exists() and _no_temp_files(tmp_path)


# ----------------------------------------------------------------------------------- DICOM


def _clip(n_frames=12, fps=30.0, seed=0, view="a4c") -> VideoClip:
    frames = np.random.default_rng(seed).integers(0, 256, size=(n_frames, 48, 64), dtype=np.uint8)
    return VideoClip(frames=frames, fps=fps, view=view)


@pytest.mark.parametrize("fps", [50.0, 30.0, 47.3])
def test_echo_dicom_round_trip(tmp_path, fps):
    clip = _clip(fps=fps)
    demographics = dict(patient_id="P0007", patient_age=63.7, patient_sex="F", heart_rate=72.4)
    path = write_echo_dicom(clip, tmp_path / "echo.dcm", pixel_spacing_mm=(0.4, 0.3), **demographics)
    assert path.read_bytes()[128:132] == b"DICM"  # a real Part 10 file: preamble + prefix
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.SOPClassUID == UltrasoundMultiFrameImageStorage == "1.2.840.10008.5.1.4.1.1.3.1"
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.Modality == "US" and ds.PhotometricInterpretation == "MONOCHROME2"
    assert (ds.BitsAllocated, ds.BitsStored, ds.SamplesPerPixel) == (8, 8, 1)
    assert ds.NumberOfFrames == 12 and (ds.Rows, ds.Columns) == (48, 64)
    assert ds.FrameIncrementPointer == 0x00181063  # -> FrameTime
    assert 1000.0 / float(ds.FrameTime) == pytest.approx(fps, rel=1e-12)
    assert ds.CineRate == ds.RecommendedDisplayFrameRate == round(fps)
    assert str(ds.PatientName) == "SIMULATED^P0007" and ds.PatientID == "P0007"
    assert ds.PatientAge == "063Y" and ds.PatientSex == "F" and ds.HeartRate == 72
    assert "SIMULATED" in ds.ImageComments
    np.testing.assert_array_equal(ds.pixel_array, clip.frames)

    back = read_video_dicom(path)
    np.testing.assert_array_equal(back.frames, clip.frames)
    assert back.fps == pytest.approx(fps, rel=1e-12)
    assert back.modality == "echo" and back.view == "a4c"
    assert back.meta["pixel_spacing_mm"] == pytest.approx((0.4, 0.3))
    assert back.meta["patient_age"] == 63 and back.meta["patient_sex"] == "F"
    assert back.meta["heart_rate"] == 72 and back.meta["simulated"] is True


def test_echo_dicom_bytes_are_deterministic_and_uids_meaningful(tmp_path):
    kwargs = dict(patient_id="P0001", patient_age=50.0, patient_sex="M", heart_rate=60.0)
    a = write_echo_dicom(_clip(seed=1), tmp_path / "a.dcm", **kwargs).read_bytes()
    b = write_echo_dicom(_clip(seed=1), tmp_path / "b.dcm", **kwargs).read_bytes()
    assert a == b
    same = pydicom.dcmread(tmp_path / "a.dcm")
    other_view = pydicom.dcmread(write_echo_dicom(_clip(seed=2, view="psax"), tmp_path / "c.dcm", **kwargs))
    other_patient = pydicom.dcmread(write_echo_dicom(_clip(seed=1), tmp_path / "d.dcm", patient_id="P0002"))
    assert other_view.StudyInstanceUID == same.StudyInstanceUID  # one study per patient
    assert other_view.SeriesInstanceUID != same.SeriesInstanceUID
    assert other_view.SOPInstanceUID != same.SOPInstanceUID
    assert other_patient.StudyInstanceUID != same.StudyInstanceUID
    assert other_patient.SOPInstanceUID != same.SOPInstanceUID
    assert all(len(ds.SOPInstanceUID) <= 64 for ds in (same, other_view, other_patient))


def test_single_frame_clip_still_has_number_of_frames(tmp_path):
    path = write_echo_dicom(_clip(n_frames=1), tmp_path / "one.dcm", patient_id="X")
    assert pydicom.dcmread(path).NumberOfFrames == 1
    assert read_video_dicom(path).frames.shape == (1, 48, 64)


def test_write_echo_dicom_rejects_bad_arguments(tmp_path):
    mr_clip = VideoClip(np.zeros((2, 4, 4), np.uint8), 25.0, modality="cmr")
    with pytest.raises(DataError, match="modality is 'cmr'"):
        write_echo_dicom(mr_clip, tmp_path / "x.dcm", patient_id="P")
    with pytest.raises(DataError, match="patient_sex"):
        write_echo_dicom(_clip(), tmp_path / "x.dcm", patient_id="P", patient_sex="unknown")
    with pytest.raises(DataError, match="patient_id"):
        write_echo_dicom(_clip(), tmp_path / "x.dcm", patient_id="a\\b")
    assert not (tmp_path / "x.dcm").exists()


def _need_real(name: str) -> Path:
    path = REAL_DICOM / name
    if not path.is_file():
        pytest.skip(f"real DICOM sample {path} not available")
    return path


def test_read_real_cardiac_mr_cine():
    path = _need_real("MR-MONO2-8-16x-heart.dcm")
    clip = read_video_dicom(path)
    assert clip.modality == "cmr" and clip.frames.shape == (16, 256, 256) and clip.frames.dtype == np.uint8
    assert clip.fps == pytest.approx(1000.0 / 69.47)
    np.testing.assert_array_equal(clip.frames, pydicom.dcmread(path).pixel_array)  # 8-bit gray: unchanged


def _bt601_luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def test_read_real_palette_colour_rle_echo():
    path = _need_real("US-PAL-8-10x-echo.dcm")
    clip = read_video_dicom(path)
    assert clip.modality == "echo" and clip.frames.shape == (10, 430, 600)
    assert clip.fps == pytest.approx(1000.0 / 76.0)
    ds = pydicom.dcmread(path)
    reference = _bt601_luma(apply_color_lut(ds.pixel_array, ds) / 257.0)  # 16-bit LUT -> 0..255
    assert np.abs(clip.frames - reference).max() <= 1.5
    assert clip.frames.std() > 10  # real anatomy, not a blank frame


def test_read_real_jpeg_baseline_colour_echo():
    path = _need_real("color3d_jpeg_baseline.dcm")
    if not get_decoder(JPEGBaseline8Bit).is_available:
        pytest.skip("no JPEG Baseline decoder (install pillow or pylibjpeg-libjpeg)")
    clip = read_video_dicom(path)
    assert clip.modality == "echo" and clip.frames.shape == (120, 480, 640)
    assert clip.fps == pytest.approx(1000.0 / 33.333)
    assert clip.meta["pixel_spacing_mm"] == pytest.approx((0.5105, 0.5105), abs=1e-4)  # from the US region
    rgb0 = pydicom.pixels.pixel_array(path, index=0)  # decoded to RGB by pydicom
    assert np.abs(clip.frames[0] - _bt601_luma(rgb0)).max() <= 1.5
    assert not np.array_equal(clip.frames[0], clip.frames[60])  # it moves


def test_read_real_waveform_dicom_is_a_clear_error():
    path = _need_real("waveform_ecg.dcm")
    with pytest.raises(DataError, match=r"no image pixel data \(12-lead ECG Waveform Storage\)"):
        read_video_dicom(path)


def test_read_video_dicom_without_timing_needs_fps(tmp_path):
    path = write_echo_dicom(_clip(), tmp_path / "e.dcm", patient_id="P")
    ds = pydicom.dcmread(path)
    for keyword in ("FrameTime", "CineRate", "RecommendedDisplayFrameRate", "FrameIncrementPointer"):
        delattr(ds, keyword)
    ds.save_as(tmp_path / "untimed.dcm")
    with pytest.raises(SamplingRateError, match="no frame timing"):
        read_video_dicom(tmp_path / "untimed.dcm")
    assert read_video_dicom(tmp_path / "untimed.dcm", fps=25.0).fps == 25.0


# ----------------------------------------------------------------------------------- reader errors


def _bad_files(folder: Path) -> dict[str, tuple[Path, str, object]]:
    """name -> (file the error must name, expected problem, reader)."""
    write_wfdb(_ecg(LEADS_12, 500.0, seconds=2.0), folder / "good")
    (folder / "trunc.hea").write_text((folder / "good.hea").read_text().replace("good", "trunc"))
    (folder / "trunc.dat").write_bytes((folder / "good.dat").read_bytes()[:1001])
    (folder / "nodat.hea").write_text((folder / "good.hea").read_text().replace("good", "nodat"))
    (folder / "empty.hea").write_bytes(b"")
    (folder / "garbage.hea").write_bytes(b"\x00\xff not a header at all\n")
    (folder / "garbage.dcm").write_bytes(os.urandom(4096))
    (folder / "empty.dcm").write_bytes(b"")
    good = write_echo_dicom(_clip(), folder / "good.dcm", patient_id="P").read_bytes()
    (folder / "trunc.dcm").write_bytes(good[: len(good) // 2])
    return {
        "missing .hea": (folder / "missing.hea", "WFDB header not found", read_wfdb),
        "empty .hea": (folder / "empty.hea", "WFDB header is empty", read_wfdb),
        "garbage .hea": (folder / "garbage.hea", "cannot parse WFDB header", read_wfdb),
        "truncated .dat": (folder / "trunc.dat", "WFDB signal file is truncated", read_wfdb),
        "missing .dat": (folder / "nodat.dat", "WFDB signal file not found", read_wfdb),
        "missing .dcm": (folder / "missing.dcm", "DICOM file not found", read_video_dicom),
        "empty .dcm": (folder / "empty.dcm", "not a DICOM file", read_video_dicom),
        "garbage .dcm": (folder / "garbage.dcm", "not a DICOM file", read_video_dicom),
        "truncated .dcm": (folder / "trunc.dcm", "", read_video_dicom),
    }


BAD_FILE_CASES = ["missing .hea", "empty .hea", "garbage .hea", "truncated .dat", "missing .dat"]
BAD_FILE_CASES += ["missing .dcm", "empty .dcm", "garbage .dcm", "truncated .dcm"]


@pytest.mark.parametrize("case", BAD_FILE_CASES)
def test_reader_errors_are_one_line_and_name_the_file(tmp_path, case):
    named, problem, reader = _bad_files(tmp_path)[case]
    stem = named.with_suffix("") if reader is read_wfdb else named
    with pytest.raises(DataError) as info:
        reader(stem)
    message = str(info.value)
    assert str(named) in message and problem in message
    assert "\n" not in message and "Traceback" not in message
    err = info.value  # no chained raw wfdb / pydicom / OSError traceback behind it
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


def test_missing_pixel_decoder_names_the_packages_to_install(tmp_path, monkeypatch):
    import cardiodistill.io.dicom as dicom_io

    class NoPlugins:
        is_available = False
        missing_dependencies = ["pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1"]

    path = write_echo_dicom(_clip(), tmp_path / "e.dcm", patient_id="P")
    monkeypatch.setattr(dicom_io, "get_decoder", lambda syntax: NoPlugins())
    with pytest.raises(DataError, match=r"e\.dcm: no decoder installed for Explicit VR .*pylibjpeg-libjpeg"):
        read_video_dicom(path)
