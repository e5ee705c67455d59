"""Stage-2 alignment objectives: multimodal CLIP with missing modalities, ECG-echo cardiac-phase
contrast and masked lab-value reconstruction (pure tensor functions, no framework).

Multimodal embeddings come as ``emb[m]``, ``[B, D]`` per modality ``m`` (already projected to one
shared dimension ``D``), with ``present[m]``, bool ``[B]``, true where sample ``b`` has modality
``m``. Rows of an absent modality are never read into a loss: they may hold anything (zeros, NaN)
and receive an exactly zero gradient.

Losses that find nothing to score return a zero that is still part of the autograd graph (built
from an empty slice of the inputs, so it stays finite whatever those hold), so a training step can
call ``backward()`` unconditionally.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .contrastive import info_nce

__all__ = ["clip_leave_one_out", "clip_pairwise", "masked_value_loss", "temporal_accuracy", "temporal_contrastive"]


def _graph_zero(*tensors: Tensor) -> Tensor:
    """A scalar 0 that back-propagates (a zero gradient) into ``tensors``, finite even when they are not."""
    return sum((t[:0].sum() for t in tensors), torch.zeros((), device=tensors[0].device, dtype=tensors[0].dtype))


def _check_modalities(emb: dict[str, Tensor], present: dict[str, Tensor]) -> None:
    if not emb or set(emb) != set(present):
        raise ValueError(
            f"emb and present need the same non-empty modality keys, got {sorted(emb)} and {sorted(present)}"
        )
    batch = next(iter(emb.values())).shape[0]
    for name, e in emb.items():
        if e.ndim != 2 or e.shape[0] != batch or present[name].shape != (batch,):
            raise ValueError(
                f"modality {name!r}: expected emb [{batch}, D] and present [{batch}], "
                f"got {tuple(e.shape)} and {tuple(present[name].shape)}"
            )


def clip_pairwise(
    emb: dict[str, Tensor], present: dict[str, Tensor], temperature: float | Tensor = 0.1
) -> tuple[Tensor, dict[str, float]]:
    """Symmetric InfoNCE for every unordered pair of modalities, on the rows where both are present.

    A pair with fewer than 2 such rows is skipped (it has no negative). Returns the mean over the
    pairs scored and ``{"a-b": loss}`` per scored pair (names sorted, joined by ``-``) for logging.
    """
    _check_modalities(emb, present)
    losses: list[Tensor] = []
    parts: dict[str, float] = {}
    for a, b in itertools.combinations(sorted(emb), 2):
        rows = present[a].bool() & present[b].bool()
        if int(rows.sum()) < 2:
            continue
        loss = info_nce(emb[a][rows], emb[b][rows], temperature)
        losses.append(loss)
        parts[f"{a}-{b}"] = float(loss.detach())
    if not losses:
        return _graph_zero(*emb.values()), parts
    return torch.stack(losses).mean(), parts


def clip_leave_one_out(
    emb: dict[str, Tensor], present: dict[str, Tensor], temperature: float | Tensor = 0.1
) -> tuple[Tensor, dict[str, float]]:
    """Leave-one-out CLIP (SleepFM, Thapa et al. 2024): each modality against the mean of the others.

    For modality ``m`` the anchor of row ``b`` is ``emb[m][b]`` and its positive is the mean of the
    L2-normalised embeddings of the other modalities present in row ``b``; the other rows' targets
    are its negatives. Symmetric InfoNCE over the rows where ``m`` and at least one other modality
    are present (``m`` is skipped below 2 such rows). Returns the mean over the modalities scored and
    ``{m: loss}`` per scored modality. With two modalities this equals :func:`clip_pairwise`.
    """
    _check_modalities(emb, present)
    mask = {name: p.bool() for name, p in present.items()}
    unit = {}
    for name, e in emb.items():
        # Absent rows are swapped for a constant before normalising, so NaN there cannot reach the gradient.
        safe = torch.where(mask[name][:, None], e, torch.ones_like(e))
        unit[name] = F.normalize(safe, dim=-1) * mask[name][:, None]
    total = sum(unit.values())
    count = torch.stack(list(mask.values())).sum(0)
    losses: list[Tensor] = []
    parts: dict[str, float] = {}
    for name in sorted(emb):
        others = count - mask[name].long()
        rows = mask[name] & (others > 0)
        if int(rows.sum()) < 2:
            continue
        target = (total - unit[name])[rows] / others[rows, None]
        loss = info_nce(emb[name][rows], target, temperature)
        losses.append(loss)
        parts[name] = float(loss.detach())
    if not losses:
        return _graph_zero(*emb.values()), parts
    return torch.stack(losses).mean(), parts


def _check_events(ecg: Tensor, echo: Tensor, valid: Tensor) -> None:
    if ecg.ndim != 3 or ecg.shape != echo.shape or valid.shape != ecg.shape[:2]:
        raise ValueError(
            f"expected ecg and echo [B, E, D] and valid [B, E], "
            f"got {tuple(ecg.shape)}, {tuple(echo.shape)} and {tuple(valid.shape)}"
        )


def temporal_contrastive(ecg: Tensor, echo: Tensor, valid: Tensor, temperature: float | Tensor = 0.1) -> Tensor:
    """Cardiac-phase contrast between ECG and echo events.

    ``ecg`` and ``echo`` are ``[B, E, D]``: the embedding of phase ``e`` of patient ``b`` (phase 0
    end-diastole: ECG at the R peak, echo at the end-diastolic frame; phase 1 end-systole: ECG at
    the T-wave end, echo at the end-systolic frame; any ``E``). ``valid``, bool ``[B, E]``, marks the
    phases found in both signals. The valid events are flattened and scored with symmetric InfoNCE:
    the positive of ECG event ``(b, e)`` is echo event ``(b, e)``, and the other phases of the same
    patient as well as all phases of other patients are negatives. Invalid events are never read.
    """
    _check_events(ecg, echo, valid)
    valid = valid.bool()
    if int(valid.sum()) < 2:
        return _graph_zero(ecg, echo)
    return info_nce(ecg[valid], echo[valid], temperature)


@torch.no_grad()
def temporal_accuracy(ecg: Tensor, echo: Tensor, valid: Tensor) -> dict[str, float]:
    """Retrieval of echo events from ECG events (cosine similarity, ECG -> echo direction).

    Over the valid events: ``top1``, the most similar echo event is the exact positive; ``patient``,
    it belongs to the right patient (any phase); ``phase``, among the same patient's valid echo
    events only, the right phase is the most similar (scored for patients with 2 or more valid
    events). Each is NaN when it has nothing to score (fewer than 2 valid events overall, or no
    patient with 2 valid events for ``phase``).
    """
    _check_events(ecg, echo, valid)
    valid = valid.bool()
    nan = {"top1": math.nan, "phase": math.nan, "patient": math.nan}
    if int(valid.sum()) < 2:
        return nan
    patient = torch.arange(valid.shape[0], device=valid.device)[:, None].expand_as(valid)[valid]
    sim = F.normalize(ecg[valid].float(), dim=-1) @ F.normalize(echo[valid].float(), dim=-1).T
    own = torch.arange(sim.shape[0], device=sim.device)
    best = sim.argmax(dim=1)
    same_patient = patient[:, None] == patient[None, :]
    best_phase = sim.masked_fill(~same_patient, -math.inf).argmax(dim=1)
    scored = same_patient.sum(1) >= 2
    phase = float((best_phase == own)[scored].float().mean()) if bool(scored.any()) else math.nan
    return {
        "top1": float((best == own).float().mean()),
        "phase": phase,
        "patient": float((patient[best] == patient).float().mean()),
    }


def masked_value_loss(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the masked entries of a lab-value reconstruction.

    ``pred`` and ``target`` are ``[B, N]`` (standardised lab values), ``mask`` bool ``[B, N]`` true
    where a value was hidden from the encoder *and* observed. Entries outside the mask (NaN for
    unobserved labs included) reach neither the loss nor the gradient. 0 (with a graph) when
    nothing is masked.
    """
    if pred.shape != target.shape or mask.shape != pred.shape:
        raise ValueError(
            f"expected pred, target and mask of one shape, got {tuple(pred.shape)}, {tuple(target.shape)}, "
            f"{tuple(mask.shape)}"
        )
    mask = mask.bool()
    safe_target = torch.where(mask, target, torch.zeros_like(target))
    error = torch.where(mask, pred - safe_target, torch.zeros_like(pred))
    return error.pow(2).sum() / mask.sum().clamp_min(1)
