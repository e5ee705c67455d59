"""Shards: a cohort as a folder of ``.npz`` files that can be streamed one shard at a time.

A study is a flat dict of named values (an ECG ``[12, 5000]`` float32, an echo clip
``[T, H, W]`` uint8, a label, an age, a patient id string). :class:`ShardWriter` buffers
``shard_size`` studies and writes them as one ``<prefix>-00000.npz`` archive:

* a key whose values all have one shape is *stacked* into one array with a new first axis of
  length ``n_studies`` (NumPy type promotion applies: ``int`` and ``float`` become ``float64``;
  strings become a unicode array);
* a key whose shapes differ between studies (clips of different lengths) is stored *ragged*,
  one array per study, as members ``<key>.<i>``.

Identifiers: the text of a study's ``id_keys`` (default :data:`ID_KEYS`: ``patient_id``,
``study_id``, ``record``) is written as its keyed pseudonym
(:func:`~cardiodistill.data.cache.written_id`; a number becomes the pseudonym of its text), so a
shard of real patients names none of them; ``real_ids=True`` (or ``$CARDIODISTILL_REAL_IDS=1``)
stores them as given, as the simulator does with its made-up ids.

Each written shard is recorded in ``shards.json`` (file name, number of studies and, per key,
dtype and shape), which is the source of truth: a shard file that is not in the index does not
exist for readers. Shard and index are written atomically (shard first), so a crash leaves a
consistent folder, and a resumed job passes ``start_index`` to continue the numbering.

:func:`iter_shards` and :class:`~cardiodistill.data.stream.ShardDataset` read back one shard at a time, so memory is bounded
by the largest shard (only the requested keys are loaded), whatever the cohort size.
:class:`~cardiodistill.data.stream.ShardDataset` (its own module, so writing shards does not import torch) deals whole shards round-robin to DataLoader workers and distributed ranks,
so every study is seen exactly once per epoch with no cross-process coordination.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..io.atomic import save_npz_atomic, write_json_atomic
from .cache import REAL_IDS_ENV, opted_in, written_id

__all__ = ["ID_KEYS", "INDEX_NAME", "ShardWriter", "iter_shards", "read_shard_index", "write_shard",
           "write_shard_index"]

INDEX_NAME = "shards.json"
_FORMAT = "cardiodistill-shards"
_VERSION = 1
_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")  # no "." (ragged members are "<key>.<i>") and no "/"
_NUMERIC_KINDS = frozenset("biufc")
#: Study keys whose values are identifiers, written as pseudonyms by default (module doc).
ID_KEYS = ("patient_id", "study_id", "record")


def _shard_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:05d}.npz"


def _ragged_member(key: str, i: int) -> str:
    return f"{key}.{i}"


# ----------------------------------------------------------------------------------- index


def read_shard_index(folder: str | PathLike[str]) -> dict[str, Any]:
    """Load ``<folder>/shards.json``: ``{"format", "version", "shards": [entry, ...]}``.

    Each entry has ``file``, ``n_studies`` and ``keys`` (per key: ``stacked`` and either
    ``dtype``/``shape`` for one study, or ``dtypes``/``shapes`` per study when ragged).
    """
    path = Path(folder) / INDEX_NAME
    if not path.is_file():
        raise DataError("no shard index (shards.json) here; is this a shard folder?", path)
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read shard index: {' '.join(str(err).split())}", path) from None
    if not isinstance(index, dict) or index.get("format") != _FORMAT or not isinstance(index.get("shards"), list):
        raise DataError(f"not a {_FORMAT} index", path)
    if index.get("version", 0) > _VERSION:
        raise DataError(f"shard index version {index['version']} is newer than this reader ({_VERSION})", path)
    return index


def _empty_index() -> dict[str, Any]:
    return {"format": _FORMAT, "version": _VERSION, "shards": []}


# ----------------------------------------------------------------------------------- writing


def _as_array(value: Any, key: str, where: Path) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in _NUMERIC_KINDS | {"U", "S"}:
        raise DataError(f"study value {key!r} has unsupported type {arr.dtype} (numbers and strings only)", where)
    return arr


def _pseudonyms(value: Any) -> np.ndarray:
    """An identifier value (one id or an array of them) as the pseudonyms of their text."""
    arr = np.asarray(value)
    ids = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in arr.ravel().tolist()]
    return np.array([written_id(v, real_ids=False) for v in ids], dtype=str).reshape(arr.shape)


def _stackable(arrays: Sequence[np.ndarray]) -> bool:
    """One shape for all, and all numeric or all text (so stacking neither fails nor pickles)."""
    if len({a.shape for a in arrays}) != 1:
        return False
    kinds = {a.dtype.kind for a in arrays}
    return kinds <= _NUMERIC_KINDS or kinds == {"U"} or kinds == {"S"}


def _pack(studies: Sequence[Mapping[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Stack (or store per study) each key of a batch of studies: (npz members, index key info)."""
    members: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {}
    for key in studies[0]:
        values = [study[key] for study in studies]
        if _stackable(values):
            stacked = np.stack(values)
            members[key] = stacked
            info[key] = {"stacked": True, "dtype": stacked.dtype.str, "shape": list(stacked.shape[1:])}
        else:
            for i, value in enumerate(values):
                members[_ragged_member(key, i)] = value
            info[key] = {
                "stacked": False,
                "dtypes": [v.dtype.str for v in values],
                "shapes": [list(v.shape) for v in values],
            }
    return members, info


def write_shard(
    folder: str | PathLike[str],
    name: str,
    studies: Sequence[Mapping[str, Any]],
    *,
    compress: bool = False,
    id_keys: Sequence[str] = ID_KEYS,
    real_ids: bool | None = None,
) -> dict[str, Any]:
    """Write one shard file atomically and return its index entry (not yet in any index).

    For writers that produce shards in parallel processes: each writes its shards with this,
    and one process then lists them all with :func:`write_shard_index`. The values of ``id_keys``
    are written as pseudonyms unless ``real_ids`` (None: ``$CARDIODISTILL_REAL_IDS``; module doc).
    """
    folder = Path(folder)
    if not studies:
        raise DataError("a shard needs at least one study", folder / name)
    pseudonymised = () if opted_in(real_ids, REAL_IDS_ENV) else tuple(id_keys)
    members, info = _pack([{k: _pseudonyms(v) if k in pseudonymised else _as_array(v, k, folder / name)
                            for k, v in study.items()} for study in studies])
    save_npz_atomic(folder / name, compress=compress, **members)
    return {"file": name, "n_studies": len(studies), "keys": info}


def write_shard_index(folder: str | PathLike[str], entries: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``shards.json`` listing ``entries`` (from :func:`write_shard`), atomically."""
    index = _empty_index()
    index["shards"] = [dict(e) for e in entries]
    return write_json_atomic(Path(folder) / INDEX_NAME, index)


class ShardWriter:
    """Buffer studies and write them ``shard_size`` at a time as ``<prefix>-NNNNN.npz``.

    ``start_index`` is the number of the first shard this writer writes: 0 starts a fresh
    dataset (index entries of this prefix are replaced), ``k`` resumes after shards
    ``0..k-1``, which the index must already list. Use as a context manager: a normal exit
    writes the last, partial shard; an exception discards the unwritten buffer, so the index
    only ever lists complete, intended shards. ``compress`` uses ``np.savez_compressed``;
    ``id_keys`` and ``real_ids`` are :func:`write_shard`'s.
    """

    def __init__(
        self,
        folder: str | PathLike[str],
        shard_size: int,
        prefix: str = "shard",
        *,
        start_index: int = 0,
        compress: bool = False,
        id_keys: Sequence[str] = ID_KEYS,
        real_ids: bool | None = None,
    ) -> None:
        self.folder = Path(folder)
        if int(shard_size) < 1:
            raise DataError(f"shard_size must be at least 1, got {shard_size!r}", self.folder)
        if not _KEY.match(prefix):
            raise DataError(f"shard prefix {prefix!r} may only contain letters, digits, '_' and '-'", self.folder)
        if int(start_index) < 0:
            raise DataError(f"start_index must be >= 0, got {start_index!r}", self.folder)
        self.shard_size = int(shard_size)
        self.prefix = prefix
        self.compress = compress
        self.id_keys = tuple(id_keys)
        self.real_ids = opted_in(real_ids, REAL_IDS_ENV)
        self.next_index = int(start_index)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._index = self._resume_index(self.next_index)
        self._buffer: list[dict[str, np.ndarray]] = []
        self._keys: tuple[str, ...] | None = None
        self._closed = False
        self.n_written = 0  # studies written by this writer

    def _resume_index(self, start: int) -> dict[str, Any]:
        """The existing index with this prefix's shards numbered >= ``start`` dropped."""
        if not (self.folder / INDEX_NAME).is_file():
            index = _empty_index()
        else:
            index = read_shard_index(self.folder)
        mine = {_shard_name(self.prefix, i) for i in range(start)}
        kept = [e for e in index["shards"] if e["file"] in mine or not e["file"].startswith(f"{self.prefix}-")]
        missing = mine - {e["file"] for e in kept}
        if missing:
            raise DataError(
                f"cannot resume at start_index={start}: the index lacks {sorted(missing)[0]}"
                f" ({len(missing)} shard(s) before it are missing)",
                self.folder / INDEX_NAME,
            )
        index["shards"] = kept
        return index

    def add(self, study: Mapping[str, Any]) -> None:
        """Buffer one study; write a shard when ``shard_size`` studies are buffered."""
        if self._closed:
            raise RuntimeError("ShardWriter is closed")
        if not study:
            raise DataError("a study needs at least one key", self.folder)
        bad = [k for k in study if not (isinstance(k, str) and _KEY.match(k))]
        if bad:
            raise DataError(f"study keys may only contain letters, digits, '_' and '-': {bad}", self.folder)
        if self._keys is None:
            self._keys = tuple(study)
        elif set(study) != set(self._keys):
            missing, extra = sorted(set(self._keys) - set(study)), sorted(set(study) - set(self._keys))
            raise DataError(f"study keys differ from the first study's: missing {missing}, extra {extra}", self.folder)
        self._buffer.append({k: _as_array(study[k], k, self.folder) for k in self._keys})
        if len(self._buffer) >= self.shard_size:
            self.flush()

    def flush(self) -> Path | None:
        """Write the buffered studies (if any) as the next shard; return its path."""
        if not self._buffer:
            return None
        name = _shard_name(self.prefix, self.next_index)
        entry = write_shard(self.folder, name, self._buffer, compress=self.compress, id_keys=self.id_keys,
                            real_ids=self.real_ids)
        path = self.folder / name
        self._index["shards"] = [e for e in self._index["shards"] if e["file"] != name]
        self._index["shards"].append(entry)
        write_json_atomic(self.folder / INDEX_NAME, self._index)
        self.n_written += len(self._buffer)
        self.next_index += 1
        self._buffer = []
        return path

    def close(self) -> None:
        """Write the last partial shard. Idempotent."""
        if not self._closed:
            self.flush()
            self._closed = True

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._buffer = []
            self._closed = True


# ----------------------------------------------------------------------------------- reading


def _load_shard(path: Path, entry: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """Load the requested keys of one shard into memory: stacked arrays, or lists of arrays."""
    n = int(entry["n_studies"])
    out: dict[str, Any] = {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            for key in keys:
                if entry["keys"][key]["stacked"]:
                    out[key] = archive[key]
                    if out[key].shape[0] != n:
                        raise DataError(f"key {key!r} holds {out[key].shape[0]} studies, index says {n}", path)
                else:
                    out[key] = [archive[_ragged_member(key, i)] for i in range(n)]
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError("shard listed in shards.json is missing", path) from None
    except KeyError as err:
        raise DataError(f"shard lacks member {err.args[0]!r} that the index lists", path) from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"corrupt shard: {' '.join(str(err).split())}", path) from None
    return out


def _value(value: Any) -> Any:
    """Text scalars as built-in ``str``/``bytes``; arrays and numeric scalars unchanged."""
    if isinstance(value, np.str_):
        return str(value)
    if isinstance(value, np.bytes_):
        return bytes(value)
    return value


def _study(loaded: Mapping[str, Any], i: int) -> dict[str, Any]:
    """Study ``i`` of a loaded shard; 0-d values come out as scalars."""
    return {key: _value(arr[i][()] if isinstance(arr, list) else arr[i]) for key, arr in loaded.items()}


def _check_keys(entry: Mapping[str, Any], keys: Sequence[str] | None, where: Path) -> list[str]:
    available = list(entry["keys"])
    if keys is None:
        return available
    unknown = [k for k in keys if k not in entry["keys"]]
    if unknown:
        raise DataError(f"unknown key(s) {unknown}; shards hold {available}", where)
    return list(keys)


def _iter_entries(
    folder: Path,
    entries: Sequence[tuple[int, Mapping[str, Any]]],
    keys: Sequence[str] | None,
    shuffle_seed: Sequence[int] | None = None,
) -> Iterator[dict[str, Any]]:
    """Studies of the numbered index ``entries``, shard by shard; with ``shuffle_seed`` the
    studies of shard ``k`` are permuted by a generator seeded ``(*shuffle_seed, k)``, so the
    order does not depend on which process reads the shard."""
    for number, entry in entries:
        path = folder / entry["file"]
        loaded = _load_shard(path, entry, _check_keys(entry, keys, path))
        n = int(entry["n_studies"])
        order = range(n) if shuffle_seed is None else np.random.default_rng([*shuffle_seed, number]).permutation(n)
        for i in order:
            yield _study(loaded, int(i))
        del loaded  # release this shard before the next one is read


def iter_shards(folder: str | PathLike[str], keys: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
    """Yield the studies of a shard folder in writing order, one dict per study.

    Loads one shard (only ``keys``, default all) at a time. Values are NumPy arrays, NumPy
    scalars for numbers, and ``str`` for strings.
    """
    folder = Path(folder)
    return _iter_entries(folder, list(enumerate(read_shard_index(folder)["shards"])), keys)
