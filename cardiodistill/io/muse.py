"""GE MUSE XML resting-ECG exports read as an EcgRecord in mV.

A MUSE export is one ``<RestingECG>`` document: ``<PatientDemographics>`` (PatientID,
PatientAge, AgeUnits, Gender), ``<TestDemographics>`` (AcquisitionDate/Time) and one
``<Waveform>`` per recording type: ``<WaveformType>Rhythm`` (the 10 s recording) and
``Median`` (one representative beat). Each waveform has its rate in ``<SampleBase>`` Hz (times
``10 ** SampleExponent``) and one ``<LeadData>`` per lead: ``<LeadID>``,
``<LeadAmplitudeUnitsPerBit>`` (e.g. 4.88), ``<LeadAmplitudeUnits>`` (``MICROVOLTS``) and
``<WaveFormData>``, base64 of little-endian int16 samples, so ``physical = int16 *
units_per_bit``.

MUSE stores the 8 independent leads (I, II, V1-V6); the other four limb leads are linear in I
and II (Einthoven/Goldberger) and are derived here with
:func:`~cardiodistill.signals.leads.derive_limb_leads` (``meta["derived_leads"]`` lists them).
"""

from __future__ import annotations

import base64
import binascii
import xml.etree.ElementTree as ET
from os import PathLike
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import DataError, SamplingRateError
from ..records import EcgRecord
from ..signals.leads import LEADS_12, LIMB_LEADS, derive_limb_leads
from .common import build_record, parse_number, parse_xml_file
from .limits import MAX_CHANNELS, check_ecg_fs

_MAX_EXPONENT = 10  # SampleExponent: MUSE writes 0; 10 ** +-10 is already far outside any ECG rate

__all__ = ["read_muse_xml"]


def _text(node: ET.Element | None, tag: str) -> str:
    found = None if node is None else node.find(tag)
    return (found.text or "").strip() if found is not None else ""




def _pick_waveform(root: ET.Element, waveform: str, where: Path) -> ET.Element:
    found = root.findall("Waveform")
    for node in found:
        if _text(node, "WaveformType").lower() == waveform:
            return node
    types = ", ".join(_text(n, "WaveformType") or "?" for n in found) or "none"
    raise DataError(f"no {waveform} waveform in this MUSE file (waveforms: {types})", where)


def _decode_lead(lead: ET.Element, where: Path) -> tuple[str, np.ndarray, str]:
    """(lead id, samples in their unit as float64, unit) of one ``<LeadData>``."""
    name = _text(lead, "LeadID")
    if not name:
        raise DataError("a <LeadData> has no <LeadID>", where)
    per_bit = parse_number(_text(lead, "LeadAmplitudeUnitsPerBit") or "1", f"lead {name} LeadAmplitudeUnitsPerBit", where)
    units = _text(lead, "LeadAmplitudeUnits") or "MICROVOLTS"
    try:
        raw = base64.b64decode("".join(_text(lead, "WaveFormData").split()), validate=True)
    except (binascii.Error, ValueError):
        raise DataError(f"lead {name}: <WaveFormData> is not valid base64", where) from None
    if len(raw) % 2:
        raise DataError(f"lead {name}: <WaveFormData> has an odd number of bytes for int16 samples", where)
    samples = np.frombuffer(raw, dtype="<i2").astype(np.float64) * per_bit
    expected = _text(lead, "LeadSampleCountTotal")
    if expected and expected.isdigit() and int(expected) != samples.size:
        raise DataError(f"lead {name}: {samples.size} samples but LeadSampleCountTotal says {expected}", where)
    return name, samples, units


def read_muse_xml(
    path: str | PathLike[str],
    *,
    waveform: Literal["rhythm", "median"] = "rhythm",
    derive_limb: bool = True,
    ecg_only: bool = True,
) -> EcgRecord:
    """Read a GE MUSE XML export as an :class:`EcgRecord` in mV.

    ``waveform`` picks the ``"rhythm"`` recording or the ``"median"`` beat. With
    ``derive_limb`` the missing limb leads among III, aVR, aVL, aVF are computed from I and II
    and the leads are returned in the standard 12-lead order. ``meta`` holds patient
    demographics and acquisition date/time when present. Anything unreadable raises
    :class:`DataError`.
    """
    path = Path(path)
    if waveform not in ("rhythm", "median"):
        raise DataError(f"waveform must be 'rhythm' or 'median', got {waveform!r}", path)
    root = parse_xml_file(path, "RestingECG", "GE MUSE XML")
    node = _pick_waveform(root, waveform, path)
    base = parse_number(_text(node, "SampleBase"), "SampleBase", path)
    exponent = parse_number(_text(node, "SampleExponent") or "0", "SampleExponent", path)
    if abs(exponent) > _MAX_EXPONENT:  # 10 ** 400 overflows a float
        raise SamplingRateError(f"SampleExponent {exponent:g} gives an implausible sampling rate", path)
    fs = check_ecg_fs(base * 10.0**exponent, path, "SampleBase/SampleExponent give a sampling rate")

    lead_nodes = node.findall("LeadData")
    if len(lead_nodes) > MAX_CHANNELS:
        raise DataError(f"{len(lead_nodes)} <LeadData>; an ECG file holds 1-{MAX_CHANNELS}", path)
    decoded = [_decode_lead(lead, path) for lead in lead_nodes]
    if not decoded:
        raise DataError(f"the {waveform} waveform has no <LeadData>", path)
    names, arrays, units = (list(x) for x in zip(*decoded))
    lengths = {a.size for a in arrays}
    if len(lengths) != 1 or 0 in lengths:
        raise DataError(f"leads have different or zero sample counts {sorted(lengths)}", path)
    signal = np.stack(arrays)  # [n_leads, n_samples] in each lead's unit

    record = build_record(signal, fs, names, units, source=path, fmt="muse-xml", ecg_only=ecg_only, meta={})
    derived: list[str] = []
    if derive_limb and {"I", "II"} <= set(record.leads):
        limb = derive_limb_leads(record.lead("I"), record.lead("II"))  # [6, n_samples] mV
        rows = dict(zip(record.leads, record.signal))
        derived = [lead for lead in LIMB_LEADS if lead not in rows]
        rows |= {lead: limb[i] for i, lead in enumerate(LIMB_LEADS) if lead in derived}
        order = [lead for lead in LEADS_12 if lead in rows] + [lead for lead in rows if lead not in LEADS_12]
        record = EcgRecord(np.stack([rows[lead] for lead in order]), fs, tuple(order), str(path), record.meta)

    demo = root.find("PatientDemographics")
    test = root.find("TestDemographics")
    info = {
        "patient_id": _text(demo, "PatientID"),
        "patient_age": _text(demo, "PatientAge"),
        "age_units": _text(demo, "AgeUnits"),
        "patient_sex": _text(demo, "Gender"),
        "acquisition_date": _text(test, "AcquisitionDate"),
        "acquisition_time": _text(test, "AcquisitionTime"),
    }
    record.meta.update({k: v for k, v in info.items() if v})
    record.meta.update(waveform=waveform, derived_leads=derived, amplitude_units=sorted(set(units)))
    return record
