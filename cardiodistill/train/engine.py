"""The small training engine every stage shares: a Lightning trainer factory and its parts.

What a stage's ``LightningModule`` gets from here:

* :func:`make_trainer` - one place that turns :class:`~cardiodistill.config.TrainerConfig` into a
  ``lightning.Trainer``: devices, strategy (DDP/FSDP), precision, gradient clipping, a CSV log,
  a rich progress bar, and step-based checkpoints (``checkpoints/last.ckpt``) written atomically;
* :class:`WindowDataModule` - loaders over map-style datasets with a
  :class:`~cardiodistill.data.sampling.ResumableSampler`, built after the distributed processes
  exist (so each rank takes its own share) and positioned at the restored step on a resume;
* :func:`step_generator` - a random generator seeded by ``(seed, rank, global step)``: masks and
  augmentations drawn from it make a step replayable, which with the sampler makes a resumed run
  bit-identical to an uninterrupted one (on the same hardware and thread count);
* :func:`param_groups` and :func:`warmup_cosine` - AdamW without weight decay on biases, norms and
  embeddings, and a linear warm-up into a cosine decay, per optimizer step (as in MAE).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..config import TrainerConfig
from ..data.sampling import ResumableSampler
from ..io.atomic import atomic_path

__all__ = [
    "AtomicCheckpointIO",
    "WindowDataModule",
    "last_checkpoint",
    "make_trainer",
    "param_groups",
    "set_threads",
    "start_job",
    "step_generator",
    "warmup_cosine",
]


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file beside the target, then ``os.replace``: a crash while
    saving leaves the previous checkpoint intact instead of a truncated one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


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


def step_generator(seed: int, rank: int, step: int, device: torch.device | str) -> torch.Generator:
    """A generator on ``device`` seeded from ``(seed, rank, step)`` only."""
    generator = torch.Generator(device=device)
    generator.manual_seed(hash((int(seed), int(rank), int(step))) & 0x7FFF_FFFF_FFFF_FFFF)
    return generator


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices only (not biases, norms, embeddings, tokens)."""
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        skip = param.ndim < 2 or "embed" in name or "token" in name
        (no_decay if skip else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.0):
    """``LambdaLR``: linear warm-up over ``warmup_steps``, then cosine decay to ``min_ratio`` at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def last_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """``run_dir/checkpoints/last.ckpt`` if a previous, unfinished run left one."""
    path = Path(run_dir) / "checkpoints" / "last.ckpt"
    return path if path.is_file() else None


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
    the end (resume with ``trainer.fit(..., ckpt_path=last_checkpoint(run_dir))``). Without
    ``run_dir`` nothing is written (short fits such as the per-lead-set fine-tunes of an evaluation).
    """
    callbacks = list(callbacks or [])
    plugins = []
    if run_dir is not None and checkpoint_every:
        callbacks.append(ModelCheckpoint(
            dirpath=Path(run_dir) / "checkpoints", save_last=True, save_top_k=0,
            every_n_train_steps=checkpoint_every, save_on_train_epoch_end=True,
        ))
        plugins.append(AtomicCheckpointIO())
    if progress:
        from lightning.pytorch.callbacks import RichProgressBar

        callbacks.append(RichProgressBar(leave=True))
    logger = CSVLogger(str(run_dir), name="logs", version="") if run_dir is not None else False
    # The samplers are ours (ResumableSampler, rank-aware); Lightning must not swap them out.
    warnings.filterwarnings("ignore", message=".*dataloader is\\s+not resumable.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*have no `validation_step`.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
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
        plugins=plugins or None,
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
            from ..errors import ConfigError

            raise ConfigError(f"{len(self.train_set)} training samples do not fill one batch of {self.batch_size} "
                              f"on each of {world} processes; lower the batch size")
        if trainer is not None:  # on a resume both are already restored from the checkpoint
            self.sampler.set_epoch(trainer.current_epoch)
            self.sampler.resume_at(trainer.global_step)
        return self._loader(self.train_set, self.sampler, drop_last=True)

    def val_dataloader(self) -> DataLoader | list:
        return [] if self.val_set is None or len(self.val_set) == 0 else self._loader(self.val_set)
