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

What the caches share besides the layout:

Identifiers
    Nothing a cache writes (``items.csv``, ``cache.json`` and its ``skipped`` reasons) names a
    patient, a study or a clinical file by its real identifier: :func:`written_id` writes the keyed
    :func:`~cardiodistill.privacy.pseudonym` instead (16 hex digits; set
    ``$CARDIODISTILL_PSEUDONYM_KEY`` to a secret so it cannot be reversed by hashing candidate MRNs),
    and :func:`redact` takes file names out of a reader's error before it is kept. Ids of public data
    sets (``ptbxl/<ecg_id>``) and of the simulator (``P000123`` from ``cardiodistill synth``'s
    in-memory sources) are not identifiers and stay. Real ids are written only on request: a
    builder's ``real_ids=True``, or ``$CARDIODISTILL_REAL_IDS=1`` when the builder is not told
    (:func:`opted_in`); a cache records which it holds (:func:`ids_fingerprint`), so one is never
    reused as the other.

Hashed splits without the ids
    Splits hash the *real* id (:func:`is_val_record`; the paired cohort's labelled subset), so a
    split never depends on the pseudonym key. The hash is reduced to a bucket in
    ``[0, SPLIT_BUCKETS)`` (:func:`split_bucket`) and an id is in a fraction ``f`` when its bucket is
    below ``f * SPLIT_BUCKETS`` (:func:`in_fraction`). A cache whose users choose fractions after
    it is built stores the bucket (an ``items.csv`` column ``split_bucket``) next to the pseudonym,
    so the same ids fall in the same splits as before pseudonyms without the real id being written.
    A bucket is 17 bits of an unkeyed hash: shared by one id in 100,000, it does not name a
    patient, but it narrows a guess, which is why the full 32-bit hash is never stored.

Files a manifest names
    :func:`manifest_file` checks a path from a manifest before anything opens it: resolved
    (symlinks and ``..``) it must lie inside the cohort folder, unless the user opts in with
    ``$CARDIODISTILL_ALLOW_OUTSIDE_PATHS=1`` (a switch of the environment, not of a config, so that
    a shared config cannot turn it on); it must be a regular file (no
    device, FIFO, socket or folder) and no larger than the bound for its kind
    (:data:`MAX_FILE_BYTES`). :func:`read_bounded` reads a file whole with the same checks made again
    on the open file, so a file swapped or grown after the check is still refused. A refused file
    is a :class:`~cardiodistill.errors.DataError` whose ``problem`` says why without the path; the
    builders keep that reason and treat the file as absent.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import zlib
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError, one_line
from ..io import limits
from ..io.atomic import write_json_atomic, write_text_atomic
from ..privacy import pseudonym

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_TABLE_BYTES",
    "OUTSIDE_PATHS_ENV",
    "REAL_IDS_ENV",
    "SPLIT_BUCKETS",
    "ArrayCache",
    "CacheBuilder",
    "ids_fingerprint",
    "in_fraction",
    "is_val_record",
    "manifest_file",
    "opted_in",
    "read_bounded",
    "redact",
    "reuse_cache",
    "split_bucket",
    "written_id",
]

INDEX_NAME = "items.csv"
META_NAME = "cache.json"

#: Set to 1 to write real identifiers into caches instead of pseudonyms (module doc).
REAL_IDS_ENV = "CARDIODISTILL_REAL_IDS"
#: Set to 1 to let a manifest name files outside its cohort folder (module doc).
OUTSIDE_PATHS_ENV = "CARDIODISTILL_ALLOW_OUTSIDE_PATHS"
#: Hash buckets of the hashed splits: a fraction is resolved to 1 / SPLIT_BUCKETS.
SPLIT_BUCKETS = 100_000
#: The largest file of each kind a manifest may name, in bytes: far above any real record (a 24-hour
#: 12-lead Holter, a long uncompressed cine, pages of notes), far below what exhausts a machine.
MAX_FILE_BYTES = {"ecg": 1 << 30, "mobile": 1 << 30, "echo": 4 << 30, "note": 1 << 20}
#: The largest table read whole (manifest.csv, labs.csv, timing.jsonl), in bytes: the readers' one
#: bound for tables (:data:`cardiodistill.io.limits.MAX_TABLE_BYTES`).
MAX_TABLE_BYTES = limits.MAX_TABLE_BYTES


# ----------------------------------------------------------------------------------- ids and splits


def split_bucket(record_id: str) -> int:
    """The hash bucket ``[0, SPLIT_BUCKETS)`` of an id: CRC-32 of its UTF-8 text (platform-independent)."""
    return zlib.crc32(str(record_id).encode()) % SPLIT_BUCKETS


def in_fraction(buckets: Sequence[int] | np.ndarray | pd.Series, fraction: float) -> np.ndarray:
    """bool ``[n]``: which of these :func:`split_bucket` values fall in the hashed ``fraction``
    (for an id: ``in_fraction([split_bucket(id)], f)[0] == is_val_record(id, f)``)."""
    return np.asarray(buckets, np.int64) < fraction * SPLIT_BUCKETS


def is_val_record(record_id: str, val_fraction: float) -> bool:
    """Deterministic, platform-independent validation assignment of a record by its id."""
    return split_bucket(record_id) < val_fraction * SPLIT_BUCKETS


def opted_in(flag: bool | None, env: str) -> bool:
    """``flag`` when given, else whether ``$env`` is set to 1, true or yes: a user's explicit opt-in."""
    if flag is not None:
        return bool(flag)
    return os.environ.get(env, "").strip().lower() in ("1", "true", "yes")


def written_id(value: str, real_ids: bool) -> str:
    """What a cache writes for the identifier ``value``: its pseudonym, or itself with ``real_ids``
    (a blank id stays blank)."""
    value = str(value)
    return value if real_ids or not value else pseudonym(value)


def ids_fingerprint(real_ids: bool) -> dict[str, Any]:
    """The part of a cache's fingerprint that says which ids it holds: real, or pseudonyms of which key."""
    return {"real_ids": bool(real_ids), "pseudonym_key": pseudonym("cardiodistill")}


def redact(text: str, name: str | os.PathLike[str]) -> str:
    """``text`` (a reader's error) with the file name of the path ``name`` and its stem (the part before
    the first dot; at least 3 characters) replaced by ``<file>``: a file named after a patient must not
    reach a cache through an error message (readers name the file, or a sibling of the same stem)."""
    base = Path(name).name
    for part in sorted({base, base.split(".")[0]}, key=len, reverse=True):
        if len(part) >= 3:
            text = text.replace(part, "<file>")
    return text


# ----------------------------------------------------------------------------------- bounded reads


def _size(n: int) -> str:
    return f"{n / (1 << 30):g} GiB" if n >= 1 << 30 else f"{n / (1 << 20):g} MiB"


def _check_regular(st: os.stat_result, max_bytes: int, what: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"not a regular file (a device, FIFO, socket or folder): the {what} is not read")
    if st.st_size > max_bytes:
        raise DataError(f"larger than {_size(max_bytes)}, the bound for a {what}: not read")


def manifest_file(root: str | os.PathLike[str], name: str, *, what: str, max_bytes: int,
                  allow_outside: bool | None = None, or_suffix: str | None = None) -> Path:
    """The resolved path of the file ``name`` (relative to the cohort folder ``root``, or absolute) that a
    manifest names as a ``what`` (e.g. "note"), checked before anything opens it (module doc).
    ``or_suffix``: when nothing is at ``name``, the file ``name + or_suffix`` instead (a WFDB record
    named without its ``.hea``). ``allow_outside`` None: ``$CARDIODISTILL_ALLOW_OUTSIDE_PATHS``.

    Raises :class:`DataError` without a path (the caller keeps the reason, and names can identify)."""
    try:
        path = (Path(root) / name).resolve()
        if or_suffix and not os.path.lexists(path):
            path = Path(f"{Path(root) / name}{or_suffix}").resolve()
        inside = path.is_relative_to(Path(root).resolve())
    except (OSError, RuntimeError, ValueError) as err:  # a symlink loop, a NUL byte
        raise DataError(f"not a usable path: {one_line(err)}") from None
    if not inside and not opted_in(allow_outside, OUTSIDE_PATHS_ENV):
        raise DataError(f"the path leads outside the cohort folder: not read "
                        f"(set {OUTSIDE_PATHS_ENV}=1 to allow files elsewhere)")
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DataError("file not found") from None
    except OSError as err:
        raise DataError(f"cannot read: {err.strerror or one_line(err)}") from None
    _check_regular(st, max_bytes, what)
    return path


def read_bounded(path: str | os.PathLike[str], max_bytes: int, what: str = "file") -> bytes:
    """The bytes of the regular file ``path``; a :class:`DataError` naming ``path`` if it is missing, not
    a regular file, or larger than ``max_bytes`` (checked on the open file, and again while reading)."""
    try:  # non-blocking: opening a FIFO swapped in after a check must not wait for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise DataError("file not found", path) from None
    except OSError as err:
        raise DataError(f"cannot read: {err.strerror or one_line(err)}", path) from None
    try:
        _check_regular(os.fstat(fd), max_bytes, what)
    except DataError as err:
        os.close(fd)
        raise DataError(err.problem, path) from None
    with os.fdopen(fd, "rb") as file:
        try:
            data = file.read(max_bytes + 1)
        except OSError as err:
            raise DataError(f"cannot read: {err.strerror or one_line(err)}", path) from None
    if len(data) > max_bytes:
        raise DataError(f"larger than {_size(max_bytes)}, the bound for a {what}: not read", path)
    return data


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
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        if self._built_elsewhere():
            return self.folder
        if self.folder.exists():  # a leftover without cache.json is never a complete cache
            shutil.rmtree(self.folder)
        try:
            self.tmp.rename(self.folder)
        except OSError:
            if not self._built_elsewhere():
                raise
        return self.folder

    def _built_elsewhere(self) -> bool:
        """True (and this build dropped) when another process committed the cache first: every rank of a
        torchrun or SLURM job builds the same deterministic cache, and the first one in place is kept,
        never deleted under the others' feet. (Callers check :func:`reuse_cache` before building, so a
        complete cache here can only be such a concurrent build.)"""
        if not (self.folder / META_NAME).is_file():
            return False
        shutil.rmtree(self.tmp, ignore_errors=True)
        return True


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

    def chunk_of(self, i: int) -> int:
        """The chunk file that holds item ``i``."""
        return int(np.searchsorted(self.offsets, i, side="right") - 1)

    def release(self) -> None:
        """Unmap the chunk files. A mapped page a pass has read stays in the process's resident memory until its
        file is unmapped, so a pass over the whole cache would end holding all of it; one that calls this at
        each new chunk holds one chunk (the pages stay in the OS's page cache, reclaimable)."""
        self._maps.clear()

    def item(self, name: str, i: int) -> np.ndarray:
        """Item ``i`` of array ``name`` (a read-only memory-mapped view)."""
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = self.chunk_of(i)
        return self._chunks(name)[k][i - self.offsets[k]]

    def load(self, name: str) -> np.ndarray:
        """All items of array ``name`` concatenated in memory."""
        return np.concatenate([np.asarray(c) for c in self._chunks(name)])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": {}}
