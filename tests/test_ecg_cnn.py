"""The lead-agnostic convolutional ECG encoder (``ecg_cnn``) and the CLOCS objective of stage 1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cardiodistill.data.augment import split_leads
from cardiodistill.errors import ConfigError
from cardiodistill.models import EcgConvEncoder, create_model
from cardiodistill.signals.leads import LEADS_12
from cardiodistill.train.ecg import EcgPretrainModule
from cardiodistill.train.video import VideoPretrainModule

SMALL = {"widths": (8, 16), "depth_per_stage": 1, "dim": 16, "se": False}


def _encoder(**overrides) -> EcgConvEncoder:
    torch.manual_seed(0)
    return create_model("ecg_cnn", **{**SMALL, **overrides}).eval()


def test_parameter_counts():
    count = lambda name: sum(p.numel() for p in create_model(name).parameters())  # noqa: E731
    assert 0.12e6 < count("ecg_cnn") < 0.18e6
    assert 0.5e6 < count("ecg_cnn_base") < 0.65e6


def test_any_lead_subset_in_any_order_gives_the_same_embedding():
    enc = _encoder()
    x = torch.randn(3, 2, 400, generator=torch.Generator().manual_seed(1))
    forward = enc(x, ["I", "II"])
    backward = enc(x.flip(1), ["II", "I"])
    torch.testing.assert_close(forward, backward)
    # as ids, and as a 12-slot signal with the other ten leads absent
    full = torch.zeros(3, 12, 400)
    full[:, :2] = x
    present = torch.zeros(3, 12, dtype=torch.bool)
    present[:, :2] = True
    torch.testing.assert_close(enc(full, torch.arange(12), present), forward)


def test_absent_leads_cannot_leak_and_presence_is_seen():
    enc = _encoder()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 12, 400, generator=g)
    present = torch.zeros(2, 12, dtype=torch.bool)
    present[:, 0] = True
    noisy = x.clone()
    noisy[:, 1:] = 100 * torch.randn(2, 11, 400, generator=g)
    torch.testing.assert_close(enc(x, LEADS_12, present), enc(noisy, LEADS_12, present))
    # a recorded flat lead is not the same input as a missing one
    flat = x.clone()
    flat[:, 1] = 0
    with_flat = present.clone()
    with_flat[:, 1] = True
    assert not torch.allclose(enc(flat, LEADS_12, present), enc(flat, LEADS_12, with_flat))


def test_any_length_above_the_stride_and_a_clear_error_below():
    enc = _encoder()
    assert enc(torch.randn(2, 1, 1000), ["I"]).shape == (2, 16)
    assert enc(torch.randn(2, 1, 250), ["I"]).shape == (2, 16)
    with pytest.raises(ValueError, match="too few"):
        enc(torch.randn(2, 1, 4), ["I"])
    with pytest.raises(ValueError, match="at least one present lead"):
        enc(torch.randn(2, 1, 400), ["I"], torch.zeros(2, 1, dtype=torch.bool))


def test_split_leads_deals_disjoint_non_empty_halves():
    present = torch.zeros(5, 12, dtype=torch.bool)
    present[0] = True  # 12 leads
    present[1, 0] = True  # lead I alone
    present[2, :2] = True  # I and II
    present[3, :6] = True  # the limb leads
    present[4, [0, 4, 7]] = True  # three scattered leads
    a, b = split_leads(present, torch.Generator().manual_seed(0))
    assert not (a & ~present).any() and not (b & ~present).any()
    assert a.any(1).all() and b.any(1).all()
    multi = present.sum(1) > 1
    assert not (a & b)[multi].any() and ((a | b) == present)[multi].all()
    assert a[1].equal(b[1]) and a[1].equal(present[1])  # a one-lead record gives its lead to both
    assert a.sum(1).tolist() == [6, 1, 1, 3, 2] and b.sum(1).tolist() == [6, 1, 1, 3, 1]
    again = split_leads(present, torch.Generator().manual_seed(0))
    assert again[0].equal(a) and again[1].equal(b)
    other = split_leads(present, torch.Generator().manual_seed(1))
    assert not other[0].equal(a)


def _patients(n: int, n_samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` recordings, each with its own beat rate and beat shape (three Gaussian waves of random
    timing, width and sign: a 'patient' signature that both halves and every lead share, up to a
    positive gain per lead), z-scored; leads I-aVF present."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / 100.0
    x = np.zeros((n, 12, n_samples), np.float32)
    for i in range(n):
        beats = np.arange(rng.uniform(0, 0.5), t[-1], 1 / rng.uniform(0.8, 2.0))
        wave = np.zeros_like(t)
        for _ in range(3):
            centre, width, sign = rng.uniform(-0.2, 0.2), rng.uniform(0.02, 0.1), rng.choice([-1.0, 1.0])
            wave += sign * np.exp(-0.5 * ((t[None] - beats[:, None] - centre) / width) ** 2).sum(0)
        x[i, :6] = rng.uniform(0.5, 1.5, (6, 1)) * wave + 0.05 * rng.standard_normal((6, n_samples))
    x[:, :6] = (x[:, :6] - x[:, :6].mean(-1, keepdims=True)) / x[:, :6].std(-1, keepdims=True)
    present = torch.zeros(n, 12, dtype=torch.bool)
    present[:, :6] = True
    return torch.from_numpy(x), present


def test_clocs_pretraining_learns_to_match_a_records_halves():
    """CLOCS steps take the loss well below chance, and the two halves of a record, on different
    leads, find each other among 32 records (chance: 1 in 32) in the objective's space."""
    torch.manual_seed(0)
    module = EcgPretrainModule({"name": "ecg_cnn", **SMALL}, objective="clocs")
    x, present = _patients(32, 800, seed=0)
    batch = {"x": x, "present": present}
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3)
    losses = []
    for step in range(100):
        loss = module._losses(batch, torch.Generator().manual_seed(step))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    chance = np.log(2 * 32 - 1)  # NT-Xent of 64 views that know nothing: log(2B - 1)
    assert np.mean(losses[-10:]) < 0.7 * chance < losses[0]
    module.eval()
    with torch.no_grad():
        a, b = split_leads(present, torch.Generator().manual_seed(99))
        za = module.head(module.encoder(x[..., :400], torch.arange(12), a))
        zb = module.head(module.encoder(x[..., 400:], torch.arange(12), b))
    sim = torch.nn.functional.normalize(za, dim=1) @ torch.nn.functional.normalize(zb, dim=1).T
    assert (sim.argmax(1) == torch.arange(32)).float().mean() >= 0.25  # chance 0.03


def test_objectives_check_their_model():
    assert isinstance(EcgPretrainModule({"name": "ecg_cnn", **SMALL}, objective="contrastive").model, EcgConvEncoder)
    with pytest.raises(ConfigError, match="needs a masked autoencoder"):
        EcgPretrainModule({"name": "ecg_cnn", **SMALL}, objective="mae")
    with pytest.raises(ConfigError, match="expected one of mae, contrastive$"):
        VideoPretrainModule({"name": "video_mae_tiny"}, objective="clocs")


def test_students_start_from_it_and_stage_two_refuses_an_encoder_without_patches():
    encoder = {"name": "ecg_cnn", **SMALL}
    student = create_model("ecg_student", backbone={"name": "ecg_encoder_backbone", "encoder": encoder, "leads": ["I"]})
    assert student(torch.randn(2, 1, 1000))["logits"].shape == (2, 1)
    with pytest.raises(ConfigError, match="lead-patch tokens.*xresnet1d_small"):
        create_model("cardio_fusion", ecg={"name": "xresnet1d_small"})


def test_patch_view_with_everything_kept_is_the_plain_embedding():
    enc, x = _encoder(), torch.randn(3, 12, 1000)
    pooled, tokens, present = enc.encode_patches(x, LEADS_12, torch.ones(3, 12 * 20, dtype=torch.bool))
    assert enc.patch_size == 50 and enc.max_patches == 20
    assert tokens.shape == (3, 20, 16) and present.all()
    torch.testing.assert_close(pooled, enc(x, LEADS_12))


def test_hidden_patches_never_reach_the_encoder():
    enc, x = _encoder(), torch.randn(2, 12, 1025)  # 20 patches of 50 and a 25-sample tail
    keep = torch.rand(2, 12, 20, generator=torch.Generator().manual_seed(0)) > 0.5
    keep[:, :, 7] = False  # patch 7 hidden on every lead
    shown = torch.cat([keep.repeat_interleave(50, 2), keep[..., -1:].expand(-1, -1, 25)], 2)
    y = torch.where(shown, x, torch.randn_like(x) * 5)  # different content wherever it is hidden
    a = enc.encode_patches(x, LEADS_12, keep.flatten(1))
    b = enc.encode_patches(y, LEADS_12, keep.flatten(1))
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v)
    assert not a[2][:, 7].any() and a[2].sum() == 2 * 19
    # hiding is not absence: the presence channels tell the trunk what was hidden
    slots = enc.slots(x, LEADS_12, sample_mask=shown)
    assert (slots[:, 12:] == shown.float()).all()


def test_a_row_with_nothing_kept_is_empty():
    enc, keep = _encoder(), torch.ones(2, 12 * 20, dtype=torch.bool)
    keep[1] = False
    pooled, _, present = enc.encode_patches(torch.randn(2, 12, 1000), LEADS_12, keep)
    assert pooled[1].abs().sum() == 0 and not present[1].any() and present[0].all()
    with pytest.raises(ValueError, match="keep has shape"):
        enc.encode_patches(torch.randn(2, 12, 1000), LEADS_12, keep[:, :-1])
