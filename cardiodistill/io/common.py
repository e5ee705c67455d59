"""Rules every ECG reader shares: which channels are ECG leads, units to mV, one record builder,
numbers from header fields and hardened XML parsing.

The format readers (:mod:`.wfdb`, :mod:`.edf`, :mod:`.muse`, ...) and the dispatcher
(:mod:`.detect`) all import from here, and this module imports no reader, so the readers never
depend on the dispatcher.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import defusedxml
import defusedxml.ElementTree as DET
import numpy as np

from ..errors import DataError, one_line
from ..records import EcgRecord
from ..signals.leads import LEADS_12, normalize_lead_name
from ..signals.units import unit_factor
from .limits import MAX_XML_BYTES, check_ecg_amplitude, check_ecg_fs, check_ecg_shape, check_file_size

__all__ = [
    "build_record",
    "describe_channels",
    "is_ecg_channel",
    "mv_factor",
    "parse_number",
    "parse_xml_file",
    "xml_root_name",
]

# ECG channels that are not one of the standard 12: Frank orthogonal leads (vx, vy, vz / X, Y, Z),
# single chest leads in monitoring records ("V"), modified limb leads ("MLx", "MCL1") and
# generically labelled ECG channels ("ECG", "ECG 4", "EKG2").
_OTHER_ECG = re.compile(r"^(v|v[xyz]|[xyz]|ml\w*|mcl\w*|(ecg|ekg)\w*)$")
_NOISE = re.compile(r"[\s\-_.]+")
_LEAD_PREFIX = re.compile(r"^(mdcecglead|lead)")
_XML_ROOT = re.compile(r"<([A-Za-z_][\w.\-]*:)?([A-Za-z_][\w.\-]*)")
_XML_PROLOG = re.compile(r"<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>\[]*(\[.*?\])?\s*>", flags=re.DOTALL)
# (byte-order mark or the first bytes of "<?" / "<x" without one, codec): XML 1.0 Appendix F
_XML_ENCODINGS = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
    (b"<\x00", "utf-16-le"),
    (b"\x00<", "utf-16-be"),
)


def is_ecg_channel(name: str) -> bool:
    """True for a channel name that is an ECG lead: the standard 12 in any common spelling,
    Frank leads, modified/monitoring leads and generic ``ECG``/``EKG`` labels; False for
    ``PLETH``, ``ABP``, ``Resp``, ``EDF Annotations``, ``sine 1 Hz``..."""
    if normalize_lead_name(name, strict=False) in LEADS_12:
        return True
    key = _LEAD_PREFIX.sub("", _NOISE.sub("", str(name).strip().lower()))  # keeps an "ecg" prefix
    return bool(_OTHER_ECG.match(key))


def mv_factor(units: str) -> float | None:
    """Factor that converts a voltage unit (``mV``, ``uV``, ``MICROVOLTS``, ``V``...) to mV;
    ``None`` for anything else (see :func:`cardiodistill.signals.units.unit_factor`)."""
    try:
        return unit_factor(units)
    except DataError:
        return None


def describe_channels(names: Sequence[str], limit: int = 8) -> str:
    """``"PLETH, ABP"`` for an error message; long lists are cut (``"... and 12 more"``), none is ``"none"``."""
    names = [str(n) for n in names]
    shown = ", ".join(names[:limit]) or "none"
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def no_ecg_lead(names: Sequence[str], where: str | PathLike[str] | None) -> DataError:
    """The error for a file whose channels are all something other than ECG leads."""
    return DataError(f"this file holds no ECG lead, only other channels ({describe_channels(names)})", where)


def build_record(
    signal: np.ndarray,
    fs: float,
    names: Sequence[str],
    units: Sequence[str],
    *,
    source: str | PathLike[str],
    fmt: str,
    ecg_only: bool,
    meta: dict[str, Any] | None = None,
) -> EcgRecord:
    """Assemble an :class:`EcgRecord` from channels ``signal [n_channels, n_samples]`` in their
    original ``units``: ECG channels are scaled to mV and get canonical names; other channels
    are dropped when ``ecg_only`` (their names listed in ``meta["dropped_channels"]``) or kept
    in their own units. Raises :class:`DataError` when no channel is left, an ECG channel is
    not in a voltage unit, or the rate, size or amplitudes are beyond :mod:`.limits`."""
    fs = check_ecg_fs(fs, source)
    names = [str(n).strip() for n in names]
    units = [str(u).strip() for u in units]
    check_ecg_shape(len(names), int(np.shape(signal)[-1]) if np.ndim(signal) == 2 else 0, fs, source)
    ecg = np.array([is_ecg_channel(n) for n in names], dtype=bool)
    keep = ecg if ecg_only else np.ones(len(names), dtype=bool)
    if not keep.any():
        raise no_ecg_lead(names, source)
    factors = np.ones(len(names))
    for i in np.flatnonzero(ecg & keep):
        factor = mv_factor(units[i])
        if factor is None:
            raise DataError(f"ECG channel {names[i]!r} has units {units[i]!r}; expected mV, uV or V", source)
        factors[i] = factor
    idx = np.flatnonzero(keep)
    with np.errstate(over="ignore", invalid="ignore"):
        out = (np.asarray(signal, dtype=np.float64)[idx] * factors[idx, None]).astype(np.float32)
    check_ecg_amplitude(out[ecg[idx]], source)
    if np.isinf(out).any():  # a non-ECG channel kept in its own unit
        raise DataError("sample values overflow (infinite after scaling); corrupt scale factors?", source)
    leads = tuple(normalize_lead_name(names[i], strict=False) for i in idx)
    meta = {
        "format": fmt,
        **(meta or {}),
        "original_leads": [names[i] for i in idx],
        "units_found": [units[i] for i in idx],
        # what each kept row is in now: mV for ECG leads, the original unit for other channels
        "units": ["mV" if ecg[i] else units[i] for i in idx],
        "dropped_channels": [n for n, k in zip(names, keep) if not k],
    }
    return EcgRecord(signal=out, fs=fs, leads=leads, source=str(source), meta=meta)


def parse_number(text: str, what: str, where: Path) -> float:
    """A finite float from a header or XML field, or a one-line :class:`DataError` naming ``what``."""
    try:
        value = float(text)
    except (ValueError, OverflowError):
        raise DataError(f"{what} is {str(text)[:40]!r}, not a number", where) from None
    if not np.isfinite(value):
        raise DataError(f"{what} is {text!r}", where)
    return value


def xml_root_name(head: bytes) -> str | None:
    """Local name of the first element of an XML document in UTF-8 or UTF-16 (with or without a
    byte-order mark), judged from its first bytes; ``None`` when it does not look like XML."""
    codec = next((name for mark, name in _XML_ENCODINGS if head.startswith(mark)), "utf-8")
    if codec.startswith("utf-16"):
        head = head[: len(head) // 2 * 2]
    text = head.decode(codec, errors="ignore").lstrip("\ufeff \t\r\n")
    if not text.startswith("<"):
        return None
    text = _XML_PROLOG.sub("", text)  # processing instructions, comments, a doctype
    match = _XML_ROOT.search(text)
    return match.group(2) if match else None


def parse_xml_file(path: Path, root_name: str, kind: str) -> ET.Element:
    """Parse an XML ECG export (UTF-8 or UTF-16) and check its root element's local name is ``root_name``.

    The parser is :mod:`defusedxml`'s: documents with a DTD, entity declarations or external
    references are refused (ECG exports never need one, and entity expansion is how XML bombs and
    external-entity reads work), whatever the encoding. Files over
    :data:`~cardiodistill.io.limits.MAX_XML_BYTES` are refused before they are read.
    """
    if not path.is_file():
        raise DataError(f"{kind} file not found", path)
    check_file_size(path, MAX_XML_BYTES, f"{kind} file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot open file: {err.strerror or err}", path) from None
    if not data.strip():
        raise DataError(f"{kind} file is empty", path)
    try:
        root = DET.fromstring(data, forbid_dtd=True)
    except defusedxml.DefusedXmlException:
        raise DataError(f"{kind} file declares a DOCTYPE/ENTITY, refused for safety", path) from None
    except (ET.ParseError, ValueError, LookupError, UnicodeError) as err:  # malformed, bad encoding
        raise DataError(f"not well-formed XML ({one_line(err)[:200]})", path) from None
    if root.tag.rpartition("}")[2] != root_name:
        raise DataError(f"root element is <{root.tag[:80]}>, not <{root_name}>: not a {kind} file", path)
    return root
