"""What the stage-2 and stage-3 modules share: replayable steps, scaled learning rates, one fit job.

:class:`StageModule` is the counterpart of stage 1's
:class:`~cardiodistill.train.pretrain.SelfSupervisedModule` for batches of paired studies: a
subclass sets ``self.model`` (what is exported) and implements ``_losses(batch, generator)``;
the base draws every step's randomness (masks, modality dropout) from
:func:`~.engine.step_generator`, so a resumed run replays the same steps, and gives pretrained
encoders a smaller learning rate (``encoder_lr_scale``) than the new layers on top of them.

:func:`fit_stage` trains one such module in a run folder, resuming from ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from .. import __version__
from ..config import OptimConfig, TrainerConfig
from .engine import WindowDataModule, last_checkpoint, make_trainer, step_generator, warmup_cosine

__all__ = ["StageModule", "fit_stage", "scaled_param_groups", "steps_for_epochs"]

VAL_SEED_OFFSET = 1_000_003


def scaled_param_groups(module: nn.Module, weight_decay: float, scaled: Sequence[str], scale: float) -> list[dict]:
    """AdamW groups (decay on weight matrices only, as :func:`~.engine.param_groups`), with an
    ``lr_scale`` of ``scale`` on parameters whose name starts with one of ``scaled``."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim < 2 or "embed" in name or "token" in name
        groups.setdefault((no_decay, name.startswith(tuple(scaled))), []).append(param)
    return [{"params": params, "weight_decay": 0.0 if no_decay else weight_decay, "lr_scale": scale if slow else 1.0}
            for (no_decay, slow), params in groups.items()]


def steps_for_epochs(n_items: int, batch_size: int, epochs: int, min_steps: int) -> int:
    """Optimizer steps for ``epochs`` passes over ``n_items`` (full batches), at least ``min_steps``."""
    return max(min_steps, epochs * max(1, n_items // batch_size))


class StageModule(L.LightningModule):
    """Base of the stage-2/3 modules (module doc). Subclasses call ``save_hyperparameters()`` with
    at least ``lr, weight_decay, betas, warmup_steps, max_steps, seed, encoder_lr_scale``."""

    kind = "stage"
    scaled_prefixes: tuple[str, ...] = ()  # parameter-name prefixes trained at encoder_lr_scale
    # Validation metrics a batch may lack (an accuracy with nothing to score): logged per process,
    # never synchronised, because under DDP every process must reduce the same keys.
    local_metrics: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))

    def _losses(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, Tensor]:
        raise NotImplementedError

    @staticmethod
    def _size(batch: dict[str, Any]) -> int:
        return len(batch["index"])

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.steps_done.fill_(self.global_step)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        generator = step_generator(self.hparams.seed, self.global_rank, self.global_step, self.device)
        losses = self._losses(batch, generator)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True, batch_size=self._size(batch))
        return losses["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        generator = step_generator(self.hparams.seed, VAL_SEED_OFFSET, batch_idx, self.device)
        losses = self._losses(batch, generator)
        local = {f"val/{k}": v for k, v in losses.items() if k in self.local_metrics}
        synced = {f"val/{k}": v for k, v in losses.items() if k not in self.local_metrics}
        self.log_dict(synced, prog_bar=True, sync_dist=True, batch_size=self._size(batch))
        if local:
            self.log_dict(local, batch_size=self._size(batch))

    def configure_optimizers(self):
        hp = self.hparams
        groups = scaled_param_groups(self, hp.weight_decay, self.scaled_prefixes, hp.encoder_lr_scale)
        for group in groups:
            group["lr"] = hp.lr * group["lr_scale"]
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas))
        scheduler = warmup_cosine(optimizer, hp.warmup_steps, hp.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["cardiodistill"] = {"version": __version__, "kind": self.kind,
                                       "model_config": self.model.model_config, "state_prefix": "model."}


def fit_stage(
    module: StageModule,
    train_set: Dataset,
    val_set: Dataset | None,
    optim: OptimConfig,
    trainer_cfg: TrainerConfig,
    out: str | Path,
    *,
    max_steps: int,
    show_bar: bool = True,
    callbacks: Sequence[L.Callback] | None = None,
) -> dict[str, Any]:
    """Train ``module`` for ``max_steps`` in run folder ``out`` (resuming from its last checkpoint).

    Returns ``{"steps", "metrics" (the last logged values), "is_global_zero"}``; exporting the
    model is the caller's job (only on the global-zero process).
    """
    out = Path(out)
    has_val = val_set is not None and len(val_set) > 0
    data = WindowDataModule(train_set, val_set if has_val else None, batch_size=optim.batch_size,
                            num_workers=trainer_cfg.num_workers, seed=trainer_cfg.seed,
                            accumulate=trainer_cfg.accumulate)
    every = min(trainer_cfg.checkpoint_every, max_steps)
    trainer = make_trainer(trainer_cfg, out, max_steps=max_steps, checkpoint_every=every, progress=show_bar,
                           callbacks=list(callbacks or []), val_every=every if has_val else None)
    trainer.fit(module, datamodule=data, ckpt_path=last_checkpoint(out))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return {"steps": int(module.steps_done), "metrics": metrics, "is_global_zero": trainer.is_global_zero}
