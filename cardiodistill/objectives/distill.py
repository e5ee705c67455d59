"""Stage-3 distillation objectives: a small ECG student learns from labels and a multimodal teacher.

Label heads are independent binary outputs (sigmoid, ``[B, C]`` logits); missing labels are NaN.
LVEF is one regression output per sample, in standardised units throughout (no scaling here).
Teacher tensors are detached: the teacher is never trained through these losses. A loss with
nothing to score returns 0 that still back-propagates (zero gradient) into the student.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError

__all__ = ["DistillWeights", "distillation_loss", "embedding_match_loss", "multilabel_bce", "soft_target_loss"]

EMBEDDING_KINDS = ("cosine", "mse")


def _check_same_shape(what: str, a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what}: expected two tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def multilabel_bce(logits: Tensor, targets: Tensor) -> Tensor:
    """Binary cross-entropy with logits, averaged over the entries whose target is finite.

    ``logits`` and ``targets`` are ``[B, C]``; targets are in ``[0, 1]`` and NaN where unlabelled.
    Unlabelled entries reach neither the loss nor the gradient; 0 when no entry is labelled.
    """
    _check_same_shape("multilabel_bce", logits, targets)
    labelled = torch.isfinite(targets)
    safe = torch.where(labelled, targets, torch.zeros_like(targets))
    per_entry = F.binary_cross_entropy_with_logits(logits, safe, reduction="none")
    per_entry = torch.where(labelled, per_entry, torch.zeros_like(per_entry))
    return per_entry.sum() / labelled.sum().clamp_min(1)


def soft_target_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 2.0) -> Tensor:
    """Knowledge distillation for independent sigmoid outputs, as a KL divergence.

    With ``p = sigmoid(teacher / T)`` and ``q = sigmoid(student / T)`` (``[B, C]``), the per-entry
    loss is ``BCE(q; p) - H(p) = KL(Bernoulli(p) || Bernoulli(q))``: soft-target cross-entropy minus
    the teacher's entropy, so it is 0 when student and teacher agree rather than ``H(p)``. The mean
    over entries is multiplied by ``T**2`` (Hinton et al. 2015) so the gradient scale does not
    shrink with ``T``. The teacher gets no gradient.
    """
    _check_same_shape("soft_target_loss", student_logits, teacher_logits)
    if not temperature > 0:
        raise ConfigError(f"distillation temperature must be positive, got {temperature}")
    teacher = teacher_logits.detach() / temperature
    soft = torch.sigmoid(teacher)
    cross = F.binary_cross_entropy_with_logits(student_logits / temperature, soft)
    entropy = F.binary_cross_entropy_with_logits(teacher, soft)
    return (cross - entropy) * temperature**2


def embedding_match_loss(student: Tensor, teacher: Tensor, kind: str = "cosine") -> Tensor:
    """Pull the student's embedding ``[B, D]`` towards the teacher's (detached), both in one space.

    ``kind="cosine"``: mean over rows of ``1 - cos(student, teacher)`` (direction only, in [0, 2]).
    ``kind="mse"``: plain mean squared error over all entries (direction and scale).
    """
    if kind not in EMBEDDING_KINDS:
        raise ConfigError(f"embedding match kind must be one of {', '.join(EMBEDDING_KINDS)}, got {kind!r}")
    _check_same_shape("embedding_match_loss", student, teacher)
    teacher = teacher.detach()
    if kind == "cosine":
        return (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()
    return F.mse_loss(student, teacher)


def _finite_smooth_l1(pred: Tensor, target: Tensor) -> tuple[Tensor, int]:
    """Smooth L1 over the entries where ``target`` (detached) is finite, and how many there were."""
    _check_same_shape("lvef", pred, target)
    target = target.detach()
    finite = torch.isfinite(target)
    safe = torch.where(finite, target, pred.detach())
    per_entry = F.smooth_l1_loss(pred, safe, reduction="none")
    per_entry = torch.where(finite, per_entry, torch.zeros_like(per_entry))
    count = int(finite.sum())
    return per_entry.sum() / max(count, 1), count


@dataclass
class DistillWeights:
    """Weights of the distillation terms (0 skips a term) and the soft-target temperature ``T``."""

    label: float = 1.0
    soft: float = 1.0
    embedding: float = 0.5
    lvef: float = 1.0
    temperature: float = 2.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not value >= 0:
                raise ConfigError(f"distillation weight {field.name} must be non-negative, got {value}")
        if not self.temperature > 0:
            raise ConfigError(f"distillation temperature must be positive, got {self.temperature}")


def distillation_loss(
    student_logits: Tensor,
    student_emb: Tensor | None,
    student_lvef: Tensor | None,
    batch_targets: Tensor | None,
    teacher_logits: Tensor | None,
    teacher_emb: Tensor | None,
    lvef_target: Tensor | None,
    teacher_lvef: Tensor | None,
    weights: DistillWeights,
) -> tuple[Tensor, dict[str, float]]:
    """Weighted sum of the student's distillation terms; returns the total and its parts for logging.

    - ``label``: :func:`multilabel_bce` of ``student_logits`` ``[B, C]`` to ``batch_targets`` (NaN unlabelled).
    - ``soft``: :func:`soft_target_loss` to ``teacher_logits`` at ``weights.temperature``, when given.
    - ``embedding``: :func:`embedding_match_loss` (cosine) of ``student_emb`` to ``teacher_emb`` ``[B, D]``,
      when given.
    - ``lvef``: smooth L1 of ``student_lvef`` to ``lvef_target`` where finite and to ``teacher_lvef``
      where given and finite, averaged over those of the two that have an entry (standardised units).

    A term whose weight is 0 is skipped and its inputs may be None; so is a teacher term whose teacher
    tensor is None. The parts dict holds the unweighted value of every term computed, and ``total``.
    """
    total = student_logits[:0].sum()
    parts: dict[str, float] = {}

    def add(name: str, weight: float, loss: Tensor) -> None:
        nonlocal total
        total = total + weight * loss
        parts[name] = float(loss.detach())

    if weights.label > 0:
        if batch_targets is None:
            raise ValueError("distillation_loss: the label term has a positive weight but batch_targets is None")
        add("label", weights.label, multilabel_bce(student_logits, batch_targets))
    if weights.soft > 0 and teacher_logits is not None:
        add("soft", weights.soft, soft_target_loss(student_logits, teacher_logits, weights.temperature))
    if weights.embedding > 0 and teacher_emb is not None:
        if student_emb is None:
            raise ValueError("distillation_loss: teacher_emb is given with a positive weight but student_emb is None")
        add("embedding", weights.embedding, embedding_match_loss(student_emb, teacher_emb))
    if weights.lvef > 0:
        if student_lvef is None:
            raise ValueError("distillation_loss: the lvef term has a positive weight but student_lvef is None")
        terms = [_finite_smooth_l1(student_lvef, t) for t in (lvef_target, teacher_lvef) if t is not None]
        scored = [loss for loss, count in terms if count > 0]
        lvef = torch.stack(scored).mean() if scored else student_lvef[:0].sum()
        add("lvef", weights.lvef, lvef)
    parts["total"] = float(total.detach())
    return total, parts
