"""Stage 1 for ECG: the pretraining module and the classifier module (the job: :mod:`cardiodistill.stages.stage1`).

Batches are dicts from :mod:`cardiodistill.data.sampling`: ``x`` float ``[B, 12, S]`` (per-lead
z-scored windows in :data:`~cardiodistill.signals.leads.LEADS_12` order), ``present`` bool
``[B, 12]`` and, for classifiers, ``y`` float ``[B, C]`` (multi-hot).

:class:`EcgPretrainModule` trains a lead-agnostic encoder without labels:

* ``objective="mae"``: the masked autoencoder of :class:`~cardiodistill.models.EcgMAE` (random
  patch masking plus whole-lead masking, loss on hidden patches);
* ``objective="contrastive"``: SimCLR - two augmented views of each window
  (:class:`~cardiodistill.data.augment.EcgAugment`: lead dropout, shift, scale, wander, noise)
  through the encoder and a projection head, NT-Xent loss;
* ``objective="clocs"``: contrast across time and leads of one recording (CLOCS' CMSC + CMLC,
  Kiyasseh et al., ICML 2021): the first half of the window on a random half of its leads is the
  positive of the second half on the other leads (:func:`~cardiodistill.data.augment.split_leads`;
  a one-lead recording gives its lead to both), each view lightly augmented (shift, gain, wander,
  noise; no lead drop). What the two views share is the patient's heart, not the beat or the lead.

The contrastive objectives train any lead-agnostic encoder: the transformer or the convolutional
:class:`~cardiodistill.models.EcgConvEncoder` (``ecg_cnn``), which learns in CPU minutes.

Masks and augmentations are drawn from :func:`~.module.step_generator`, so every step can be
replayed exactly and a resumed run continues as if it had never stopped.

:class:`EcgClassifierModule` puts a linear head on an encoder (frozen or fine-tuned) or trains a
fixed-lead CNN (``xresnet1d*`` or another supervised baseline of the PTB-XL benchmark:
``resnet1d_wang``, ``inception1d``) from scratch, on any lead subset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.augment import EcgAugment, split_leads
from ..models import EcgConvEncoder, EcgMAE, EcgTransformer, model_defaults, model_from_config
from ..signals.leads import LEADS_12
from .module import PretrainModule, TrainModule

__all__ = ["EcgClassifierModule", "EcgPretrainModule"]


def _all_lead_ids() -> Tensor:
    return torch.arange(len(LEADS_12))


class EcgPretrainModule(PretrainModule):
    """Self-supervised pretraining of an ECG encoder (module doc)."""

    kind = "ecg_pretrain"
    mae_class, encoder_classes, mae_names = EcgMAE, (EcgTransformer, EcgConvEncoder), "ecg_mae_*"
    contrastive_objectives = ("contrastive", "clocs")

    def __init__(self, model_config: dict[str, Any], **options: Any):
        super().__init__(model_config, **options)
        self.register_buffer("lead_ids", _all_lead_ids(), persistent=False)

    def _augmentation(self, encoder: nn.Module) -> EcgAugment:
        fs = float(encoder.model_config["fs"])
        # clocs' views already differ in their leads: dropping more would leave one-lead views
        return EcgAugment(fs=fs, p_lead_drop=0.0) if self.hparams.objective == "clocs" else EcgAugment(fs=fs)

    def _carries(self, batch: dict[str, Tensor]) -> Tensor:
        return batch["present"].any(dim=1)

    def _reconstruct(self, batch: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        return self.model(batch["x"], self.lead_ids, batch["present"], generator=generator)

    def _two_views(self, batch: dict[str, Tensor], generator: torch.Generator) -> tuple[Tensor, Tensor]:
        x, present = batch["x"], batch["present"]
        if self.hparams.objective == "clocs":
            half = x.shape[-1] // 2
            leads_a, leads_b = split_leads(present, generator)
            views = [self.augment(x[..., :half], leads_a, generator=generator),
                     self.augment(x[..., half : 2 * half], leads_b, generator=generator)]
        else:
            views = [self.augment(x, present, generator=generator) for _ in range(2)]
        z1, z2 = (self.encoder(v, self.lead_ids, p) for v, p in views)
        return z1, z2


class EcgClassifierModule(TrainModule):
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
        betas: Sequence[float] = (0.9, 0.999),
        encoder_lr_scale: float = 1.0,
    ):
        super().__init__()
        self.save_hyperparameters()
        config = dict(backbone_config)
        self.cnn = "num_classes" in model_defaults(config["name"])  # a fixed-lead CNN with its own head
        # a pretrained encoder fine-tunes at encoder_lr_scale times the rate, its new head at the rate
        self.scaled_prefixes = () if self.cnn else ("backbone.",)
        if self.cnn:
            config.update(leads=list(leads), num_classes=n_classes)
        self.backbone = model_from_config(config)
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

    def _losses(self, batch: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        return {"loss": F.binary_cross_entropy_with_logits(self(batch["x"], batch["present"]), batch["y"])}

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return torch.sigmoid(self(batch["x"], batch["present"]))
