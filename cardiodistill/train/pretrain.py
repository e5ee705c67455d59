"""What every stage-1 (self-supervised) module shares, and the fit-and-export job around it.

A modality's pretraining module (:class:`~cardiodistill.train.ecg.EcgPretrainModule`,
:class:`~cardiodistill.train.video.VideoPretrainModule`) subclasses :class:`SelfSupervisedModule`
and only says how a batch becomes losses (``_losses(batch, generator)``). The base class draws
each step's randomness from :func:`~.engine.step_generator` (replayable steps, exact resume), logs
``train/*`` and ``val/*``, builds AdamW with a warm-up cosine schedule, counts the steps done in a
buffer (it survives ``ddp_spawn``'s copy back to the main process), and writes into every
checkpoint what :func:`~.checkpoints.read_model_file` needs to rebuild the model from it.

:func:`fit_pretraining` is the job: resumable data module, trainer, fit (from the run's
``last.ckpt`` if a previous run left one), then the model and its encoder exported as
self-describing model files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .. import __version__
from ..config import OptimConfig, TrainerConfig
from ..errors import ConfigError
from ..models import model_defaults
from .checkpoints import save_model
from .engine import WindowDataModule, last_checkpoint, make_trainer, param_groups, step_generator, warmup_cosine

__all__ = ["SelfSupervisedModule", "fit_pretraining", "resolve_model_config"]

VAL_SEED_OFFSET = 1_000_003  # validation masks: a fixed stream, the same at every validation


class SelfSupervisedModule(L.LightningModule):
    """Base of the stage-1 modules (module doc). Subclasses call ``save_hyperparameters()`` with
    at least ``objective, lr, weight_decay, betas, warmup_steps, max_steps, seed``, set ``self.model``
    (what is exported) and implement ``encoder`` and ``_losses``."""

    kind = "pretrain"  # recorded in checkpoints as "<kind>/<objective>"

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))

    @property
    def encoder(self) -> torch.nn.Module:
        raise NotImplementedError

    def _losses(self, batch: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        raise NotImplementedError

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.steps_done.fill_(self.global_step)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        generator = step_generator(self.hparams.seed, self.global_rank, self.global_step, self.device)
        losses = self._losses(batch, generator)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True, batch_size=len(batch["x"]))
        return losses["loss"]

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        generator = step_generator(self.hparams.seed, VAL_SEED_OFFSET, batch_idx, self.device)
        losses = self._losses(batch, generator)
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, prog_bar=True, sync_dist=True,
                      batch_size=len(batch["x"]))

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(param_groups(self, hp.weight_decay), lr=hp.lr, betas=tuple(hp.betas))
        scheduler = warmup_cosine(optimizer, hp.warmup_steps, hp.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["cardiodistill"] = {
            "version": __version__, "kind": f"{self.kind}/{self.hparams.objective}",
            "model_config": self.model.model_config, "state_prefix": "model.",
        }


def resolve_model_config(model: dict[str, Any], section: str) -> dict[str, Any]:
    """``{"name": ..., **overrides}`` from a config -> the model's full config (defaults plus
    overrides), so a run records every value it used. ``section`` names the key in errors."""
    overrides = dict(model)
    name = overrides.pop("name", None)
    if name is None:
        raise ConfigError(f"{section} needs a 'name' (a registered model)")
    return {"name": name, **model_defaults(name), **overrides}


def fit_pretraining(
    module: SelfSupervisedModule,
    train_set: Dataset,
    val_set: Dataset | None,
    optim: OptimConfig,
    trainer_cfg: TrainerConfig,
    out: str | Path,
    *,
    model_file: str,
    show_bar: bool = True,
    callbacks: Sequence[L.Callback] | None = None,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``module`` (resuming from ``out/checkpoints/last.ckpt``), then write ``out/<model_file>``
    (the whole model) and ``out/encoder.pt``, each with ``info`` and the steps done.

    Returns ``{"steps", "metrics" (the last logged values), "files"}``.
    """
    out = Path(out)
    has_val = val_set is not None and len(val_set) > 0
    data = WindowDataModule(train_set, val_set if has_val else None, batch_size=optim.batch_size,
                            num_workers=trainer_cfg.num_workers, seed=trainer_cfg.seed,
                            accumulate=trainer_cfg.accumulate)
    every = trainer_cfg.checkpoint_every
    trainer = make_trainer(trainer_cfg, out, max_steps=optim.max_steps, checkpoint_every=every, progress=show_bar,
                           callbacks=list(callbacks or []), val_every=every if has_val else None)
    trainer.fit(module, datamodule=data, ckpt_path=last_checkpoint(out))
    steps = int(module.steps_done)
    files = {}
    if trainer.is_global_zero:
        details = {"objective": module.hparams.objective, "steps": steps, **(info or {})}
        files["model"] = str(save_model(module.model, out / model_file, **details))
        files["encoder"] = str(save_model(module.encoder, out / "encoder.pt", **details))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return {"steps": steps, "metrics": metrics, "files": files}
