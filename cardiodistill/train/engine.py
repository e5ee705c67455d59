"""The small training engine every job shares: one :func:`fit`, the trainer factory and its parts.

* :func:`fit` - trains a :class:`~.module.TrainModule` for ``max_steps`` optimizer steps: stage 1,
  stage 2, stage 3, the array trainer and the downstream evaluations all go through it. With a run
  folder ``out`` it logs to ``out/logs/metrics.csv`` (a resumed run moves the earlier log to
  ``metrics.1.csv``, ...), rewrites ``out/checkpoints/last.ckpt`` every
  ``trainer.checkpoint_every`` steps and resumes from it; with ``out=None`` nothing is written;
* :func:`make_trainer` - one place that turns :class:`~cardiodistill.config.TrainerConfig` into a
  ``lightning.Trainer``: devices, strategy (DDP/FSDP), precision, gradient clipping, a CSV log,
  one progress bar per job counting optimizer steps, and step-based checkpoints written atomically;
* :class:`WeightEMA` - ``optim.ema_decay``: an exponential moving average of the weights (Lightning's
  ``WeightAveraging``) that validation, the checkpoints and the final model use, resumed with the run;
* :class:`SafeCheckpointIO` / :func:`read_checkpoint` - checkpoints are read with
  ``torch.load(weights_only=True)`` only: a resumed ``last.ckpt`` that holds anything but tensors and
  plain containers (a planted pickle payload), or a truncated or foreign file, is refused with a one-line
  :class:`~cardiodistill.errors.DataError` before Lightning touches it, and Lightning itself then reads
  it through the same safe loader;
* :class:`WindowDataModule` - loaders over map-style datasets with a
  :class:`~cardiodistill.data.sampling.ResumableSampler`, built after the distributed processes
  exist (so each rank takes its own share) and positioned at the restored step on a resume; together
  with :func:`~.module.step_generator` a resumed run is bit-identical to an uninterrupted one (on the
  same hardware and thread count).
"""

from __future__ import annotations

import logging
import os
import pickle
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar, WeightAveraging
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader, Dataset

from ..config import TrainerConfig
from ..data.sampling import ResumableSampler
from ..errors import ConfigError, DataError
from ..io.atomic import atomic_path
from .module import TrainModule

__all__ = [
    "CloseSpawnedProcessGroup",
    "StreamDataModule",
    "SafeCheckpointIO",
    "StepProgressBar",
    "WeightEMA",
    "WindowDataModule",
    "fit",
    "last_checkpoint",
    "make_trainer",
    "read_checkpoint",
    "set_threads",
    "start_job",
    "steps_for_epochs",
]

# Lightning's rank-zero banners and tips ("GPU available", "TPU available", "💡 Tip: ... litlogger") are
# not ours to print: our jobs say what they do. Warnings and errors still come through.
for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def read_checkpoint(path: str | os.PathLike[str]) -> Any:
    """A checkpoint read with ``torch.load(weights_only=True)``: tensors, numbers, strings and
    plain containers only, so a file cannot run code when it is read. Anything else - a pickled object, a
    truncated or unreadable file - is a one-line :class:`DataError` naming the file."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unreadable, truncated or unsafe: the same advice for all
        reason = "holds objects other than weights" if isinstance(err, pickle.UnpicklingError) \
            else f"is not a readable checkpoint ({type(err).__name__})"
        raise DataError(f"the checkpoint {reason}; delete it or pass --overwrite to start afresh", path) from None
    return data


class SafeCheckpointIO(TorchCheckpointIO):
    """Checkpoints saved atomically (``torch.save`` to a temporary file beside the target, then
    ``os.replace``: a crash while saving leaves the previous one intact) and loaded with
    :func:`read_checkpoint` (``weights_only=True`` whatever Lightning or the environment asks)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict[str, Any]:
        return read_checkpoint(path)


class CloseSpawnedProcessGroup(L.Callback):
    """Closes the process group at the end of a fit in a worker that ``ddp_spawn`` (or ``ddp_fork``)
    started, once every rank has got there.

    Lightning destroys an NCCL group at exit but leaves a gloo one open, so each spawned worker's
    interpreter tore down gloo's threads under it as it exited, and now and then a rank aborted
    (SIGABRT, "terminate called without an active exception") after its work was done. A spawned
    worker's fit is the last thing it does, so the group can go here. The callback does nothing in
    a process that goes on after the fit (single-device, or DDP launched by ``torchrun``/subprocesses).
    """

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        launcher = getattr(trainer.strategy, "launcher", None)
        if isinstance(launcher, _MultiProcessingLauncher) and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


#: What the progress bar shows of the logged metrics, under shorter names.
_BAR_METRICS = {"train/loss": "loss", "val/loss": "val"}


class StepProgressBar(RichProgressBar):
    """One bar per training job, counting optimizer steps up to ``max_steps`` (the rich bar counts the
    batches of each epoch, one bar per epoch, titled "Epoch N/-2" when training runs by steps)."""

    def __init__(self, description: str = "training") -> None:
        super().__init__(leave=True)
        self.description = description

    def _add_train_task(self, trainer: L.Trainer) -> None:
        self.train_progress_bar_id = self._add_task(trainer.max_steps, self.description)
        self._update(self.train_progress_bar_id, trainer.global_step)

    def _initialize_train_progress_bar_id(self) -> None:  # a resume inside an epoch
        self._add_train_task(self.trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.is_enabled and self.progress is not None and self.train_progress_bar_id is None:
            self._add_train_task(trainer)
            self.refresh()

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """Only the total losses, so the bar stays one line; every term is in ``logs/metrics.csv``."""
        metrics = super().get_metrics(trainer, pl_module)
        return {short: metrics[k] for k, short in _BAR_METRICS.items() if k in metrics}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if self.is_disabled:
            return
        if self.train_progress_bar_id is None:
            self._add_train_task(trainer)
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()


@torch.no_grad()
def _ema_update(average: torch.Tensor, current: torch.Tensor, n_averaged: torch.Tensor, *, decay: float
                ) -> torch.Tensor:
    if not average.is_floating_point():  # counters (the steps done, BatchNorm's batches seen) follow the model
        return current
    return decay * average + (1 - decay) * current


class WeightEMA(WeightAveraging):
    """An exponential moving average of the weights and buffers, updated after every optimizer step: Lightning's
    ``WeightAveraging`` (validation on the average, checkpoints holding it beside the live weights, the average
    copied into the model when training ends) with the update of ``EMAWeightAveraging``, as a function that
    pickles (``ddp_spawn`` pickles the callbacks; Lightning's own EMA callback holds a closure)."""

    def __init__(self, decay: float):
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"ema_decay must be in (0, 1), got {decay!r}")
        super().__init__(avg_fn=partial(_ema_update, decay=float(decay)))
        self.decay = float(decay)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The average's weights into the model, its counters left as they are (the average last saw them a
        hook before the module counted the last step)."""
        counters = {k: b.clone() for k, b in pl_module.named_buffers() if not b.is_floating_point()}
        super().on_train_end(trainer, pl_module)
        for k, b in pl_module.named_buffers():
            if k in counters:
                b.copy_(counters[k])


def set_threads(threads: int | None) -> None:
    """Intra-op CPU threads (``None``: torch's default). Small matmuls on few cores can be much
    slower with more threads than physical cores, so presets state it."""
    if threads is not None:
        torch.set_num_threads(int(threads))


def start_job(trainer: TrainerConfig) -> None:
    """Threads and seeds for a training job (``trainer.threads``, ``trainer.seed``): the same config
    gives the same initial weights whatever ran before it in the process."""
    set_threads(trainer.threads)
    L.seed_everything(trainer.seed, workers=True, verbose=False)


def steps_for_epochs(n_items: int, batch_size: int, epochs: int, min_steps: int) -> int:
    """Optimizer steps for ``epochs`` passes over ``n_items`` (full batches), at least ``min_steps``."""
    return max(min_steps, epochs * max(1, n_items // batch_size))


def last_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """``run_dir/checkpoints/last.ckpt`` if a previous, unfinished run left one, after checking that it
    reads safely (:func:`read_checkpoint`)."""
    path = Path(run_dir) / "checkpoints" / "last.ckpt"
    if not path.is_file():
        return None
    data = read_checkpoint(path)
    if not isinstance(data, dict) or not {"state_dict", "loops"} <= data.keys():  # weights, and where to resume
        raise DataError("not a training checkpoint; delete it or pass --overwrite to start afresh", path)
    return path


def _keep_earlier_log(log: Path) -> None:
    """Lightning's CSV logger starts ``metrics.csv`` afresh when a run resumes; move the earlier one
    aside (``metrics.1.csv``, ``metrics.2.csv``, ...) so a resumed run keeps its whole history. Only
    the first process does it (the others of a DDP run start after it), by the rank Lightning reads from
    the launcher (torchrun, SLURM, its own DDP launcher)."""
    if not log.is_file() or rank_zero_only.rank != 0:
        return
    n = 1
    while log.with_name(f"metrics.{n}.csv").exists():
        n += 1
    log.rename(log.with_name(f"metrics.{n}.csv"))


def make_trainer(
    cfg: TrainerConfig,
    run_dir: str | os.PathLike[str] | None,
    *,
    max_steps: int = -1,
    max_epochs: int | None = None,
    checkpoint_every: int | None = None,
    callbacks: list[L.Callback] | None = None,
    progress: bool = True,
    val_every: int | None = None,
) -> L.Trainer:
    """A ``lightning.Trainer`` configured by ``cfg``.

    With ``run_dir``, metrics go to ``run_dir/logs/metrics.csv`` and, when ``checkpoint_every``
    is set, ``run_dir/checkpoints/last.ckpt`` is rewritten every that many optimizer steps and at
    the end. Without ``run_dir`` nothing is written (short fits such as the per-lead-set fine-tunes
    of an evaluation). Checkpoints are always read with :class:`SafeCheckpointIO`.
    """
    callbacks = list(callbacks or [])
    if run_dir is not None and checkpoint_every:
        callbacks.append(ModelCheckpoint(
            dirpath=Path(run_dir) / "checkpoints", save_last=True, save_top_k=0,
            every_n_train_steps=checkpoint_every, save_on_train_epoch_end=True,
        ))
    if progress:
        callbacks.append(StepProgressBar())
    callbacks.append(CloseSpawnedProcessGroup())
    if run_dir is not None:
        _keep_earlier_log(Path(run_dir) / "logs" / "metrics.csv")
    logger = CSVLogger(str(run_dir), name="logs", version="") if run_dir is not None else False
    # The samplers are ours (ResumableSampler, rank-aware); Lightning must not swap them out.
    warnings.filterwarnings("ignore", message=".*dataloader is\\s+not resumable.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*have no `validation_step`.*")
    warnings.filterwarnings("ignore", message=".*but have no `val_dataloader`.*")  # a fit without a val set
    warnings.filterwarnings("ignore", message=".*(logs|Checkpoint) directory .* exists and is not empty.*")  # a resume
    # TrainModule.local_metrics (retrieval within a rank's batch) are per process on purpose
    warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*Total length of `list` across ranks is zero.*")  # no val set
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
    # a LitData stream: its length is per rank and worker already (LitData shares it out)
    warnings.filterwarnings("ignore", message=".*`IterableDataset` has `__len__` defined.*")
    return L.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        num_nodes=cfg.num_nodes,
        precision=cfg.precision,
        max_steps=max_steps,
        max_epochs=max_epochs if max_epochs is not None else (-1 if max_steps > 0 else None),
        gradient_clip_val=cfg.gradient_clip or None,
        accumulate_grad_batches=cfg.accumulate,
        log_every_n_steps=cfg.log_every,
        val_check_interval=val_every,
        check_val_every_n_epoch=None if val_every else 1,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        deterministic=cfg.deterministic,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=progress,
        enable_model_summary=False,
        logger=logger,
        callbacks=callbacks,
        plugins=[SafeCheckpointIO()],
        default_root_dir=str(run_dir) if run_dir is not None else None,
    )


class WindowDataModule(L.LightningDataModule):
    """Train/val loaders over map-style datasets of dicts, with a resumable sampler for training."""

    def __init__(
        self, train: Dataset, val: Dataset | None, *, batch_size: int, num_workers: int = 0, seed: int = 0,
        accumulate: int = 1,
    ):
        super().__init__()
        self.train_set, self.val_set = train, val
        self.batch_size, self.num_workers, self.seed, self.accumulate = batch_size, num_workers, seed, accumulate
        self.sampler: ResumableSampler | None = None

    def _loader(self, dataset: Dataset, sampler=None, drop_last: bool = False) -> DataLoader:
        return DataLoader(
            dataset, batch_size=self.batch_size, sampler=sampler, drop_last=drop_last,
            num_workers=self.num_workers, persistent_workers=False, pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        self.sampler = ResumableSampler(len(self.train_set), self.batch_size, seed=self.seed, rank=rank,
                                        world=world, accumulate=self.accumulate)
        if self.sampler.steps_per_epoch < 1:
            raise ConfigError(f"{len(self.train_set)} training samples do not fill one batch of {self.batch_size} "
                              f"on each of {world} processes; lower the batch size")
        if trainer is not None:  # on a resume both are already restored from the checkpoint
            self.sampler.set_epoch(trainer.current_epoch)
            self.sampler.resume_at(trainer.global_step)
        return self._loader(self.train_set, self.sampler, drop_last=True)

    def val_dataloader(self) -> DataLoader | list:
        return [] if self.val_set is None or len(self.val_set) == 0 else self._loader(self.val_set)


class StreamDataModule(L.LightningDataModule):
    """Train/val loaders over LitData streams (:class:`~cardiodistill.data.streaming.StudyStream`): LitData
    shuffles from ``(seed, epoch)`` and shares each epoch out between ranks and workers in equal whole batches;
    its loader's ``state_dict``, which Lightning keeps in every checkpoint, resumes an epoch where it stopped."""

    def __init__(self, train: Dataset, val: Dataset | None, *, batch_size: int, num_workers: int = 0):
        super().__init__()
        self.train_set, self.val_set = train, val
        self.batch_size, self.num_workers = batch_size, num_workers

    def _loader(self, dataset: Dataset, drop_last: bool = False):
        from ..data.streaming import stream_loader

        return stream_loader(dataset, self.batch_size, num_workers=self.num_workers,
                             pin_memory=torch.cuda.is_available(), drop_last=drop_last)

    def train_dataloader(self):
        return self._loader(self.train_set, drop_last=True)  # whole batches, as WindowDataModule

    def val_dataloader(self):
        return [] if self.val_set is None or len(self.val_set) == 0 else self._loader(self.val_set)


def _is_stream(dataset: Dataset | DataLoader) -> bool:
    from litdata import StreamingDataset

    return isinstance(dataset, StreamingDataset)


def fit(
    module: TrainModule,
    train_set: Dataset | DataLoader,
    val_set: Dataset | None,
    trainer_cfg: TrainerConfig,
    out: str | os.PathLike[str] | None,
    *,
    batch_size: int,
    max_steps: int,
    show_bar: bool = True,
    callbacks: Sequence[L.Callback] | None = None,
    ema_decay: float = 0.0,
) -> dict[str, Any]:
    """Train ``module`` for ``max_steps`` optimizer steps on ``train_set`` (batches of ``batch_size`` in
    the seeded, resumable order of :class:`WindowDataModule`; a LitData stream, read by
    :class:`StreamDataModule`; or a ready ``DataLoader``, used as it is),
    validating on ``val_set`` every ``trainer.checkpoint_every`` steps.

    ``ema_decay`` > 0 keeps an exponential moving average of the weights (and buffers), updated after every
    optimizer step (:class:`WeightEMA`): validation runs on the average, every checkpoint's
    ``state_dict`` holds it (a resume reads the live weights and the average from the same file), and the
    module ends training with the average's weights.

    With a run folder ``out`` it checkpoints there at the same interval and resumes from
    ``out/checkpoints/last.ckpt`` (read safely, :func:`read_checkpoint`); with ``out=None`` nothing is
    written. Returns ``{"steps", "metrics" (the last logged values), "is_global_zero", "trainer"}`` (the
    trainer predicts with the precision it trained with); exporting the model is the caller's job (only on
    the global-zero process).
    """
    has_val = val_set is not None and len(val_set) > 0
    every = min(trainer_cfg.checkpoint_every, max_steps)
    callbacks = list(callbacks or [])
    if ema_decay:
        callbacks.append(WeightEMA(ema_decay))
    trainer = make_trainer(trainer_cfg, out, max_steps=max_steps, checkpoint_every=every if out is not None else None,
                           progress=show_bar, callbacks=callbacks, val_every=every if has_val else None)
    resume = last_checkpoint(out) if out is not None else None
    if isinstance(train_set, DataLoader):
        if has_val:
            raise ValueError("fit: validation needs a dataset for training too, not a DataLoader")
        trainer.fit(module, train_set, ckpt_path=resume, weights_only=True)
    else:
        if _is_stream(train_set):
            data = StreamDataModule(train_set, val_set if has_val else None, batch_size=batch_size,
                                    num_workers=trainer_cfg.num_workers)
        else:
            data = WindowDataModule(train_set, val_set if has_val else None, batch_size=batch_size,
                                    num_workers=trainer_cfg.num_workers, seed=trainer_cfg.seed,
                                    accumulate=trainer_cfg.accumulate)
        trainer.fit(module, datamodule=data, ckpt_path=resume, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return {"steps": int(module.steps_done), "metrics": metrics, "is_global_zero": trainer.is_global_zero,
            "trainer": trainer}
