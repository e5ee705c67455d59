"""Atomic file output: a file is either absent, the old version, or the complete new version.

Every writer in the toolkit goes through these helpers, so a crash, a full disk or Ctrl-C in the
middle of a write never leaves a half-written file where a reader (or a resumed job) would trust it.

The recipe is the standard one for POSIX and Windows: write into a temporary file *in the same
directory* (so the final rename stays on one file system), flush and ``fsync`` it, then
:func:`os.replace` it over the destination, which is atomic. On failure the temporary file is
removed and an existing destination is left untouched. Temporary names start with ``.tmp-`` so
they are hidden and easy to clean up.

Formats made of several files (a WFDB ``.hea`` + ``.dat`` pair) use :func:`atomic_paths`: all
files are written into one temporary directory and then renamed into place one by one, in the
order given, so the file a reader opens first (the header) is put in place last.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "atomic_path",
    "atomic_paths",
    "write_text_atomic",
    "write_bytes_atomic",
    "write_json_atomic",
    "save_npz_atomic",
]

_TMP_PREFIX = ".tmp-"


def _fsync_file(path: Path) -> None:
    """Flush a file's data to disk (a no-op where the file cannot be opened for it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Make a rename durable by syncing its directory (POSIX only; best effort)."""
    if os.name != "posix":
        return
    _fsync_file(path)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def _create_temp_file(path: Path) -> Path:
    """Create an empty, uniquely named file next to ``path``.

    Unlike :func:`tempfile.mkstemp` (mode 0600) the file gets the usual permissions (0666 less
    the umask), so the file that replaces ``path`` is as readable as one written directly.
    """
    for _ in range(100):
        tmp = path.parent / f"{_TMP_PREFIX}{path.stem}-{secrets.token_hex(4)}{path.suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"could not create a temporary file next to {path}")


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success, move it over ``path`` atomically.

    The block writes the complete file to the yielded path (any library that takes a file name
    works). If the block raises, the temporary file is removed and ``path`` is left as it was.
    The temporary name keeps the destination's suffix, for libraries that look at it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp_file(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    _fsync_dir(path.parent)


@contextmanager
def atomic_paths(*paths: str | os.PathLike[str]) -> Iterator[tuple[Path, ...]]:
    """Atomic output for a set of files that live in one directory.

    Yields one temporary path per destination, all in a fresh hidden directory and keeping the
    destinations' file names (formats such as WFDB name their companion files inside the
    header). On success each file is moved into place in the order given, so list the file
    readers open first (a header) last. If the block raises, nothing is moved and every
    destination keeps its old content.
    """
    if not paths:
        raise ValueError("atomic_paths needs at least one path")
    dests = tuple(Path(p) for p in paths)
    folder = dests[0].parent
    if any(d.parent.resolve() != folder.resolve() for d in dests):
        raise ValueError(f"atomic_paths needs files in one directory, got {[str(d) for d in dests]}")
    if len({d.name for d in dests}) != len(dests):
        raise ValueError(f"atomic_paths got a file name twice: {[d.name for d in dests]}")
    folder.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=folder))
    try:
        tmps = tuple(tmp_dir / d.name for d in dests)
        yield tmps
        missing = [str(t.name) for t in tmps if not t.is_file()]
        if missing:
            raise FileNotFoundError(f"atomic_paths: the block did not write {missing}")
        for tmp in tmps:
            _fsync_file(tmp)
        for tmp, dest in zip(tmps, dests):
            os.replace(tmp, dest)
        _fsync_dir(folder)
    finally:
        _remove(tmp_dir)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8 by default); return the path."""
    return write_bytes_atomic(path, text.encode(encoding))


def _json_default(obj: Any) -> Any:
    """Make NumPy scalars/arrays and paths JSON-serialisable; anything else is a bug."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON (keys in insertion order, NumPy values converted)."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default, ensure_ascii=False)
    return write_text_atomic(path, text + "\n")


def save_npz_atomic(path: str | os.PathLike[str], /, *, compress: bool = False, **arrays: np.ndarray) -> Path:
    """Save arrays to an ``.npz`` archive atomically; return the path.

    Uses ``np.savez`` (``np.savez_compressed`` if ``compress``). Object arrays are refused, so
    every archive loads with ``allow_pickle=False``. Writing through an open file keeps NumPy
    from appending ``.npz`` to the temporary name. (Because of the keyword, no array can be
    called ``compress``.)
    """
    arrays = {name: np.asarray(value) for name, value in arrays.items()}
    pickled = [name for name, arr in arrays.items() if arr.dtype.hasobject]
    if pickled:
        raise ValueError(f"{path}: object arrays cannot be saved without pickling: {pickled}")
    save = np.savez_compressed if compress else np.savez
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        save(fh, **arrays)
    return Path(path)
