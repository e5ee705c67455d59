"""Training windows from many ECG sources: one rate, one window length, 12 lead slots, one cache.

Pretraining mixes sources that share nothing but being ECGs: PTB-XL (12 leads, 100 or 500 Hz,
10 s), PhysioNet/CinC 2017 (one handheld lead, 300 Hz, 9-61 s), the simulator (12-lead at
500 Hz and a 1- or 6-lead handheld at 300 Hz), any folder of clinical files. Every record goes
through the package's one preparation, :func:`cardiodistill.signals.prepare` with the encoder's
:class:`~cardiodistill.signals.InputSpec` (:func:`record_windows`): canonical leads, gaps filled,
resampled to the model's rate, band-passed (default 0.5-40 Hz, zero phase), cut into non-overlapping
windows of the model's length - at most ``max_windows`` per record, evenly spread; a tail shorter
than ``spec.min_fraction`` of a window is dropped, a longer one zero-padded - and each lead of each
window z-scored on its own; a lead that is flat in a window (or absent from the record) is marked
absent in ``present`` and left at zero. The edge runtime prepares a recording with the same function.

Windows are laid out in :data:`~cardiodistill.signals.leads.LEADS_12` order, ``[12, S]``, with a
``present [12]`` mask, whatever leads the record had: the lead-agnostic encoder reads ``present``
as its ``lead_mask``.

The window cache
    Reading and filtering thousands of files is done once. :func:`build_window_cache` writes the
    windows of all sources to a folder in the layout of :mod:`~cardiodistill.data.cache`:
    ``windows-NNNNN.npy`` (float16 ``[n, 12, S]``) and ``present-NNNNN.npy`` (bool ``[n, 12]``) in
    chunks, ``items.csv`` (source, record, start second, split) and, last, ``cache.json`` (the
    spec, the sources and the counts). It is built atomically and reused when ``cache.json``
    matches the requested spec and sources. :class:`WindowCache` reads it back memory-mapped.

Validation windows are chosen by record (a hash of the record id), so no record has windows on
both sides.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import CardiodistillError, DataError
from ..records import EcgRecord
from ..signals.leads import LEADS_12
from ..signals.prepare import InputSpec, prepare
from .cache import (
    REAL_IDS_ENV,
    ArrayCache,
    CacheBuilder,
    ids_fingerprint,
    is_val_record,
    opted_in,
    redact,
    reuse_cache,
    written_id,
)

__all__ = [
    "SOURCE_KINDS",
    "EcgSource",
    "WindowCache",
    "WindowSpec",
    "build_window_cache",
    "iter_source_records",
    "record_windows",
    "register_ecg_source",
    "source_loaders",
]

CACHE_FORMAT = "cardiodistill-ecg-windows"
CACHE_VERSION = 2
SOURCE_KINDS = ("ptbxl", "cinc2017", "synth", "cohort", "files")


#: The former name of :class:`~cardiodistill.signals.InputSpec` (``WindowSpec(fs, seconds, band)`` reads the same).
WindowSpec = InputSpec


@dataclass(frozen=True)
class EcgSource:
    """One source of unlabelled ECGs (see :func:`iter_source_records` for each ``kind``)."""

    kind: str
    path: str | None = None
    name: str | None = None
    folds: tuple[int, ...] | None = None  # ptbxl: strat_folds to read (None: all in the folder)
    patients: int = 200  # synth: how many patients to simulate
    seed: int = 0  # synth
    pattern: str = "**/*.hea"  # files: glob under path
    max_records: int | None = None
    max_windows: int = 3  # windows per record
    exclude: str | None = None  # a text file of record ids to leave out (see excluded_records)

    @property
    def label(self) -> str:
        return self.name or (self.kind if self.path is None else f"{self.kind}:{Path(self.path).name}")


# ----------------------------------------------------------------------------------- one record


def record_windows(
    record: EcgRecord, spec: WindowSpec, *, max_windows: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(windows float32 [W, 12, S], present bool [W, 12], starts_s [W])`` of one record: the package's one
    preparation (:func:`~cardiodistill.signals.prepare`) in the lead-agnostic 12-slot layout; windows in
    which no lead has signal are dropped. ``W`` may be 0 (record shorter than ``spec.min_fraction`` of a
    window, or no usable lead)."""
    prepared = prepare(record, spec, max_windows=max_windows, keep_short=False)
    keep = prepared.present.any(axis=1)
    return prepared.windows[keep], prepared.present[keep], prepared.starts_s[keep]


# ----------------------------------------------------------------------------------- sources


Loader = Callable[[], EcgRecord]


def iter_source_records(source: EcgSource) -> Iterator[tuple[str, EcgRecord]]:
    """``(record id, record)`` of a source. Labels are never read into the windows.

    * ``ptbxl``: a PTB-XL folder, either layout (:class:`~cardiodistill.data.datasets.PTBXL`),
      records with and without diagnostic labels, optionally only ``folds``;
    * ``cinc2017``: a CinC 2017 folder (``REFERENCE.csv`` + WFDB records), every record;
    * ``synth``: ``patients`` simulated patients (``seed``): their 12-lead and handheld ECGs,
      generated in memory, no files (registered by :mod:`cardiodistill.stages`: data never imports
      the simulator);
    * ``cohort``: a simulated cohort folder written by ``cardiodistill synth`` (its manifest's
      12-lead and handheld WFDB files);
    * ``files``: every file matching ``pattern`` under ``path``, read by format detection.
    """
    for record_id, load in source_loaders(source):
        yield record_id, load()


def source_loaders(source: EcgSource) -> Iterator[tuple[str, Loader]]:
    """``(record id, loader)`` pairs: the reading happens when the loader is called, so a caller
    can skip one unreadable record and go on with the next."""
    kind = source.kind
    if kind not in SOURCE_KINDS:
        raise DataError(f"unknown ECG source kind {kind!r}; expected one of {', '.join(SOURCE_KINDS)}", source.path)
    if kind not in _READERS:
        raise DataError(f"ECG source kind {kind!r} is not registered in this process (the simulator's 'synth' "
                        "is registered by importing cardiodistill.stages)", source.path)
    if kind in _NEEDS_PATH and not source.path:
        raise DataError(f"ECG source of kind {kind!r} needs a path", None)
    items = _READERS[kind](source)
    if source.exclude is not None:
        leave_out = excluded_records(source.exclude)
        items = (item for item in items if item[0] not in leave_out and item[0].rsplit("/", 1)[-1] not in leave_out)
    for count, item in enumerate(items):
        if source.max_records is not None and count >= source.max_records:
            return
        yield item


def excluded_records(path: str | PathLike[str]) -> frozenset[str]:
    """The record ids a source leaves out, one per line of the text file ``path``: the id the window cache
    gives (``cinc2017/A00001``) or the bare record name (``A00001``); blank lines and ``#`` comments skipped.
    Records held out for evaluation go here, so that pretraining never sees them, not even unlabelled."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise DataError(f"cannot read the list of records to exclude ({err.strerror})", path) from None
    return frozenset(line.split("#", 1)[0].strip() for line in lines) - {""}


def _ptbxl(source: EcgSource) -> Iterator[tuple[str, Loader]]:
    from .datasets.ptbxl import PTBXL

    data = PTBXL(source.path, folds=source.folds, drop_empty=False, sampling_rate=None)
    for i, ecg_id in enumerate(data.frame["ecg_id"]):
        yield f"ptbxl/{ecg_id}", lambda i=i: data[i][0]


def _cinc2017(source: EcgSource) -> Iterator[tuple[str, Loader]]:
    from .datasets.cinc2017 import CinC2017

    data = CinC2017(source.path)  # items are lead I in mV, whatever the header calls the channel
    for i in np.argsort(data.frame["number"].to_numpy(), kind="stable"):
        yield f"cinc2017/{data.frame['record'].iloc[i]}", lambda i=int(i): data[i][0]


def _cohort(source: EcgSource) -> Iterator[tuple[str, Loader]]:
    from ..io.wfdb import read_wfdb

    root = Path(source.path)
    manifest_path = root / "manifest.csv"
    if not manifest_path.is_file():
        raise DataError("manifest.csv not found: not a cohort folder written by cardiodistill synth", root)
    manifest = pd.read_csv(manifest_path)
    for column in ("ecg_path", "mobile_path"):
        for path in manifest[column].dropna() if column in manifest else ():
            yield f"{root.name}/{path}", lambda path=path: read_wfdb(root / path)


def _files(source: EcgSource) -> Iterator[tuple[str, Loader]]:
    from ..io.detect import read_ecg

    root = Path(source.path)
    if not root.is_dir():
        raise DataError("not a folder", root)
    for path in sorted(root.glob(source.pattern)):
        target = path.with_suffix("") if path.suffix == ".hea" else path
        yield str(target.relative_to(root)), lambda path=path: read_ecg(path)


SourceReader = Callable[[EcgSource], Iterator[tuple[str, Loader]]]
_READERS: dict[str, SourceReader] = {"ptbxl": _ptbxl, "cinc2017": _cinc2017, "cohort": _cohort, "files": _files}
_NEEDS_PATH = frozenset(_READERS)


def register_ecg_source(kind: str, reader: SourceReader) -> None:
    """Make ``reader(source) -> (record id, loader)...`` the reader of ECG sources of ``kind`` (one of
    :data:`SOURCE_KINDS`): how a data source outside this package (the simulator) plugs in."""
    if kind not in SOURCE_KINDS:
        raise ValueError(f"unknown ECG source kind {kind!r}; expected one of {', '.join(SOURCE_KINDS)}")
    _READERS[kind] = reader


# ----------------------------------------------------------------------------------- the cache


def _fingerprint(spec: WindowSpec, sources: Sequence[EcgSource], val_fraction: float) -> dict[str, Any]:
    found = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "spec": spec.to_dict(),
        "sources": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(s).items() if k != "exclude"}
                    for s in sources],
        "val_fraction": val_fraction,
    }
    if any(s.exclude for s in sources):  # what is left out, not where the list lies (older caches stay valid)
        found["excluded"] = [sorted(excluded_records(s.exclude)) if s.exclude else None for s in sources]
    return found


def build_window_cache(
    folder: str | PathLike[str],
    sources: Sequence[EcgSource],
    spec: WindowSpec,
    *,
    val_fraction: float = 0.02,
    chunk_windows: int = 4096,
    progress: Callable[[str, int], None] | None = None,
    real_ids: bool | None = None,
) -> WindowCache:
    """Write (or reuse) the window cache of ``sources`` at ``folder`` (module doc); returns it open.

    ``progress(source label, records done in it)`` is called after every record. A record that
    cannot be read or processed is skipped and counted under ``skipped`` in ``cache.json`` with
    its one-line reason (the first 20 are kept), so one bad file does not end a long job; a
    source that cannot be opened at all (no such folder, no REFERENCE.csv) is an error.

    ``items.csv`` and the reasons name a record of a folder of files or of a cohort by the keyed
    pseudonym of its id (its path), file names taken out of the reasons; ids of the public data sets
    and of the simulator stay (:mod:`~cardiodistill.data.cache`, "Identifiers"). ``real_ids`` writes
    every id as it is (None: ``$CARDIODISTILL_REAL_IDS``). The split hashes the real id, as it always has.
    """
    folder = Path(folder)
    real_ids = opted_in(real_ids, REAL_IDS_ENV)
    wanted = {**_fingerprint(spec, sources, val_fraction), **ids_fingerprint(real_ids)}
    if reuse_cache(folder, wanted):
        return WindowCache(folder)
    if not sources:
        raise DataError("no ECG sources to build a window cache from", folder)
    counts: dict[str, dict[str, int]] = {}
    skipped: list[str] = []
    with CacheBuilder(folder, {"windows": np.float16, "present": bool}, chunk=chunk_windows) as builder:
        for source in sources:
            count = counts.setdefault(source.label, {"records": 0, "windows": 0, "skipped": 0})
            public = source.kind in ("ptbxl", "cinc2017", "synth")  # ids that identify no one
            for done, (record_id, load) in enumerate(source_loaders(source), 1):
                name = written_id(record_id, real_ids or public)
                try:
                    windows, present, starts = record_windows(load(), spec, max_windows=source.max_windows)
                except CardiodistillError as err:  # the reason without the file's path (names can identify)
                    count["skipped"] += 1
                    reason = str(getattr(err, "problem", err))
                    skipped.append(f"{name}: {reason if real_ids or public else redact(reason, record_id)}")
                    continue
                split = "val" if is_val_record(record_id, val_fraction) else "train"
                rows = [{"source": source.label, "record": name, "start_s": float(s), "split": split}
                        for s in starts]
                builder.add(rows, windows=windows, present=present)
                count["records"] += 1
                count["windows"] += len(windows)
                if progress is not None:
                    progress(source.label, done)
        if not len(builder):
            raise DataError("the sources gave no usable ECG window", folder)
        builder.commit({**wanted, "leads": list(LEADS_12), "counts": counts, "skipped": skipped[:20]})
    return WindowCache(folder)


class WindowCache(ArrayCache):
    """A window cache folder read back memory-mapped: ``cache[i] -> (x float32 [12, S], present [12])``."""

    def __init__(self, folder: str | PathLike[str]):
        super().__init__(folder, CACHE_FORMAT)
        self.spec = InputSpec.from_dict(self.meta["spec"])
        self.present = self.load("present")  # [N, 12] bool, in memory

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.item("windows", i), dtype=np.float32), self.present[i]
