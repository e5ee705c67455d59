"""Stage 3b: distilling the teacher into a 1-6 lead mobile-ECG student.

:class:`StudentModule` trains an ``ecg_student`` (:class:`~cardiodistill.models.student.StudentModel`
around a compact 1-D CNN or the aligned ECG encoder) on the mobile ECG of every training study:

* hard labels where the study is labelled (binary cross-entropy, NaN entries skipped);
* the teacher's temperature-scaled soft targets on every study, labelled or not (a KL
  divergence per output, times T squared);
* matching the teacher's fused embedding through the student's projection (cosine);
* LVEF: the label where known and the teacher's estimate everywhere, in standardised units.

The teacher's outputs come from the cache written by stage 3a (``teacher_outputs.npz``), so no
teacher forward pass happens here. With ``soft = embedding = 0`` and no unlabelled studies this
is plain supervised training of the same student: the "no distillation" ablation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..models import model_from_config
from ..objectives.distill import DistillWeights, distillation_loss
from .module import TrainModule

__all__ = ["StudentModule"]


class StudentModule(TrainModule):
    """Stage-3b training of an ``ecg_student`` (module doc). Batches carry ``mobile [B, 6, S]``
    (limb leads I, II, III, aVR, aVL, aVF; the first ``leads`` are used), ``targets``, ``lvef_z``
    and, when distilling, the teacher's ``t_logits``, ``t_embedding`` and ``t_lvef``; ``rhythm [B, n]`` for a
    student that takes rhythm features."""

    kind = "student"

    def __init__(
        self,
        model_config: dict[str, Any],
        *,
        label: float = 1.0,
        soft: float = 1.0,
        embedding: float = 0.5,
        lvef: float = 1.0,
        temperature: float = 2.0,
        lr: float = 2e-3,
        weight_decay: float = 0.01,
        betas: Sequence[float] = (0.9, 0.95),
        warmup_steps: int = 20,
        max_steps: int = 500,
        seed: int = 0,
        encoder_lr_scale: float = 1.0,
        layer_decay: float = 1.0,
        backbone_state: Mapping[str, Tensor] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["backbone_state"])
        self.model = model_from_config(model_config)
        if backbone_state is not None:
            self.model.backbone.load_state_dict(backbone_state)
            self.scaled_prefixes = ("model.backbone.",)
        self.weights = DistillWeights(label=label, soft=soft, embedding=embedding, lvef=lvef, temperature=temperature)

    @property
    def n_leads(self) -> int:
        return len(self.model.leads)

    def _losses(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, Tensor]:
        out = self.model(batch["mobile"][:, : self.n_leads].float(), batch.get("rhythm"))
        w = self.weights
        total, parts = distillation_loss(
            out["logits"], out["embedding"], out["lvef"], batch["targets"].float(),
            batch["t_logits"].float() if w.soft > 0 else None,
            batch["t_embedding"].float() if w.embedding > 0 else None,
            batch["lvef_z"].float(),
            batch["t_lvef"].float() if "t_lvef" in batch and w.lvef > 0 else None,
            w,
        )
        return {"loss": total, **{k: torch.tensor(v) for k, v in parts.items() if k != "total"}}
