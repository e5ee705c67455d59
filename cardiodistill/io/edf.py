"""EDF / EDF+ recordings (European Data Format) read as an EcgRecord in mV.

An EDF file is a 256-byte ASCII header (version ``"0       "``, patient and recording
identification, start date/time, header size, number of data records, record duration in
seconds, number of signals ``ns``), then ``ns`` x 256 bytes of per-signal fields stored field by
field (label 16, transducer 80, physical dimension 8, physical min/max 8+8, digital min/max 8+8,
prefiltering 80, samples per record 8, reserved 32), then the data records: each holds, signal
after signal, ``samples_per_record[i]`` little-endian int16 values. The physical value is the
linear map of the digital range onto the physical range,
``(d - dmin) * (pmax - pmin) / (dmax - dmin) + pmin``.

Signals may be sampled at different rates (``samples_per_record / duration``); this reader
keeps the ECG-labelled signals (``ecg_only``) or all signals, which must then share one rate.
EDF+ ``EDF Annotations`` signals are never returned. The whole parser is NumPy on the raw
bytes: ``wfdb.io.convert.edf.read_edf`` cannot read files whose signals have different rates.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np

from ..errors import DataError, SamplingRateError
from ..records import EcgRecord
from .common import build_record, is_ecg_channel
from .limits import MAX_CHANNELS, check_ecg_fs, check_ecg_shape

__all__ = ["read_edf_ecg"]

# (name, width) of the per-signal header fields, in file order (EDF specification)
_SIGNAL_FIELDS = (
    ("label", 16),
    ("transducer", 80),
    ("dimension", 8),
    ("pmin", 8),
    ("pmax", 8),
    ("dmin", 8),
    ("dmax", 8),
    ("prefilter", 80),
    ("samples", 8),
    ("reserved", 32),
)
_ANNOTATIONS = "EDF Annotations"


def _ascii(raw: bytes) -> str:
    # the standard says ASCII; real files put degree signs etc. in units, so be lenient
    return raw.decode("latin-1")


def _numbers(values: list[str], what: str, where: Path, kind: type = float) -> np.ndarray:
    try:
        out = np.array([kind(v) for v in values], dtype=np.float64)
    except ValueError:
        raise DataError(f"EDF header field {what} holds a non-number: {values}", where) from None
    if not np.isfinite(out).all():
        raise DataError(f"EDF header field {what} is not finite: {values}", where)
    return out


def _parse_header(head: bytes, size: int, where: Path) -> dict:
    """The main header, per-signal fields (lists/arrays) and the number of complete records."""
    if len(head) < 256 or head[:8] != b"0       ":
        raise DataError("not an EDF file (no '0       ' version field)", where)
    text = _ascii(head[:256])
    try:
        header_bytes, n_records, n_signals = int(text[184:192]), int(text[236:244]), int(text[252:256])
        duration = float(text[244:252])
    except ValueError:
        raise DataError("EDF header size/records/duration/signal-count fields are not numbers", where) from None
    if not 0 < n_signals <= MAX_CHANNELS:
        raise DataError(f"EDF header says {n_signals} signals; an ECG file holds 1-{MAX_CHANNELS}", where)
    if header_bytes != 256 * (n_signals + 1) or len(head) < header_bytes:
        raise DataError(
            f"EDF header is inconsistent or truncated ({n_signals} signals, {header_bytes} header bytes)", where
        )
    if not (np.isfinite(duration) and duration > 0):
        raise SamplingRateError(f"EDF data record duration must be positive seconds, got {duration!r}", where)
    fields: dict = {}
    offset = 256
    for name, width in _SIGNAL_FIELDS:
        block = _ascii(head[offset : offset + width * n_signals])
        fields[name] = [block[i * width : (i + 1) * width].strip() for i in range(n_signals)]
        offset += width * n_signals
    for name in ("pmin", "pmax", "dmin", "dmax"):
        fields[name] = _numbers(fields[name], name, where)
    fields["samples"] = _numbers(fields["samples"], "samples per record", where, int).astype(np.int64)
    if (fields["samples"] <= 0).any():
        raise DataError(f"EDF samples per record must be positive, got {fields['samples'].tolist()}", where)
    if (fields["dmax"] <= fields["dmin"]).any():
        raise DataError("EDF digital maximum must exceed digital minimum for every signal", where)
    record_bytes = 2 * int(fields["samples"].sum())
    available = (size - header_bytes) // record_bytes
    if n_records == -1:  # allowed while a recording is still being written
        n_records = available
    if n_records <= 0:
        raise DataError("EDF file has no data records", where)
    if available < n_records:
        raise DataError(f"EDF file is truncated: header says {n_records} data records, file holds {available}", where)
    return {
        "text": text,
        "header_bytes": header_bytes,
        "n_records": n_records,
        "duration": duration,
        "record_bytes": record_bytes,
        **fields,
    }


def read_edf_ecg(path: str | PathLike[str], *, ecg_only: bool = True) -> EcgRecord:
    """Read an EDF/EDF+ file as an :class:`EcgRecord` in mV.

    ``ecg_only`` keeps the signals labelled as ECG leads (they must share one sampling rate);
    otherwise every signal except EDF+ annotations is kept, non-voltage ones in their own unit.
    ``meta`` holds the patient and recording identification fields and the start date/time.
    EDF+D (discontinuous) files are refused. Anything unreadable raises :class:`DataError`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("EDF file not found", path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(256)
            if len(head) == 256 and head[252:256].strip().isdigit():
                head += fh.read(256 * min(int(head[252:256]), MAX_CHANNELS))
    except OSError as err:
        raise DataError(f"cannot open file: {err.strerror or err}", path) from None
    hdr = _parse_header(head, size, path)
    if hdr["text"][192:197] == "EDF+D":
        raise DataError("EDF+D (discontinuous) recordings are not supported; convert to EDF+C", path)

    labels = hdr["label"]
    signals = [i for i, label in enumerate(labels) if label != _ANNOTATIONS]
    if not signals:
        raise DataError("EDF file holds only annotations, no signals", path)
    chosen = [i for i in signals if is_ecg_channel(labels[i])] if ecg_only else signals
    if not chosen:  # let build_record name the channels that were found
        chosen = signals
    rates = {float(hdr["samples"][i]) / hdr["duration"] for i in chosen}
    if len(rates) != 1:
        raise SamplingRateError(
            f"the selected EDF signals have different sampling rates {sorted(rates)} Hz; select signals of one rate",
            path,
        )
    fs = check_ecg_fs(rates.pop(), path)
    check_ecg_shape(len(chosen), hdr["n_records"] * int(hdr["samples"][chosen[0]]), fs, path)

    # [n_records, samples-per-record of all signals] int16, memory-mapped: only chosen columns are copied
    data = np.memmap(
        path, dtype="<i2", mode="r", offset=hdr["header_bytes"], shape=(hdr["n_records"], hdr["record_bytes"] // 2)
    )
    starts = np.concatenate([[0], np.cumsum(hdr["samples"])])
    pmin, pmax, dmin, dmax = (hdr[k] for k in ("pmin", "pmax", "dmin", "dmax"))
    rows = []
    for i in chosen:
        digital = np.asarray(data[:, starts[i] : starts[i + 1]], dtype=np.float64).reshape(-1)
        rows.append((digital - dmin[i]) * (pmax[i] - pmin[i]) / (dmax[i] - dmin[i]) + pmin[i])
    del data
    text = hdr["text"]
    meta = {
        "patient": text[8:88].strip(),
        "recording": text[88:168].strip(),
        "start_date": text[168:176].strip(),
        "start_time": text[176:184].strip(),
        "edf_type": text[192:236].strip() or "EDF",
        "prefilter": [hdr["prefilter"][i] for i in chosen],
    }
    names = [labels[i] for i in chosen]
    units = [hdr["dimension"][i] for i in chosen]
    dropped = [labels[i] for i in signals if i not in chosen]
    record = build_record(np.stack(rows), fs, names, units, source=path, fmt="edf", ecg_only=ecg_only, meta=meta)
    record.meta["dropped_channels"] = dropped
    return record
