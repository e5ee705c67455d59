"""Tell an ECG file's format from its content, and read any supported format as an EcgRecord.

Clinical ECGs arrive as many formats, often with misleading file names (``.txt`` exports,
``.dat`` copies, no extension at all), so :func:`detect_format` looks at the bytes, never at the
extension:

========== ==========================================================================
format     signature
========== ==========================================================================
dicom      ``DICM`` at byte 128 (after the 128-byte preamble)
edf        EDF/EDF+ header: version ``"0       "``, ASCII fields, header size = 256 * (ns + 1)
npy        NumPy magic ``\\x93NUMPY``
muse       XML whose root element is ``RestingECG`` (GE MUSE export)
hl7aecg    XML whose root element is ``AnnotatedECG`` (HL7 v3 annotated ECG)
wfdb       a WFDB header (first line ``name nsig fs nsamp``), or a signal file (``.dat``,
           ``.mat``) whose sibling ``<stem>.hea`` lists it
csv        delimited text whose rows have a constant number of numeric columns
========== ==========================================================================

:func:`read_ecg` dispatches to the format's reader. Every reader returns an
:class:`~cardiodistill.records.EcgRecord` in mV with canonical lead names, and keeps only ECG
channels unless asked otherwise (``ecg_only=False``); :func:`is_ecg_channel` and
:func:`build_record` are the shared rules the readers use for that.
"""

from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..records import EcgRecord
from ..signals.leads import LEADS_12, normalize_lead_name
from ..signals.units import unit_factor

__all__ = ["FORMATS", "detect_format", "read_ecg", "is_ecg_channel", "build_record", "mv_factor", "parse_number", "parse_xml_file"]

FORMATS = ("dicom", "edf", "npy", "muse", "hl7aecg", "wfdb", "csv")

_SNIFF_BYTES = 8192
# ECG channels that are not one of the standard 12: Frank orthogonal leads (vx, vy, vz / X, Y, Z),
# single chest leads in monitoring records ("V"), modified limb leads ("MLx", "MCL1") and
# generically labelled ECG channels ("ECG", "ECG 4", "EKG2").
_OTHER_ECG = re.compile(r"^(v|v[xyz]|[xyz]|ml\w*|mcl\w*|(ecg|ekg)\w*)$")
_NOISE = re.compile(r"[\s\-_.]+")
_LEAD_PREFIX = re.compile(r"^(mdcecglead|lead)")
_WFDB_FIRST_LINE = re.compile(
    rb"^[\w\-]+(/\d+)?[ \t]+\d+([ \t]+[\d.eE+\-]+(/[\d.eE+\-]+)?(\(\-?[\d.]+\))?)?([ \t]+\d+)?"
)
_XML_ROOT = re.compile(rb"<([A-Za-z_][\w.\-]*:)?([A-Za-z_][\w.\-]*)")


# ------------------------------------------------------------------------- shared reader rules


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
    in their own units. Raises :class:`DataError` when no channel is left or an ECG channel is
    not in a voltage unit."""
    names = [str(n).strip() for n in names]
    units = [str(u).strip() for u in units]
    ecg = np.array([is_ecg_channel(n) for n in names], dtype=bool)
    keep = ecg if ecg_only else np.ones(len(names), dtype=bool)
    if not keep.any():
        found = ", ".join(names) or "none"
        raise DataError(f"no ECG channel among the channels found ({found}); pass ecg_only=False to keep them", source)
    factors = np.ones(len(names))
    for i in np.flatnonzero(ecg & keep):
        factor = mv_factor(units[i])
        if factor is None:
            raise DataError(f"ECG channel {names[i]!r} has units {units[i]!r}; expected mV, uV or V", source)
        factors[i] = factor
    idx = np.flatnonzero(keep)
    with np.errstate(over="ignore", invalid="ignore"):
        out = (np.asarray(signal, dtype=np.float64)[idx] * factors[idx, None]).astype(np.float32)
    if np.isinf(out).any():
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
    except ValueError:
        raise DataError(f"{what} is {text!r}, not a number", where) from None
    if not np.isfinite(value):
        raise DataError(f"{what} is {text!r}", where)
    return value


def parse_xml_file(path: Path, root_name: str, kind: str) -> ET.Element:
    """Parse an XML ECG export and check its root element's local name is ``root_name``.

    Documents with a DTD (``<!DOCTYPE``/``<!ENTITY``) are refused: ECG exports never need one,
    and entity expansion is how XML bombs and external-entity reads work.
    """
    if not path.is_file():
        raise DataError(f"{kind} file not found", path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot open file: {err.strerror or err}", path) from None
    if not data.strip():
        raise DataError(f"{kind} file is empty", path)
    if re.search(rb"<!(DOCTYPE|ENTITY)", data, flags=re.IGNORECASE):
        raise DataError(f"{kind} file declares a DOCTYPE/ENTITY, refused for safety", path)
    try:
        root = ET.fromstring(data)
    except (ET.ParseError, ValueError, LookupError) as err:  # malformed, bad encoding declaration
        raise DataError(f"not well-formed XML ({' '.join(str(err).split())})", path) from None
    if root.tag.rpartition("}")[2] != root_name:
        raise DataError(f"root element is <{root.tag}>, not <{root_name}>: not a {kind} file", path)
    return root


# ---------------------------------------------------------------------------------- detection


def _xml_root(head: bytes) -> str | None:
    """Local name of the first element of an XML document (after the prolog), or None."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text.startswith(b"<"):
        return None
    # skip processing instructions, comments and doctype declarations before the root
    text = re.sub(rb"<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>]*>", b"", text, flags=re.DOTALL)
    match = _XML_ROOT.search(text)
    return match.group(2).decode("ascii") if match else None


def _is_edf(head: bytes) -> bool:
    if len(head) < 256 or head[:8] != b"0       ":
        return False
    try:
        fields = head[168:256].decode("ascii")
        header_bytes, n_signals = int(fields[16:24]), int(fields[84:88])
    except (UnicodeDecodeError, ValueError):
        return False
    return n_signals > 0 and header_bytes == 256 * (n_signals + 1)


def _sibling_header(path: Path) -> Path | None:
    """``rec.hea`` next to a WFDB signal file ``rec.dat``/``rec.mat`` that it lists."""
    header = path.with_suffix(".hea")
    if header == path or not header.is_file():
        return None
    try:
        text = header.read_text(encoding="latin-1", errors="replace")
    except OSError:
        return None
    return header if re.search(rf"^{re.escape(path.name)}\s", text, flags=re.MULTILINE) else None


def _first_header_line(head: bytes) -> bytes:
    for line in head.splitlines():
        line = line.strip()
        if line and not line.startswith(b"#"):
            return line
    return b""


def _is_csv(head: bytes) -> bool:
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError:
        return False
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(head) == _SNIFF_BYTES:
        lines = lines[:-1]  # the last line may be cut in the middle
    if len(lines) < 2:
        return False
    try:
        dialect = csv.Sniffer().sniff("\n".join(lines[:20]), delimiters=",;\t ")
    except csv.Error:
        return False
    rows = list(csv.reader(io.StringIO("\n".join(lines[1:])), dialect))
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        return False
    try:
        [float(x) for x in rows[-1] if x.strip()]
    except ValueError:
        return False
    return True


def detect_format(path: str | PathLike[str]) -> str:
    """Name of the format of the ECG file at ``path``, one of :data:`FORMATS`, judged by its
    content. Raises :class:`DataError` for a missing file or one no reader recognises."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError as err:
        raise DataError(f"cannot open file: {err.strerror or err}", path) from None
    if not head:
        raise DataError("file is empty", path)
    if head[128:132] == b"DICM":
        return "dicom"
    if _is_edf(head):
        return "edf"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if _sibling_header(path) is not None:
        return "wfdb"
    root = _xml_root(head)
    if root == "RestingECG":
        return "muse"
    if root == "AnnotatedECG":
        return "hl7aecg"
    if root is None and _WFDB_FIRST_LINE.match(_first_header_line(head)) and not _is_csv(head):
        return "wfdb"
    if root is None and _is_csv(head):
        return "csv"
    what = f"XML root element <{root}>" if root else "no known signature"
    raise DataError(
        f"cannot tell the format of this file ({what}); supported: DICOM waveform, GE MUSE XML, "
        "HL7 aECG, EDF, WFDB, CSV, NumPy .npy",
        path,
    )


def read_ecg(
    path: str | PathLike[str], *, format: str | None = None, ecg_only: bool = True, **kwargs: Any
) -> EcgRecord:
    """Read an ECG in any supported format (detected from content unless ``format`` is given).

    Extra keyword arguments go to the format's reader (``group=`` for DICOM, ``waveform=`` for
    MUSE, ``series=`` for aECG, ``fs=``/``leads=``/``units=`` for CSV and NumPy).
    """
    path = Path(path)
    fmt = format or detect_format(path)
    if fmt == "dicom":
        from .dicom_waveform import read_dicom_ecg as reader
    elif fmt == "edf":
        from .edf import read_edf_ecg as reader
    elif fmt == "muse":
        from .muse import read_muse_xml as reader
    elif fmt == "hl7aecg":
        from .hl7aecg import read_hl7_aecg as reader
    elif fmt == "csv":
        from .tabular import read_csv_ecg as reader
    elif fmt == "npy":
        from .tabular import read_npy_ecg as reader
    elif fmt == "wfdb":
        from .wfdb import read_wfdb as reader

        path = _sibling_header(path) or path
        if path.suffix.lower() != ".hea":
            raise DataError("a WFDB header must be named <record>.hea to be read", path)
    else:
        raise DataError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}", path)
    return reader(path, ecg_only=ecg_only, **kwargs)
