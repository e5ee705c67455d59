"""WFDB (PhysioNet) ECG records: write and read ``<name>.hea`` + ``<name>.dat``.

WFDB is the format of PhysioNet's ECG databases (PTB-XL, the CinC challenges, MIT-BIH). A record
is a text header (``.hea``: record name, number of signals, sampling rate, length; one line per
signal with its data file, storage format, ADC gain, baseline, units and name; ``#`` comment lines
that databases use for demographics and diagnoses) and a binary signal file (``.dat``).

We write storage format 16: interleaved little-endian int16 samples. A physical value ``v`` in mV
is stored as ``round(v * gain)`` with ``gain = 1000 / resolution_uv`` ADC units per mV and baseline
0, so the default resolution of 1 uV spans +-32.767 mV, far more than any surface ECG. The int16
value -32768 is WFDB's "no sample" marker: NaN samples are written as it (and read back as NaN),
and out-of-range values are clipped to +-32767 with a warning rather than wrapped around.

All the format work is done by the ``wfdb`` package; this module only maps between
:class:`~cardiodistill.records.EcgRecord` and ``wfdb`` and turns its many failure modes into one
line :class:`~cardiodistill.errors.DataError` messages naming the file.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import wfdb

from ..errors import DataError, one_line
from ..records import EcgRecord
from ..signals.leads import normalize_lead_name
from .atomic import atomic_paths
from .common import is_ecg_channel, mv_factor, no_ecg_lead
from .limits import MAX_CHANNELS, MAX_HEADER_BYTES, check_ecg_amplitude, check_ecg_fs, check_ecg_shape, check_file_size

__all__ = ["write_wfdb", "read_wfdb", "canonical_lead_name", "parse_comment_fields"]

_INT16_MAX = 32767  # -32768 is reserved: WFDB's "invalid sample" value in format 16
_INVALID_SAMPLE = -32768
_RECORD_NAME = re.compile(r"^[-\w]+$")  # what wfdb accepts as a record name
# Bytes per sample of the uncompressed WFDB storage formats (signal specification, "format");
# FLAC formats (508, 516, 524) are compressed and have no fixed size.
_SAMPLE_BYTES = {8: 1, 16: 2, 61: 2, 80: 1, 160: 2, 212: 1.5, 310: 4 / 3, 311: 4 / 3, 24: 3, 32: 4}


def canonical_lead_name(name: str) -> str:
    """``"avr"`` -> ``"aVR"``, ``"MLII"`` -> ``"II"``; names that are not an ECG lead
    (``"PLETH"``, ``"ABP"``) are returned stripped but otherwise unchanged."""
    return normalize_lead_name(name, strict=False)


def parse_comment_fields(comments: Sequence[str]) -> dict[str, str]:
    """Turn ``"Key: value"`` header comments (``"Age: 63"``, ``"Sex: M"``) into a dict with
    lower-case keys. Comments without a colon are skipped; a repeated key keeps its first value."""
    fields: dict[str, str] = {}
    for line in comments:
        key, sep, value = line.partition(":")
        if sep and key.strip():
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def _record_stem(path: str | PathLike[str]) -> Path:
    """``rec``, ``rec.hea`` and ``rec.dat`` all name the record ``rec``."""
    path = Path(path)
    return path.with_suffix("") if path.suffix.lower() in (".hea", ".dat") else path


def _to_adc(signal_mv: np.ndarray, gain: float, where: Path) -> np.ndarray:
    """Scale mV to int16 ADC units: round, clip to +-32767 (warning), NaN -> invalid marker."""
    scaled = np.rint(signal_mv.astype(np.float64) * gain)
    missing = np.isnan(scaled)
    too_big = ~missing & (np.abs(scaled) > _INT16_MAX)
    if too_big.any():
        limit_mv = _INT16_MAX / gain
        warnings.warn(
            f"{where}: {int(too_big.sum())} samples exceed +-{limit_mv:g} mV at this resolution "
            f"(largest {np.nanmax(np.abs(signal_mv)):.4g} mV) and were clipped",
            RuntimeWarning,
            stacklevel=3,
        )
    adc = np.clip(np.where(missing, 0.0, scaled), -_INT16_MAX, _INT16_MAX).astype(np.int16)
    adc[missing] = _INVALID_SAMPLE
    return adc


def write_wfdb(
    record: EcgRecord,
    path: str | PathLike[str],
    *,
    resolution_uv: float = 1.0,
    comments: Sequence[str] = (),
) -> Path:
    """Write ``record`` as ``<path>.hea`` + ``<path>.dat`` (format 16) and return the header path.

    ``path`` may carry a ``.hea``/``.dat`` suffix or none; the record name is the file stem and
    must be letters, digits, ``_`` or ``-`` (a WFDB rule). ``resolution_uv`` is the size of one
    ADC step in microvolts. ``comments`` become ``#`` header lines, e.g. ``"Age: 63"``. Both files
    appear together or not at all; existing files are replaced only when the write succeeded.
    """
    stem = _record_stem(path)
    name = stem.name
    header, data = stem.with_name(f"{name}.hea"), stem.with_name(f"{name}.dat")
    if not _RECORD_NAME.match(name):
        raise DataError(f"WFDB record name {name!r} may only contain letters, digits, '_' and '-'", header)
    if not (np.isfinite(resolution_uv) and resolution_uv > 0):
        raise DataError(f"resolution_uv must be a positive number, got {resolution_uv!r}", header)
    comments = [str(c) for c in comments]
    if any("\n" in c or "\r" in c for c in comments):
        raise DataError("WFDB header comments must be single lines", header)
    bad_names = [lead for lead in record.leads if not lead or any(ch.isspace() for ch in lead)]
    if bad_names:
        raise DataError(f"WFDB signal names cannot be empty or contain spaces: {bad_names}", header)

    gain = 1000.0 / resolution_uv
    adc = _to_adc(record.signal, gain, header)  # [n_leads, n_samples]
    with atomic_paths(data, header) as (tmp_data, tmp_header):
        # Format 16: interleaved little-endian int16 samples. We write the two files directly
        # (wfdb.wrsamp spends ~35 ms per record validating its header fields); the tests read
        # every written record back with wfdb.rdrecord to hold this to the specification.
        np.ascontiguousarray(adc.T).astype("<i2").tofile(tmp_data)
        tmp_header.write_text(_format16_header(name, record, adc, gain, comments))
    return header


def _format16_header(name: str, record: EcgRecord, adc: np.ndarray, gain: float, comments: Sequence[str]) -> str:
    """The ``.hea`` text for a format-16 record with one ``.dat`` file (WFDB header spec)."""
    n_leads, n_samples = adc.shape
    fs = f"{record.fs:.12g}"
    # per-signal checksum: 16-bit two's complement sum of the samples
    checksum = (adc.astype(np.int64).sum(axis=1) + 2**15) % 2**16 - 2**15
    init = adc[:, 0] if n_samples else np.zeros(n_leads, np.int16)
    lines = [f"{name} {n_leads} {fs} {n_samples}"]
    for i, lead in enumerate(record.leads):
        lines.append(f"{name}.dat 16 {gain:.12g}(0)/mV 16 0 {int(init[i])} {int(checksum[i])} 0 {lead}")
    lines += [f"# {c}" for c in comments]
    return "\n".join(lines) + "\n"



def _unit_factor(units: str, lead: str, header: Path) -> float:
    factor = mv_factor(units)
    if factor is None:
        raise DataError(f"signal {lead!r} has units {units!r}; expected V, mV, uV or nV", header)
    return factor


def _header_lines(header: Path) -> tuple[int, bool]:
    """(number of signal or segment lines, whether it is a multi-segment record) of a header,
    read without wfdb (whose parser is quadratic in signal lines), after checking its size."""
    check_file_size(header, MAX_HEADER_BYTES, "WFDB header")
    try:
        text = header.read_bytes().decode("latin-1")
    except OSError as err:
        raise DataError(f"cannot open file: {err.strerror or err}", header) from None
    lines = [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return max(len(lines) - 1, 0), bool(lines) and "/" in lines[0][0]


def _check_claims(head: wfdb.Record, header: Path) -> None:
    """Refuse header fields no ECG can have (rate, channels, length), and a length the signal
    files cannot hold, before wfdb allocates anything from them."""
    fs = check_ecg_fs(head.fs, header)
    if head.n_sig != len(head.file_name or []):
        # checked before reading: wfdb would first build per-signal lists of the claimed length
        raise DataError(f"WFDB header says {head.n_sig} signals but describes {len(head.file_name or [])}", header)
    if not head.sig_len:
        return  # no length given: wfdb derives it from the signal file's size
    check_ecg_shape(head.n_sig, int(head.sig_len), fs, header)
    frame_bytes: dict[str, float] = {}
    for name, fmt, per_frame in zip(head.file_name, head.fmt or [], head.samps_per_frame or [1] * head.n_sig):
        size = _SAMPLE_BYTES.get(int(fmt) if str(fmt).isdigit() else -1)
        if size is None:
            return  # compressed: the file size says nothing about the length
        frame_bytes[name] = frame_bytes.get(name, 0.0) + size * int(per_frame or 1)
    for name, per_frame in frame_bytes.items():
        data = header.with_name(name)
        if data.is_file() and data.stat().st_size < int(head.sig_len) * per_frame:
            raise DataError(
                f"WFDB signal file is truncated: the header says {int(head.sig_len)} samples, the file holds "
                f"{int(data.stat().st_size / per_frame)}",
                data,
            )


def read_wfdb(path: str | PathLike[str], *, ecg_only: bool = False) -> EcgRecord:
    """Read a WFDB record (``path`` with or without ``.hea``) as an :class:`EcgRecord` in mV.

    With ``ecg_only`` channels that are not ECG leads (``PLETH``, ``ABP``: see
    :func:`~cardiodistill.io.common.is_ecg_channel`) are dropped before their units are checked
    and listed in ``meta["dropped_channels"]``; by default every channel must be in mV, uV or V.

    Lead names that are the standard 12 in any letter case become canonical (``avr`` -> ``aVR``);
    a signal line without a description is named ``"signal <n>"``.
    Missing samples read as NaN. ``meta`` holds the header ``comments``, their ``"Key: value"``
    ``fields`` (lower-case keys) and the ``record_name``. Any unreadable, missing, empty,
    truncated or implausible file (see :mod:`.limits`) raises a one-line :class:`DataError` naming it.
    """
    stem = _record_stem(path)
    header = stem.with_name(f"{stem.name}.hea")
    if not header.is_file():
        raise DataError("WFDB header not found", header)
    if header.stat().st_size == 0:
        raise DataError("WFDB header is empty", header)
    n_lines, multi_segment = _header_lines(header)
    try:
        head = wfdb.rdheader(str(stem)) if n_lines <= MAX_CHANNELS or multi_segment else None
    except Exception as err:  # wfdb raises HeaderSyntaxError, IndexError, ValueError, ...
        raise DataError(f"cannot parse WFDB header: {one_line(err)[:200]}", header) from None
    if head is None:
        raise DataError(f"WFDB header describes {n_lines} signals; an ECG file holds 1-{MAX_CHANNELS}", header)
    if isinstance(head, wfdb.Record):
        _check_claims(head, header)
        signal_files = sorted({str(header.with_name(f)) for f in (head.file_name or [])})
    else:  # a multi-segment record: its "signal files" are the segments' headers ("~" is a gap)
        check_ecg_fs(head.fs, header)
        signal_files = [str(header.with_name(f"{seg}.hea")) for seg in head.seg_name if seg != "~"]
        if head.sig_len:
            check_ecg_shape(max(int(head.n_sig or 1), 1), int(head.sig_len), float(head.fs), header)
    where = ", ".join(signal_files) or header
    try:
        rec = wfdb.rdrecord(str(stem))
    except FileNotFoundError:
        missing = [f for f in signal_files if not Path(f).is_file()]
        raise DataError("WFDB signal file not found", ", ".join(missing) or where) from None
    except DataError:
        raise
    except Exception as err:  # a truncated or corrupt signal file: ValueError, IndexError, ...
        raise DataError(f"cannot read WFDB samples, truncated or corrupt? ({one_line(err)[:200]})", where) from None
    if rec.p_signal is None or rec.p_signal.size == 0:
        raise DataError("WFDB record has no samples", header)
    fs = check_ecg_fs(rec.fs, header)
    check_ecg_shape(rec.p_signal.shape[1], rec.p_signal.shape[0], fs, header)

    names = [str(name).strip() if name is not None and str(name).strip() else f"signal {i + 1}"
             for i, name in enumerate(rec.sig_name or [None] * rec.p_signal.shape[1])]
    keep = [i for i, name in enumerate(names) if not ecg_only or is_ecg_channel(name)]
    if not keep:
        raise no_ecg_lead(names, header)
    leads = tuple(canonical_lead_name(names[i]) for i in keep)
    factors = np.array([_unit_factor(str(rec.units[i]), lead, header) for i, lead in zip(keep, leads)])
    with np.errstate(over="ignore", invalid="ignore"):
        signal = (rec.p_signal[:, keep].T * factors[:, None]).astype(np.float32)  # [n_leads, n_samples] mV
    check_ecg_amplitude(signal, header)
    comments = list(rec.comments or [])
    meta = {"record_name": rec.record_name, "comments": comments, "fields": parse_comment_fields(comments)}
    meta |= {
        "format": "wfdb",
        "original_leads": [names[i] for i in keep],
        "units_found": [rec.units[i] for i in keep],
    }
    meta["dropped_channels"] = [name for i, name in enumerate(names) if i not in keep]
    return EcgRecord(signal=signal, fs=fs, leads=leads, source=str(header), meta=meta)

