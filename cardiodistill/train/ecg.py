"""Stage 1 for ECG: the pretraining module, the classifier module, and ``pretrain_ecg``.

Batches are dicts from :mod:`cardiodistill.data.sampling`: ``x`` float ``[B, 12, S]`` (per-lead
z-scored windows in :data:`~cardiodistill.signals.leads.LEADS_12` order), ``present`` bool
``[B, 12]`` and, for classifiers, ``y`` float ``[B, C]`` (multi-hot).

:class:`EcgPretrainModule` trains a lead-agnostic encoder without labels:

* ``objective="mae"``: the masked autoencoder of :class:`~cardiodistill.models.EcgMAE` (random
  patch masking plus whole-lead masking, loss on hidden patches);
* ``objective="contrastive"``: SimCLR - two augmented views of each window
  (:class:`~cardiodistill.data.augment.EcgAugment`: lead dropout, shift, scale, wander, noise)
  through the encoder and a projection head, NT-Xent loss.

Masks and augmentations are drawn from :func:`~.engine.step_generator`, so every step can be
replayed exactly and a resumed run continues as if it had never stopped.

:class:`EcgClassifierModule` puts a linear head on an encoder (frozen or fine-tuned) or trains a
fixed-lead CNN (:class:`~cardiodistill.models.XResNet1d`) from scratch, on any lead subset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Config, EcgPretrainConfig
from ..data.augment import EcgAugment
from ..data.ecg_windows import EcgSource, WindowSpec, build_window_cache
from ..data.sampling import CachedWindowDataset
from ..errors import ConfigError
from ..models import EcgMAE, EcgTransformer, XResNet1d, model_from_config
from ..objectives.contrastive import ProjectionHead, nt_xent
from ..objectives.mae import normalised_cross_correlation
from ..signals.leads import LEADS_12
from .engine import param_groups, start_job, warmup_cosine
from .pretrain import SelfSupervisedModule, fit_pretraining, resolve_model_config

__all__ = ["EcgClassifierModule", "EcgPretrainModule", "pretrain_ecg", "window_spec"]


def _all_lead_ids() -> Tensor:
    return torch.arange(len(LEADS_12))


class EcgPretrainModule(SelfSupervisedModule):
    """Self-supervised pretraining of an ECG encoder (module doc)."""

    kind = "ecg_pretrain"

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
        if objective == "mae":
            if not isinstance(self.model, EcgMAE):
                raise ConfigError(f"the mae objective needs a masked autoencoder (ecg_mae_*), got {model_config['name']!r}")
        elif objective == "contrastive":
            encoder = self.model.encoder if isinstance(self.model, EcgMAE) else self.model
            if not isinstance(encoder, EcgTransformer):
                raise ConfigError(f"the contrastive objective needs an ECG transformer, got {model_config['name']!r}")
            self.model = encoder
            self.head = ProjectionHead(encoder.embed_dim, out=projection_dim)
            self.augment = EcgAugment(fs=float(encoder.model_config["fs"]))
        else:
            raise ConfigError(f"unknown pretraining objective {objective!r}; expected mae or contrastive")
        self.register_buffer("lead_ids", _all_lead_ids(), persistent=False)

    @property
    def encoder(self) -> EcgTransformer:
        return self.model.encoder if isinstance(self.model, EcgMAE) else self.model

    def _losses(self, batch: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        x, present = batch["x"], batch["present"]
        if self.hparams.objective == "mae":
            out = self.model(x, self.lead_ids, present, generator=generator)
            with torch.no_grad():
                ncc = normalised_cross_correlation(out["pred"].float(), out["target"].float(), out["mask"])
            return {"loss": out["loss"], "ncc": ncc}
        views = [self.augment(x, present, generator=generator) for _ in range(2)]
        z1, z2 = (self.head(self.encoder(v, self.lead_ids, p)) for v, p in views)
        return {"loss": nt_xent(z1, z2, self.hparams.temperature)}


class EcgClassifierModule(L.LightningModule):
    """Multi-label classifier on a lead subset: an ECG transformer plus a linear head (``freeze``
    for a linear probe trained by gradient), or a fixed-lead CNN with its own head."""

    def __init__(
        self,
        backbone_config: dict[str, Any],
        n_classes: int,
        leads: Sequence[str],
        *,
        freeze: bool = False,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_steps: int = 0,
        max_steps: int = 1000,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.save_hyperparameters()
        config = dict(backbone_config)
        if config["name"].startswith("xresnet"):
            config.update(leads=list(leads), num_classes=n_classes)
        self.backbone = model_from_config(config)
        self.cnn = isinstance(self.backbone, XResNet1d)
        subset = torch.zeros(len(LEADS_12), dtype=torch.bool)
        subset[[LEADS_12.index(lead) for lead in leads]] = True
        self.register_buffer("subset", subset, persistent=False)
        self.register_buffer("rows", torch.tensor([LEADS_12.index(lead) for lead in leads]), persistent=False)
        self.register_buffer("lead_ids", _all_lead_ids(), persistent=False)
        if self.cnn:
            self.head = nn.Identity()
        else:
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.backbone.embed_dim, n_classes))
        if freeze:
            self.backbone.requires_grad_(False)

    def forward(self, x: Tensor, present: Tensor) -> Tensor:
        if self.cnn:
            return self.backbone(x[:, self.rows])
        lead_mask = present & self.subset
        if self.hparams.freeze:
            self.backbone.eval()
        return self.head(self.backbone(x, self.lead_ids, lead_mask))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = F.binary_cross_entropy_with_logits(self(batch["x"], batch["present"]), batch["y"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["x"]))
        return loss

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return torch.sigmoid(self(batch["x"], batch["present"]))

    def configure_optimizers(self):
        hp = self.hparams
        params = [g for g in param_groups(self, hp.weight_decay) if g["params"]]
        optimizer = torch.optim.AdamW(params, lr=hp.lr, betas=(0.9, 0.999))
        scheduler = warmup_cosine(optimizer, hp.warmup_steps, hp.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


# ----------------------------------------------------------------------------------- the job


def window_spec(model_config: dict[str, Any], band: Sequence[float] | None) -> WindowSpec:
    """The windows a model wants, from its config (``fs``, ``seconds``) and a band-pass."""
    return WindowSpec(float(model_config["fs"]), float(model_config["seconds"]), tuple(band) if band else None)


def _sources(cfg: EcgPretrainConfig) -> list[EcgSource]:
    return [EcgSource(**{**s.model_dump(), "folds": tuple(s.folds) if s.folds else None}) for s in cfg.sources]


def pretrain_ecg(
    config: Config,
    out: str | Path,
    *,
    progress: Callable[[str, int], None] | None = None,
    show_bar: bool = True,
    callbacks: list[L.Callback] | None = None,
) -> dict[str, Any]:
    """Build (or reuse) the window cache, train (resuming from ``out/checkpoints/last.ckpt`` if a
    previous run left one), and export ``out/mae.pt`` (or ``model.pt``) and ``out/encoder.pt``.

    Returns a summary: windows per source, steps, final losses, where the files are.
    """
    cfg, tcfg = config.pretrain.ecg, config.trainer
    out = Path(out)
    start_job(tcfg)
    module = EcgPretrainModule(
        resolve_model_config(cfg.model, "pretrain.ecg.model"), objective=cfg.objective, lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay, betas=cfg.optim.betas, warmup_steps=cfg.optim.warmup_steps,
        max_steps=cfg.optim.max_steps, seed=tcfg.seed, temperature=cfg.temperature,
        projection_dim=cfg.projection_dim,
    )
    spec = window_spec(module.encoder.model_config, cfg.band)
    cache = build_window_cache(Path(cfg.cache_dir) if cfg.cache_dir else out / "windows", _sources(cfg), spec,
                               val_fraction=cfg.val_fraction, progress=progress)
    train_idx, val_idx = cache.split_indices("train"), cache.split_indices("val")
    result = fit_pretraining(
        module, CachedWindowDataset(cache, train_idx), CachedWindowDataset(cache, val_idx), cfg.optim, tcfg, out,
        model_file="mae.pt" if cfg.objective == "mae" else "model.pt", show_bar=show_bar, callbacks=callbacks,
        info={"windows": cache.meta["counts"], "band": list(spec.band) if spec.band else None},
    )
    return {**result, "windows": cache.meta["counts"], "n_train_windows": len(train_idx),
            "n_val_windows": len(val_idx)}
