"""DICOM 12-lead ECG waveforms (Waveform Storage IODs) read as an EcgRecord in mV.

A DICOM ECG (12-Lead ECG / General ECG Waveform Storage, PS3.3 A.34) stores its samples in the
Waveform Sequence, one item per *multiplex group*: channels sampled together at one rate.
Resting-ECG carts write a ``RHYTHM`` group (the full 10 s recording) and usually a
``MEDIAN BEAT`` group (one representative beat per lead, ~1.2 s); ``group=`` picks which one.

Samples are integers interleaved by channel. Their physical value follows the Waveform module
(PS3.3 C.10.9.1.4): ``raw * ChannelSensitivity * ChannelSensitivityCorrectionFactor +
ChannelBaseline``, in the unit of ``ChannelSensitivityUnitsSequence`` (UCUM ``uV`` or ``mV``);
:meth:`pydicom.dataset.Dataset.waveform_array` applies exactly that, and this module converts the
unit to mV. Channel labels come from the ``ChannelSourceSequence`` code meaning (``"Lead I
(Einthoven)"``, ``"Lead aVR"``, ``"Lead V1"``), falling back to ``ChannelLabel``.
"""

from __future__ import annotations

import re
from os import PathLike
from pathlib import Path
from typing import Literal

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from ..errors import DataError, one_line
from ..records import EcgRecord
from .common import build_record
from .limits import check_ecg_fs, check_ecg_shape

__all__ = ["read_dicom_ecg"]

_PARENTHESIS = re.compile(r"\(.*?\)")



def _group_label(item: Dataset) -> str:
    return str(item.get("MultiplexGroupLabel", "") or "").strip().upper()


def _pick_group(groups: list[Dataset], group: str, where: Path) -> int:
    """Index of the rhythm group (labelled RHYTHM, else the longest not labelled a median beat)
    or of the median-beat group (labelled MEDIAN, else the shortest)."""
    labels = [_group_label(g) for g in groups]
    lengths = [int(g.get("NumberOfWaveformSamples", 0) or 0) for g in groups]
    if group == "rhythm":
        named = [i for i, label in enumerate(labels) if "RHYTHM" in label]
        if named:
            return named[0]
        candidates = [i for i, label in enumerate(labels) if "MEDIAN" not in label]
        if candidates:
            return max(candidates, key=lambda i: lengths[i])
    else:
        named = [i for i, label in enumerate(labels) if "MEDIAN" in label]
        if named:
            return named[0]
        if len(groups) > 1:
            return min(range(len(groups)), key=lambda i: lengths[i])
    raise DataError(f"no {group} waveform group (groups: {', '.join(labels) or 'unlabelled'})", where)


def _channel_name(channel: Dataset, index: int) -> str:
    for item in channel.get("ChannelSourceSequence", []) or []:
        meaning = str(item.get("CodeMeaning", "") or "")
        if meaning.strip():
            return _PARENTHESIS.sub("", meaning).strip()  # "Lead I (Einthoven)" -> "Lead I"
    label = str(channel.get("ChannelLabel", "") or "").strip()
    return label or f"channel {index + 1}"


def _channel_units(channel: Dataset) -> str:
    for item in channel.get("ChannelSensitivityUnitsSequence", []) or []:
        code = str(item.get("CodeValue", "") or "").strip()
        if code:
            return code
    return ""


def _patient_meta(ds: Dataset) -> dict:
    fields = {
        "patient_id": "PatientID",
        "patient_age": "PatientAge",
        "patient_sex": "PatientSex",
        "acquisition_datetime": "AcquisitionDateTime",
        "study_date": "StudyDate",
        "manufacturer": "Manufacturer",
    }
    meta = {}
    for key, keyword in fields.items():
        try:
            value = str(ds.get(keyword, "") or "").strip()
        except Exception:  # a corrupt optional attribute (bad VR or value) is left out
            continue
        if value:
            meta[key] = value
    return meta


def _not_a_waveform(ds: Dataset) -> str:
    """Why a DICOM object without a Waveform Sequence cannot be read as an ECG, in words."""
    try:
        uid = ds.get("SOPClassUID")
        name = str(getattr(uid, "name", "") or uid or "").strip()
    except Exception:  # a corrupt SOP Class UID value
        name = ""
    name = name[:80] or "unknown SOP class"
    if "Image" in name or "PixelData" in ds or "Rows" in ds:
        return f"this DICOM file holds an image ({name}), not an ECG waveform"
    return f"this DICOM file holds no ECG waveform ({name})"


def read_dicom_ecg(
    path: str | PathLike[str],
    *,
    group: Literal["rhythm", "median"] = "rhythm",
    ecg_only: bool = True,
) -> EcgRecord:
    """Read a DICOM ECG waveform file as an :class:`EcgRecord` in mV.

    ``group`` selects the ``"rhythm"`` recording or the ``"median"`` beat. ``meta`` holds the
    group label, the units found per channel, the original channel names and patient /
    acquisition attributes present in the file. Anything unreadable raises :class:`DataError`.
    """
    path = Path(path)
    if group not in ("rhythm", "median"):
        raise DataError(f"group must be 'rhythm' or 'median', got {group!r}", path)
    if not path.is_file():
        raise DataError("DICOM file not found", path)
    try:
        ds = pydicom.dcmread(path)
        groups = list(ds.get("WaveformSequence", []) or [])
    except InvalidDicomError:
        raise DataError("not a DICOM file (no DICM marker after the 128-byte preamble)", path) from None
    except Exception as err:  # pydicom raises many types for corrupt elements
        raise DataError(f"cannot parse DICOM file: {one_line(err)}", path) from None
    if not groups:
        raise DataError(_not_a_waveform(ds), path)
    try:  # pydicom converts values lazily, so a corrupt element can raise on first access
        index = _pick_group(groups, group, path)
        item = groups[index]
        fs = check_ecg_fs(float(item.SamplingFrequency), path, "SamplingFrequency")
        channels = list(item.ChannelDefinitionSequence)
        # the claimed size is checked before pydicom allocates from it
        check_ecg_shape(int(item.NumberOfWaveformChannels), int(item.NumberOfWaveformSamples), fs, path)
        samples = ds.waveform_array(index)  # [n_samples, n_channels], sensitivity units
        names = [_channel_name(ch, i) for i, ch in enumerate(channels)]
        units = [_channel_units(ch) for ch in channels]
        label = _group_label(item)
    except DataError:
        raise
    except Exception as err:  # missing attributes, truncated WaveformData, bad VRs or value strings
        raise DataError(
            f"cannot decode the {group} waveform group, truncated or corrupt? ({one_line(err)})", path
        ) from None
    if samples.ndim != 2 or samples.shape[1] != len(channels) or samples.shape[0] == 0:
        raise DataError(f"waveform group {index} has {samples.shape} samples for {len(channels)} channels", path)
    meta = {"group": label or group, "group_index": index, **_patient_meta(ds)}
    return build_record(samples.T, fs, names, units, source=path, fmt="dicom-waveform", ecg_only=ecg_only, meta=meta)
