"""Fuzz the cine readers (DICOM, AVI, MP4, NIfTI) and the ``inspect`` summary of what they accept.

The harness, mutations and contract are :mod:`test_io_fuzz`'s: 300 seeded mutants per format in a
capped worker pool; zero untyped errors, hangs, memory blow-ups or implausible clips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_io_fuzz import DATA, Base, assert_contract, fuzz, run_case

from cardiodistill.io import write_video
from cardiodistill.io.dicom import write_echo_dicom
from cardiodistill.io.video import write_nifti_cine
from cardiodistill.records import VideoClip


def _clip(n_frames: int = 8, size: int = 32, fps: float = 25.0) -> VideoClip:
    """A beating disc: a small cine the readers and the inspect summary can work on."""
    t = np.arange(n_frames)[:, None, None] / fps
    y, x = np.mgrid[:size, :size]
    radius = size / 4 * (1 + 0.3 * np.sin(2 * np.pi * 1.2 * t))
    frames = np.where((y - size / 2) ** 2 + (x - size / 2) ** 2 < radius**2, 200, 30).astype(np.uint8)
    return VideoClip(frames=frames, fps=fps, view="a4c", meta={"pixel_spacing_mm": (0.4, 0.4)})


def video_bases(folder: Path) -> list[Base]:
    """Base files for every cine format: writer-made, plus a small real cardiac MR when present."""
    clip = _clip()
    dcm = write_echo_dicom(clip, folder / "c.dcm", patient_id="FUZZ-1", heart_rate=72).read_bytes()
    avi = write_video(clip, folder / "c.avi").read_bytes()
    mp4 = write_video(clip, folder / "c.mp4").read_bytes()
    nii = write_nifti_cine(clip, folder / "c.nii").read_bytes()
    niigz = write_nifti_cine(clip, folder / "c.nii.gz").read_bytes()
    bases = [
        Base("DICOM cine", {"c.dcm": dcm}, "c.dcm", kind="video", header=len(dcm) - clip.frames.size),
        Base("AVI", {"c.avi": avi}, "c.avi", kind="video", header=2048),
        Base("MP4", {"c.mp4": mp4}, "c.mp4", kind="video"),
        Base("NIfTI", {"c.nii": nii}, "c.nii", kind="video", header=352),
        Base("NIfTI", {"c.nii.gz": niigz}, "c.nii.gz", kind="video"),
    ]
    if DATA.is_dir():
        mr = (DATA / "dicom" / "MR-MONO2-8-16x-heart.dcm").read_bytes()
        bases.append(Base("DICOM cine", {"mr.dcm": mr}, "mr.dcm", kind="video", header=4096))
    return bases


def test_base_clips_are_read(tmp_path):
    for base in video_bases(tmp_path):
        folder = tmp_path / base.target.replace(".", "_")
        folder.mkdir()
        assert run_case(base, base.files[base.target], folder) == ("accepted", ""), base.target


def test_fuzzed_video_files_are_read_or_refused_typed(tmp_path):
    tally = fuzz(video_bases(tmp_path), per_format=300, seed=20261121)
    assert_contract(tally, 300)


@pytest.mark.slow
def test_fuzzed_video_files_extended(tmp_path):
    tally = fuzz(video_bases(tmp_path), per_format=1000, seed=7)
    assert_contract(tally, 1000)
