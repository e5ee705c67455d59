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

XML formats are recognised in UTF-8 and UTF-16 (with or without a byte-order mark).

:func:`read_ecg` dispatches to the format's reader. Every reader returns an
:class:`~cardiodistill.records.EcgRecord` in mV with canonical lead names, and keeps only ECG
channels unless asked otherwise (``ecg_only=False``); :func:`is_ecg_channel` and
:func:`build_record` (in :mod:`.common`, importable from here too) are the shared rules the
readers use for that.
"""

from __future__ import annotations

import csv
import inspect
import io
import re
from os import PathLike
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..records import EcgRecord

# the shared reader rules live in .common; they stay importable from here
from .common import build_record, is_ecg_channel, mv_factor, parse_number, parse_xml_file, xml_root_name
from .limits import MAX_HEADER_BYTES

__all__ = ["FORMATS", "detect_format", "read_ecg", "is_ecg_channel", "build_record", "mv_factor", "parse_number", "parse_xml_file"]

FORMATS = ("dicom", "edf", "npy", "muse", "hl7aecg", "wfdb", "csv")

_SNIFF_BYTES = 8192
_FORMAT_NAMES = {
    "dicom": "DICOM waveform",
    "edf": "EDF",
    "npy": "NumPy .npy",
    "muse": "GE MUSE XML",
    "hl7aecg": "HL7 aECG",
    "wfdb": "WFDB",
    "csv": "CSV",
}
_WFDB_FIRST_LINE = re.compile(
    rb"^[\w\-]+(/\d+)?[ \t]+\d+([ \t]+[\d.eE+\-]+(/[\d.eE+\-]+)?(\(\-?[\d.]+\))?)?([ \t]+\d+)?"
)


# ---------------------------------------------------------------------------------- detection


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
        with open(header, "rb") as fh:
            text = fh.read(MAX_HEADER_BYTES).decode("latin-1")
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
    root = xml_root_name(head)
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
    unknown = sorted(set(kwargs) - set(inspect.signature(reader).parameters))
    if unknown:
        raise DataError(f"{', '.join(unknown)} does not apply to a {_FORMAT_NAMES[fmt]} file", path)
    return reader(path, ecg_only=ecg_only, **kwargs)
