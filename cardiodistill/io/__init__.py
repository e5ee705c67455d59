"""Clinical file formats, one module per format, plus atomic output used by every writer.

* :mod:`.wfdb`: PhysioNet WFDB ECG records (``.hea`` + ``.dat``), read and write.
* :mod:`.dicom`: DICOM cine loops: write simulated echo, read echo / cardiac MR as grayscale.
* :mod:`.video`: one ``read_video`` for DICOM, AVI/MP4/MKV (PyAV) and NIfTI cines (nibabel), told by content.
* :mod:`.atomic`: write-to-temporary-then-rename helpers, so no reader sees a half-written file.

Readers return the :mod:`cardiodistill.records` types and raise one-line
:class:`~cardiodistill.errors.DataError` messages naming the file for anything unreadable.
Format modules are imported on first use (``from cardiodistill.io import read_wfdb`` loads only
``wfdb``), so code that needs one format does not pay for every format library.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .atomic import (
    atomic_path,
    atomic_paths,
    save_npz_atomic,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)

# Public name -> the format module that defines it.
_LAZY = {
    "read_wfdb": "wfdb",
    "write_wfdb": "wfdb",
    "read_video_dicom": "dicom",
    "write_echo_dicom": "dicom",
    "read_dicom_ecg": "dicom_waveform",
    "read_muse_xml": "muse",
    "read_hl7_aecg": "hl7aecg",
    "read_edf_ecg": "edf",
    "read_csv_ecg": "tabular",
    "read_npy_ecg": "tabular",
    "write_csv_ecg": "tabular",
    "read_video": "video",
    "write_video": "video",
    "write_nifti_cine": "video",
    "is_video_file": "video",
    "VIDEO_SUFFIXES": "video",
    "detect_format": "detect",
    "read_ecg": "detect",
}

__all__ = [
    "atomic_path",
    "atomic_paths",
    "save_npz_atomic",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
