"""Stage 3a: the multimodal teacher, trained on the labelled studies.

:class:`TeacherModule` trains a :class:`~cardiodistill.models.fusion.CardioTeacher` (the aligned
:class:`~cardiodistill.models.fusion.CardioFusion` plus heads) with binary cross-entropy on the
binary outputs (NaN = unlabelled entries are skipped) and a smooth-L1 loss on standardised LVEF.
Whole modalities are dropped at random per study (``modality_dropout``), so the teacher still
works when a study lacks its echo, labs or note. ``mode="probe"`` freezes the aligned model and
trains the heads only (a linear probe of the fused embedding); ``"finetune"`` trains everything,
the pretrained encoders at a smaller learning rate.

Before either, :func:`init_heads_from_probe` can fit the heads to convergence on the frozen
embedding of the labelled studies (L2 logistic regression per output, ridge for LVEF): linear
probing, then fine-tuning (LP-FT, Kumar et al. 2022), each output's L2 strength chosen on the
validation studies. After training, :func:`recalibrate_standardise` sets the heads' input
standardisation to the final embedding's statistics, and :func:`validation_loss` weighs the
fine-tuned teacher against its probe start (stage 3 keeps the lower, ``finetune.keep_probe``).
With ~100 labels and tens of steps, heads trained from a random start by SGD stayed near chance
while a probe on the same frozen embedding reached 0.82 AUROC, and fine-tuning under random heads
distorts the pretrained features before the heads are any good; on the CPU presets' budgets even
LP-FT of the multimodal teachers ended with a higher validation loss than their probe starts, at 5
and 25 % of studies labelled.

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
from .module import TrainModule

__all__ = ["TeacherModule", "choose_on_validation", "finite_smooth_l1", "init_heads_from_probe", "logistic_heads",
           "predict_studies", "recalibrate_standardise", "validation_loss"]


def finite_smooth_l1(pred: Tensor, target: Tensor) -> Tensor:
    """Smooth-L1 over the entries where ``target`` is finite; 0 (with a gradient) if none is."""
    known = torch.isfinite(target)
    safe = torch.where(known, target, pred.detach())
    loss = F.smooth_l1_loss(pred, safe, reduction="none")
    return torch.where(known, loss, torch.zeros_like(loss)).sum() / known.sum().clamp_min(1)


class TeacherModule(TrainModule):
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
        freeze_norm_stats: bool = False,
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

    def _hold_norm_stats(self) -> None:
        """With ``freeze_norm_stats`` the batch-norm layers stay in eval mode while the rest trains: they normalise
        with the running statistics the probe was fitted under, and training batches do not move them."""
        if self.hparams.get("freeze_norm_stats", False):
            for layer in self.modules():
                if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
                    layer.eval()

    def train(self, mode: bool = True) -> TeacherModule:
        super().train(mode)
        if mode:
            self._hold_norm_stats()
        return self

    def on_train_epoch_start(self) -> None:  # Lightning does not call train() when a fit starts
        self._hold_norm_stats()

    def _losses(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, Tensor]:
        drop = None
        if self.training and self.hparams.modality_dropout > 0:
            has = {m: batch[f"has_{m}"].bool() for m in self.model.fusion.modalities}
            drop = drop_modalities(has, self.hparams.modality_dropout, generator)
        out = self.model(batch, drop=drop)
        bce = multilabel_bce(out["logits"], batch["targets"].float())
        lvef = finite_smooth_l1(out["lvef"], batch["lvef_z"].float())
        return {"loss": bce + self.hparams.lvef_weight * lvef, "bce": bce, "lvef": lvef}


def _embedding_stats(teacher: CardioTeacher, dataset: Dataset, batch_size: int, modality_dropout: float = 0.0,
                     generator: torch.Generator | None = None) -> dict[str, np.ndarray]:
    """The teacher's fused embedding of ``dataset`` in eval mode (every modality a study has, or
    with whole modalities dropped at rate ``modality_dropout``), with the items' ``targets`` and
    ``lvef_z``; the teacher's training flag is restored."""
    was_training = teacher.training
    teacher.eval()

    def forward(batch):
        drop = None
        if modality_dropout > 0:
            has = {m: batch[f"has_{m}"].bool() for m in teacher.fusion.modalities}
            drop = drop_modalities(has, modality_dropout, generator)
        return teacher(batch, drop=drop)

    try:
        return predict_studies(forward, dataset, batch_size=batch_size, keys=("embedding", "targets", "lvef_z"),
                               from_batch=("targets", "lvef_z"))
    finally:
        teacher.train(was_training)


def _set_standardise(teacher: CardioTeacher, emb: np.ndarray) -> None:
    bn = teacher.standardise
    bn.running_mean.copy_(torch.as_tensor(emb.mean(0))), bn.running_var.copy_(torch.as_tensor(emb.var(0)))


def choose_on_validation(fit: Callable[[float], Any], c: float, grid: Sequence[float], z_val: np.ndarray | None,
                         known_val: np.ndarray | None, loss: Callable[[Any, np.ndarray], float]) -> tuple[Any, float]:
    """``(fit(g), g)`` for the ``g`` of ``grid`` whose fit has the lowest validation ``loss`` (given the fit and
    the validation embedding ``z_val[known_val]``); ``(fit(c), c)`` without validation studies, a grid, or any
    validation study that knows the output."""
    if z_val is None or not grid or known_val is None or not known_val.any():
        return fit(c), c
    fits = [(fit(g), g) for g in grid]
    return min(fits, key=lambda m: loss(m[0], z_val[known_val]))


def logistic_heads(z: np.ndarray, targets: np.ndarray, names: Sequence[str], *, c: float,
                   z_val: np.ndarray | None = None, targets_val: np.ndarray | None = None,
                   grid: Sequence[float] = ()) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, float]]:
    """A linear probe per binary output: ``(weight [C, D], bias [C], outputs fitted, {output: inverse L2
    strength})`` of an L2 logistic regression on the embedding ``z [N, D]`` for each column of ``targets [N, C]``
    (NaN = unknown; the rows that know it), its strength ``c`` or, with ``z_val`` / ``targets_val`` and a ``grid``,
    the one of ``grid`` with the lowest log loss on the validation rows that know the output
    (:func:`choose_on_validation`). An output with one class only gets that prevalence as its bias, zero weights."""
    from sklearn.linear_model import LogisticRegression

    from ..evaluate.calibration import logit_nll

    weight, bias, fitted, chosen = np.zeros((targets.shape[1], z.shape[1])), np.zeros(targets.shape[1]), [], {}
    for j, name in enumerate(names):
        known = np.isfinite(targets[:, j])
        y = targets[known, j]
        if len(np.unique(y)) < 2:
            p = float(np.clip(y.mean() if len(y) else 0.5, 1e-3, 1 - 1e-3))
            bias[j] = np.log(p / (1 - p))
            continue
        known_val = np.isfinite(targets_val[:, j]) if targets_val is not None else None
        y_val = targets_val[known_val, j] if targets_val is not None else None
        clf, chosen[name] = choose_on_validation(lambda g: LogisticRegression(C=g, max_iter=5000).fit(z[known], y),
                                                 c, grid, z_val, known_val,
                                                 lambda m, zv: logit_nll(y_val, m.decision_function(zv)))
        weight[j], bias[j] = clf.coef_[0], clf.intercept_[0]
        fitted.append(name)
    return weight, bias, fitted, chosen


@torch.no_grad()
def init_heads_from_probe(teacher: CardioTeacher, dataset: Dataset, *, c: float = 0.1, val: Dataset | None = None,
                          grid: Sequence[float] = (), batch_size: int = 64) -> dict:
    """Fit ``teacher``'s heads on its frozen fused embedding of ``dataset`` (items with ``targets``
    and ``lvef_z``, NaN = unknown), in place; returns ``{"n", "fitted": [outputs with a probe],
    "c": {output: its inverse L2 strength}}``.

    The embedding (eval mode, every modality a study has) is standardised and the statistics go
    into ``teacher.standardise`` (a BatchNorm: its running mean / variance, unit scale, no shift).
    Each binary output gets an L2 logistic regression (inverse strength ``c``) on the studies that
    know it; an output with one class only gets that prevalence as its bias and zero weights. LVEF
    gets ridge regression (``alpha = 1 / c``). With ``val`` (items like ``dataset``'s) and a ``grid``, each
    output's strength is instead the one of ``grid`` whose fit has the lowest loss on the validation studies that
    know that output (log loss; LVEF: squared error), ``c`` where they know none of it: with tens of
    labels the right strength differs between outputs and between embeddings (docs/benchmarks.md).
    """
    from sklearn.linear_model import Ridge

    gathered = _embedding_stats(teacher, dataset, batch_size)
    emb, targets, lvef = gathered["embedding"].astype(np.float64), gathered["targets"], gathered["lvef_z"]
    bn = teacher.standardise
    _set_standardise(teacher, emb)
    bn.weight.fill_(1.0), bn.bias.zero_()
    mean, scale = emb.mean(0), np.sqrt(emb.var(0) + bn.eps)
    z = (emb - mean) / scale
    held = _embedding_stats(teacher, val, batch_size) if val is not None else None
    z_val = (held["embedding"].astype(np.float64) - mean) / scale if held is not None else None
    weight, bias, fitted, chosen = logistic_heads(z, targets, teacher.outputs, c=c, z_val=z_val,
                                                  targets_val=held["targets"] if held is not None else None, grid=grid)
    teacher.head.weight.copy_(torch.as_tensor(weight)), teacher.head.bias.copy_(torch.as_tensor(bias))
    known = np.isfinite(lvef)
    if known.sum() >= 2:
        known_val = np.isfinite(held["lvef_z"]) if held is not None else None
        lvef_val = held["lvef_z"][known_val] if held is not None else None
        ridge, chosen["lvef"] = choose_on_validation(
            lambda g: Ridge(alpha=1.0 / g).fit(z[known], lvef[known]), c, grid, z_val, known_val,
            lambda m, zv: float(np.mean((m.predict(zv) - lvef_val) ** 2)))
        teacher.lvef_head.weight.copy_(torch.as_tensor(ridge.coef_[None])), teacher.lvef_head.bias.fill_(ridge.intercept_)
        fitted.append("lvef")
    return {"n": len(emb), "fitted": fitted, "c": chosen}


@torch.no_grad()
def validation_loss(module: TeacherModule, dataset: Dataset, *, batch_size: int = 64) -> dict[str, float]:
    """``module``'s losses (``loss``, ``bce``, ``lvef``) averaged over the studies of ``dataset``, in eval mode
    (every modality a study has), as its validation step logs them; its training flag is restored."""
    was_training = module.training
    module.eval()
    total: dict[str, float] = {}
    n = 0
    try:
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            size = len(batch["index"])
            for k, v in module._losses(batch, torch.Generator()).items():
                total[k] = total.get(k, 0.0) + float(v) * size
            n += size
    finally:
        module.train(was_training)
    return {k: v / max(n, 1) for k, v in total.items()}


@torch.no_grad()
def recalibrate_standardise(teacher: CardioTeacher, dataset: Dataset, *, modality_dropout: float = 0.0,
                            passes: int = 4, seed: int = 0, batch_size: int = 64) -> None:
    """Set ``teacher.standardise``'s running statistics to those of its final fused embedding of
    ``dataset`` in eval mode ("precise BatchNorm"), in place: one pass with every modality, and
    ``passes - 1`` more with whole modalities dropped at the training rate ``modality_dropout``, so
    the statistics are those of the mixture the heads were trained on.

    The fused embedding varies little (per-unit SD ~0.002 for an ECG-only teacher), moves while the
    encoders fine-tune, and moves again when a modality is missing; running averages from training
    lag it by several of its standard deviations, and statistics of complete studies alone put a
    teacher without its echo far outside what its heads saw (LVEF off by 50-180 points).
    Called after fine-tuning.
    """
    generator = torch.Generator().manual_seed(seed)
    draws = [_embedding_stats(teacher, dataset, batch_size)["embedding"]]
    if modality_dropout > 0:
        draws += [_embedding_stats(teacher, dataset, batch_size, modality_dropout, generator)["embedding"]
                  for _ in range(passes - 1)]
    _set_standardise(teacher, np.concatenate(draws).astype(np.float64))


@torch.no_grad()
def predict_studies(
    forward: Callable[[dict[str, Any]], Mapping[str, Tensor]],
    dataset: Dataset,
    *,
    batch_size: int = 64,
    keys: Sequence[str] = ("logits", "lvef", "embedding"),
    from_batch: Sequence[str] = (),
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """``forward(batch)`` over ``dataset`` in order: ``{key: [N, ...]}`` plus ``index`` (the items'
    study indices). ``keys`` come from the outputs, those also in ``from_batch`` from the batch
    itself (e.g. the targets). The caller sets eval mode."""
    gathered: dict[str, list[np.ndarray]] = {k: [] for k in (*keys, "index")}
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        out = forward(batch)
        for k in keys:
            gathered[k].append((batch if k in from_batch else out)[k].float().cpu().numpy())
        gathered["index"].append(np.asarray(batch["index"]))
        if progress is not None:
            progress(len(batch["index"]))
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in gathered.items()}
