"""Video ViT over tubelets, VideoMAE and attention-MIL pooling: shapes, absent frames, masking modes,
overfitting, gradient checkpointing, registry round trip, and the multi-view pooling invariances."""

from __future__ import annotations

import json

import pytest
import torch

from cardiodistill.errors import ConfigError
from cardiodistill.models.mil import AttentionMIL, MultiViewEncoder
from cardiodistill.models.registry import create_model, list_models, model_defaults, model_from_config
from cardiodistill.models.video_transformer import VideoMAE, VideoTransformer
from cardiodistill.objectives import masked_patch_loss

# 32 px, 8 frames, (2, 8, 8) tubelets: 4 time slices x 16 spatial positions = 64 tokens.
SMALL = {"size": 32, "frames": 8, "dim": 64, "depth": 2, "heads": 4}
N_T, N_S = 4, 16
# the transformer families (video_cnn has its own tests: tests/test_video_cnn.py)
VIDEO_MODELS = [name for name in list_models() if name.startswith(("video_vit", "video_mae"))]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def echo_like(batch: int, frames: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    """A beating bright ring (a ventricle wall) with speckle inside a disk-shaped field of view,
    z-scored per clip inside the field of view and 0 outside: ``[batch, frames, size, size]``."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size) - size / 2, torch.arange(size) - size / 2, indexing="ij")
    radius = torch.sqrt(yy**2 + xx**2)
    phase = 2 * torch.pi * (torch.arange(frames) / frames + torch.rand(batch, 1, generator=g))
    wall = (size / 4) * (1 + 0.25 * torch.sin(phase))[..., None, None]  # [B, T, 1, 1]
    x = torch.exp(-((radius - wall) ** 2) / 4.0) + 0.2 * torch.rand(batch, frames, size, size, generator=g)
    inside = radius < size / 2
    values = x[..., inside]  # [B, T, pixels in view]
    mean, std = values.mean(dim=(1, 2)), values.std(dim=(1, 2))
    return torch.where(inside, (x - mean[:, None, None, None]) / std[:, None, None, None], torch.zeros(()))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def vit() -> VideoTransformer:
    torch.manual_seed(0)
    return create_model("video_vit_tiny", **SMALL).eval()


def small_mae(**kw) -> VideoMAE:
    return create_model("video_mae_tiny", encoder=SMALL, decoder_dim=64, decoder_depth=1, **kw)


# ----------------------------------------------------------------------------- shapes and sizes


@pytest.mark.parametrize("name", VIDEO_MODELS)
def test_every_video_preset_counts_its_parameters_and_gives_the_documented_shapes(name):
    with torch.device("meta"):  # the full-size preset: parameters counted, nothing allocated or run
        count = n_params(create_model(name))
    print(f"{name}: {count / 1e6:.2f} M parameters")
    if name == "video_vit_base":
        assert 70e6 < count < 100e6  # ViT-B class
    if name in ("video_vit", "video_vit_tiny"):
        assert count < 3e6

    mae = name.startswith("video_mae")  # its encoder is a nested config
    defaults = model_defaults(name)
    t, ph, pw = (defaults["encoder"] if mae else defaults)["tubelet"]
    torch.manual_seed(0)
    small = {"size": 2 * ph, "frames": 2 * t}  # 2 time slices x 2 x 2 positions = 8 tokens
    model = create_model(name, **({"encoder": small} if mae else small)).eval()
    cfg = model.model_config["encoder"] if mae else model.model_config
    assert cfg["modality"] == "echo" and cfg["cycles"] == 1.0 and cfg["fps"] == 16.0
    assert cfg["normalisation"] == "per-clip z-score in field of view"
    x = torch.randn(2, 2 * t, 2 * ph, 2 * pw)
    with torch.no_grad():
        if name.startswith("video_vit"):
            assert model(x).shape == (2, cfg["dim"])
            tokens, present = model.forward_tokens(x)
            assert tokens.shape == (2, 8, cfg["dim"]) and present.shape == (2, 8) and present.all()
        else:
            out = model(x)
            assert out["pred"].shape == out["target"].shape == (2, 8, t * ph * pw)
            assert out["mask"].shape == (2, 8) and out["loss"].ndim == 0 and torch.isfinite(out["loss"])
            assert out["mask"].sum().item() == 2 * 2 * 3  # tube, 0.9 of 4 positions -> 3 hidden in each slice


def test_presets_have_the_documented_defaults():
    assert model_defaults("video_vit_tiny") == model_defaults("video_vit")
    base = model_defaults("video_vit_base")
    assert (base["size"], base["frames"], base["tubelet"], base["dim"], base["depth"]) == (
        112,
        16,
        [2, 16, 16],
        768,
        12,
    )
    mae = model_defaults("video_mae_tiny")
    assert (mae["mask_mode"], mae["mask_ratio"], mae["decoder_dim"], mae["decoder_depth"]) == ("tube", 0.9, 128, 2)


def test_bad_configs_are_one_line_config_errors():
    for bad in ({"size": 36}, {"frames": 7}, {"dim": 66, "heads": 2}, {"tubelet": (2, 8)}, {"modality": "mri"}):
        with pytest.raises(ConfigError) as err:
            create_model("video_vit_tiny", **bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="mask_mode"):
        create_model("video_mae_tiny", mask_mode="block")
    with pytest.raises(ConfigError, match="mask_ratio"):
        create_model("video_mae_tiny", mask_ratio=1.0)
    with pytest.raises(ConfigError, match="target_grid must divide"):
        create_model("video_mae_tiny", target_grid=3)


# ----------------------------------------------------------------------------- clip length and absent frames


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_absent_trailing_frames_equal_the_clip_cut_short(pool):
    torch.manual_seed(0)
    model = create_model("video_vit_tiny", pool=pool, **SMALL).eval()
    x = echo_like(2, 8)
    frame_mask = torch.ones(2, 8, dtype=torch.bool)
    frame_mask[0, 6:] = False  # 6 frames: 3 time slices
    frame_mask[1, 4:] = False  # 4 frames: 2 time slices
    padded = torch.where(frame_mask[..., None, None], x, torch.full((), float("nan")))  # garbage where absent
    with torch.no_grad():
        pooled = model(padded, frame_mask)
        tokens, present = model.forward_tokens(padded, frame_mask)
        for i, n_frames in enumerate((6, 4)):
            short = x[i : i + 1, :n_frames]
            assert (pooled[i] - model(short)[0]).abs().max() < 1e-5
            short_tokens, short_present = model.forward_tokens(short)
            n = n_frames // 2 * N_S
            assert present[i, :n].all() and not present[i, n:].any() and short_present.all()
            assert (tokens[i, :n] - short_tokens[0]).abs().max() < 1e-5
            assert torch.equal(tokens[i, n:], torch.zeros_like(tokens[i, n:]))


def test_an_absent_middle_slice_is_dropped_and_the_others_keep_their_time_positions(vit):
    x = echo_like(1, 8)
    frame_mask = torch.ones(1, 8, dtype=torch.bool)
    frame_mask[0, 3] = False  # one frame absent -> its tubelet slice (frames 2-3) is absent
    with torch.no_grad():
        masked = vit(x, frame_mask)
        tokens, layout = vit.embed(x)
        keep = layout.time_ids != 1
        assert torch.equal(layout.present, torch.ones(1, N_T * N_S, dtype=torch.bool))
        encoded, _ = vit.encode(tokens[:, keep], torch.ones(1, int(keep.sum()), dtype=torch.bool))
        cut = vit(torch.cat([x[:, :2], x[:, 4:]], dim=1))  # the same frames, renumbered
    assert (masked - encoded.mean(1)).abs().max() < 1e-5
    assert (masked - cut).abs().max() > 1e-4  # time positions matter: slices 2-3 did not move to 1-2


def test_a_batch_of_different_clip_lengths_equals_each_clip_alone(vit):
    x = echo_like(3, 8, seed=1)
    frame_mask = torch.ones(3, 8, dtype=torch.bool)
    frame_mask[1, :2] = False
    frame_mask[2, 2:6] = False
    with torch.no_grad():
        batched = vit(x, frame_mask)
        alone = torch.cat([vit(x[i : i + 1], frame_mask[i : i + 1]) for i in range(3)])
    assert (batched - alone).abs().max() < 1e-5


def test_clip_length_and_size_are_checked(vit):
    with torch.no_grad():
        assert vit(echo_like(2, 4)).shape == (2, 64)  # fewer frames than the model's 8
        assert vit(echo_like(2, 2)).shape == (2, 64)
    with pytest.raises(ValueError, match="multiple of the tubelet"):
        vit(torch.randn(1, 5, 32, 32))
    with pytest.raises(ValueError, match="at most 8"):
        vit(torch.randn(1, 10, 32, 32))
    with pytest.raises(ValueError, match="built for 32x32"):
        vit(torch.randn(1, 8, 64, 64))
    with pytest.raises(ValueError, match="at least one time slice"):
        vit(torch.randn(1, 8, 32, 32), torch.tensor([[True, False] * 4]))


# ----------------------------------------------------------------------------- masked autoencoder


@pytest.mark.parametrize("mode", ["tube", "random", "frame"])
def test_each_masking_mode_hides_exactly_the_requested_tokens(mode):
    torch.manual_seed(0)
    mae = small_mae(mask_mode=mode, mask_ratio=0.75)
    frame_mask = torch.ones(3, 8, dtype=torch.bool)
    frame_mask[1, 4:] = False  # 2 of 4 time slices present
    out = mae(echo_like(3, 8), frame_mask, generator=torch.Generator().manual_seed(0))
    mask = out["mask"].bool().view(3, N_T, N_S)
    assert not mask[1, 2:].any()  # absent slices are never scored
    if mode == "tube":
        for i, n_slices in enumerate((4, 2, 4)):
            assert (mask[i, :n_slices] == mask[i, :1]).all()  # one spatial mask for every time slice
            assert mask[i, 0].sum() == N_S - round(N_S * 0.25)
        assert not torch.equal(mask[0, 0], mask[2, 0])  # but its own per clip
    elif mode == "random":
        assert out["mask"].sum(1).tolist() == [64 - 16, 32 - 8, 64 - 16]
        assert not (mask[0] == mask[0, :1]).all()  # not shared across time
    else:
        per_slice = mask.sum(-1)
        assert set(per_slice.unique().tolist()) <= {0, N_S}  # whole slices
        assert (per_slice == N_S).sum(1).tolist() == [3, 1, 3]  # keeps round(0.25 x slices), at least 1


def test_the_mask_is_replayed_from_a_seeded_generator():
    torch.manual_seed(0)
    mae = small_mae()
    x = echo_like(2, 8)
    runs = [mae(x, generator=torch.Generator().manual_seed(seed)) for seed in (5, 5, 6)]
    assert torch.equal(runs[0]["loss"], runs[1]["loss"]) and torch.equal(runs[0]["mask"], runs[1]["mask"])
    assert not torch.equal(runs[0]["mask"], runs[2]["mask"])


def test_the_loss_scores_hidden_tubelets_only_and_the_encoder_never_sees_them():
    torch.manual_seed(0)
    mae = small_mae(mask_mode="random", mask_ratio=0.5)
    x = echo_like(2, 8)
    out = mae(x, generator=torch.Generator().manual_seed(1))
    hidden = out["mask"].bool()
    changed = out["pred"].detach().clone()
    changed[~hidden] = float("nan")  # predictions of visible tubelets
    assert torch.equal(masked_patch_loss(changed, out["target"], out["mask"], norm_pix=True), out["loss"].detach())

    # Replace the pixels of every hidden tubelet: the same mask gives the same predictions.
    noise = torch.randn(2, N_T, 2, 4, 8, 4, 8)  # [B, n_t, t, gh, ph, gw, pw]
    hidden_px = hidden.view(2, N_T, 1, 4, 1, 4, 1).expand_as(noise).reshape(2, 8, 32, 32)
    scrambled = torch.where(hidden_px, noise.reshape(2, 8, 32, 32), x)
    again = mae(scrambled, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again["mask"], out["mask"])
    assert (again["pred"] - out["pred"]).abs().max() < 1e-6
    assert not torch.allclose(again["target"], out["target"])


def test_coarse_targets_are_each_frames_block_means():
    """target_grid=2 on 8 x 8 tubelets: the decoder predicts the 4 x 4-pixel block means of every frame."""
    torch.manual_seed(0)
    mae = small_mae(target_grid=2, norm_pix=False)
    x = echo_like(2, 8)
    out = mae(x, generator=torch.Generator().manual_seed(1))
    assert out["pred"].shape == out["target"].shape == (2, N_T * N_S, 2 * 2 * 2)
    blocks = torch.nn.functional.avg_pool2d(x, 4)  # [B, T, 8, 8]: block (row, col) of frame f
    # token (slice i, grid cell r, c) holds frames 2i, 2i + 1, each as its 2 x 2 blocks
    i, r, c = 1, 2, 3
    token = out["target"][0, i * N_S + r * 4 + c].reshape(2, 2, 2)
    torch.testing.assert_close(token, blocks[0, 2 * i: 2 * i + 2, 2 * r: 2 * r + 2, 2 * c: 2 * c + 2])
    hidden = out["mask"].bool()
    expected = ((out["pred"] - out["target"]) ** 2).mean(-1)[hidden].mean()
    torch.testing.assert_close(out["loss"], expected)


def test_mae_overfits_one_small_batch():
    """A fixed batch with a fixed mask (replayed from the same seed every step) is memorised."""
    torch.manual_seed(0)
    mae = small_mae(mask_ratio=0.75)
    x = echo_like(2, 8)
    opt = torch.optim.Adam(mae.parameters(), lr=5e-3)
    losses = []
    for _ in range(80):
        loss = mae(x, generator=torch.Generator().manual_seed(1))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    print(f"VideoMAE loss {first:.3f} -> {last:.3f}")
    assert last < 0.5 * first


def test_gradient_checkpointing_gives_the_same_outputs_and_gradients():
    x = echo_like(2, 8)
    results = []
    for flag in (False, True):
        torch.manual_seed(0)
        mae = small_mae(grad_checkpointing=flag)
        out = mae(x, generator=torch.Generator().manual_seed(1))
        out["loss"].backward()
        grads = torch.cat([p.grad.flatten() for p in mae.parameters() if p.grad is not None])
        results.append((out["pred"].detach(), grads))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.allclose(results[0][1], results[1][1], atol=1e-6)


# ----------------------------------------------------------------------------- registry


@pytest.mark.parametrize("name", ["video_vit_tiny", "video_mae_tiny"])
def test_model_config_round_trips_through_json_and_gives_the_same_outputs(name):
    torch.manual_seed(0)
    overrides = {**SMALL, "tubelet": (4, 4, 4), "pool": "cls", "cycles": None, "fps": 25.0}
    mae = name.startswith("video_mae")
    model = create_model(name, **({"encoder": overrides} if mae else overrides)).eval()
    cfg = model.model_config
    encoder = cfg["encoder"] if mae else cfg
    assert encoder["tubelet"] == [4, 4, 4] and encoder["cycles"] is None and cfg["name"] == name
    rebuilt = model_from_config(json.loads(json.dumps(cfg))).eval()
    assert rebuilt.model_config == cfg
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = echo_like(2, 8)
    with torch.no_grad():
        if name.startswith("video_vit"):
            assert torch.equal(model(x), rebuilt(x))
        else:
            a, b = (m(x, generator=torch.Generator().manual_seed(3)) for m in (model, rebuilt))
            assert torch.equal(a["pred"], b["pred"]) and torch.equal(a["loss"], b["loss"])


# ----------------------------------------------------------------------------- attention MIL


@pytest.mark.parametrize("gated", [True, False])
def test_mil_weights_are_a_distribution_over_present_views(gated):
    torch.manual_seed(0)
    mil = AttentionMIL(16, hidden=8, gated=gated)
    x = torch.randn(3, 5, 16)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 1, 0, 0], [0, 0, 0, 1, 0]], dtype=torch.bool)
    x[~mask] = float("nan")  # padding views may hold anything
    pooled, weights = mil(x, mask)
    assert torch.allclose(weights.sum(1), torch.ones(3))
    assert torch.equal(weights[~mask], torch.zeros(int((~mask).sum())))
    assert (weights[mask] > 0).all() and torch.isfinite(pooled).all()
    assert torch.equal(weights[2, 3], torch.tensor(1.0)) and torch.equal(pooled[2], x[2, 3])  # one view: itself
    assert torch.allclose(pooled[1], weights[1, 0] * x[1, 0] + weights[1, 2] * x[1, 2], atol=1e-6)

    perm = torch.tensor([3, 0, 4, 2, 1])
    pooled_p, weights_p = mil(x[:, perm], mask[:, perm])
    assert torch.allclose(weights_p, weights[:, perm], atol=1e-6)
    assert torch.allclose(pooled_p, pooled, atol=1e-6)

    with pytest.raises(ValueError, match="at least one present view"):
        mil(x, torch.zeros(3, 5, dtype=torch.bool))


def test_multi_view_encoder_skips_padding_views(vit):
    torch.manual_seed(0)
    model = MultiViewEncoder(vit, AttentionMIL(64)).eval()
    x = echo_like(6, 8).view(2, 3, 8, 32, 32)
    view_mask = torch.tensor([[True, False, True], [False, True, False]])
    frame_mask = torch.ones(2, 3, 8, dtype=torch.bool)
    frame_mask[0, 2, 6:] = False
    padded = torch.where(view_mask[..., None, None, None], x, torch.full((), float("nan")))
    with torch.no_grad():
        pooled, weights = model(padded, view_mask, frame_mask)
        study0, weights0 = model(x[:1, [0, 2]], frame_mask=frame_mask[:1, [0, 2]])
        view1 = vit(x[1, 1:2])
    assert weights.shape == (2, 3) and torch.equal(weights[~view_mask], torch.zeros(3))
    assert (pooled[0] - study0[0]).abs().max() < 1e-5 and (weights[0, [0, 2]] - weights0[0]).abs().max() < 1e-6
    assert (pooled[1] - view1[0]).abs().max() < 1e-5  # a single-view study is its view's embedding
