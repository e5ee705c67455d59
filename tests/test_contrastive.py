"""Contrastive objectives against brute-force references, and batched ECG augmentations: absent
leads stay zero, one lead always survives, seeded reproducibility, requested strengths."""

from __future__ import annotations

import math

import pytest
import torch

from cardiodistill.data.augment import (
    EcgAugment,
    baseline_wander,
    gaussian_noise,
    random_lead_drop,
    random_scale,
    time_shift,
)
from cardiodistill.errors import ConfigError
from cardiodistill.objectives import LearnedTemperature, ProjectionHead, info_nce, nt_xent, retrieval_accuracy

FS = 100


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def cosine(u: torch.Tensor, v: torch.Tensor) -> float:
    return float(u @ v / (u.norm() * v.norm()))


def one_way_loop(a: torch.Tensor, b: torch.Tensor, t: float) -> float:
    """InfoNCE a -> b, one row at a time with math on Python floats."""
    total = 0.0
    for i in range(len(a)):
        logits = [cosine(a[i], b[j]) / t for j in range(len(b))]
        total += -logits[i] + math.log(sum(math.exp(v) for v in logits))
    return total / len(a)


def nt_xent_loop(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    z = torch.cat([z1, z2])
    n, b = len(z), len(z1)
    total = 0.0
    for i in range(n):
        others = [cosine(z[i], z[k]) / t for k in range(n) if k != i]
        total += -cosine(z[i], z[(i + b) % n]) / t + math.log(sum(math.exp(v) for v in others))
    return total / n


# --- contrastive losses -------------------------------------------------------------------------


def test_info_nce_matches_explicit_loop() -> None:
    a, b = (
        torch.randn(5, 3, generator=gen(0), dtype=torch.float64),
        torch.randn(5, 3, generator=gen(1), dtype=torch.float64),
    )
    ab, ba = one_way_loop(a, b, 0.2), one_way_loop(b, a, 0.2)
    assert info_nce(a, b, 0.2, symmetric=False).item() == pytest.approx(ab, rel=1e-10)
    assert info_nce(a, b, 0.2).item() == pytest.approx((ab + ba) / 2, rel=1e-10)
    assert info_nce(a, b, torch.tensor(0.2, dtype=torch.float64)).item() == pytest.approx((ab + ba) / 2, rel=1e-10)


def test_info_nce_perfect_alignment_and_scale_invariance() -> None:
    eye = torch.eye(4, 8)
    assert info_nce(eye, 3 * eye, temperature=0.01).item() < 1e-6
    # chance level for unrelated identical-similarity embeddings: log(B)
    assert info_nce(torch.ones(4, 8), torch.ones(4, 8)).item() == pytest.approx(math.log(4), rel=1e-6)
    a, b = torch.randn(6, 5, generator=gen(2)), torch.randn(6, 5, generator=gen(3))
    assert info_nce(7.5 * a, 0.01 * b).item() == pytest.approx(info_nce(a, b).item(), rel=1e-5)
    assert nt_xent(7.5 * a, 0.01 * b).item() == pytest.approx(nt_xent(a, b).item(), rel=1e-5)


def test_nt_xent_matches_brute_force() -> None:
    z1, z2 = (
        torch.randn(4, 6, generator=gen(4), dtype=torch.float64),
        torch.randn(4, 6, generator=gen(5), dtype=torch.float64),
    )
    for t in (0.1, 0.5, 1.0):
        assert nt_xent(z1, z2, t).item() == pytest.approx(nt_xent_loop(z1, z2, t), rel=1e-10)
    assert nt_xent(torch.eye(3, 6), torch.eye(3, 6), temperature=0.01).item() < 1e-6


def test_gradients_flow_to_embeddings_and_temperature() -> None:
    a = torch.randn(8, 4, generator=gen(6), requires_grad=True)
    b = torch.randn(8, 4, generator=gen(7), requires_grad=True)
    temp = LearnedTemperature()
    (info_nce(a, b, temp()) + nt_xent(a, b, temp())).backward()
    for grad in (a.grad, b.grad, temp.log_scale.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_learned_temperature_init_clamp_and_learning() -> None:
    temp = LearnedTemperature()
    assert temp().item() == pytest.approx(0.07, rel=1e-6)
    a, b = torch.randn(16, 8, generator=gen(8)), torch.randn(16, 8, generator=gen(9))
    opt = torch.optim.SGD(temp.parameters(), lr=0.5)
    info_nce(a, b, temp()).backward()  # unrelated pairs: a hotter softmax lowers the loss
    opt.step()
    assert temp().item() > 0.07
    with torch.no_grad():
        temp.log_scale.fill_(math.log(1e4))
    assert temp().item() == pytest.approx(0.01, rel=1e-6)
    with pytest.raises(ConfigError):
        LearnedTemperature(init=0.001)


def test_retrieval_accuracy_and_projection_head() -> None:
    a = torch.randn(10, 6, generator=gen(10))
    assert retrieval_accuracy(a, 2 * a) == 1.0
    assert retrieval_accuracy(a, 2 * a.roll(1, dims=0)) == 0.0
    b = a.clone()
    b[:3] = a[[1, 2, 0]]  # rows 0-2 now retrieve each other's partners
    assert retrieval_accuracy(a, b) == pytest.approx(0.7)
    for norm in ("batch", "layer"):
        head = ProjectionHead(6, 16, 4, norm=norm)
        assert head(a).shape == (10, 4)
    with pytest.raises(ConfigError, match="norm"):
        ProjectionHead(6, norm="group")
    with pytest.raises(ValueError):
        info_nce(torch.zeros(3, 4), torch.zeros(4, 4))


# --- augmentations ------------------------------------------------------------------------------


def ecg_batch(batch: int = 8, n_samples: int = 200, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random signals with a random subset of leads present (at least one per sample), absent zero."""
    g = gen(seed)
    present = torch.rand(batch, 12, generator=g) < 0.6
    present[:, 1] = True
    x = torch.randn(batch, 12, n_samples, generator=g) * present[..., None]
    return x, present


AUGMENTS = {
    "scale": lambda x, p, g: random_scale(x, g),
    "noise": lambda x, p, g: gaussian_noise(x, p, g),
    "wander": lambda x, p, g: baseline_wander(x, p, FS, g),
    "shift": lambda x, p, g: time_shift(x, g, 20),
    "compose": lambda x, p, g: EcgAugment(FS)(x, p, g)[0],
}


@pytest.mark.parametrize("name", sorted(AUGMENTS))
def test_augment_shapes_absent_zero_and_seeded(name: str) -> None:
    x, present = ecg_batch()
    aug = AUGMENTS[name]
    out = aug(x, present, gen(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert (out[~present] == 0).all()
    assert torch.equal(out, aug(x, present, gen(1)))
    assert not torch.equal(out, aug(x, present, gen(2)))
    double = aug(x.double(), present, gen(1))
    assert double.dtype == torch.float64 and torch.allclose(double.float(), out, atol=1e-5)


def test_random_scale_bounds() -> None:
    out = random_scale(torch.ones(500, 12, 3), gen(0), low=0.5, high=1.5)
    assert (out >= 0.5).all() and (out <= 1.5).all()
    assert out.min() < 0.51 and out.max() > 1.49
    assert torch.equal(out[..., 0], out[..., 2])  # one gain per (sample, lead)


def test_gaussian_noise_std() -> None:
    x, present = torch.zeros(64, 12, 1000), torch.ones(64, 12, dtype=torch.bool)
    noise = gaussian_noise(x, present, gen(0), std=0.3)
    assert noise.std().item() == pytest.approx(0.3, rel=0.01)
    assert abs(noise.mean().item()) < 0.005


def test_baseline_wander_is_slow_and_bounded() -> None:
    x, present = torch.zeros(64, 12, 1000), torch.ones(64, 12, dtype=torch.bool)
    wander = baseline_wander(x, present, FS, gen(0), max_amplitude=0.4, max_hz=0.5)
    assert wander.abs().max() <= 0.4 + 1e-6 and wander.abs().max() > 0.35
    # |d/dt A sin(2 pi f t)| <= 2 pi f A: per-sample steps no larger than 2 pi * 0.5 Hz * 0.4 / fs
    assert wander.diff(dim=-1).abs().max() <= 2 * math.pi * 0.5 * 0.4 / FS + 1e-6
    assert not torch.equal(wander[0, 0], wander[0, 1])  # independent per lead


def test_time_shift_is_a_per_sample_circular_roll() -> None:
    x, _ = ecg_batch(batch=16)
    out = time_shift(x, gen(0), max_shift=5)
    shifts = []
    for b in range(len(x)):
        matches = [s for s in range(-5, 6) if torch.equal(out[b], x[b].roll(s, dims=-1))]
        assert len(matches) == 1
        shifts += matches
    assert len(set(shifts)) > 3
    assert torch.equal(time_shift(x, gen(0), max_shift=0), x)


def test_random_lead_drop_keeps_one_lead() -> None:
    single = torch.zeros(32, 12, dtype=torch.bool)
    single[torch.arange(32), torch.arange(32) % 12] = True
    assert torch.equal(random_lead_drop(single, gen(0), p=1.0), single)
    _, present = ecg_batch(batch=64)
    kept = random_lead_drop(present, gen(0), p=1.0)
    assert (kept.sum(dim=1) == 1).all() and not (kept & ~present).any()
    assert len(set(kept.float().argmax(dim=1).tolist())) > 3  # the survivor varies
    full = torch.ones(4000, 12, dtype=torch.bool)
    assert (~random_lead_drop(full, gen(1), p=0.3)).float().mean().item() == pytest.approx(0.3, abs=0.01)
    assert torch.equal(random_lead_drop(present, gen(0), p=0.0), present)
    with pytest.raises(ValueError, match="at least one"):
        random_lead_drop(torch.zeros(2, 12, dtype=torch.bool), gen(0))


def test_ecg_augment_views() -> None:
    x, present = ecg_batch(batch=32)
    single = torch.zeros_like(present)
    single[:, 4] = True
    aug = EcgAugment(FS, p_lead_drop=1.0, lead_drop=1.0)
    x1, p1 = aug(x * single[..., None], single, gen(0))
    assert torch.equal(p1, single) and (x1[~single] == 0).all()
    x1, p1 = aug(x, present, gen(0))
    x2, p2 = aug(x, present, gen(1))
    for xa, pa in ((x1, p1), (x2, p2)):
        assert (pa.sum(1) == 1).all() and not (pa & ~present).any() and (xa[~pa] == 0).all()
    assert not torch.equal(x1, x2)
    identity = EcgAugment(FS, p_lead_drop=0, p_shift=0, p_scale=0, p_wander=0, p_noise=0)
    assert all(torch.equal(u, v) for u, v in zip(identity(x, present, gen(0)), (x, present)))
    for bad in ({"p_noise": 1.5}, {"noise_std": -0.1}, {"scale": (1.2, 0.8)}):
        with pytest.raises(ConfigError, match="augmentation"):
            EcgAugment(FS, **bad)
    with pytest.raises(ConfigError, match="fs"):
        EcgAugment(0)
