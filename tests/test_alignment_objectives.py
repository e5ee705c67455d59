"""Stage-2 alignment and stage-3 distillation losses: missing modalities, invalid events and
unlabelled entries never reach a loss or its gradient, leave-one-out CLIP against a per-row
reference, cardiac-phase retrieval on constructed embeddings, and KD losses that vanish at agreement."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, kl_divergence

from cardiodistill.errors import ConfigError
from cardiodistill.objectives import info_nce
from cardiodistill.objectives.alignment import (
    clip_leave_one_out,
    clip_pairwise,
    masked_value_loss,
    temporal_accuracy,
    temporal_contrastive,
)
from cardiodistill.objectives.distill import (
    DistillWeights,
    distillation_loss,
    embedding_match_loss,
    multilabel_bce,
    soft_target_loss,
)

MODALITIES = ("echo", "ecg", "labs")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def aligned(batch: int = 8, dim: int = 16, noise: float = 0.1, seed: int = 0) -> dict[str, torch.Tensor]:
    """One latent per row, seen by every modality through a little independent noise (float64)."""
    g = gen(seed)
    base = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    return {m: base + noise * torch.randn(batch, dim, generator=g, dtype=torch.float64) for m in MODALITIES}


def all_present(batch: int = 8) -> dict[str, torch.Tensor]:
    return {m: torch.ones(batch, dtype=torch.bool) for m in MODALITIES}


def leaf(emb: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {m: e.clone().requires_grad_(True) for m, e in emb.items()}


# --- clip_pairwise ------------------------------------------------------------------------------


@pytest.mark.parametrize("loss_fn", [clip_pairwise, clip_leave_one_out])
def test_clip_aligned_beats_shuffled(loss_fn) -> None:
    emb, present = aligned(), all_present()
    shuffled = dict(emb, echo=emb["echo"][torch.randperm(8, generator=gen(1))])
    good, parts = loss_fn(emb, present)
    bad, _ = loss_fn(shuffled, present)
    assert good.item() < 0.5 * bad.item()
    expected = {"ecg-echo", "ecg-labs", "echo-labs"} if loss_fn is clip_pairwise else set(MODALITIES)
    assert set(parts) == expected
    assert good.item() == pytest.approx(sum(parts.values()) / len(parts))


def test_clip_pairwise_skips_absent_pairs_and_rows() -> None:
    emb, present = aligned(), all_present()
    present["labs"][:] = False
    present["ecg"][[2, 5]] = False
    loss, parts = clip_pairwise(emb, present)
    assert set(parts) == {"ecg-echo"}
    rows = present["ecg"]
    assert loss.item() == pytest.approx(info_nce(emb["echo"][rows], emb["ecg"][rows]).item())

    present["labs"][0] = True  # one row with labs: still no negative, still skipped
    assert set(clip_pairwise(emb, present)[1]) == {"ecg-echo"}


@pytest.mark.parametrize("loss_fn", [clip_pairwise, clip_leave_one_out])
def test_clip_absent_rows_are_ignored_and_get_no_gradient(loss_fn) -> None:
    emb, present = aligned(noise=1.0), all_present()
    present["ecg"][[1, 4]] = False
    present["labs"][[4, 6]] = False  # row 4 has echo alone: nothing to pair it with
    before, _ = loss_fn(emb, present)

    changed = leaf(emb)
    with torch.no_grad():
        changed["ecg"][1] = float("nan")
        changed["ecg"][4] = 1e3
        changed["labs"][6] = float("nan")
    after, _ = loss_fn(changed, present)
    assert after.item() == pytest.approx(before.item(), abs=1e-12)

    after.backward()
    paired = torch.stack(list(present.values())).sum(0) >= 2
    for m in MODALITIES:
        grad = changed[m].grad
        assert torch.isfinite(grad).all()
        assert (grad[~(present[m] & paired)] == 0).all()
        assert (grad[present[m] & paired].abs().sum(-1) > 0).all()


@pytest.mark.parametrize("loss_fn", [clip_pairwise, clip_leave_one_out])
def test_clip_nothing_to_score_is_a_zero_with_gradient(loss_fn) -> None:
    emb = leaf(aligned(batch=4))
    present = {m: torch.zeros(4, dtype=torch.bool) for m in MODALITIES}
    present["ecg"][:] = True
    present["echo"][0] = True
    with torch.no_grad():
        emb["labs"].fill_(float("nan"))
    loss, parts = loss_fn(emb, present)
    assert parts == {}
    assert loss.item() == 0.0
    loss.backward()
    assert all((e.grad == 0).all() for e in emb.values())


# --- clip_leave_one_out -------------------------------------------------------------------------


def test_leave_one_out_with_two_modalities_equals_pairwise() -> None:
    emb = {m: e for m, e in aligned(noise=1.0, seed=3).items() if m != "labs"}
    present = {"echo": torch.tensor([1, 1, 0, 1, 1, 1, 0, 1], dtype=torch.bool), "ecg": torch.ones(8, dtype=torch.bool)}
    present["ecg"][3] = False
    loo, loo_parts = clip_leave_one_out(emb, present, temperature=0.2)
    pair, _ = clip_pairwise(emb, present, temperature=0.2)
    assert loo.item() == pytest.approx(pair.item(), rel=1e-12)
    assert loo_parts["echo"] == pytest.approx(loo_parts["ecg"], rel=1e-12)


def test_leave_one_out_matches_per_row_reference() -> None:
    emb, present = aligned(noise=1.0, seed=4), all_present()
    present["echo"][[0, 3]] = False
    present["labs"][[3, 5, 6]] = False  # row 3 has ecg alone: no target, so ecg skips it
    loss, parts = clip_leave_one_out(emb, present, temperature=0.3)

    for m in MODALITIES:
        anchors, targets = [], []
        for b in range(8):
            others = [F.normalize(emb[o][b], dim=0) for o in MODALITIES if o != m and present[o][b]]
            if present[m][b] and others:
                anchors.append(emb[m][b])
                targets.append(torch.stack(others).mean(0))
        expected = info_nce(torch.stack(anchors), torch.stack(targets), temperature=0.3)
        assert parts[m] == pytest.approx(expected.item(), rel=1e-12)
    assert loss.item() == pytest.approx(sum(parts.values()) / 3, rel=1e-12)


# --- temporal contrast --------------------------------------------------------------------------


def phase_events(batch: int = 4, phases: int = 2, dim: int = 32, seed: int = 0) -> torch.Tensor:
    """``[B, E, D]``: a patient direction plus a weaker phase direction, so the same patient's
    other phases are the hardest negatives."""
    g = gen(seed)
    patient = torch.randn(batch, 1, dim, generator=g, dtype=torch.float64)
    phase = torch.randn(batch, phases, dim, generator=g, dtype=torch.float64)
    return patient + 0.5 * phase


def test_temporal_correct_pairing_is_retrieved_and_scores_lower() -> None:
    events = phase_events()
    valid = torch.ones(4, 2, dtype=torch.bool)
    assert temporal_accuracy(events, events, valid) == {"top1": 1.0, "phase": 1.0, "patient": 1.0}

    swapped = events.clone()
    swapped[0] = events[0].flip(0)  # patient 0: echo end-diastole and end-systole exchanged
    assert temporal_accuracy(events, swapped, valid) == {"top1": 0.75, "phase": 0.75, "patient": 1.0}
    assert temporal_contrastive(events, events, valid) < temporal_contrastive(events, swapped, valid)


def test_temporal_invalid_events_never_influence_the_loss() -> None:
    ecg, echo = phase_events(seed=1), phase_events(seed=2)
    valid = torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1]], dtype=torch.bool)
    loss = temporal_contrastive(ecg, echo, valid, temperature=0.2)
    expected = info_nce(ecg[valid], echo[valid], temperature=0.2)  # events flattened patient-major
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)

    ecg2, echo2 = ecg.clone().requires_grad_(True), echo.clone().requires_grad_(True)
    with torch.no_grad():
        ecg2[1, 1] = float("nan")
        echo2[2, 0] = 1e3
    loss2 = temporal_contrastive(ecg2, echo2, valid, temperature=0.2)
    assert loss2.item() == pytest.approx(loss.item(), rel=1e-12)
    loss2.backward()
    for grad in (ecg2.grad, echo2.grad):
        assert torch.isfinite(grad).all()
        assert (grad[~valid] == 0).all() and (grad[valid].abs().sum(-1) > 0).all()


def test_temporal_undefined_cases() -> None:
    events = phase_events().requires_grad_(True)
    one = torch.zeros(4, 2, dtype=torch.bool)
    one[2, 1] = True
    assert all(math.isnan(v) for v in temporal_accuracy(events, events, one).values())
    loss = temporal_contrastive(events, events, one)
    assert loss.item() == 0.0
    loss.backward()
    assert (events.grad == 0).all()

    one_per_patient = torch.tensor([[1, 0], [0, 1], [1, 0], [0, 0]], dtype=torch.bool)
    acc = temporal_accuracy(events, events, one_per_patient)
    assert acc["top1"] == 1.0 and acc["patient"] == 1.0 and math.isnan(acc["phase"])


# --- masked lab values --------------------------------------------------------------------------


def test_masked_value_loss_ignores_unmasked_nan_targets() -> None:
    pred = torch.tensor([[0.5, 2.0, -1.0], [1.0, 0.0, 3.0]], requires_grad=True)
    target = torch.tensor([[1.5, float("nan"), 0.0], [float("nan"), 2.0, 7.0]])
    mask = torch.tensor([[1, 0, 1], [0, 1, 0]], dtype=torch.bool)
    loss = masked_value_loss(pred, target, mask)
    assert loss.item() == pytest.approx((1.0 + 1.0 + 4.0) / 3)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and (pred.grad[~mask] == 0).all()

    none = masked_value_loss(pred, target, torch.zeros_like(mask))
    assert none.item() == 0.0 and none.requires_grad


# --- distillation -------------------------------------------------------------------------------


def test_soft_target_loss_is_a_scaled_bernoulli_kl() -> None:
    teacher = torch.randn(6, 4, generator=gen(0), dtype=torch.float64) * 3
    assert abs(soft_target_loss(teacher.clone(), teacher, temperature=2.0).item()) < 1e-12

    student = torch.randn(6, 4, generator=gen(1), dtype=torch.float64, requires_grad=True)
    teacher.requires_grad_(True)
    loss = soft_target_loss(student, teacher, temperature=2.0)
    kl = kl_divergence(Bernoulli(logits=teacher.detach() / 2), Bernoulli(logits=student.detach() / 2)).mean()
    assert loss.item() > 0
    assert loss.item() == pytest.approx(4 * kl.item(), rel=1e-10)
    loss.backward()
    assert teacher.grad is None
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


def test_multilabel_bce_ignores_nan_targets() -> None:
    logits = torch.randn(4, 3, generator=gen(2), requires_grad=True)
    targets = torch.tensor([[1, 0, float("nan")], [float("nan")] * 3, [0, 0, 1], [1, float("nan"), 0]])
    labelled = torch.isfinite(targets)
    loss = multilabel_bce(logits, targets)
    expected = F.binary_cross_entropy_with_logits(logits[labelled], targets[labelled])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[~labelled] == 0).all()

    unlabelled = multilabel_bce(logits, torch.full((4, 3), float("nan")))
    assert unlabelled.item() == 0.0 and unlabelled.requires_grad


def test_embedding_match_loss() -> None:
    student = torch.randn(5, 8, generator=gen(3), requires_grad=True)
    assert embedding_match_loss(student, 3 * student).item() == pytest.approx(0.0, abs=1e-6)
    assert embedding_match_loss(student, -student).item() == pytest.approx(2.0)

    teacher = torch.randn(5, 8, generator=gen(4), requires_grad=True)
    loss = embedding_match_loss(student, teacher, kind="mse")
    assert loss.item() == pytest.approx(((student - teacher) ** 2).mean().item())
    loss.backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="embedding match kind"):
        embedding_match_loss(student, teacher, kind="l1")


def test_distillation_loss_combines_terms_and_skips_unneeded_inputs() -> None:
    g = gen(5)
    logits = torch.randn(4, 3, generator=g, requires_grad=True)
    emb = torch.randn(4, 8, generator=g, requires_grad=True)
    lvef = torch.randn(4, generator=g, requires_grad=True)
    targets = torch.tensor([[1, 0, float("nan")], [0, 1, 1], [float("nan"), 0, 0], [1, 1, 0]])
    teacher_logits, teacher_emb = torch.randn(4, 3, generator=g), torch.randn(4, 8, generator=g)
    lvef_target = torch.tensor([0.5, float("nan"), -1.0, 0.2])
    teacher_lvef = torch.randn(4, generator=g)
    weights = DistillWeights(label=1.0, soft=0.5, embedding=0.25, lvef=2.0, temperature=3.0)

    total, parts = distillation_loss(
        logits, emb, lvef, targets, teacher_logits, teacher_emb, lvef_target, teacher_lvef, weights
    )
    known = torch.isfinite(lvef_target)
    expected_lvef = 0.5 * (F.smooth_l1_loss(lvef[known], lvef_target[known]) + F.smooth_l1_loss(lvef, teacher_lvef))
    assert parts["label"] == pytest.approx(multilabel_bce(logits, targets).item())
    assert parts["soft"] == pytest.approx(soft_target_loss(logits, teacher_logits, 3.0).item())
    assert parts["embedding"] == pytest.approx(embedding_match_loss(emb, teacher_emb).item())
    assert parts["lvef"] == pytest.approx(expected_lvef.item())
    weighted = parts["label"] + 0.5 * parts["soft"] + 0.25 * parts["embedding"] + 2.0 * parts["lvef"]
    assert total.item() == pytest.approx(weighted) and parts["total"] == pytest.approx(weighted)
    total.backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (logits, emb, lvef))

    # Only labels: zero-weight terms and absent teachers need none of their inputs.
    only_labels = DistillWeights(embedding=0.5, lvef=0.0)
    total, parts = distillation_loss(logits, None, None, targets, None, None, None, None, only_labels)
    assert set(parts) == {"label", "total"}
    assert total.item() == pytest.approx(parts["label"])


def test_distill_weights_are_validated() -> None:
    with pytest.raises(ConfigError, match="weight soft"):
        DistillWeights(soft=-1.0)
    with pytest.raises(ConfigError, match="temperature"):
        DistillWeights(temperature=0.0)
