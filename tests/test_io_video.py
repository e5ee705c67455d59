"""Video readers and writers: AVI / MP4 / MKV / NIfTI round trips, content sniffing, one-line errors."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_decoder
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, TwelveLeadECGWaveformStorage, generate_uid

from cardiodistill.errors import ConfigError, DataError, SamplingRateError
from cardiodistill.io.dicom import write_echo_dicom
from cardiodistill.io.video import VIDEO_SUFFIXES, is_video_file, read_video, write_nifti_cine, write_video
from cardiodistill.records import VideoClip

REAL_DICOM = Path(__file__).resolve().parents[2] / "shared" / "data" / "dicom"


def _clip(n_frames: int = 20, height: int = 48, width: int = 64, fps: float = 25.0, seed: int = 0) -> VideoClip:
    """A bright disc moving left to right over Gaussian noise, ``uint8 [T, H, W]``."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:height, :width]
    frames = rng.normal(60.0, 12.0, size=(n_frames, height, width))
    for t in range(n_frames):
        centre_col = 10 + t * (width - 20) / max(n_frames - 1, 1)
        frames[t][(rows - height / 2) ** 2 + (cols - centre_col) ** 2 < 64] = 220.0
    return VideoClip(frames=np.clip(np.rint(frames), 0, 255).astype(np.uint8), fps=fps, view="a4c")


def _mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]


def _disc_columns(frames: np.ndarray) -> np.ndarray:
    """Column of the disc's centre in each frame: the mean column of its bright pixels."""
    bright = frames > 150
    return (bright * np.arange(frames.shape[2])).sum(axis=(1, 2)) / bright.sum(axis=(1, 2))


# ------------------------------------------------------------------------------- video containers


def test_mp4_round_trip_is_close(tmp_path):
    clip = _clip()
    path = write_video(clip, tmp_path / "clip.mp4")
    assert path == tmp_path / "clip.mp4" and _no_temp_files(tmp_path)
    back = read_video(path)
    assert back.frames.shape == (20, 48, 64) and back.frames.dtype == np.uint8
    assert back.fps == pytest.approx(25.0, abs=1e-3)
    assert _mae(back.frames, clip.frames) < 6.0
    np.testing.assert_allclose(_disc_columns(back.frames), _disc_columns(clip.frames), atol=0.5)  # same motion
    assert back.modality == "echo" and back.view == "unknown" and back.source == str(path)
    assert back.meta == {"format": "mp4", "codec": back.meta["codec"], "pixel_spacing_mm": None}
    assert back.meta["codec"] in ("h264", "mpeg4")  # libx264 where the FFmpeg build has it


@pytest.mark.parametrize("codec", [None, "rawvideo"], ids=["ffv1", "rawvideo"])
def test_avi_lossless_round_trip_is_exact(tmp_path, codec):
    clip = _clip(seed=1)
    back = read_video(write_video(clip, tmp_path / "clip.avi", codec=codec), view="plax", modality="cmr")
    np.testing.assert_array_equal(back.frames, clip.frames)
    assert back.fps == pytest.approx(25.0, abs=1e-3)
    assert back.view == "plax" and back.modality == "cmr" and back.meta["format"] == "avi"


@pytest.mark.parametrize(("name", "codec"), [("clip.avi", "mjpeg"), ("clip.mp4", "mpeg4")])
def test_other_lossy_codecs_round_trip(tmp_path, name, codec):
    clip = _clip(seed=2)
    back = read_video(write_video(clip, tmp_path / name, codec=codec))
    assert back.frames.shape == clip.frames.shape and back.meta["codec"] == codec
    assert _mae(back.frames, clip.frames) < 6.0


def test_odd_frame_size_and_ntsc_rate(tmp_path):
    clip = _clip(n_frames=12, height=47, width=63, fps=30000 / 1001)
    back = read_video(write_video(clip, tmp_path / "odd.mp4"))  # 4:2:0 cannot hold 47 x 63: 4:4:4 is used
    assert back.frames.shape == (12, 47, 63)
    assert back.fps == pytest.approx(30000 / 1001, abs=1e-6)
    assert _mae(back.frames, clip.frames) < 6.0


def test_mkv_without_frame_count_reads_every_frame(tmp_path):
    clip = _clip(n_frames=15, seed=3)
    path = tmp_path / "clip.mkv"
    with av.open(str(path), "w") as out:  # written by PyAV itself: Matroska has no frame count up front
        stream = out.add_stream("ffv1", rate=Fraction(50))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "gray"
        for image in clip.frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="gray")))
        out.mux(stream.encode())
    back = read_video(path)
    np.testing.assert_array_equal(back.frames, clip.frames)
    assert back.fps == pytest.approx(50.0) and back.meta["format"] == "mkv"


def test_format_comes_from_content_not_suffix(tmp_path):
    clip = _clip()
    renamed = tmp_path / "export.bin"
    write_video(clip, tmp_path / "clip.mp4").rename(renamed)
    back = read_video(renamed)
    assert back.meta["format"] == "mp4" and back.frames.shape == clip.frames.shape


def test_fps_argument_overrides_the_stream(tmp_path):
    back = read_video(write_video(_clip(), tmp_path / "clip.avi"), fps=50.0)
    assert back.fps == 50.0


# ------------------------------------------------------------------------------------------- NIfTI


def _nifti(path: Path, data: np.ndarray, zooms: tuple[float, ...], units: tuple[str, str] | None) -> Path:
    """Write ``data`` with nibabel directly (an independent writer); ``units`` = (space, time) or unset."""
    img = nib.Nifti1Image(data, np.eye(4))
    if units is not None:
        img.header.set_xyzt_units(*units)
    img.header.set_zooms(zooms)
    nib.save(img, path)
    return path


@pytest.mark.parametrize("name", ["cine.nii", "cine.nii.gz"])
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_nifti_round_trip(tmp_path, name, dtype):
    clip = _clip(fps=30.0)
    clip.meta["pixel_spacing_mm"] = (1.25, 0.75)
    path = write_nifti_cine(clip, tmp_path / name, dtype=dtype)
    assert _no_temp_files(tmp_path)
    img = nib.load(path)
    assert img.shape == (64, 48, 1, 20) and img.get_data_dtype() == np.dtype(dtype)
    assert img.header.get_xyzt_units() == ("mm", "sec")
    assert img.header.get_zooms() == pytest.approx((0.75, 1.25, 1.0, 1 / 30))
    back = read_video(path)
    assert back.modality == "cmr" and back.fps == pytest.approx(30.0, rel=1e-6)
    assert back.meta["pixel_spacing_mm"] == pytest.approx((1.25, 0.75))
    assert back.meta["slice"] == 0 and back.meta["n_slices"] == 1
    if dtype == "uint8":
        np.testing.assert_array_equal(back.frames, clip.frames)
        assert back.meta["intensity_window"] is None
    else:  # floats are windowed to their 0.5-99.5th percentile: same picture, stretched contrast
        assert np.corrcoef(back.frames.ravel(), clip.frames.ravel())[0, 1] > 0.99
        np.testing.assert_allclose(_disc_columns(back.frames), _disc_columns(clip.frames), atol=0.5)


def test_nifti_3d_layout_and_msec_time_step(tmp_path):
    data = np.zeros((64, 48, 10), dtype=np.uint8)  # [x, y, t]
    data[5, 47, :] = 255  # x = 5 at the highest y: row 0 (top), column 5
    data[60, 0, 3] = 128  # x = 60 at y = 0: bottom row, column 60, frame 3 only
    path = _nifti(tmp_path / "cine3d.nii", data, (1.5, 1.5, 40.0), ("mm", "msec"))
    back = read_video(path)
    assert back.frames.shape == (10, 48, 64) and back.fps == pytest.approx(25.0)
    assert (back.frames[:, 0, 5] == 255).all()
    assert back.frames[3, 47, 60] == 128 and back.frames.sum() == 255 * 10 + 128
    np.testing.assert_array_equal(back.frames, data.transpose(2, 1, 0)[:, ::-1, :])


def test_nifti_4d_reads_the_middle_slice(tmp_path):
    rng = np.random.default_rng(4)
    data = rng.integers(0, 256, size=(32, 24, 3, 8), dtype=np.uint8)  # [x, y, z, t]
    path = _nifti(tmp_path / "cine4d.nii.gz", data, (1.0, 1.0, 8.0, 50.0), ("mm", "msec"))
    back = read_video(path)
    assert back.meta["slice"] == 1 and back.meta["n_slices"] == 3 and back.fps == pytest.approx(20.0)
    np.testing.assert_array_equal(back.frames, data[:, :, 1, :].transpose(2, 1, 0)[:, ::-1, :])


def test_nifti_int16_is_windowed_with_one_scale(tmp_path):
    rng = np.random.default_rng(5)
    data = rng.integers(0, 1000, size=(32, 24, 6)).astype(np.int16)
    data[0, 0, 0] = 30000  # one hot voxel must not darken the clip
    back = read_video(_nifti(tmp_path / "mr.nii", data, (1.0, 1.0, 0.04), ("mm", "sec")), view="sax")
    lo, hi = back.meta["intensity_window"]
    assert 0 <= lo < 20 and 980 < hi < 1000
    assert back.frames.max() == 255 and back.frames.mean() == pytest.approx(127.5, abs=5)
    assert back.view == "sax" and back.fps == pytest.approx(25.0)


def test_nifti_under_another_name_is_read_by_content(tmp_path):
    clip = _clip(n_frames=6)
    path = write_nifti_cine(clip, tmp_path / "cine.nii.gz")
    renamed = path.rename(tmp_path / "cine.dat")
    assert is_video_file(renamed)
    np.testing.assert_array_equal(read_video(renamed).frames, clip.frames)


def test_nifti_without_time_step_needs_fps(tmp_path):
    path = _nifti(tmp_path / "static.nii", np.zeros((16, 16, 5), np.uint8), (1.0, 1.0, 1.0), None)
    with pytest.raises(SamplingRateError, match=r"static\.nii: no time step .*give fps \(--fs\)") as err:
        read_video(path)
    assert "\n" not in str(err.value)
    assert read_video(path, fps=12.5).fps == 12.5


# ------------------------------------------------------------------------------------------- DICOM


def test_dicom_goes_through_read_video_dicom(tmp_path):
    clip = _clip()
    path = write_echo_dicom(clip, tmp_path / "echo.dcm", patient_id="P001", pixel_spacing_mm=0.3)
    back = read_video(path)
    np.testing.assert_array_equal(back.frames, clip.frames)
    assert back.fps == pytest.approx(25.0) and back.view == "a4c" and back.modality == "echo"
    assert back.meta["patient_id"] == "P001" and back.meta["pixel_spacing_mm"] == pytest.approx((0.3, 0.3))
    assert read_video(path, modality="cmr", view="plax", fps=10.0).modality == "cmr"


def _need_real(name: str) -> Path:
    path = REAL_DICOM / name
    if not path.is_file():
        pytest.skip(f"real DICOM sample {path} not available")
    return path


@pytest.mark.parametrize(
    ("name", "shape", "modality"),
    [
        ("MR-MONO2-8-16x-heart.dcm", (16, 256, 256), "cmr"),
        ("US-PAL-8-10x-echo.dcm", (10, 430, 600), "echo"),
        ("color3d_jpeg_baseline.dcm", (120, 480, 640), "echo"),
    ],
)
def test_real_dicom_cines(name, shape, modality):
    path = _need_real(name)
    if name.startswith("color3d") and not get_decoder(JPEGBaseline8Bit).is_available:
        pytest.skip("no JPEG Baseline decoder (install pillow or pylibjpeg-libjpeg)")
    assert is_video_file(path)
    clip = read_video(path)
    assert clip.frames.shape == shape and clip.modality == modality and clip.frames.std() > 10


def test_real_dicom_ecg_is_a_one_line_error():
    path = _need_real("waveform_ecg.dcm")
    assert not is_video_file(path)
    with pytest.raises(DataError, match=r"waveform_ecg\.dcm: no image pixel data") as err:
        read_video(path)
    assert "\n" not in str(err.value)


def _dicom_ecg_stub(path: Path) -> Path:
    """A DICOM file whose SOP class is a 12-lead ECG waveform (no pixel data)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = TwelveLeadECGWaveformStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["ecg-stub"])
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = TwelveLeadECGWaveformStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "ECG"
    ds.save_as(path, enforce_file_format=True)
    return path


# ------------------------------------------------------------------------------------------ errors


def _assert_one_line(err: pytest.ExceptionInfo, name: str) -> None:
    message = str(err.value)
    assert "\n" not in message and name in message


def test_truncated_mp4(tmp_path):
    raw = write_video(_clip(), tmp_path / "full.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        read_video(tmp_path / "cut.mp4")
    _assert_one_line(err, "cut.mp4")


def test_truncated_nifti(tmp_path):
    raw = write_nifti_cine(_clip(), tmp_path / "full.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        read_video(tmp_path / "cut.nii")
    _assert_one_line(err, "cut.nii")


def test_random_bytes_empty_and_missing_files(tmp_path):
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(np.random.default_rng(6).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match="unsupported video format") as err:
        read_video(noise)
    _assert_one_line(err, "noise.mp4")
    (tmp_path / "empty.avi").write_bytes(b"")
    with pytest.raises(DataError, match="empty file") as err:
        read_video(tmp_path / "empty.avi")
    _assert_one_line(err, "empty.avi")
    with pytest.raises(DataError, match="file not found") as err:
        read_video(tmp_path / "absent.mp4")
    _assert_one_line(err, "absent.mp4")
    with pytest.raises(DataError, match="is a folder"):
        read_video(tmp_path)


def test_corrupt_avi_body(tmp_path):
    raw = bytearray(write_video(_clip(), tmp_path / "full.avi").read_bytes())
    middle = len(raw) // 3
    raw[middle : middle + 2000] = np.random.default_rng(7).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    (tmp_path / "bad.avi").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        read_video(tmp_path / "bad.avi")
    _assert_one_line(err, "bad.avi")


def test_bad_arguments(tmp_path):
    path = write_video(_clip(n_frames=4), tmp_path / "clip.avi")
    with pytest.raises(ConfigError, match="modality must be 'echo' or 'cmr'"):
        read_video(path, modality="ct")
    with pytest.raises(SamplingRateError, match=r"fps of 0 frames/s is not plausible \(0.5-10000\)"):
        read_video(path, fps=0.0)
    with pytest.raises(DataError, match=r"writes \.mp4 or \.avi"):
        write_video(_clip(), tmp_path / "clip.gif")
    with pytest.raises(ConfigError, match="no encoder"):
        write_video(_clip(), tmp_path / "x.mp4", codec="no-such-codec")
    with pytest.raises(DataError, match="cannot write MP4 with codec rawvideo"):
        write_video(_clip(), tmp_path / "x.mp4", codec="rawvideo")
    with pytest.raises(ConfigError, match="not a video codec"):
        write_video(_clip(), tmp_path / "x.mp4", codec="aac")
    with pytest.raises(DataError, match=r"writes \.nii or \.nii\.gz"):
        write_nifti_cine(_clip(), tmp_path / "x.img")
    assert not (tmp_path / "x.mp4").exists() and _no_temp_files(tmp_path)


# --------------------------------------------------------------------------------------- sniffing


def test_is_video_file(tmp_path):
    clip = _clip(n_frames=4)
    videos = [
        write_video(clip, tmp_path / "a.mp4"),
        write_video(clip, tmp_path / "b.avi"),
        write_nifti_cine(clip, tmp_path / "c.nii"),
        write_nifti_cine(clip, tmp_path / "d.nii.gz"),
        write_echo_dicom(clip, tmp_path / "e.dcm", patient_id="P"),
    ]
    renamed = videos[0].rename(tmp_path / "a.bin")
    for path in [renamed, *videos[1:]]:
        assert is_video_file(path), path
    (tmp_path / "notes.txt").write_text("not a video\n")
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "noise.avi").write_bytes(np.random.default_rng(8).integers(0, 256, 600, dtype=np.uint8).tobytes())
    ecg = _dicom_ecg_stub(tmp_path / "ecg.dcm")
    assert pydicom.dcmread(ecg).SOPClassUID == TwelveLeadECGWaveformStorage
    for path in ["notes.txt", "empty.mp4", "noise.avi", "ecg.dcm", "absent.mp4", "."]:
        assert not is_video_file(tmp_path / path), path
    assert {".dcm", ".avi", ".mp4", ".mov", ".mkv", ".webm", ".nii", ".nii.gz"} == set(VIDEO_SUFFIXES)
