"""HL7 v3 annotated ECG (aECG, the FDA submission format) read as an EcgRecord in mV.

An aECG is an ``<AnnotatedECG>`` document in namespace ``urn:hl7-org:v3``. The recording is a
``<series>`` (code ``RHYTHM``) whose ``<component><sequenceSet>`` holds one ``<sequence>`` per
channel; a derived series (``<derivation><derivedSeries>``, code ``REPRESENTATIVE_BEAT``)
holds median beats in the same layout. In a sequence set:

* the time sequence (code ``TIME_ABSOLUTE`` or ``TIME_RELATIVE``) has a ``GLIST_TS``/``GLIST_PQ``
  value whose ``<increment value="0.002" unit="s">`` is the sampling interval, ``fs = 1/increment``;
* each lead sequence (code ``MDC_ECG_LEAD_I``, ``MDC_ECG_LEAD_AVR``, ...) has an ``SLIST_PQ``
  value: ``<origin value unit>``, ``<scale value unit>`` and ``<digits>`` (space-separated
  integers), with ``physical = origin + scale * digits`` (units usually ``uV``).

Subject id, sex and birth time (``trialSubject``) and the recording's start
(``effectiveTime/low``) go into ``meta`` when present.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from os import PathLike
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import DataError, SamplingRateError
from ..records import EcgRecord
from .common import build_record, mv_factor, parse_number, parse_xml_file
from .limits import MAX_CHANNELS, check_ecg_fs

__all__ = ["read_hl7_aecg", "HL7_NS"]

HL7_NS = "urn:hl7-org:v3"
_N = f"{{{HL7_NS}}}"
_TIME_CODES = ("TIME_ABSOLUTE", "TIME_RELATIVE")
_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def _attr_number(node: ET.Element | None, default: float, what: str, where: Path) -> tuple[float, str]:
    """(value, unit) of an element such as ``<scale value="5" unit="uV"/>``."""
    if node is None:
        return default, ""
    return parse_number(node.get("value", ""), f"{what} value", where), node.get("unit", "").strip()


def _sequence_set(root: ET.Element, series: str, where: Path) -> tuple[ET.Element, int]:
    """The first sequence set of the rhythm series or of its derived (median-beat) series, and
    how many sequence sets that series has."""
    rhythm = root.find(f".//{_N}series")
    if rhythm is None:
        raise DataError("no <series> in this aECG file", where)
    holder = rhythm if series == "rhythm" else rhythm.find(f"{_N}derivation/{_N}derivedSeries")
    if holder is None:
        raise DataError("no derived (median beat) series in this aECG file", where)
    sets = holder.findall(f"{_N}component/{_N}sequenceSet")
    if not sets:
        raise DataError(f"the {series} series has no <sequenceSet>", where)
    return sets[0], len(sets)


def _sampling_rate(time_value: ET.Element, where: Path) -> float:
    increment, unit = _attr_number(time_value.find(f"{_N}increment"), np.nan, "time increment", where)
    per_unit = _SECONDS.get(unit or "s")
    if per_unit is None:
        raise SamplingRateError(f"time increment unit {unit!r}; expected s or ms", where)
    if not (np.isfinite(increment) and increment > 0):
        raise SamplingRateError(f"time increment must be a positive number of seconds, got {increment!r}", where)
    with np.errstate(over="ignore", divide="ignore"):
        fs = 1.0 / (increment * per_unit)
    return check_ecg_fs(fs, where, f"time increment {increment:g} {unit or 's'} gives a sampling rate")


def _lead_samples(code: str, value: ET.Element, where: Path) -> tuple[np.ndarray, str]:
    """Physical samples of one SLIST_PQ lead value, in mV when the units are voltages."""
    origin, origin_unit = _attr_number(value.find(f"{_N}origin"), 0.0, f"{code} origin", where)
    scale, scale_unit = _attr_number(value.find(f"{_N}scale"), 1.0, f"{code} scale", where)
    digits_node = value.find(f"{_N}digits")
    text = digits_node.text if digits_node is not None and digits_node.text else ""
    try:
        digits = np.array(text.split(), dtype=np.float64)
    except ValueError:
        raise DataError(f"{code} <digits> holds something other than numbers", where) from None
    if digits.size == 0:
        raise DataError(f"{code} has no samples in <digits>", where)
    to_mv_scale, to_mv_origin = mv_factor(scale_unit), mv_factor(origin_unit or scale_unit)
    if to_mv_scale is not None and to_mv_origin is not None:
        return origin * to_mv_origin + scale * to_mv_scale * digits, "mV"
    return origin + scale * digits, scale_unit


def _attribute(node: ET.Element | None, path: str, name: str) -> str | None:
    found = None if node is None else node.find(path)
    return (found.get(name) or None) if found is not None else None


def _subject_meta(root: ET.Element) -> dict:
    subject = root.find(f".//{_N}trialSubject")
    fields = {
        "patient_id": _attribute(subject, f"{_N}id", "extension"),
        "patient_sex": _attribute(subject, f".//{_N}administrativeGenderCode", "code"),
        "birth_time": _attribute(subject, f".//{_N}birthTime", "value"),
        "acquisition_time": _attribute(root, f"{_N}effectiveTime/{_N}low", "value"),
    }
    return {key: value for key, value in fields.items() if value}


def read_hl7_aecg(
    path: str | PathLike[str],
    *,
    series: Literal["rhythm", "median"] = "rhythm",
    ecg_only: bool = True,
) -> EcgRecord:
    """Read an HL7 aECG XML file as an :class:`EcgRecord` in mV.

    ``series`` picks the ``"rhythm"`` series or its derived ``"median"`` beat series; only its
    first sequence set is read (``meta["n_sequence_sets"]`` says how many there were).
    Anything unreadable raises :class:`DataError`.
    """
    path = Path(path)
    if series not in ("rhythm", "median"):
        raise DataError(f"series must be 'rhythm' or 'median', got {series!r}", path)
    root = parse_xml_file(path, "AnnotatedECG", "HL7 aECG")
    seq_set, n_sets = _sequence_set(root, series, path)
    fs = None
    names: list[str] = []
    arrays: list[np.ndarray] = []
    units: list[str] = []
    skipped: list[str] = []
    sequences = seq_set.findall(f"{_N}component/{_N}sequence")
    if len(sequences) > MAX_CHANNELS + 1:  # the leads and the time sequence
        raise DataError(f"{len(sequences)} sequences; an ECG file holds 1-{MAX_CHANNELS} leads", path)
    for seq in sequences:
        code_node, value = seq.find(f"{_N}code"), seq.find(f"{_N}value")
        code = code_node.get("code", "").strip() if code_node is not None else ""
        if not code or value is None:
            raise DataError("a <sequence> lacks its <code code=...> or <value>", path)
        if code in _TIME_CODES:
            fs = _sampling_rate(value, path)
            continue
        if value.find(f"{_N}digits") is None:  # not a sampled channel (another GLIST or a code list)
            skipped.append(code)
            continue
        samples, unit = _lead_samples(code, value, path)
        names.append(code)
        arrays.append(samples)
        units.append(unit)
    if fs is None:
        raise SamplingRateError("no TIME_ABSOLUTE/TIME_RELATIVE sequence gives the sampling interval", path)
    if not arrays:
        raise DataError(f"the {series} series has no lead sequences", path)
    lengths = sorted({a.size for a in arrays})
    if len(lengths) != 1:
        raise DataError(f"lead sequences have different lengths {lengths}", path)
    meta = {"series": series, "n_sequence_sets": n_sets, "skipped_sequences": skipped, **_subject_meta(root)}
    return build_record(np.stack(arrays), fs, names, units, source=path, fmt="hl7-aecg", ecg_only=ecg_only, meta=meta)
