"""Models and the masked-patch objective: shapes, lead-set invariances, masking, overfitting, registry."""

from __future__ import annotations

import json

import pytest
import torch

from cardiodistill.errors import ConfigError, LeadError
from cardiodistill.models import (
    PAD_LEAD_ID,
    EcgMAE,
    EcgTransformer,
    create_model,
    lead_ids,
    list_models,
    model_from_config,
)
from cardiodistill.models.registry import ecg_input_config
from cardiodistill.objectives import masked_patch_loss, normalised_cross_correlation
from cardiodistill.signals.leads import LEADS_12, LIMB_LEADS

FS = 250
SMALL_VIT = {"dim": 64, "depth": 2, "heads": 4, "seconds": 2.0}  # 500 samples, 10 patches per lead


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def ecg_like(batch: int, n_leads: int, seconds: float = 2.0, seed: int = 0) -> torch.Tensor:
    """Z-scored periodic spikes (QRS-like) plus a slow wave, with per-sample heart rate and per-lead gain."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * FS)) / FS
    rr = 0.6 + 0.4 * torch.rand(batch, 1, 1, generator=g)
    phase = torch.remainder(t / rr, 1.0)
    beat = torch.exp(-((phase - 0.3) ** 2) / 0.0008) + 0.3 * torch.exp(-((phase - 0.65) ** 2) / 0.006)
    gain = torch.randn(batch, n_leads, 1, generator=g)
    x = gain * beat + 0.05 * torch.randn(batch, n_leads, t.numel(), generator=g)
    return (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def vit() -> EcgTransformer:
    torch.manual_seed(0)
    return create_model("ecg_vit_tiny", **SMALL_VIT).eval()


# ----------------------------------------------------------------------------- shapes and sizes


# Here: the ECG encoders and the CNN baselines. Video, labs, notes, fusion and students have their own test files.
ECG_MODELS = [n for n in list_models() if n.startswith(("ecg_vit", "ecg_mae", "xresnet1d"))]


@pytest.mark.parametrize("name", ECG_MODELS)
def test_every_registered_model_builds_and_gives_the_documented_shapes(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    cfg = model.model_config
    count = n_params(model)
    print(f"{name}: {count / 1e6:.2f} M parameters")
    with torch.no_grad():
        if name.startswith("ecg_vit"):
            x = torch.randn(2, 12, 500)
            assert model(x, LEADS_12).shape == (2, cfg["dim"])
            tokens, present = model.forward_tokens(x, LEADS_12)
            assert tokens.shape == (2, 12 * 10, cfg["dim"]) and present.all()
        elif name.startswith("ecg_mae"):
            out = model(torch.randn(2, 12, 500), LEADS_12)
            assert out["pred"].shape == out["target"].shape == (2, 120, cfg["encoder"]["patch_size"])
            assert out["mask"].shape == (2, 120) and out["loss"].ndim == 0 and torch.isfinite(out["loss"])
        else:
            x = torch.randn(2, len(cfg["leads"]), int(cfg["fs"] * cfg["seconds"]))
            assert model(x).shape == (2, cfg["num_classes"])
            assert model.forward_features(x).shape == (2, model.num_features)
    if name == "ecg_vit_base":
        assert 70e6 < count < 100e6  # ViT-B class
    if name == "ecg_vit_tiny":
        assert count < 3e6


def test_resnet_needs_its_lead_count_and_can_be_a_headless_feature_extractor():
    model = create_model("xresnet1d_small", leads=LIMB_LEADS, num_classes=0).eval()
    assert model.model_config["leads"] == list(LIMB_LEADS) and model.in_leads == 6
    with torch.no_grad():
        assert model(torch.randn(3, 6, 1000)).shape == (3, model.num_features)
    with pytest.raises(ValueError, match="6 leads"):
        model(torch.randn(3, 12, 1000))


# ----------------------------------------------------------------------------- lead-set behaviour


def test_the_same_weights_take_12_6_2_and_1_leads(vit):
    x = ecg_like(3, 12)
    subsets = {12: LEADS_12, 6: LIMB_LEADS, 2: ("I", "II"), 1: ("I",)}
    embeddings = {}
    with torch.no_grad():
        for n, names in subsets.items():
            idx = [LEADS_12.index(name) for name in names]
            embeddings[n] = vit(x[:, idx], names)
            assert embeddings[n].shape == (3, 64) and torch.isfinite(embeddings[n]).all()
    assert not torch.allclose(embeddings[12], embeddings[1])  # the lead set does matter


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_permuting_the_leads_with_their_names_leaves_the_embedding_unchanged(pool):
    torch.manual_seed(0)
    model = create_model("ecg_vit_tiny", pool=pool, **SMALL_VIT).eval()
    x = ecg_like(2, 12)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model(x, LEADS_12)
        permuted = model(x[:, perm], [LEADS_12[i] for i in perm])
        misnamed = model(x[:, perm], LEADS_12)  # same signals, wrong names: must differ
    assert (ref - permuted).abs().max() < 1e-5
    assert (ref - misnamed).abs().max() > 1e-4  # 100x the tolerance above, even at init


def test_absent_leads_do_not_change_the_output(vit):
    x = ecg_like(2, 3)
    names = ("I", "II", "V2")
    garbage = torch.full((2, 2, 500), 1e6)
    garbage[0, 0, :7] = float("nan")
    padded = torch.cat([x[:, :1], garbage[:, :1], x[:, 1:], garbage[:, 1:]], dim=1)  # I, ?, II, V2, ?
    padded_names = ("I", "V5", "II", "V2", "aVR")
    lead_mask = torch.tensor([[True, False, True, True, False]] * 2)
    ids = lead_ids(padded_names).expand(2, -1).clone()
    ids[:, [1, 4]] = PAD_LEAD_ID
    with torch.no_grad():
        ref = vit(x, names)
        by_mask = vit(padded, padded_names, lead_mask)
        by_pad_id = vit(padded, ids)
        tokens, present = vit.forward_tokens(padded, padded_names, lead_mask)
    assert (ref - by_mask).abs().max() < 1e-5
    assert (ref - by_pad_id).abs().max() < 1e-5
    assert torch.isfinite(tokens[present]).all() and present.sum() == 2 * 3 * 10


def test_bad_lead_inputs_are_refused(vit):
    with pytest.raises(LeadError):
        vit(torch.randn(1, 1, 500), ("Vx",))
    with pytest.raises(ValueError, match="at least one present lead"):
        vit(torch.randn(1, 2, 500), ("I", "II"), torch.zeros(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        vit(torch.randn(1, 1, 510), ("I",))


# ----------------------------------------------------------------------------- masked autoencoder


def small_mae(**kw) -> EcgMAE:
    return create_model("ecg_mae_tiny", encoder=SMALL_VIT, decoder_dim=64, decoder_depth=1, **kw)


def test_mae_hides_the_requested_fraction_of_present_tokens():
    torch.manual_seed(0)
    mae = small_mae(mask_ratio=0.75, lead_mask_prob=0.0)
    lead_mask = torch.ones(4, 12, dtype=torch.bool)
    lead_mask[1, 6:] = False  # 6 leads
    lead_mask[2, 1:] = False  # 1 lead
    lead_mask[3, ::2] = False  # 6 leads, interleaved
    out = mae(ecg_like(4, 12), LEADS_12, lead_mask)
    present = lead_mask.repeat_interleave(10, dim=1)
    n_present = present.sum(1).float()
    n_masked = out["mask"].sum(1)
    assert (n_masked - 0.75 * n_present).abs().max() <= 1.0
    assert not out["mask"][~present].any()  # absent tokens are never scored


def test_whole_lead_masking_hides_all_patches_of_a_lead_and_keeps_one():
    torch.manual_seed(0)
    mae = small_mae(mask_ratio=0.0, lead_mask_prob=0.5)  # no patch masking: mask == dropped leads
    mask = mae(ecg_like(16, 12), LEADS_12)["mask"].view(16, 12, 10)
    per_lead = mask.sum(-1)
    assert set(per_lead.unique().tolist()) <= {0.0, 10.0}  # all or nothing per lead
    assert (per_lead == 0).sum(1).min() >= 1 and 0.3 < (per_lead == 10).float().mean() < 0.7

    mae.lead_mask_prob = 1.0  # every lead is chosen: exactly one survives per sample
    mask = mae(ecg_like(16, 12), LEADS_12)["mask"].view(16, 12, 10)
    assert ((mask.sum(-1) == 0).sum(1) == 1).all()


def test_mae_overfits_one_small_batch():
    """The classic sanity check: a fixed batch with a fixed mask (re-seeded each step) is memorised."""
    torch.manual_seed(0)
    mae = small_mae(mask_ratio=0.5, lead_mask_prob=0.0)
    x, names = ecg_like(4, 3), ("I", "II", "V2")
    opt = torch.optim.AdamW(mae.parameters(), lr=5e-3, weight_decay=0.0)
    losses = []
    for _ in range(80):
        torch.manual_seed(1)  # same mask every step
        loss = mae(x, names)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    print(f"MAE loss {first:.3f} -> {last:.3f}")
    assert last < 0.5 * first


def test_gradient_checkpointing_gives_the_same_gradients():
    x = ecg_like(2, 2)
    grads = []
    for flag in (False, True):
        torch.manual_seed(0)
        mae = small_mae(grad_checkpointing=flag)
        torch.manual_seed(1)
        mae(x, ("I", "II"))["loss"].backward()
        grads.append(torch.cat([p.grad.flatten() for p in mae.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_models_are_deterministic_under_manual_seed():
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        mae = small_mae()
        outs.append(mae(ecg_like(2, 12), LEADS_12))
    assert torch.equal(outs[0]["mask"], outs[1]["mask"]) and torch.equal(outs[0]["pred"], outs[1]["pred"])


# ----------------------------------------------------------------------------- objective


def test_masked_patch_loss_ignores_unmasked_positions_and_empty_masks():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 5, 4, generator=g), torch.randn(2, 5, 4, generator=g)
    mask = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 1, 0]], dtype=torch.float32)
    loss = masked_patch_loss(pred, target, mask)
    changed = pred.clone()
    changed[mask == 0] = float("nan")
    assert torch.equal(masked_patch_loss(changed, target, mask), loss)
    by_hand = ((pred - target) ** 2).mean(-1)[mask.bool()].mean()
    assert torch.allclose(loss, by_hand)

    nan_target = target.clone()
    nan_target[mask == 0] = float("nan")
    leaf = pred.clone().requires_grad_(True)
    masked_patch_loss(leaf, nan_target, mask).backward()
    assert torch.isfinite(leaf.grad).all() and torch.equal(leaf.grad[mask == 0], torch.zeros_like(leaf.grad[mask == 0]))

    pred.requires_grad_(True)
    empty = masked_patch_loss(pred, target, torch.zeros(2, 5))
    empty.backward()
    assert empty.item() == 0.0 and torch.equal(pred.grad, torch.zeros_like(pred))


def test_norm_pix_standardises_each_target_patch():
    target = torch.tensor([[[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]])  # mean 2, unbiased var 1; flat patch
    pred = torch.zeros(1, 2, 3)
    mask = torch.ones(1, 2)
    # patch 1 normalised: [-1, 0, 1] / sqrt(1 + 1e-6) -> MSE vs 0 = (2/3) / (1 + 1e-6); patch 2 -> 0
    expected = (2.0 / 3.0) / (1.0 + 1e-6) / 2.0
    assert masked_patch_loss(pred, target, mask, norm_pix=True).item() == pytest.approx(expected, rel=1e-6)
    assert masked_patch_loss(pred, target, mask).item() == pytest.approx((14 / 3 + 25) / 2, rel=1e-6)


def test_normalised_cross_correlation():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(3, 6, 50, generator=g)
    mask = torch.ones(3, 6)
    mask[0, 0] = 0
    assert normalised_cross_correlation(target, target, mask).item() == pytest.approx(1.0, abs=1e-6)
    assert normalised_cross_correlation(-2 * target + 1, target, mask).item() == pytest.approx(-1.0, abs=1e-6)
    per_patch = normalised_cross_correlation(target, target, mask, reduction="none")
    assert torch.isnan(per_patch[0, 0]) and torch.allclose(per_patch[mask.bool()], torch.ones(17))


# ----------------------------------------------------------------------------- registry


def test_create_model_errors_are_one_line_config_errors():
    with pytest.raises(ConfigError) as err:
        create_model("ecg_vit_huge")
    assert "\n" not in str(err.value) and "ecg_vit_tiny" in str(err.value) and "xresnet1d50" in str(err.value)
    with pytest.raises(ConfigError) as err:
        create_model("ecg_vit_tiny", width=3)
    assert "\n" not in str(err.value) and "'width'" in str(err.value) and "depth" in str(err.value)
    with pytest.raises(ConfigError):
        create_model("ecg_vit_tiny", dim=100, heads=3)
    with pytest.raises(ConfigError):
        model_from_config({"dim": 64})


@pytest.mark.parametrize("name", ["ecg_vit_tiny", "ecg_mae_tiny", "xresnet1d_small"])
def test_model_config_round_trips_through_json_and_model_from_config(name):
    overrides = {"leads": ("I", "II")} if name.startswith("x") else {"dim": 96, "time_embedding": "learned"}
    if name.startswith("ecg_mae"):
        overrides = {"encoder": overrides}  # the masked autoencoder's encoder is a nested config
    model = create_model(name, **overrides)
    cfg = model.model_config
    assert cfg["name"] == name and set(ecg_input_config(cfg)) == {"fs", "seconds", "leads", "normalisation", "band"}
    if name.startswith("ecg"):
        assert cfg.get("encoder", cfg)["patch_size"] == 50
        assert ecg_input_config(cfg)["normalisation"] == "per-lead z-score"
    stored = json.loads(json.dumps(cfg))
    rebuilt = model_from_config(stored)
    assert rebuilt.model_config == cfg
    rebuilt.load_state_dict(model.state_dict(), strict=True)
