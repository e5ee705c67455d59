"""The paired cohort in an established streaming format (LitData): object storage, shuffling, resume, rank balance.

The paired cache (:mod:`~cardiodistill.data.paired`) is a local folder read by random access, which
is right for a laptop and for one machine. A team with terabytes of echo keeps its studies in object
storage and trains on many GPUs; for that the same studies, preprocessed the same way, are written
by :func:`write_stream` as `LitData <https://github.com/Lightning-AI/litData>`_ chunks, one data
set per split::

    <root>/stream.json    format, version, the PairedSpec, lab and dx names, studies per split and the
                          source cache's digest; written last, so a stream without it is incomplete
    <root>/train/         LitData's index.json + chunk-*.bin
    <root>/val/  <root>/test/
    <root>/labelled/      with ``labelled=f``: the training studies that keep their labels under
                          ``finetune.labelled=f`` again, as a data set of their own that the teacher
                          streams (LitData reads a data set whole; a subset would be read by random access)
    <root>/train_labs.npy the training studies' labs [n_train, n_labs] (NaN = missing): what the models'
                          lab normalisation is fitted on, without a pass over the chunks
    <root>/labels.npz     every study's split, split_bucket, triage, dx and lvef by cache row: the
                          targets stage 3 trains on (:meth:`StreamCohort.labels`), without a pass either

``<root>`` is a local folder or an object-store URL (``s3://``, ``gs://``, ``azure://``): a remote
stream is written locally and uploaded, ``stream.json`` last; read, LitData downloads the chunks it
needs into a bounded local cache. :class:`StudyStream` reads one split and yields exactly
:class:`~cardiodistill.data.paired.PairedDataset`'s items (both go through
:func:`~cardiodistill.data.paired.model_item`) plus ``split_bucket``, so a job takes either.

What LitData does, and this module does not re-implement: shuffling across chunks from
``(seed, epoch)``; dealing chunks to ranks and DataLoader workers so that each study is read by one
of them once per epoch, ``drop_last`` giving every rank the same number of studies under DDP; and
resuming mid-epoch from a :class:`litdata.StreamingDataLoader`'s ``state_dict`` (Lightning keeps it
in its checkpoints). The toolkit's own part is what a study is and that it reads the same from the
cache and from the stream.

LitData is pinned below 0.2.45: later releases require torchvision, whose PyPI build does not load
against the CPU-only torch wheels, and a torchvision that is installed but does not load breaks
``import torchmetrics`` and with it Lightning. Its streaming dataset asks PyPI for a newer LitData
whenever one is made (a 30-s timeout on a cluster node without internet, and a warning); that check is
switched off here, as a job must not reach the internet.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from litdata import StreamingDataLoader, StreamingDataset
from litdata.streaming import dataset as _litdata_dataset
from litdata.streaming.writer import BinaryWriter
from litdata.utilities.env import _DistributedEnv

from ..config import Config
from ..errors import DataError
from ..io.atomic import write_json_atomic
from .cache import in_fraction
from .cohort import Labels, cohort_labels
from .paired import MODALITIES, PHASES, PairedCache, PairedSpec, model_item, model_zeros

__all__ = ["EpochStreamingDataLoader", "LABELS_NAME", "META_NAME", "SPLITS", "StreamCohort", "StudyStream",
           "is_remote", "open_stream", "read_stream_meta", "source_digest", "stream_loader", "write_stream"]

META_NAME = "stream.json"
LABS_NAME = "train_labs.npy"
LABELS_NAME = "labels.npz"
STREAM_FORMAT = "cardiodistill-stream"
STREAM_VERSION = 1
SPLITS = ("train", "val", "test")
DEFAULT_CHUNK_BYTES = "64MB"  # LitData's advice for remote reads: tens of MB per chunk

if hasattr(_litdata_dataset, "_check_version_and_prompt_upgrade"):  # no PyPI look-up per dataset (module doc)
    _litdata_dataset._check_version_and_prompt_upgrade = lambda version: None

Progress = Callable[[int, int], None]  # (studies written so far, total)


def is_remote(root: str | os.PathLike[str]) -> bool:
    return "://" in str(root)


def _join(root: str | os.PathLike[str], *parts: str) -> str:
    return "/".join([str(root).rstrip("/"), *parts]) if is_remote(root) else str(Path(root).joinpath(*parts))


def source_digest(cache: PairedCache) -> str:
    """What the stream was made from: the cache's spec and source files (not the ids or paths themselves)."""
    data = json.dumps({"spec": cache.meta["spec"], "files": cache.meta.get("files"), "n": len(cache)}, sort_keys=True,
                      default=str)
    return hashlib.blake2b(data.encode(), digest_size=8).hexdigest()


def stored_study(cache: PairedCache, row: int) -> dict[str, Any]:
    """Row ``row`` of the cache as the stream stores it: the cache's arrays in their stored dtypes, the
    labels, the note, the (pseudonymous) ids, ``split_bucket`` and the cache row."""
    table = cache.table.iloc[row]
    study: dict[str, Any] = {name: np.asarray(cache.item(name, row)) for name in cache.meta["arrays"]}
    study.update(
        row=int(row), split_bucket=int(table["split_bucket"]), triage=float(table["triage"]),
        dx=table[cache.dx_names].to_numpy(np.float32).reshape(len(cache.dx_names)), lvef=float(table["lvef"]),
        note=str(table["note"]) if isinstance(table["note"], str) else "", patient_id=str(table["patient_id"]),
        study_id=str(table["study_id"]), sex=str(table["sex"]), age=float(table["age"]),
    )
    return study


def _write_split(cache: PairedCache, rows: Iterable[int], folder: Path, chunk_bytes: str | int,
                 progress: Callable[[], None]) -> int:
    folder.mkdir(parents=True)
    writer = BinaryWriter(str(folder), chunk_bytes=chunk_bytes)
    n, chunk = 0, None
    for n, row in enumerate(map(int, rows), 1):
        if cache.chunk_of(row) != chunk:  # memory flat in cohort size: hold one chunk's pages, not the cache's
            cache.release()
            chunk = cache.chunk_of(row)
        writer[n - 1] = stored_study(cache, row)
        progress()
    if n:
        writer.done()
        writer.merge()
    return n


def _provider(url: str, storage_options: Mapping[str, Any] | None):
    from litdata.streaming.fs_provider import _get_fs_provider

    return _get_fs_provider(url, dict(storage_options or {}))


def _fetch(root: str | os.PathLike[str], name: str, storage_options: Mapping[str, Any] | None,
           read: Callable[[Path], Any]) -> Any:
    """``read(path)`` of the file ``name`` of the stream at ``root``; ``None`` where there is none."""
    if not is_remote(root):
        path = Path(root) / name
        return read(path) if path.is_file() else None
    provider, url = _provider(str(root), storage_options), _join(root, name)
    if not provider.exists(url):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        provider.download_file(url, os.path.join(tmp, name))
        return read(Path(tmp, name))


def read_stream_meta(root: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
                     ) -> dict[str, Any] | None:
    """``stream.json`` of the stream at ``root`` (a folder or a URL), or ``None`` where there is none."""

    def read(path: Path) -> dict[str, Any]:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise DataError(f"unreadable stream index ({err})", _join(root, META_NAME)) from None

    return _fetch(root, META_NAME, storage_options, read)


def write_stream(cache: PairedCache, out: str | os.PathLike[str], *, labelled: float | None = None,
                 chunk_bytes: str | int = DEFAULT_CHUNK_BYTES, storage_options: Mapping[str, Any] | None = None,
                 progress: Progress | None = None) -> dict[str, Any]:
    """Write the studies of ``cache`` as a stream at ``out`` (a folder or an object-store URL; module doc)
    and return its ``stream.json``; ``labelled``: also the ``labelled`` data set, the training studies a
    teacher with ``finetune.labelled=labelled`` learns from. A stream already there from the same cache
    (and ``labelled``) is kept as it is; anything else at ``out`` is refused. Written atomically: a local
    stream is built beside ``out`` and renamed, a remote one uploaded with ``stream.json`` last."""
    digest = source_digest(cache)
    old = read_stream_meta(out, storage_options)
    if old is not None:
        if (old.get("format") == STREAM_FORMAT and old.get("version") == STREAM_VERSION and old.get("source") == digest
                and old.get("labelled_fraction") == labelled):
            return old
        raise DataError("holds another stream; delete it or write elsewhere", out)
    if not is_remote(out) and Path(out).exists() and any(Path(out).iterdir()):
        raise DataError("exists and is not a stream; delete it or write elsewhere", out)
    table = cache.table
    split = table["split"].astype(str).to_numpy()
    rows = {s: np.flatnonzero(split == s) for s in SPLITS}
    if labelled is not None:
        rows["labelled"] = rows["train"][in_fraction(table["split_bucket"].to_numpy()[rows["train"]], labelled)]
    total, done = sum(len(r) for r in rows.values()), [0]

    def step() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    parent = Path(out).parent if not is_remote(out) else None
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{Path(str(out)).name}.partial-", dir=parent))
    try:
        counts = {s: _write_split(cache, r, tmp / s, chunk_bytes, step) for s, r in rows.items()}
        np.save(tmp / LABS_NAME, cache.load("labs")[rows["train"]].astype(np.float32))
        cache.release()
        np.savez(tmp / LABELS_NAME, split=np.asarray(split, dtype=str),
                 split_bucket=table["split_bucket"].to_numpy(np.int64), triage=table["triage"].to_numpy(np.float32),
                 dx=table[cache.dx_names].to_numpy(np.float32),
                 lvef=table["lvef"].to_numpy(np.float32))
        meta = {"format": STREAM_FORMAT, "version": STREAM_VERSION, "spec": cache.spec.to_dict(),
                "lab_names": cache.lab_names, "dx_names": cache.dx_names, "splits": counts, "source": digest,
                "labelled_fraction": labelled,
                "present": {m: int(cache.present[m].sum()) for m in MODALITIES},
                "real_ids": bool(cache.meta.get("real_ids", False))}
        write_json_atomic(tmp / META_NAME, meta)
        if parent is not None:
            if Path(out).exists():
                Path(out).rmdir()  # empty (checked above)
            os.replace(tmp, out)
        else:
            provider = _provider(str(out), storage_options)
            files = sorted(p for p in tmp.rglob("*") if p.is_file() and p.name != META_NAME)
            for path in [*files, tmp / META_NAME]:  # the index last: readers see the stream whole or not at all
                provider.upload_file(str(path), _join(out, *path.relative_to(tmp).parts))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def _checked_meta(root: str | os.PathLike[str], storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    meta = read_stream_meta(root, storage_options)
    if meta is None:
        raise DataError(f"not a stream (no {META_NAME}; a stream is written by `cardiodistill stream`)", root)
    if meta.get("format") != STREAM_FORMAT or meta.get("version") != STREAM_VERSION:
        raise DataError(f"a stream of format {meta.get('format')} version {meta.get('version')}; this toolkit "
                        f"reads {STREAM_FORMAT} version {STREAM_VERSION}: write it again", root)
    return meta


class StudyStream(StreamingDataset):
    """One split of a stream (module doc) as model input: :class:`~cardiodistill.data.paired.PairedDataset`'s
    items plus ``split_bucket``. A LitData ``StreamingDataset``: read it with :func:`stream_loader` (or
    ``litdata.StreamingDataLoader``) to shuffle from ``(seed, epoch)``, share it between ranks and workers,
    and resume mid-epoch from the loader's ``state_dict``. ``modalities`` as in ``PairedDataset``;
    ``cache_dir`` / ``max_cache_size``: where and how much of a remote stream is kept locally. ``extra``:
    per-study arrays in the source cache's row order (a teacher's outputs and targets) that each item gets
    at its row, ``item[name] = extra[name][row]``, as :class:`~cardiodistill.data.cohort.WithTargets` does.
    ``whole``: this process reads the whole split even inside a distributed job (a pass outside the
    trainer, such as the teacher's outputs on every study); otherwise LitData gives each rank its share.
    ``keys``: only these keys of an item, renamed (``{"ecg": "x", "ecg_present": "present"}`` gives stage 1's
    ECG windows)."""

    def __init__(self, root: str | os.PathLike[str], split: str = "train", *, modalities: Iterable[str] = MODALITIES,
                 shuffle: bool = False, seed: int = 0, drop_last: bool | None = None,
                 storage_options: Mapping[str, Any] | None = None, cache_dir: str | None = None,
                 max_cache_size: str = "50GB", meta: Mapping[str, Any] | None = None,
                 extra: Mapping[str, np.ndarray] | None = None, whole: bool = False,
                 keys: Mapping[str, str] | None = None):
        meta = _checked_meta(root, storage_options) if meta is None else meta
        if not meta["splits"].get(split):
            raise DataError(f"the stream has no {split!r} studies", root)
        unknown = sorted(set(modalities) - set(MODALITIES))
        if unknown:
            raise DataError(f"unknown modalities {', '.join(unknown)}; expected some of {', '.join(MODALITIES)}", root)
        super().__init__(_join(root, split), cache_dir=cache_dir, shuffle=shuffle, seed=seed, drop_last=drop_last,
                         storage_options=dict(storage_options or {}), max_cache_size=max_cache_size)
        if whole:
            self.distributed_env = _DistributedEnv(world_size=1, global_rank=0, num_nodes=1)
        self.root, self.split, self.meta = str(root), split, meta
        self.spec = PairedSpec.from_dict(meta["spec"])
        self.lab_names, self.dx_names = list(meta["lab_names"]), list(meta["dx_names"])
        self.modalities = tuple(modalities)
        self._zeros = model_zeros(self.spec, len(self.lab_names))
        self.extra = {k: torch.as_tensor(np.asarray(v)) for k, v in (extra or {}).items()}
        self.keys = dict(keys) if keys is not None else None

    def __getitem__(self, index: Any) -> dict[str, Any]:
        study = super().__getitem__(index)
        has = {m: bool(study[f"has_{m}"]) and m in self.modalities for m in MODALITIES}
        item = model_item(study.__getitem__, has,
                          labels={"triage": np.float32(study["triage"]), "dx": np.asarray(study["dx"], np.float32),
                                  "lvef": np.float32(study["lvef"])},
                          note=study["note"], phases={name: np.asarray(study[name], np.int64) for name in PHASES},
                          row=int(study["row"]), zeros=self._zeros)
        item["split_bucket"] = torch.tensor(int(study["split_bucket"]), dtype=torch.long)
        item.update({name: values[int(study["row"])] for name, values in self.extra.items()})
        return item if self.keys is None else {new: item[old] for old, new in self.keys.items()}


class EpochStreamingDataLoader(StreamingDataLoader):
    """LitData's loader, for a trainer that ends an epoch by counting batches. LitData's loader leaves its
    "resuming" state when a restored epoch runs to its end; Lightning stops after ``len(loader)`` batches
    instead, so every later epoch replayed the restored one (or failed past its end). An epoch begun after
    a restored one is a new epoch here."""

    _restored_epoch_begun = False

    def __iter__(self) -> Any:
        if self.restore and self._restored_epoch_begun:
            self.restore = False
        self._restored_epoch_begun = self.restore
        yield from super().__iter__()


def stream_loader(stream: StudyStream, batch_size: int, *, num_workers: int = 0, **kwargs: Any
                  ) -> EpochStreamingDataLoader:
    """A LitData loader over ``stream``: it shares the stream between ranks and workers and has the
    ``state_dict`` / ``load_state_dict`` that resume it mid-epoch (:class:`EpochStreamingDataLoader`)."""
    return EpochStreamingDataLoader(stream, batch_size=batch_size, num_workers=num_workers, **kwargs)


class StreamCohort:
    """A stream (module doc) as the stage jobs read a cohort: what a model is sized and normalised from
    (``lab_names``, the modalities some study has, the training labs) and its splits as
    :class:`StudyStream` s. Opened with :func:`open_stream`."""

    def __init__(self, root: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None,
                 cache_dir: str | None = None):
        self.root, self.storage_options, self.cache_dir = str(root), dict(storage_options or {}), cache_dir
        self.meta = _checked_meta(root, storage_options)
        self.spec = PairedSpec.from_dict(self.meta["spec"])
        self.lab_names: list[str] = list(self.meta["lab_names"])
        self.dx_names: list[str] = list(self.meta["dx_names"])

    @property
    def source(self) -> str:
        return self.root

    @property
    def present_modalities(self) -> set[str]:
        return {m for m, n in self.meta["present"].items() if n}

    @property
    def n_studies(self) -> int:
        """Studies in the cohort (the ``labelled`` data set repeats training studies)."""
        return sum(self.meta["splits"].get(split, 0) for split in SPLITS)

    def train_labs(self) -> np.ndarray:
        """The training studies' labs ``[n_train, n_labs]`` (NaN = missing)."""
        labs = _fetch(self.root, LABS_NAME, self.storage_options, lambda path: np.load(path, allow_pickle=False))
        if labs is None:
            raise DataError(f"the stream has no {LABS_NAME}; write it again", self.root)
        return labs

    def labels(self, cfg: Config) -> Labels:
        """The splits and training targets by cache row, as :func:`~cardiodistill.data.cohort.open_cohort`
        makes them from the cache (``finetune.labelled`` and ``finetune.outputs`` of ``cfg``)."""

        def read(path: Path) -> pd.DataFrame:
            with np.load(path, allow_pickle=False) as z:
                table = pd.DataFrame({"split": z["split"], "split_bucket": z["split_bucket"], "triage": z["triage"],
                                      "lvef": z["lvef"]})
                table[self.dx_names] = z["dx"]
            return table

        table = _fetch(self.root, LABELS_NAME, self.storage_options, read)
        if table is None:
            raise DataError(f"the stream has no {LABELS_NAME}; write it again", self.root)
        return cohort_labels(cfg, table, self.dx_names, self.root)

    def stream(self, split: str, *, modalities: Iterable[str] = MODALITIES, shuffle: bool = False,
               seed: int = 0, extra: Mapping[str, np.ndarray] | None = None, whole: bool = False,
               keys: Mapping[str, str] | None = None) -> StudyStream:
        return StudyStream(self.root, split, modalities=modalities, shuffle=shuffle, seed=seed,
                           storage_options=self.storage_options, cache_dir=self.cache_dir, meta=self.meta, extra=extra,
                           whole=whole, keys=keys)


def open_stream(root: str | os.PathLike[str], spec: PairedSpec | None = None, *,
                storage_options: Mapping[str, Any] | None = None, cache_dir: str | None = None) -> StreamCohort:
    """The stream at ``root``, checked against the input ``spec`` the models want (when given)."""
    cohort = StreamCohort(root, storage_options, cache_dir)
    if spec is not None and cohort.spec != spec:
        raise DataError(f"the stream was written for {cohort.spec.to_dict()} but the models want {spec.to_dict()}; "
                        f"write it again with the same config", root)
    return cohort
