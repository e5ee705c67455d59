"""Stage 1 for echo and cine MR: pretraining a video encoder without labels (the job:
:mod:`cardiodistill.stages.stage1`), and the supervised video module of the downstream evaluation.

Batches come from :class:`~cardiodistill.data.video_clips.ClipDataset`: ``x`` float ``[B, T, S, S]``
(clips of whole cardiac cycles, z-scored inside the field of view, 0 outside) and ``mask`` bool
``[B, S, S]`` (the field of view).

:class:`VideoPretrainModule` trains a :class:`~cardiodistill.models.VideoTransformer` or a
:class:`~cardiodistill.models.VideoConvEncoder` (``video_cnn``):

* ``objective="mae"``: masked video modelling (:class:`~cardiodistill.models.VideoMAE`; tube
  masking at 90 % by default, loss on the hidden tubelets); transformers only;
* ``objective="contrastive"``: SimCLR - two views of each clip from
  :class:`~cardiodistill.data.augment.VideoAugment` (time shift, crop/rotation/flip, intensity,
  noise) through the encoder and a projection head, NT-Xent loss; either encoder.

:class:`VideoSupervisedModule` trains an encoder and a linear head end to end on labels (LVEF and
conditions): fine-tuning from pretrained weights, or the same model from scratch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.augment import VideoAugment
from ..models import VideoConvEncoder, VideoMAE, VideoTransformer, model_from_config
from .module import PretrainModule, TrainModule

__all__ = ["VideoPretrainModule", "VideoSupervisedModule"]


class VideoPretrainModule(PretrainModule):
    """Self-supervised pretraining of a video encoder (module doc)."""

    kind = "video_pretrain"
    mae_class, encoder_classes, mae_names = VideoMAE, (VideoTransformer, VideoConvEncoder), "video_mae_*"

    def _augmentation(self, encoder: VideoTransformer | VideoConvEncoder) -> VideoAugment:
        return VideoAugment()

    def _carries(self, batch: dict[str, Tensor]) -> Tensor:
        mask = batch.get("mask")  # the field of view; a batch without one is all signal
        if mask is None:
            return torch.ones(len(batch["x"]), dtype=torch.bool, device=batch["x"].device)
        return mask.flatten(1).any(dim=1)

    def _reconstruct(self, batch: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        return self.model(batch["x"], generator=generator)

    def _two_views(self, batch: dict[str, Tensor], generator: torch.Generator) -> tuple[Tensor, Tensor]:
        z1 = self.encoder(self.augment(batch["x"], generator))
        z2 = self.encoder(self.augment(batch["x"], generator))
        return z1, z2


class VideoSupervisedModule(TrainModule):
    """A video encoder with a linear head, trained end to end on labels: LVEF regression (MSE on
    the standardised value) plus binary conditions (BCE). ``encoder_state`` starts from pretrained
    weights (fine-tuning); without it the encoder starts from random weights (from scratch).

    ``lvef_mean`` / ``lvef_std`` standardise the regression target (the training labels' values);
    :meth:`predict_step` returns ``[B, 1 + C]``: LVEF in its own units, then condition probabilities.
    """

    def __init__(
        self,
        encoder_config: dict[str, Any],
        n_conditions: int,
        *,
        encoder_state: dict[str, Tensor] | None = None,
        lvef_mean: float = 55.0,
        lvef_std: float = 10.0,
        lr: float = 3e-4,
        weight_decay: float = 0.05,
        warmup_steps: int = 0,
        max_steps: int = 1000,
        dropout: float = 0.1,
        betas: Sequence[float] = (0.9, 0.999),
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["encoder_state"])
        self.encoder = model_from_config(encoder_config)
        if encoder_state is not None:
            self.encoder.load_state_dict(encoder_state)
        self.head = torch.nn.Sequential(torch.nn.Dropout(dropout), torch.nn.Linear(self.encoder.embed_dim, 1 + n_conditions))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))

    def _losses(self, batch: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        hp = self.hparams
        out = self(batch["x"])
        target = (batch["lvef"].float() - hp.lvef_mean) / hp.lvef_std
        known = torch.isfinite(target)
        regression = F.mse_loss(out[known, 0], target[known]) if known.any() else out[:, 0].sum() * 0
        return {"loss": regression + F.binary_cross_entropy_with_logits(out[:, 1:], batch["y"].float())}

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        out = self(batch["x"])
        lvef = out[:, :1] * self.hparams.lvef_std + self.hparams.lvef_mean
        return torch.cat([lvef, torch.sigmoid(out[:, 1:])], dim=1)
