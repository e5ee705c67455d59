"""An upload turned into files in a private temporary folder: the one place a client's bytes touch disk.

A recording arrives as one file (any format :func:`cardiodistill.io.read_ecg` reads), as several
(a WFDB record: its ``.hea`` with its ``.dat``/``.mat``), or as one zip archive of those. Each part is
written under its own base name (a WFDB header names its signal file, so the names must be kept),
reduced to letters, digits, ``.``, ``_`` and ``-``; folders inside a zip are flattened and hidden
members (``__MACOSX/``, ``.DS_Store``) passed over. Counts and sizes are bounded as they are written,
never trusted from the archive's directory. :func:`record_file` then says which file is the recording.

Every refusal is an :class:`UploadError` with the HTTP status that fits and a one-line message. The
caller owns the working folder and removes it (``tempfile.TemporaryDirectory``) when the request is done.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from ..errors import CardiodistillError

__all__ = ["UploadError", "record_file", "save_upload"]

_ZIP_MAGIC = b"PK\x03\x04"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_NAME = 128
_CHUNK = 1 << 16


class UploadError(CardiodistillError):
    """An upload the service refuses: ``status`` is the HTTP status (400 malformed, 413 too large)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def safe_name(name: str | None) -> str:
    """The base name of a client's file name, reduced to ``[A-Za-z0-9._-]`` (module doc)."""
    base = re.split(r"[/\\]", name or "")[-1].strip()
    base = _UNSAFE.sub("_", base)[-_MAX_NAME:].lstrip(".")
    if not base:
        raise UploadError(f"file name {name!r} is empty or not a file name")
    return base


def _copy(source: BinaryIO, target: Path, budget: int, too_large: str) -> int:
    """Copy ``source`` to ``target`` and return the bytes left of ``budget``; 413 ``too_large`` past it."""
    with open(target, "xb") as out:
        while chunk := source.read(_CHUNK):
            budget -= len(chunk)
            if budget < 0:
                raise UploadError(too_large, 413)
            out.write(chunk)
    return budget


class _Folder:
    """The files written so far into the request's folder, with the limits still left."""

    def __init__(self, folder: Path, max_bytes: int, max_files: int, what: str = "upload"):
        self.folder, self.max_bytes, self.max_files, self.what = folder, max_bytes, max_files, what
        self.budget = max_bytes
        self.names: list[str] = []

    def add(self, name: str | None, source: BinaryIO) -> None:
        base = safe_name(name)
        if base in self.names:
            raise UploadError(f"two uploaded files are both named {base!r}")
        if len(self.names) >= self.max_files:
            raise UploadError(f"{self.what} holds more than {self.max_files} files; send one recording at a time")
        self.names.append(base)
        self.budget = _copy(source, self.folder / base, self.budget,
                            f"{self.what} is larger than the {self.max_bytes:,} byte limit")

    def add_zip(self, archive: Path, label: str) -> None:
        try:
            with zipfile.ZipFile(archive) as zf:
                for member in zf.infolist():
                    parts = member.filename.replace("\\", "/").split("/")
                    if member.is_dir() or any(p.startswith(".") or p == "__MACOSX" for p in parts):
                        continue
                    with zf.open(member) as source:
                        self.add(parts[-1], source)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError, OSError) as err:
            # RuntimeError: encrypted member; NotImplementedError: unknown compression; OSError: damaged data
            raise UploadError(f"{label}: not a readable zip archive ({type(err).__name__}: {err})") from None


def save_upload(parts: Iterable[tuple[str | None, BinaryIO]], workdir: Path, *, max_bytes: int,
                max_files: int) -> tuple[Path, list[str]]:
    """Write the uploaded ``(file name, stream)`` parts into ``workdir/record`` (module doc): a lone zip
    archive is unpacked there (the archive itself kept in ``workdir`` until then); at most ``max_bytes``
    written in all and ``max_files`` files. The folder and the names written in it, in order."""
    parts = list(parts)
    if not parts:
        raise UploadError("no file in the upload (send the recording as multipart field 'files')")
    folder = workdir / "record"
    folder.mkdir()
    saved = _Folder(folder, max_bytes, max_files)
    for name, stream in parts:
        saved.add(name, stream)
    if len(saved.names) == 1:
        with open(folder / saved.names[0], "rb") as f:
            is_zip = f.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC
        if is_zip:
            archive = (folder / saved.names[0]).rename(workdir / "upload.zip")
            unpacked = _Folder(folder, max_bytes, max_files, f"{saved.names[0]} unpacked")
            try:
                unpacked.add_zip(archive, saved.names[0])
            finally:
                archive.unlink()
            if not unpacked.names:
                raise UploadError(f"{saved.names[0]}: the zip archive holds no files")
            return folder, unpacked.names
    return folder, saved.names


def record_file(folder: Path, names: list[str]) -> Path:
    """The file to read among the uploaded ``names``: the only one, or the only WFDB header (``.hea``) of
    a record sent with its signal files."""
    if len(names) == 1:
        return folder / names[0]
    headers = [n for n in names if n.lower().endswith(".hea")]
    if len(headers) == 1:
        return folder / headers[0]
    if not headers:
        raise UploadError(f"{len(names)} files but no WFDB header (.hea) among them; send one recording, or a "
                          "WFDB record as its .hea with its .dat/.mat")
    raise UploadError(f"{len(headers)} WFDB headers ({', '.join(headers)}); send one record at a time")
