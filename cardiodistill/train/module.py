"""The one LightningModule base of every training job: a subclass only says how a batch becomes losses.

A stage's module (stage-1 ECG/video pretraining, stage-2 alignment, the stage-3 teacher and students,
the array teacher, the classifiers of the downstream evaluations) subclasses :class:`TrainModule`,
calls ``save_hyperparameters()`` with at least ``lr, weight_decay, warmup_steps, max_steps`` (and
``betas``, ``seed``, ``encoder_lr_scale`` where it has them), sets ``self.model`` (what is exported
and recorded in checkpoints) and implements ``_losses(batch, generator) -> {"loss", ...}``. The base:

* draws each step's randomness (masks, augmentations, modality dropout) from
  :func:`~.engine.step_generator`, so a step can be replayed and a resumed run continues as if it had
  never stopped;
* logs ``train/*`` and ``val/*`` (``local_metrics``: validation values a batch may lack, logged per
  process and never synchronised, because under DDP every process must reduce the same keys);
* builds AdamW (:func:`param_groups`: no decay on biases, norms, embeddings, tokens; parameters whose
  name starts with one of ``scaled_prefixes`` - pretrained encoders - at ``encoder_lr_scale`` times the
  rate, decayed layer by layer with ``layer_decay``) with a warm-up cosine schedule per optimizer step (as in MAE);
* counts the steps done in a buffer (it survives ``ddp_spawn``'s copy back to the main process);
* writes into every checkpoint what :func:`~.checkpoints.read_model_file` needs to rebuild the model.

:class:`PretrainModule` is the stage-1 base on top of it, shared by the ECG and the video encoders:
one modality's masked autoencoder, or its encoder under a contrastive objective (SimCLR, or for the ECG
CLOCS' segments and leads of one recording).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from .. import __version__
from ..errors import ConfigError
from ..models import model_from_config
from ..objectives.contrastive import ProjectionHead, nt_xent
from ..objectives.mae import normalised_cross_correlation

__all__ = ["PretrainModule", "TrainModule", "param_groups", "step_generator", "warmup_cosine"]

VAL_SEED_OFFSET = 1_000_003  # validation draws: a fixed stream, the same at every validation


def step_generator(seed: int, rank: int, step: int, device: torch.device | str) -> torch.Generator:
    """A generator on ``device`` seeded from ``(seed, rank, step)`` only."""
    generator = torch.Generator(device=device)
    generator.manual_seed(hash((int(seed), int(rank), int(step))) & 0x7FFF_FFFF_FFFF_FFFF)
    return generator


def param_groups(module: nn.Module, weight_decay: float, scaled: Sequence[str] = (), scale: float = 1.0,
                 layer_decay: float = 1.0) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices only (not biases, norms, embeddings, tokens), and an
    ``lr_scale`` of ``scale`` on the parameters whose name starts with one of ``scaled``.

    ``layer_decay`` < 1 decays that scale layer by layer (BEiT and MAE fine-tuning): in the submodule a ``scaled``
    prefix names, which lists its layers from input to output (``lr_layers()``), the top layer trains at ``scale``
    and each layer below at ``layer_decay`` times the one above it; its parameters in no listed layer (a
    transformer's token embedding) count as one layer below the first."""
    depth = _layer_depths(module, scaled) if layer_decay != 1.0 else {}
    groups: dict[tuple[bool, bool, float], list[nn.Parameter]] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        no_decay, slow = param.ndim < 2 or "embed" in name or "token" in name, name.startswith(tuple(scaled))
        lr_scale = scale * layer_decay ** depth.get(name, 0) if slow else 1.0
        groups.setdefault((no_decay, slow, lr_scale), []).append(param)
    return [{"params": params, "weight_decay": 0.0 if no_decay else weight_decay, "lr_scale": lr_scale}
            for (no_decay, _, lr_scale), params in groups.items()]


def _layer_depths(module: nn.Module, prefixes: Sequence[str]) -> dict[str, int]:
    """Each parameter under ``prefixes`` -> how many layers below its submodule's top layer it sits."""
    depth: dict[str, int] = {}
    for prefix in prefixes:
        sub = module.get_submodule(prefix.rstrip("."))
        if not hasattr(sub, "lr_layers"):
            raise ConfigError(f"layer-wise learning-rate decay needs a pretrained module that lists its layers "
                              f"(lr_layers); {type(sub).__name__} at {prefix.rstrip('.')!r} does not")
        layers = sub.lr_layers()
        owner = {id(p): i + 1 for i, layer in enumerate(layers) for p in layer.parameters()}
        for name, param in sub.named_parameters():
            depth[prefix + name] = len(layers) - owner.get(id(param), 0)
    return depth


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.0):
    """``LambdaLR``: linear warm-up over ``warmup_steps``, then cosine decay to ``min_ratio`` at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class TrainModule(L.LightningModule):
    """Base of every training module (module doc)."""

    kind = "train"  # recorded in checkpoints (``"<kind>/<objective>"`` when the module has an objective)
    scaled_prefixes: tuple[str, ...] = ()  # parameter-name prefixes trained at encoder_lr_scale
    local_metrics: tuple[str, ...] = ()  # validation values logged per process, never synchronised

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))

    def _losses(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, Tensor]:
        raise NotImplementedError

    @staticmethod
    def _size(batch: dict[str, Any]) -> int:
        return len(batch["index"] if "index" in batch else batch["x"])

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.steps_done.fill_(self.global_step)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        generator = step_generator(self.hparams.get("seed", 0), self.global_rank, self.global_step, self.device)
        losses = self._losses(batch, generator)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True, batch_size=self._size(batch))
        return losses["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        generator = step_generator(self.hparams.get("seed", 0), VAL_SEED_OFFSET, batch_idx, self.device)
        losses = self._losses(batch, generator)
        local = {f"val/{k}": v for k, v in losses.items() if k in self.local_metrics}
        synced = {f"val/{k}": v for k, v in losses.items() if k not in self.local_metrics}
        self.log_dict(synced, prog_bar=True, sync_dist=True, batch_size=self._size(batch))
        if local:
            self.log_dict(local, batch_size=self._size(batch))

    def configure_optimizers(self):
        hp = self.hparams
        groups = param_groups(self, hp.weight_decay, self.scaled_prefixes, hp.get("encoder_lr_scale", 1.0),
                              hp.get("layer_decay", 1.0))
        for group in groups:
            group["lr"] = hp.lr * group["lr_scale"]
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.get("betas", (0.9, 0.999))))
        scheduler = warmup_cosine(optimizer, hp.warmup_steps, hp.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        objective = self.hparams.get("objective")
        checkpoint["cardiodistill"] = {
            "version": __version__, "kind": f"{self.kind}/{objective}" if objective else self.kind,
            "model_config": self.model.model_config, "state_prefix": "model.",
        }


class PretrainModule(TrainModule):
    """Self-supervised pretraining of one modality's encoder, without labels (stage 1).

    ``objective="mae"``: the masked autoencoder ``model_config`` names (a :attr:`mae_class`), its loss
    on the hidden patches, and the normalised cross-correlation of the reconstruction as a metric;
    ``objective="contrastive"`` (SimCLR) or another of :attr:`contrastive_objectives`: the encoder
    (the autoencoder's, or one of :attr:`encoder_classes` named directly) and a projection head,
    NT-Xent between two views of each item. A subclass names the classes and says how a batch goes
    through them: :meth:`_reconstruct`, :meth:`_two_views` (the encoder's embeddings of the two
    views the objective makes) and :meth:`_augmentation`.
    """

    mae_class: type[nn.Module]
    encoder_classes: tuple[type[nn.Module], ...]
    mae_names = "*_mae_*"  # the registered names of the modality's autoencoders, for errors
    contrastive_objectives: tuple[str, ...] = ("contrastive",)

    def __init__(
        self,
        model_config: dict[str, Any],
        *,
        objective: str = "mae",
        lr: float = 1.5e-3,
        weight_decay: float = 0.05,
        betas: Sequence[float] = (0.9, 0.95),
        warmup_steps: int = 100,
        max_steps: int = 1000,
        seed: int = 0,
        temperature: float = 0.1,
        projection_dim: int = 128,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model = model_from_config(model_config)
        name = model_config["name"]
        if objective == "mae":
            if not isinstance(self.model, self.mae_class):
                raise ConfigError(f"the mae objective needs a masked autoencoder ({self.mae_names}), got {name!r}")
        elif objective in self.contrastive_objectives:
            self.model = self.encoder
            if not isinstance(self.model, self.encoder_classes):
                kinds = " or ".join(c.__name__ for c in self.encoder_classes)
                raise ConfigError(f"the {objective} objective needs an encoder ({kinds}), got {name!r}")
            self.head = ProjectionHead(self.model.embed_dim, out=projection_dim)
            self.augment = self._augmentation(self.model)
        else:
            raise ConfigError(f"unknown pretraining objective {objective!r}; expected one of "
                              f"{', '.join(('mae',) + self.contrastive_objectives)}")

    @property
    def encoder(self) -> nn.Module:
        return self.model.encoder if isinstance(self.model, self.mae_class) else self.model

    def _augmentation(self, encoder: nn.Module) -> nn.Module:
        raise NotImplementedError

    def _reconstruct(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, Tensor]:
        """The autoencoder's output: ``loss``, ``pred``, ``target``, ``mask``."""
        raise NotImplementedError

    def _two_views(self, batch: dict[str, Any], generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """The encoder's embeddings of the objective's two views of every item."""
        raise NotImplementedError

    def _carries(self, batch: dict[str, Any]) -> Tensor:
        """Which items of ``batch`` hold any signal of the modality (bool ``[B]``). A stream of paired studies
        gives a study without this modality as zeros; those items are left out of the objective (two blank
        views would be a trivial positive pair, and each blank a negative of every other)."""
        raise NotImplementedError

    def _losses(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, Tensor]:
        keep = self._carries(batch)
        if bool(keep.any()) and not bool(keep.all()):  # a batch of blanks only (never seen at 32 a batch) stays
            batch = {k: v[keep] if isinstance(v, Tensor) and v.ndim and len(v) == len(keep) else v
                     for k, v in batch.items()}
        if self.hparams.objective == "mae":
            out = self._reconstruct(batch, generator)
            with torch.no_grad():
                ncc = normalised_cross_correlation(out["pred"].float(), out["target"].float(), out["mask"])
            return {"loss": out["loss"], "ncc": ncc}
        z1, z2 = (self.head(z) for z in self._two_views(batch, generator))
        return {"loss": nt_xent(z1, z2, self.hparams.temperature)}
