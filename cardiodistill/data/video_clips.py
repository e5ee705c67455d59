"""Training clips from echo / cine-MR videos: decoded and preprocessed once, then memory-mapped.

A cohort's echo is terabytes of DICOM; decoding a JPEG cine costs far more than a training step
on it. :func:`build_clip_cache` therefore reads every video of its sources once, prepares
``clips_per_video`` windows of whole cardiac cycles from it (:func:`cardiodistill.video.prepare_windows`:
field of view found and burned-in overlays blanked, cropped, resized, resampled in time) and
stores them as uint8 ``[T, S, S]`` frames with their field-of-view mask ``[S, S]``, in the layout
of :mod:`~cardiodistill.data.cache`. Training reads them back memory-mapped and z-scores each clip
inside its mask (:func:`cardiodistill.video.normalise_frames`) as it is loaded.

Sources (:class:`VideoSource`)

* ``synth``: ``patients`` simulated patients (``seed``), rendered in memory, with their labels;
* ``cohort``: a folder written by ``cardiodistill synth`` (its manifest's ``echo_path`` DICOMs and labels);
* ``files``: every video file (DICOM, AVI/MP4, NIfTI; told by content) matching ``pattern`` under ``path``.

Privacy: patient-identifying values never reach the cache (nor, therefore, a run folder). A
clinical file's record and study id are a keyed hash (:func:`pseudonym`) of its path relative to
the source folder, a cohort video's a keyed hash of ``<folder name>/<patient_id>``; DICOM patient
and study attributes are read but not stored, and file names are taken out of skip reasons
(:func:`~cardiodistill.data.cache.redact`). Set the environment variable
``CARDIODISTILL_PSEUDONYM_KEY`` to a secret so that the hashes cannot be reversed by guessing.
Simulated ids (``synth0/P000123``) are kept as they are; real ids are written only with
``real_ids=True`` or ``$CARDIODISTILL_REAL_IDS=1``. The validation split hashes the id it always
hashed (a cohort's real id, a file's pseudonym), and ``items.csv``'s ``split_bucket`` keeps that
hash, so another fraction of the same rule is ``in_fraction(cache.index["split_bucket"], f)``
(:mod:`~cardiodistill.data.cache`) without the real id. A cohort manifest's ``echo_path`` is read
only inside the cohort folder (files elsewhere with ``$CARDIODISTILL_ALLOW_OUTSIDE_PATHS=1``), as a
regular file of at most 4 GiB (:func:`~cardiodistill.data.cache.manifest_file`).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from ..errors import CardiodistillError, DataError
from ..privacy import pseudonym
from ..records import VideoClip
from ..video import ClipSpec, normalise_frames, prepare_windows
from .cache import (
    MAX_FILE_BYTES,
    MAX_TABLE_BYTES,
    OUTSIDE_PATHS_ENV,
    REAL_IDS_ENV,
    ArrayCache,
    CacheBuilder,
    ids_fingerprint,
    is_val_record,
    manifest_file,
    opted_in,
    read_bounded,
    redact,
    reuse_cache,
    split_bucket,
)

__all__ = [
    "VIDEO_SOURCE_KINDS",
    "ClipCache",
    "ClipDataset",
    "VideoSource",
    "build_clip_cache",
    "pseudonym",
    "register_video_source",
    "source_videos",
]

CACHE_FORMAT = "cardiodistill-video-clips"
CACHE_VERSION = 2  # 2: cohort ids pseudonymised, split_bucket, confined manifest paths
VIDEO_SOURCE_KINDS = ("synth", "cohort", "files")
LABEL_COLUMNS = ("lvef", "triage", "heart_rate", "age", "sex")  # besides every dx_* column


@dataclass(frozen=True)
class VideoSource:
    """One source of videos (module doc)."""

    kind: str
    path: str | None = None
    name: str | None = None
    patients: int = 200  # synth
    seed: int = 0  # synth
    pattern: str = "**/*"  # files
    max_videos: int | None = None
    clips_per_video: int = 1

    @property
    def label(self) -> str:
        return self.name or (self.kind if self.path is None else f"{self.kind}:{Path(self.path).name}")


@dataclass
class VideoItem:
    """One video of a source: ids, a loader (reading happens when called) and labels if known.

    ``record`` is the id the validation split hashes. ``real_id``: the real identifier behind ``record``
    and ``study`` (None when they identify nobody, as a simulated id): the cache writes its pseudonym
    unless asked for real ids. ``name``: the file name the source read, taken out of skip reasons.
    """

    record: str
    load: Callable[[], VideoClip]
    study: str
    labels: dict[str, Any] | None = None
    real_id: str | None = None
    name: str | None = None

    def written(self, value: str, real_ids: bool) -> str:
        """What the cache writes for ``value``, this video's ``record`` or ``study``."""
        if self.real_id is None:
            return value
        real = self.real_id if value == self.record else value
        return real if real_ids else pseudonym(real)


# ----------------------------------------------------------------------------------- sources


def source_videos(source: VideoSource) -> Iterator[VideoItem]:
    """The videos of ``source`` in a fixed order, at most ``max_videos``."""
    if source.kind not in VIDEO_SOURCE_KINDS:
        raise DataError(f"unknown video source kind {source.kind!r}; expected one of "
                        f"{', '.join(VIDEO_SOURCE_KINDS)}", source.path)
    if source.kind not in _READERS:
        raise DataError(f"video source kind {source.kind!r} is not registered in this process (the simulator's "
                        "'synth' is registered by importing cardiodistill.stages)", source.path)
    if source.kind in _NEEDS_PATH and not source.path:
        raise DataError(f"video source of kind {source.kind!r} needs a path", None)
    items = _READERS[source.kind](source)
    for count, item in enumerate(items):
        if source.max_videos is not None and count >= source.max_videos:
            return
        yield item


def _label_dict(row: pd.Series) -> dict[str, Any]:
    return {k: row[k] for k in row.index if k in LABEL_COLUMNS or k.startswith("dx_")}


def _cohort(source: VideoSource) -> Iterator[VideoItem]:
    from ..io.video import read_video

    root = Path(source.path)
    manifest_path = root / "manifest.csv"
    if not manifest_path.is_file():
        raise DataError("manifest.csv not found: not a cohort folder written by cardiodistill synth", root)
    manifest = pd.read_csv(io.BytesIO(read_bounded(manifest_path, MAX_TABLE_BYTES, "table")),
                           dtype={"patient_id": str})
    if "echo_path" not in manifest:
        raise DataError("the cohort has no echo (manifest.csv has no echo_path column)", manifest_path)

    def load(name: str) -> VideoClip:
        return read_video(manifest_file(root, name, what="echo", max_bytes=MAX_FILE_BYTES["echo"]))

    for _, row in manifest.dropna(subset=["echo_path"]).iterrows():
        record, name = f"{root.name}/{row['patient_id']}", str(row["echo_path"])
        yield VideoItem(record, lambda name=name: load(name), record, _label_dict(row), real_id=record, name=name)


def _files(source: VideoSource) -> Iterator[VideoItem]:
    from ..io.video import is_video_file, read_video

    root = Path(source.path)
    if not root.is_dir():
        raise DataError("not a folder", root)
    for path in sorted(p for p in root.glob(source.pattern) if p.is_file()):
        if not is_video_file(path):
            continue
        name = str(path.relative_to(root))
        record = pseudonym(name)  # the split hashes the pseudonym, as it always has
        yield VideoItem(record, lambda p=path: read_video(p), record, real_id=name, name=name)


SourceReader = Callable[[VideoSource], Iterator[VideoItem]]
_READERS: dict[str, SourceReader] = {"cohort": _cohort, "files": _files}
_NEEDS_PATH = frozenset(_READERS)


def register_video_source(kind: str, reader: SourceReader) -> None:
    """Make ``reader(source) -> VideoItem...`` the reader of video sources of ``kind`` (one of
    :data:`VIDEO_SOURCE_KINDS`): how a data source outside this package (the simulator) plugs in."""
    if kind not in VIDEO_SOURCE_KINDS:
        raise ValueError(f"unknown video source kind {kind!r}; expected one of {', '.join(VIDEO_SOURCE_KINDS)}")
    _READERS[kind] = reader


# ----------------------------------------------------------------------------------- the cache


def _fingerprint(spec: ClipSpec, sources: Sequence[VideoSource], val_fraction: float, real_ids: bool) -> dict[str, Any]:
    return {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "spec": spec.to_dict(),
        "sources": [asdict(s) for s in sources],
        "val_fraction": val_fraction,
        **ids_fingerprint(real_ids),  # another key gives other ids: not the same cache
        "outside_paths": opted_in(None, OUTSIDE_PATHS_ENV),
    }


def build_clip_cache(
    folder: str | PathLike[str],
    sources: Sequence[VideoSource],
    spec: ClipSpec,
    *,
    val_fraction: float = 0.05,
    chunk_clips: int = 512,
    progress: Callable[[str, int], None] | None = None,
    real_ids: bool | None = None,
) -> ClipCache:
    """Write (or reuse) the clip cache of ``sources`` at ``folder`` (module doc); returns it open.

    ``progress(source label, videos done in it)`` is called after every video. A video that
    cannot be read or prepared is skipped and listed under ``skipped`` in ``cache.json`` (first
    20 reasons), so one bad file does not end a long job. ``real_ids`` writes real ids instead of
    pseudonyms (None: ``$CARDIODISTILL_REAL_IDS``).
    """
    folder = Path(folder)
    real_ids = opted_in(real_ids, REAL_IDS_ENV)
    wanted = _fingerprint(spec, sources, val_fraction, real_ids)
    if reuse_cache(folder, wanted):
        return ClipCache(folder)
    if not sources:
        raise DataError("no video sources to build a clip cache from", folder)
    counts: dict[str, dict[str, int]] = {}
    skipped: list[str] = []
    with CacheBuilder(folder, {"clips": np.uint8, "masks": bool}, chunk=chunk_clips) as builder:
        for source in sources:
            count = counts.setdefault(source.label, {"videos": 0, "clips": 0, "skipped": 0})
            for done, item in enumerate(source_videos(source), 1):
                try:
                    clip = item.load()
                    windows = prepare_windows(clip, spec, source.clips_per_video)
                except CardiodistillError as err:  # the reason without the file's path (names can identify)
                    count["skipped"] += 1
                    reason = str(getattr(err, "problem", err))
                    reason = redact(reason, item.name) if item.name else reason
                    skipped.append(f"{item.written(item.record, real_ids)}: {reason}")
                    continue
                split = "val" if is_val_record(item.record, val_fraction) else "train"
                base = {"source": source.label, "record": item.written(item.record, real_ids),
                        "study": item.written(item.study, real_ids), "view": clip.view,
                        "modality": clip.modality, "split": split, "split_bucket": split_bucket(item.record),
                        **(item.labels or {})}
                rows = [{**base, "start_s": round(w.window_s[0], 4), "period_s": round(w.period_s, 4),
                         "period_source": w.period_source} for w in windows]
                builder.add(rows, clips=np.stack([w.frames for w in windows]),
                            masks=np.stack([w.mask for w in windows]))
                count["videos"] += 1
                count["clips"] += len(windows)
                if progress is not None:
                    progress(source.label, done)
        if not len(builder):
            raise DataError("the sources gave no usable video clip", folder)
        builder.commit({**wanted, "counts": counts, "skipped": skipped[:20]})
    return ClipCache(folder)


class ClipCache(ArrayCache):
    """A clip cache read back: ``cache[i] -> (frames uint8 [T, S, S], mask bool [S, S])``."""

    def __init__(self, folder: str | PathLike[str]):
        super().__init__(folder, CACHE_FORMAT)
        self.spec = ClipSpec.from_dict(self.meta["spec"])

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.item("clips", i)), np.asarray(self.item("masks", i))


class ClipDataset(Dataset):
    """Clips of a :class:`ClipCache` (optionally a subset) as model input:
    ``{"x": float32 [T, S, S] z-scored inside the field of view, "mask": bool [S, S]}``, plus one
    entry per ``targets`` array (indexed like the cache, e.g. labels for supervised training)."""

    def __init__(self, cache: ClipCache, indices: Sequence[int] | np.ndarray | None = None,
                 targets: dict[str, np.ndarray] | None = None):
        self.cache = cache
        self.indices = np.arange(len(cache)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.targets = {k: torch.as_tensor(np.asarray(v)) for k, v in (targets or {}).items()}
        if any(len(v) != len(cache) for v in self.targets.values()):
            raise ValueError(f"targets need one value per cached clip ({len(cache)})")

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = int(self.indices[i])
        frames, mask = self.cache[row]
        item = {"x": torch.from_numpy(normalise_frames(frames, mask)), "mask": torch.from_numpy(mask.copy())}
        return {**item, **{k: v[row] for k, v in self.targets.items()}}
