"""A folder of chunked, memory-mapped arrays built once and atomically: the preprocessing caches.

Reading and preprocessing thousands of clinical files (ECG records, DICOM cines) is done once
per model input spec. Both stage-1 caches (:mod:`~cardiodistill.data.ecg_windows`,
:mod:`~cardiodistill.data.video_clips`) share this layout::

    <name>-NNNNN.npy   one file per array name and chunk (e.g. windows / present, clips / masks)
    items.csv          one row per item (source, record, split, ...)
    cache.json         written last: format, the fingerprint (spec + sources), chunk sizes, counts

The folder is built under a temporary name and renamed when complete, so a cache exists whole or
not at all; a cache whose ``cache.json`` holds the same fingerprint is reused, and one built from
anything else is refused rather than overwritten. :class:`ArrayCache` maps the chunks lazily, so
a cache handed to DataLoader worker processes opens its files in each worker and its size is
bounded by disk, not RAM.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from ..io.atomic import write_json_atomic, write_text_atomic

__all__ = ["ArrayCache", "CacheBuilder", "is_val_record", "reuse_cache"]

INDEX_NAME = "items.csv"
META_NAME = "cache.json"


def is_val_record(record_id: str, val_fraction: float) -> bool:
    """Deterministic, platform-independent validation assignment of a record by its id."""
    return zlib.crc32(record_id.encode()) % 100_000 < val_fraction * 100_000


def reuse_cache(folder: str | PathLike[str], fingerprint: dict[str, Any]) -> bool:
    """True if ``folder`` holds a complete cache built from ``fingerprint``; False if there is none.

    A complete cache built from another fingerprint is a :class:`DataError` (never overwritten)."""
    meta_path = Path(folder) / META_NAME
    if not meta_path.is_file():
        return False
    meta = json.loads(meta_path.read_text())
    if {k: meta.get(k) for k in fingerprint} == fingerprint:
        return True
    raise DataError("a cache built from other sources or another spec is in the way; "
                    "delete it or choose another cache folder", folder)


class CacheBuilder:
    """Accumulates items in chunks under a temporary folder; :meth:`commit` renames it into place.

    ``arrays`` maps each array name to its dtype; :meth:`add` takes a batch of items (the same
    leading length for every array) and their index rows. Use as a context manager, so a failed
    build leaves no temporary folder behind.
    """

    def __init__(self, folder: str | PathLike[str], arrays: dict[str, Any], *, chunk: int = 4096):
        self.folder = Path(folder)
        self.dtypes = {name: np.dtype(dtype) for name, dtype in arrays.items()}
        self.chunk = chunk
        self.tmp = self.folder.with_name(f".{self.folder.name}.tmp-{os.getpid()}")
        self._buffers: dict[str, list[np.ndarray]] = {name: [] for name in arrays}
        self._buffered = 0
        self.sizes: list[int] = []
        self.rows: list[dict[str, Any]] = []

    def __enter__(self) -> CacheBuilder:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)  # gone after commit; a failed build cleans up

    def add(self, rows: Sequence[dict[str, Any]], **arrays: np.ndarray) -> None:
        if set(arrays) != set(self.dtypes):
            raise ValueError(f"expected arrays {sorted(self.dtypes)}, got {sorted(arrays)}")
        if any(len(a) != len(rows) for a in arrays.values()):
            raise ValueError("every array needs one entry per index row")
        if not rows:
            return
        for name, a in arrays.items():
            self._buffers[name].append(np.asarray(a).astype(self.dtypes[name], copy=False))
        self.rows.extend(rows)
        self._buffered += len(rows)
        if self._buffered >= self.chunk:
            self._flush()

    def __len__(self) -> int:
        return len(self.rows)

    def _flush(self) -> None:
        if not self._buffered:
            return
        k = len(self.sizes)
        for name, parts in self._buffers.items():
            np.save(self.tmp / f"{name}-{k:05d}.npy", np.concatenate(parts))
            self._buffers[name] = []
        self.sizes.append(self._buffered)
        self._buffered = 0

    def commit(self, meta: dict[str, Any]) -> Path:
        """Write the index and ``cache.json`` (``meta`` plus the chunk layout), then rename into place."""
        self._flush()
        write_text_atomic(self.tmp / INDEX_NAME, pd.DataFrame(self.rows).to_csv(index=False))
        write_json_atomic(self.tmp / META_NAME, {**meta, "arrays": {k: str(v) for k, v in self.dtypes.items()},
                                                 "n_items": len(self.rows), "chunks": self.sizes})
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        self.tmp.rename(self.folder)
        return self.folder


class ArrayCache:
    """A cache folder read back: ``index`` (DataFrame), ``meta`` (dict), ``item(name, i)``,
    ``load(name)`` (a whole array in memory, for small per-item arrays)."""

    def __init__(self, folder: str | PathLike[str], fmt: str):
        self.folder = Path(folder)
        meta_path = self.folder / META_NAME
        if not meta_path.is_file():
            raise DataError(f"not a cache folder (no {META_NAME})", self.folder)
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != fmt:
            raise DataError(f"{META_NAME} is not a {fmt} index", meta_path)
        self.index = pd.read_csv(self.folder / INDEX_NAME, dtype={"record": str})
        self.offsets = np.concatenate([[0], np.cumsum(self.meta["chunks"])]).astype(np.int64)
        self._maps: dict[str, list[np.ndarray]] = {}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def split_indices(self, split: str) -> np.ndarray:
        """Item indices of ``split`` (``"train"`` or ``"val"``)."""
        return np.flatnonzero(self.index["split"].to_numpy() == split)

    def _chunks(self, name: str) -> list[np.ndarray]:
        if name not in self._maps:
            self._maps[name] = [np.load(self.folder / f"{name}-{k:05d}.npy", mmap_mode="r")
                                for k in range(len(self.meta["chunks"]))]
        return self._maps[name]

    def item(self, name: str, i: int) -> np.ndarray:
        """Item ``i`` of array ``name`` (a read-only memory-mapped view)."""
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return self._chunks(name)[k][i - self.offsets[k]]

    def load(self, name: str) -> np.ndarray:
        """All items of array ``name`` concatenated in memory."""
        return np.concatenate([np.asarray(c) for c in self._chunks(name)])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": {}}
