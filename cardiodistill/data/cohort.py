"""A paired cohort as the stage-2/3 jobs and the evaluation read it: cache, splits, training targets.

A cohort folder (``manifest.csv`` + files, as :mod:`cardiodistill.synth` writes or a team exports)
is read once into a :class:`~cardiodistill.data.paired.PairedCache` shaped for the encoders
(:func:`paired_spec`), and split by the manifest's ``split`` column:

* ``train``: stage 2 aligns on all of it (no labels needed); a deterministic ``finetune.labelled``
  share of it (by a hash of the patient id) keeps its labels - the first user's 5k of 20k - and
  the rest is unlabelled for stage 3 (the student still learns the teacher's outputs there);
* ``val``: labelled; the validation losses, the operating threshold and the calibration
  temperature are chosen here;
* ``test``: held out from every stage; every reported figure comes from it.

Also here: the input specs a model config asks for (:func:`window_spec`, :func:`clip_spec`), which
the caches are built for. Model-side statistics (the lab normalisation of the fusion model) are the
stage jobs' business (:func:`cardiodistill.stages.stage2.cohort_lab_stats`): data never imports models.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from ..config import Config
from ..errors import ConfigError, DataError
from ..records import DEFAULT_BAND
from ..video import ClipSpec
from .cache import in_fraction
from .ecg_windows import WindowSpec
from .paired import PairedCache, PairedDataset, PairedSpec, build_paired_cache

__all__ = ["Cohort", "Labels", "WithTargets", "cohort_labels", "clip_spec", "open_cohort", "paired_spec", "window_spec"]

Progress = Callable[[str, int, int | None], None]  # (task, advance, total)


def window_spec(model_config: dict[str, Any], band: Sequence[float] | None) -> WindowSpec:
    """The windows a model wants, from its config (``fs``, ``seconds``) and a band-pass."""
    return WindowSpec(float(model_config["fs"]), float(model_config["seconds"]), tuple(band) if band else None)


def clip_spec(model_config: dict[str, Any]) -> ClipSpec:
    """The clips a video model wants, from its config (``size``, ``frames``, ``cycles``, ``fps``)."""
    return ClipSpec(size=int(model_config["size"]), frames=int(model_config["frames"]),
                    cycles=model_config.get("cycles"), fps=float(model_config.get("fps", 16.0)))


def paired_spec(ecg_config: Mapping[str, Any], video_config: Mapping[str, Any]) -> PairedSpec:
    """The cache spec the two encoders want (rate, length and band of the ECG; the video clip)."""
    band = ecg_config.get("band", DEFAULT_BAND)  # models saved before the band was recorded used the default
    spec = WindowSpec(float(ecg_config["fs"]), float(ecg_config.get("seconds", 10.0)),
                      None if band is None else (float(band[0]), float(band[1])))
    return PairedSpec(ecg=spec, clip=clip_spec(video_config))


class WithTargets(Dataset):
    """A dataset of dict items (with an ``"index"`` into the arrays) plus per-study arrays:
    ``item[name] = arrays[name][item["index"]]`` as tensors."""

    def __init__(self, base: Dataset, arrays: Mapping[str, np.ndarray]):
        self.base = base
        self.arrays = {k: torch.as_tensor(np.asarray(v)) for k, v in arrays.items()}

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.base[i]
        row = int(item["index"])
        return {**item, **{k: v[row] for k, v in self.arrays.items()}}


@dataclass
class Labels:
    """A cohort's splits and training targets by cache row (module doc); what a stream of the cohort
    rebuilds from its ``labels.npz`` (:meth:`~cardiodistill.data.streaming.StreamCohort.labels`).

    ``targets [N, C]`` (float32): the binary ``outputs`` (triage first, then diagnoses), NaN where
    a study is unlabelled (unlabelled training studies, or a missing label); ``lvef [N]`` in %,
    NaN likewise; ``labels`` the same without the hiding (for evaluation on val / test only).
    """

    splits: dict[str, np.ndarray]
    outputs: list[str]
    labels: np.ndarray
    lvef_labels: np.ndarray
    targets: np.ndarray
    lvef: np.ndarray

    def lvef_stats(self) -> tuple[float, float]:
        known = self.lvef[self.splits["labelled"]]
        known = known[np.isfinite(known)]
        return (float(known.mean()), float(known.std() + 1e-6)) if len(known) > 1 else (55.0, 10.0)

    def target_arrays(self) -> dict[str, np.ndarray]:
        """Per-study arrays every stage-3 item carries: ``targets`` and ``lvef_z`` (LVEF standardised)."""
        mean, std = self.lvef_stats()
        return {"targets": self.targets, "lvef_z": (self.lvef - mean) / std}


def cohort_labels(cfg: Config, table: pd.DataFrame, dx_names: Sequence[str], where: str | Path) -> Labels:
    """The splits and targets of the studies in ``table`` (one row per study in cache order, with ``split``,
    ``split_bucket``, ``triage``, the ``dx_names`` columns and ``lvef``): ``finetune.labelled`` of the
    training studies keep their labels, ``finetune.outputs`` are the targets."""
    split = table["split"].astype(str).to_numpy()
    labelled = in_fraction(table["split_bucket"], cfg.finetune.labelled) & (split == "train")
    splits = {s: np.flatnonzero(split == s) for s in ("train", "val", "test")}
    splits["labelled"] = np.flatnonzero(labelled)
    if min(len(splits["train"]), len(splits["val"]), len(splits["test"])) == 0:
        raise DataError("the manifest's split column needs train, val and test studies", where)

    outputs = list(cfg.finetune.outputs)
    columns = []
    for name in outputs:
        if name == "triage":
            columns.append(table["triage"].to_numpy(np.float32))
        elif name in dx_names or f"dx_{name}" in dx_names:
            columns.append(table[name if name in dx_names else f"dx_{name}"].to_numpy(np.float32))
        else:
            raise ConfigError(f"finetune.outputs: {name!r} is neither triage nor a diagnosis of the cohort "
                              f"({', '.join(c.removeprefix('dx_') for c in dx_names)})")
    labels = np.stack(columns, 1)
    lvef_labels = table["lvef"].to_numpy(np.float32)
    hidden = (split == "train") & ~labelled
    targets = np.where(hidden[:, None], np.nan, labels).astype(np.float32)
    lvef = np.where(hidden, np.nan, lvef_labels).astype(np.float32)
    return Labels(splits, outputs, labels, lvef_labels, targets, lvef)


@dataclass
class Cohort(Labels):
    """A paired cache with its splits and training targets (:class:`Labels`, module doc)."""

    cache: PairedCache

    @property
    def table(self):
        return self.cache.table

    # What a model is sized and normalised from; a stream (:class:`~cardiodistill.data.streaming.StreamCohort`)
    # answers the same.
    @property
    def lab_names(self) -> list[str]:
        return self.cache.lab_names

    @property
    def present_modalities(self) -> set[str]:
        return {m for m, has in self.cache.present.items() if has.any()}

    @property
    def source(self) -> Path:
        return self.cache.folder

    def train_labs(self) -> np.ndarray:
        """The training studies' labs ``[n_train, n_labs]`` (NaN = missing)."""
        return self.cache.load("labs")[self.splits["train"]]

    def dataset(self, split: str | np.ndarray, modalities=("ecg", "mobile", "echo", "labs", "note")) -> PairedDataset:
        indices = self.splits[split] if isinstance(split, str) else split
        return PairedDataset(self.cache, indices, modalities=modalities)

    def with_targets(self, dataset: PairedDataset, extra: Mapping[str, np.ndarray] | None = None) -> WithTargets:
        return WithTargets(dataset, {**self.target_arrays(), **(extra or {})})


def open_cohort(cfg: Config, cohort: str | Path, spec: PairedSpec, progress: Progress | None = None) -> Cohort:
    """Build (or reuse) the paired cache of ``cohort`` for ``spec`` and split it (module doc)."""
    cohort = Path(cohort)
    if not (cohort / "manifest.csv").is_file():
        raise DataError("not a cohort folder (no manifest.csv)", cohort)
    key = hashlib.blake2b(json.dumps(spec.to_dict(), sort_keys=True).encode(), digest_size=4).hexdigest()
    folder = Path(cfg.pipeline.cache_dir) if cfg.pipeline.cache_dir else cohort / "cache" / f"paired-{key}"
    total = len(pd.read_csv(cohort / "manifest.csv", usecols=[0]))
    done = [0]

    def step(n: int) -> None:  # the cache reports studies done so far; the bar wants increments
        if progress is not None:
            progress("reading the cohort", n - done[0], total)
        done[0] = n

    cache = build_paired_cache(cohort, folder, spec, progress=step, workers=cfg.pipeline.workers)
    labels = cohort_labels(cfg, cache.table, cache.dx_names, cohort / "manifest.csv")
    return Cohort(**vars(labels), cache=cache)
