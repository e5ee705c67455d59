"""Stage 3a: the multimodal teacher, trained on the labelled studies.

:class:`TeacherModule` trains a :class:`~cardiodistill.models.fusion.CardioTeacher` (the aligned
:class:`~cardiodistill.models.fusion.CardioFusion` plus heads) with binary cross-entropy on the
binary outputs (NaN = unlabelled entries are skipped) and a smooth-L1 loss on standardised LVEF.
Whole modalities are dropped at random per study (``modality_dropout``), so the teacher still
works when a study lacks its echo, labs or note. ``mode="probe"`` freezes the aligned model and
trains the heads only (a linear probe of the fused embedding); ``"finetune"`` trains everything,
the pretrained encoders at a smaller learning rate.

:func:`predict_studies` runs any model over a dataset and gathers its outputs - the teacher's
are cached once (``teacher_outputs.npz``) so distilling several students never reruns it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..models import model_from_config
from ..models.fusion import CardioTeacher, drop_modalities
from ..objectives.distill import multilabel_bce
from .stages import StageModule

__all__ = ["TeacherModule", "WithTargets", "finite_smooth_l1", "predict_studies"]


def finite_smooth_l1(pred: Tensor, target: Tensor) -> Tensor:
    """Smooth-L1 over the entries where ``target`` is finite; 0 (with a gradient) if none is."""
    known = torch.isfinite(target)
    safe = torch.where(known, target, pred.detach())
    loss = F.smooth_l1_loss(pred, safe, reduction="none")
    return torch.where(known, loss, torch.zeros_like(loss)).sum() / known.sum().clamp_min(1)


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


class TeacherModule(StageModule):
    """Stage-3 training of a ``cardio_teacher`` (module doc). Batches carry ``targets [B, C]``
    (NaN = unlabelled) and ``lvef_z [B]`` (standardised LVEF, NaN = unknown)."""

    kind = "teacher"

    def __init__(
        self,
        model_config: dict[str, Any],
        *,
        mode: str = "finetune",
        modality_dropout: float = 0.25,
        lvef_weight: float = 1.0,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        betas: Sequence[float] = (0.9, 0.95),
        warmup_steps: int = 20,
        max_steps: int = 500,
        seed: int = 0,
        encoder_lr_scale: float = 0.3,
        fusion_state: Mapping[str, Tensor] | None = None,
    ):
        super().__init__()
        if mode not in ("finetune", "probe"):
            raise ValueError(f"mode must be 'finetune' or 'probe', got {mode!r}")
        self.save_hyperparameters(ignore=["fusion_state"])
        self.model: CardioTeacher = model_from_config(model_config)
        if fusion_state is not None:
            self.model.fusion.load_state_dict(fusion_state)
            self.scaled_prefixes = ("model.fusion.",)
        # The alignment heads are not part of the teacher's computation.
        self.model.fusion.clip_heads.requires_grad_(False)
        self.model.fusion.phase_heads.requires_grad_(False)
        if mode == "probe":
            self.model.fusion.requires_grad_(False)

    def _losses(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, Tensor]:
        drop = None
        if self.training and self.hparams.modality_dropout > 0:
            has = {m: batch[f"has_{m}"].bool() for m in self.model.fusion.modalities}
            drop = drop_modalities(has, self.hparams.modality_dropout, generator)
        out = self.model(batch, drop=drop)
        bce = multilabel_bce(out["logits"], batch["targets"].float())
        lvef = finite_smooth_l1(out["lvef"], batch["lvef_z"].float())
        return {"loss": bce + self.hparams.lvef_weight * lvef, "bce": bce, "lvef": lvef}


@torch.no_grad()
def predict_studies(
    forward: Callable[[dict[str, Any]], Mapping[str, Tensor]],
    dataset: Dataset,
    *,
    batch_size: int = 64,
    keys: Sequence[str] = ("logits", "lvef", "embedding"),
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """``forward(batch)`` over ``dataset`` in order, in eval mode: ``{key: [N, ...]}`` plus
    ``index`` (the items' study indices)."""
    gathered: dict[str, list[np.ndarray]] = {k: [] for k in (*keys, "index")}
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        out = forward(batch)
        for k in keys:
            gathered[k].append(out[k].float().cpu().numpy())
        gathered["index"].append(np.asarray(batch["index"]))
        if progress is not None:
            progress(len(batch["index"]))
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in gathered.items()}
