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
clinical file's record id is a keyed hash (:func:`pseudonym`) of its path relative to the
source folder, and its study id a keyed hash of the DICOM StudyInstanceUID; DICOM patient and
study attributes are read but not stored. Set the environment variable
``CARDIODISTILL_PSEUDONYM_KEY`` to a secret so that the hashes cannot be reversed by guessing.
Simulated ids (``P000123``) are kept as they are.
"""

from __future__ import annotations

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
from ..privacy import PSEUDONYM_ENV, pseudonym
from ..records import VideoClip
from ..video import ClipSpec, normalise_frames, prepare_windows
from .cache import ArrayCache, CacheBuilder, is_val_record, reuse_cache

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
CACHE_VERSION = 1
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
    """One video of a source: ids, a loader (reading happens when called) and labels if known."""

    record: str
    load: Callable[[], VideoClip]
    study: str
    labels: dict[str, Any] | None = None


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
    manifest = pd.read_csv(manifest_path, dtype={"patient_id": str})
    if "echo_path" not in manifest:
        raise DataError("the cohort has no echo (manifest.csv has no echo_path column)", manifest_path)
    for _, row in manifest.dropna(subset=["echo_path"]).iterrows():
        record = f"{root.name}/{row['patient_id']}"
        yield VideoItem(record, lambda p=root / row["echo_path"]: read_video(p), record, _label_dict(row))


def _files(source: VideoSource) -> Iterator[VideoItem]:
    from ..io.video import is_video_file, read_video

    root = Path(source.path)
    if not root.is_dir():
        raise DataError("not a folder", root)
    for path in sorted(p for p in root.glob(source.pattern) if p.is_file()):
        if not is_video_file(path):
            continue
        record = pseudonym(str(path.relative_to(root)))
        yield VideoItem(record, lambda p=path: read_video(p), record)


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


def _fingerprint(spec: ClipSpec, sources: Sequence[VideoSource], val_fraction: float) -> dict[str, Any]:
    return {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "spec": spec.to_dict(),
        "sources": [asdict(s) for s in sources],
        "val_fraction": val_fraction,
        "pseudonym_key": pseudonym("cardiodistill"),  # another key gives other ids: not the same cache
    }


def build_clip_cache(
    folder: str | PathLike[str],
    sources: Sequence[VideoSource],
    spec: ClipSpec,
    *,
    val_fraction: float = 0.05,
    chunk_clips: int = 512,
    progress: Callable[[str, int], None] | None = None,
) -> ClipCache:
    """Write (or reuse) the clip cache of ``sources`` at ``folder`` (module doc); returns it open.

    ``progress(source label, videos done in it)`` is called after every video. A video that
    cannot be read or prepared is skipped and listed under ``skipped`` in ``cache.json`` (first
    20 reasons), so one bad file does not end a long job.
    """
    folder = Path(folder)
    wanted = _fingerprint(spec, sources, val_fraction)
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
                    skipped.append(f"{item.record}: {getattr(err, 'problem', err)}")
                    continue
                split = "val" if is_val_record(item.record, val_fraction) else "train"
                base = {"source": source.label, "record": item.record, "study": item.study, "view": clip.view,
                        "modality": clip.modality, "split": split, **(item.labels or {})}
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
