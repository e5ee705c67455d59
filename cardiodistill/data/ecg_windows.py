"""Training windows from many ECG sources: one rate, one window length, 12 lead slots, one cache.

Pretraining mixes sources that share nothing but being ECGs: PTB-XL (12 leads, 100 or 500 Hz,
10 s), PhysioNet/CinC 2017 (one handheld lead, 300 Hz, 9-61 s), the simulator (12-lead at
500 Hz and a 1- or 6-lead handheld at 300 Hz), any folder of clinical files. Every record goes
through the same steps to become model input (:func:`record_windows`):

1. canonical lead names, non-ECG channels dropped; non-finite runs up to 40 ms interpolated,
   longer ones make that lead absent;
2. resampled to the model's rate (exact rational ratio, :func:`~cardiodistill.signals.resample`);
3. band-passed (default 0.5-40 Hz, zero phase: the band of the PTB-XL subset, and the band
   where a 100 Hz model has information);
4. cut into non-overlapping windows of the model's length, at most ``max_windows`` per record
   (evenly spread over the record); a tail shorter than ``min_fraction`` of a window is dropped,
   a longer one is zero-padded at the end;
5. each lead of each window z-scored on its own; a lead that is flat in a window (or absent from
   the record) is marked absent in ``present`` and left at zero.

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
from ..signals.filters import bandpass
from ..signals.leads import LEADS_12
from ..signals.preprocess import canonicalize, fill_gaps
from ..signals.resample import resample
from ..signals.windows import zscore_windows
from .cache import ArrayCache, CacheBuilder, is_val_record, reuse_cache

__all__ = [
    "SOURCE_KINDS",
    "EcgSource",
    "WindowCache",
    "WindowSpec",
    "build_window_cache",
    "iter_source_records",
    "record_windows",
    "source_loaders",
]

CACHE_FORMAT = "cardiodistill-ecg-windows"
CACHE_VERSION = 2
SOURCE_KINDS = ("ptbxl", "cinc2017", "synth", "cohort", "files")


@dataclass(frozen=True)
class WindowSpec:
    """What a model wants: ``fs`` Hz, ``seconds`` long, band-passed to ``band`` Hz."""

    fs: float
    seconds: float
    band: tuple[float, float] | None = (0.5, 40.0)

    @property
    def n_samples(self) -> int:
        return int(round(self.fs * self.seconds))


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

    @property
    def label(self) -> str:
        return self.name or (self.kind if self.path is None else f"{self.kind}:{Path(self.path).name}")


# ----------------------------------------------------------------------------------- one record


def record_windows(
    record: EcgRecord, spec: WindowSpec, *, max_windows: int | None = None, min_fraction: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(windows float32 [W, 12, S], present bool [W, 12], starts_s [W])`` of one record (module doc).

    ``W`` may be 0 (record shorter than ``min_fraction`` of a window, or no usable lead).
    """
    record = canonicalize(record)
    record = fill_gaps(record, missing="zero")
    if record.fs != spec.fs:
        record = resample(record, spec.fs)
    if spec.band is not None:
        record = bandpass(record, *spec.band)
    win, n = spec.n_samples, record.n_samples
    n_full, tail = divmod(n, win)
    starts = list(range(0, n_full * win, win))
    if tail >= min_fraction * win or (n_full == 0 and n >= min_fraction * win):
        starts.append(n_full * win)
    if max_windows is not None and len(starts) > max_windows:
        pick = np.linspace(0, len(starts) - 1, max_windows).round().astype(int)
        starts = [starts[i] for i in pick]
    rows = [LEADS_12.index(lead) for lead in record.leads]
    windows = np.zeros((len(starts), len(LEADS_12), win), dtype=np.float32)
    for k, start in enumerate(starts):
        part = record.signal[:, start : start + win]
        windows[k, rows, : part.shape[1]] = part
    valid = np.minimum(n - np.asarray(starts, dtype=np.int64), win) if starts else np.zeros(0, np.int64)
    present = zscore_windows(windows, valid)
    keep = present.any(axis=1)
    return windows[keep], present[keep], (np.asarray(starts, dtype=np.float64) / spec.fs)[keep]


# ----------------------------------------------------------------------------------- sources


Loader = Callable[[], EcgRecord]


def iter_source_records(source: EcgSource) -> Iterator[tuple[str, EcgRecord]]:
    """``(record id, record)`` of a source. Labels are never read into the windows.

    * ``ptbxl``: a PTB-XL folder, either layout (:class:`~cardiodistill.data.datasets.PTBXL`),
      records with and without diagnostic labels, optionally only ``folds``;
    * ``cinc2017``: a CinC 2017 folder (``REFERENCE.csv`` + WFDB records), every record;
    * ``synth``: ``patients`` simulated patients (``seed``): their 12-lead and handheld ECGs,
      generated in memory, no files;
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
    if kind != "synth" and not source.path:
        raise DataError(f"ECG source of kind {kind!r} needs a path", None)
    items = {"ptbxl": _ptbxl, "cinc2017": _cinc2017, "synth": _synth, "cohort": _cohort, "files": _files}[kind](source)
    for count, item in enumerate(items):
        if source.max_records is not None and count >= source.max_records:
            return
        yield item


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


def _synth(source: EcgSource) -> Iterator[tuple[str, Loader]]:
    from ..config import SynthConfig
    from ..synth.cohort import iter_chunks
    from ..synth.ecg import MOBILE_LEADS

    cfg = SynthConfig(patients=source.patients, seed=source.seed)
    cfg.echo.enabled = False
    mobile_leads = MOBILE_LEADS[cfg.mobile.device]
    for chunk in iter_chunks(cfg):
        for i, pid in enumerate(chunk.pop.patient_id):
            twelve = EcgRecord(chunk.ecg[i], cfg.ecg.fs, LEADS_12, f"synth:{pid}")
            yield f"synth{source.seed}/{pid}/12lead", lambda r=twelve: r
            if chunk.mobile is not None:
                mobile = EcgRecord(chunk.mobile[i], cfg.mobile.fs, mobile_leads, f"synth:{pid}:mobile")
                yield f"synth{source.seed}/{pid}/mobile", lambda r=mobile: r


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


# ----------------------------------------------------------------------------------- the cache


def _fingerprint(spec: WindowSpec, sources: Sequence[EcgSource], val_fraction: float) -> dict[str, Any]:
    return {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "spec": {**asdict(spec), "band": list(spec.band) if spec.band else None},
        "sources": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(s).items()} for s in sources],
        "val_fraction": val_fraction,
    }


def build_window_cache(
    folder: str | PathLike[str],
    sources: Sequence[EcgSource],
    spec: WindowSpec,
    *,
    val_fraction: float = 0.02,
    chunk_windows: int = 4096,
    progress: Callable[[str, int], None] | None = None,
) -> WindowCache:
    """Write (or reuse) the window cache of ``sources`` at ``folder`` (module doc); returns it open.

    ``progress(source label, records done in it)`` is called after every record. A record that
    cannot be read or processed is skipped and counted under ``skipped`` in ``cache.json`` with
    its one-line reason (the first 20 are kept), so one bad file does not end a long job; a
    source that cannot be opened at all (no such folder, no REFERENCE.csv) is an error.
    """
    folder = Path(folder)
    wanted = _fingerprint(spec, sources, val_fraction)
    if reuse_cache(folder, wanted):
        return WindowCache(folder)
    if not sources:
        raise DataError("no ECG sources to build a window cache from", folder)
    counts: dict[str, dict[str, int]] = {}
    skipped: list[str] = []
    with CacheBuilder(folder, {"windows": np.float16, "present": bool}, chunk=chunk_windows) as builder:
        for source in sources:
            count = counts.setdefault(source.label, {"records": 0, "windows": 0, "skipped": 0})
            for done, (record_id, load) in enumerate(source_loaders(source), 1):
                try:
                    windows, present, starts = record_windows(load(), spec, max_windows=source.max_windows)
                except CardiodistillError as err:
                    count["skipped"] += 1
                    skipped.append(f"{record_id}: {err}")
                    continue
                split = "val" if is_val_record(record_id, val_fraction) else "train"
                rows = [{"source": source.label, "record": record_id, "start_s": float(s), "split": split}
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
        spec = self.meta["spec"]
        self.spec = WindowSpec(spec["fs"], spec["seconds"], tuple(spec["band"]) if spec["band"] else None)
        self.present = self.load("present")  # [N, 12] bool, in memory

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.item("windows", i), dtype=np.float32), self.present[i]
