"""ECGs as plain tables: delimited text (CSV/TSV) and NumPy ``.npy`` arrays, read and write.

Research exports and device SDKs often give an ECG as a table: one column per lead (header row
of lead names), optionally a leading time column. Such files say nothing about units or rate,
so this module is strict about what it infers:

* **Rate**: from ``fs=``, or from a time column (``time``, ``t``, ``time_s``, ``seconds``;
  ``..._ms`` / ``ms`` in milliseconds), which must be uniform to within a tenth of a sample
  period; otherwise :class:`~cardiodistill.errors.SamplingRateError`. A ``sample``/``index``
  column is dropped but gives no rate.
* **Units**: from ``units=`` (``"mV"``, ``"uV"``, ``"V"``), or guessed from the amplitude: a
  surface ECG lead spans roughly 0.5-5 mV between its 1st and 99th percentile, so a range of
  0.2-20 reads as mV and 200-20000 as uV; anything else, or leads that disagree, is refused.
* **Leads**: from the header row or ``leads=``; a name that is not an ECG lead is a
  :class:`~cardiodistill.errors.LeadError`. Empty cells and ``NaN`` are missing samples (kept as
  NaN); a lead with no samples at all is refused.

:func:`write_csv_ecg` writes the format this reader reads back exactly: ``time_s`` then one
column per lead, in mV with 6 decimals (1 nV, far below any ADC step).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError, LeadError, SamplingRateError, one_line
from ..records import EcgRecord
from ..signals.leads import normalize_lead_name
from ..signals.units import guess_unit
from .atomic import atomic_path
from .common import is_ecg_channel, mv_factor
from .limits import MAX_TABLE_BYTES, check_ecg_amplitude, check_ecg_fs, check_ecg_shape, check_file_size

__all__ = ["read_csv_ecg", "read_npy_ecg", "write_csv_ecg", "guess_units"]

_TIME_S = re.compile(r"^(t|time|times|sec|secs|seconds|time ?\(s\)|time_?s|time_?sec|timestamp)$", re.IGNORECASE)
_TIME_MS = re.compile(r"^(ms|msec|time ?\(ms\)|time_?ms|t_?ms)$", re.IGNORECASE)
_INDEX = re.compile(r"^(sample|samples|index|idx|n|sample_?(no|number|index)?)$", re.IGNORECASE)


def guess_units(signal: np.ndarray, where: str | PathLike[str] | None = None) -> str:
    """``"mV"`` or ``"uV"`` by :func:`cardiodistill.signals.units.guess_unit`; :class:`DataError`
    asking for ``units=`` when the amplitudes fit neither."""
    unit = guess_unit(signal)
    if unit is None:
        raise DataError("cannot guess the units from the lead amplitudes; give the units (mV, uV or V; --units)", where)
    return unit


def _lead_names(names: Sequence[str], where: Path) -> tuple[str, ...]:
    leads = []
    for name in names:
        if not is_ecg_channel(str(name)):
            raise LeadError(
                f"unknown lead name {str(name)!r} (expected I, II, III, aVR, aVL, aVF, V1-V6 or an ECG label)", where
            )
        leads.append(normalize_lead_name(str(name), strict=False))
    return tuple(leads)


def _to_mv(signal: np.ndarray, units: str | None, leads: Sequence[str], where: Path) -> tuple[np.ndarray, str, bool]:
    """(signal in mV, unit, whether the unit was guessed); refuses leads without any sample."""
    empty = [lead for lead, row in zip(leads, signal) if not np.isfinite(row).any()]
    if empty:
        raise DataError(f"leads with no valid samples: {', '.join(empty)}", where)
    if np.isinf(signal).any():
        raise DataError("infinite sample values", where)
    guessed = units is None
    unit = guess_units(signal, where) if guessed else str(units)
    factor = mv_factor(unit)
    if factor is None:
        raise DataError(f"units must be 'mV', 'uV' or 'V', got {units!r}", where)
    return signal * factor, unit, guessed


def _rate_from_time(t: np.ndarray, scale: float, where: Path) -> float:
    """Sampling rate of a uniform time column (values times ``scale`` are seconds)."""
    t = t * scale
    if t.size < 2 or not np.isfinite(t).all():
        raise SamplingRateError("the time column has fewer than two valid values", where)
    span = t[-1] - t[0]
    if not span > 0:
        raise SamplingRateError("the time column does not increase", where)
    period = span / (t.size - 1)
    deviation = np.abs(t - (t[0] + period * np.arange(t.size))).max()
    if deviation > 0.1 * period:
        raise SamplingRateError(
            f"the time column is not uniformly sampled (off by up to {deviation / period:.2f} sample periods); give fs (--fs)",
            where,
        )
    fs = 1.0 / period
    return float(round(fs)) if abs(fs - round(fs)) < 1e-4 * fs else fs


def _check_fs(fs: float | None, where: Path) -> None:
    if fs is not None:
        check_ecg_fs(fs, where, "fs")


def _finish(signal: np.ndarray, fs: float, leads: tuple[str, ...], where: Path, meta: dict) -> EcgRecord:
    check_ecg_fs(fs, where)
    check_ecg_shape(*signal.shape, fs, where)
    with np.errstate(over="ignore"):
        signal = signal.astype(np.float32)
    check_ecg_amplitude(signal, where)
    meta["n_missing"] = int(np.isnan(signal).sum())
    return EcgRecord(signal=signal, fs=fs, leads=leads, source=str(where), meta=meta)


def read_csv_ecg(
    path: str | PathLike[str],
    *,
    fs: float | None = None,
    leads: Sequence[str] | None = None,
    units: str | None = None,
    ecg_only: bool = True,  # accepted for read_ecg; every CSV column must be an ECG lead
) -> EcgRecord:
    """Read a delimited-text ECG (comma, semicolon, tab or space separated) as an EcgRecord.

    ``leads`` names the signal columns (overriding a header row; required without one);
    ``fs`` is required unless a time column gives it; ``units`` as above. ``meta`` records the
    units found and whether they were guessed, the delimiter and the dropped time column.
    """
    path = Path(path)
    _check_fs(fs, path)
    if not path.is_file():
        raise DataError("CSV file not found", path)
    check_file_size(path, MAX_TABLE_BYTES, "CSV file")
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            sample = fh.read(8192)
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read as text: {' '.join(str(err).split())}", path) from None
    lines = [ln for ln in sample.splitlines() if ln.strip()]
    if not lines:
        raise DataError("CSV file is empty", path)
    try:
        delimiter = csv.Sniffer().sniff("\n".join(lines[:20]), delimiters=",;\t ").delimiter
    except csv.Error:
        delimiter = ","
    first = next(csv.reader([lines[0]], delimiter=delimiter))
    has_header = any(not _is_number(cell) for cell in first)
    try:
        table = pd.read_csv(
            path,
            sep=r"\s+" if delimiter == " " else delimiter,
            header=0 if has_header else None,
            encoding="utf-8-sig",
            skip_blank_lines=True,
        )
    except Exception as err:  # pandas: ParserError, EmptyDataError, UnicodeDecodeError, ...
        raise DataError(f"cannot parse CSV: {' '.join(str(err).split())}", path) from None
    columns = [str(c).strip() for c in table.columns]
    try:
        values = table.apply(pd.to_numeric, errors="raise").to_numpy(dtype=np.float64).T  # [n_columns, n_rows]
    except (ValueError, TypeError) as err:
        raise DataError(f"CSV holds non-numeric values ({' '.join(str(err).split())})", path) from None
    if values.shape[1] == 0:
        raise DataError("CSV has no data rows", path)

    meta: dict = {"format": "csv", "delimiter": delimiter}
    time_col = None
    if has_header and columns:
        if _TIME_S.match(columns[0]) or _TIME_MS.match(columns[0]) or _INDEX.match(columns[0]):
            time_col = columns[0]
    elif leads is not None and values.shape[0] == len(leads) + 1:
        time_col = "column 1"  # one column more than leads: the first one is time or an index
    if time_col is not None:
        t, values, columns = values[0], values[1:], columns[1:]
        meta["time_column"] = time_col
        if not _INDEX.match(time_col) and time_col != "column 1":
            inferred = _rate_from_time(t, 1e-3 if _TIME_MS.match(time_col) else 1.0, path)
            if fs is None:
                fs = inferred
            elif abs(inferred - fs) > 0.01 * fs:
                raise SamplingRateError(f"fs={fs:g} Hz but the time column says {inferred:g} Hz", path)
    if fs is None:
        raise SamplingRateError("the CSV file has no time column to give its sampling rate; give fs (--fs)", path)
    if leads is None and not has_header:
        raise LeadError("the CSV file has no header row of lead names; give leads (--leads)", path)
    names = list(leads) if leads is not None else columns
    if len(names) != values.shape[0]:
        raise LeadError(f"{len(names)} lead names for {values.shape[0]} signal columns", path)
    lead_names = _lead_names(names, path)
    signal, unit, guessed = _to_mv(values, units, lead_names, path)
    meta |= {"original_leads": [str(n) for n in names], "units_found": unit, "units_guessed": guessed}
    return _finish(signal, fs, lead_names, path, meta)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_npy_ecg(
    path: str | PathLike[str],
    *,
    fs: float | None = None,
    leads: Sequence[str] | None = None,
    units: str | None = None,
    ecg_only: bool = True,  # accepted for read_ecg; every row must be an ECG lead
) -> EcgRecord:
    """Read a 2-D ``.npy`` array ``[n_leads, n_samples]`` or ``[n_samples, n_leads]`` (the axis
    whose length equals ``len(leads)`` is the lead axis) as an EcgRecord.

    A bare array says neither its rate nor its leads, so ``fs`` and ``leads`` are required: without
    them the error says so (a :class:`SamplingRateError` / :class:`LeadError`, not a TypeError)."""
    path = Path(path)
    if fs is None:
        raise SamplingRateError("a NumPy .npy array does not say its sampling rate; give fs (--fs)", path)
    if leads is None:
        raise LeadError("a NumPy .npy array does not name its leads; give leads (--leads)", path)
    _check_fs(fs, path)
    lead_names = _lead_names(leads, path)
    if not path.is_file():
        raise DataError("NumPy file not found", path)
    check_file_size(path, MAX_TABLE_BYTES, "NumPy file")
    try:  # memory-mapped: the header's shape is checked against the file before anything is copied
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as err:  # ValueError (bad header, pickled object, shape beyond the file), EOFError, OSError
        raise DataError(f"cannot load .npy array: {one_line(err)[:200]}", path) from None
    if not isinstance(array, np.ndarray) or array.ndim != 2:
        raise DataError(f"expected a 2-D array, got shape {getattr(array, 'shape', None)}", path)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise DataError(f"expected a numeric array, got dtype {array.dtype}", path)
    n = len(lead_names)
    if array.shape[0] == n and array.shape[1] != n:
        values = array
    elif array.shape[1] == n and array.shape[0] != n:
        values = array.T
    else:
        raise LeadError(f"cannot tell the lead axis of shape {array.shape} for {n} leads", path)
    check_ecg_shape(*values.shape, float(fs), path)
    signal, unit, guessed = _to_mv(np.array(values, dtype=np.float64), units, lead_names, path)
    meta = {
        "format": "npy",
        "original_leads": [str(n) for n in leads],
        "units_found": unit,
        "units_guessed": guessed,
        "transposed": values is not array,
    }
    return _finish(signal, float(fs), lead_names, path, meta)


def write_csv_ecg(record: EcgRecord, path: str | PathLike[str], *, include_time: bool = True) -> Path:
    """Write ``record`` as CSV: a ``time_s`` column (unless ``include_time``  is False), then one
    column per lead in mV with 6 decimals; NaN samples are empty cells. Atomic."""
    path = Path(path)
    columns = {}
    if include_time:
        columns["time_s"] = np.arange(record.n_samples) / record.fs
    columns |= {lead: row for lead, row in zip(record.leads, record.signal.astype(np.float64))}
    frame = pd.DataFrame(columns)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6f", na_rep="", lineterminator="\n")
    return path
