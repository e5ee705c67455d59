"""The (2+1)-D convolutional echo encoder: its token contract (shapes, absent frames, tubelet layout), the
motion channel, SimCLR pretraining, the frozen-probe readouts and its place in the fusion model of stage 2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cardiodistill.errors import ConfigError
from cardiodistill.evaluate.video_downstream import embed_clips
from cardiodistill.models import VideoConvEncoder, create_model, model_defaults
from cardiodistill.models.fusion import fusion_example
from cardiodistill.train.align import AlignModule, make_masks
from cardiodistill.train.video import VideoPretrainModule

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# 16 px, 4 frames, a (2, 4, 4) stem and two stages: tokens of (2, 8, 8) on a 2 x 2 grid, 2 time slices
SMALL = {"size": 16, "frames": 4, "widths": [8, 16], "dim": 16}


def small(**overrides) -> VideoConvEncoder:
    torch.manual_seed(0)
    return create_model("video_cnn", **{**SMALL, **overrides}).eval()


def clips(b: int = 3, frames: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, frames, size, size, generator=torch.Generator().manual_seed(seed))


def test_presets_token_grid_and_parameter_counts():
    cnn = create_model("video_cnn")
    vit = create_model("video_vit_tiny")
    assert cnn.tubelet == vit.tubelet == (2, 8, 8) and cnn.grid == vit.grid == (8, 8)
    assert (cnn.size, cnn.frames, cnn.embed_dim) == (64, 16, 256)
    for key in ("cycles", "fps", "modality", "normalisation"):  # what clip_spec and the data side read
        assert model_defaults("video_cnn")[key] == model_defaults("video_vit_tiny")[key]
    counts = {name: sum(p.numel() for p in create_model(name).parameters()) for name in ("video_cnn", "video_cnn_base")}
    assert 60_000 < counts["video_cnn"] < 120_000, counts  # 0.08 M
    assert 200_000 < counts["video_cnn_base"] < 400_000, counts  # 0.28 M


def test_tokens_are_time_major_and_pool_to_the_embedding():
    model = small()
    x = clips()
    with torch.no_grad():
        tokens, present = model.forward_tokens(x)
        pooled = model(x)
    assert tokens.shape == (3, 2 * 4, 16) and present.shape == (3, 8) and bool(present.all())
    torch.testing.assert_close(pooled, tokens.mean(1))
    # a token follows its own time slice: changing the last two frames leaves the first slice's ... input
    # change only through the temporal convolutions, but the last slice's tokens must change
    y = x.clone()
    y[:, 2:] += 1.0
    with torch.no_grad():
        changed = (model.forward_tokens(y)[0] - tokens).abs().amax(-1)
    assert bool((changed[:, 4:] > 1e-4).all())


def test_absent_frames_give_the_tokens_of_the_clip_cut_short():
    model = small()
    x = clips()
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[0, 2:] = False  # the last slice of clip 0 is absent
    mask[1, 3] = False  # one absent frame makes its whole slice absent
    x[0, 2:] = float("nan")  # nothing of an absent frame may leak
    with torch.no_grad():
        tokens, present = model.forward_tokens(x, mask)
        short, _ = model.forward_tokens(x[:2, :2])
        pooled = model(x, mask)
    assert present.tolist()[0] == [True] * 4 + [False] * 4 and present.tolist()[2] == [True] * 8
    assert torch.isfinite(tokens).all() and bool((tokens[0, 4:] == 0).all())
    torch.testing.assert_close(tokens[:2, :4], short)
    torch.testing.assert_close(pooled[0], short[0].mean(0))
    with pytest.raises(ValueError, match="at least one time slice"):
        model.forward_tokens(x, torch.zeros(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="multiple"):
        model.forward_tokens(x[:, :3])
    with pytest.raises(ValueError, match="pixels"):
        model.forward_tokens(torch.zeros(3, 4, 8, 8))


def test_motion_channel_is_the_frame_difference_of_shown_pixels():
    model = small(motion=True)
    x = clips(b=1)
    shown = torch.ones_like(x, dtype=torch.bool)
    shown[0, 2, :4, :4] = False
    c = model.channels(x, shown)
    assert c.shape == (1, 3, 4, 16, 16)
    assert bool((c[:, 1, 0] == 0).all())  # the first frame has no previous one
    torch.testing.assert_close(c[0, 1, 1], x[0, 1] - x[0, 0])
    assert bool((c[0, 1, 2, :4, :4] == 0).all()) and bool((c[0, 1, 3, :4, :4] == 0).all())  # reads a hidden pixel
    assert bool((c[0, 0, 2, :4, :4] == 0).all()) and bool((c[0, 2, 2, :4, :4] == 0).all())
    assert small().channels(x, shown).shape == (1, 2, 4, 16, 16)  # the default: frame and shown channels
    with pytest.raises(ConfigError, match="does not divide"):
        create_model("video_cnn", size=20)
    with pytest.raises(ConfigError, match="kernel_t"):
        create_model("video_cnn", kernel_t=2)


def test_encode_tubelets_sees_nothing_it_hides():
    model = small()
    x = clips()
    keep = torch.ones(3, 8, dtype=torch.bool)
    keep[0, [1, 6]] = False  # two tubelets of clip 0
    keep[1, :4] = False  # the whole first slice of clip 1
    keep[2] = False  # nothing of clip 2
    with torch.no_grad():
        pooled, time, time_present = model.encode_tubelets(x, keep)
        y = x.clone()
        y[0, :2, :8, 8:] = 100.0  # tubelet 1: slice 0, grid cell (0, 1)
        y[1, :2] = float("nan")
        y[2] = float("nan")
        again = model.encode_tubelets(y, keep)
        full = model.encode_tubelets(x, torch.ones(3, 8, dtype=torch.bool))
    for a, b in zip((pooled, time, time_present), again):
        torch.testing.assert_close(a, b)
    assert time.shape == (3, 2, 16) and time_present.tolist() == [[True, True], [False, True], [False, False]]
    assert bool((pooled[2] == 0).all()) and bool((time[1, 0] == 0).all())
    torch.testing.assert_close(full[0], model(x))  # all kept: the pooled embedding
    with pytest.raises(ValueError, match="keep has shape"):
        model.encode_tubelets(x, keep[:, :4])


def test_layout_matches_the_transformers_tubelets():
    model = small()
    vit = create_model("video_vit_tiny", size=16, frames=4, dim=32, depth=1, heads=2)
    x = clips()
    mask = torch.tensor([[True, True, True, False]] * 3)
    mine, theirs = model.layout(x, mask), vit.embed(x, mask)[1]
    torch.testing.assert_close(mine.patches, theirs.patches)
    assert torch.equal(mine.present, theirs.present) and (mine.n_t, mine.n_s) == (theirs.n_t, theirs.n_s)
    assert torch.equal(mine.time_ids, theirs.time_ids) and torch.equal(mine.space_ids, theirs.space_ids)


def test_embed_clips_readouts():
    model = small()
    data = [{"x": clips(b=1, seed=i)[0]} for i in range(5)]
    mean = embed_clips(model, data, batch_size=2, readout="mean")
    both = embed_clips(model, data, batch_size=2, readout="mean+temporal_std")
    assert mean.shape == (5, 16) and both.shape == (5, 32)
    assert abs(both[:, :16] - mean).max() < 1e-5 and (both[:, 16:] >= 0).all() and both[:, 16:].std() > 0
    regional = embed_clips(model, data, batch_size=2, readout="regional")  # 2 x 2 quarters of mean and SD
    assert regional.shape == (5, 8 * 16)
    quarters = regional.reshape(5, 2, 4, 16)
    assert abs(quarters[:, 0].mean(1) - mean).max() < 1e-5 and abs(quarters[:, 1].mean(1) - both[:, 16:]).max() < 1e-5


class _QuarterTokens(torch.nn.Module):
    """Tokens on a 4 x 4 grid over 3 time slices whose one feature is the quarter's number (row-major), and
    which move over time in the lower-right quarter only."""

    grid = (4, 4)

    def forward_tokens(self, x):
        rows, cols = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
        quarter = (rows // 2 * 2 + cols // 2).flatten().float()  # [16]
        moving = (quarter == 3).float() * torch.tensor([-1.0, 0.0, 1.0])[:, None]  # [3 slices, 16]
        tokens = (quarter + moving).reshape(1, 48, 1).expand(len(x), -1, -1)
        return tokens, torch.ones(len(x), 48, dtype=torch.bool)


def test_the_regional_readout_keeps_each_quarter_apart():
    out = embed_clips(_QuarterTokens(), [{"x": torch.zeros(1)}], readout="regional")
    np.testing.assert_allclose(out[0, :4], [0, 1, 2, 3], atol=1e-6)  # means: top-left, top-right, bottom-left, ...
    np.testing.assert_allclose(out[0, 4:], [0, 0, 0, 1], atol=1e-6)  # temporal SD: only the moving quarter


def test_the_regional_readout_takes_an_odd_grid():
    """video_vit_base's 7 x 7 grid: the middle row and column count in both halves."""
    odd = _QuarterTokens()
    odd.grid = (3, 3)
    odd.forward_tokens = lambda x: (torch.arange(9.0).repeat(2).reshape(1, 18, 1), torch.ones(1, 18, dtype=torch.bool))
    out = embed_clips(odd, [{"x": torch.zeros(1)}], readout="regional")
    # positions 0 1 2 / 3 4 5 / 6 7 8: the top-left quarter is 0, 1, 3, 4
    np.testing.assert_allclose(out[0, :4], [2.0, 3.0, 5.0, 6.0], atol=1e-6)
    np.testing.assert_allclose(out[0, 4:], 0.0, atol=1e-6)


def test_contrastive_pretraining_learns_and_mae_refuses_a_cnn():
    torch.manual_seed(0)
    config = {"name": "video_cnn", **model_defaults("video_cnn"), "size": 32, "frames": 8, "widths": [8, 16],
              "dim": 32}
    module = VideoPretrainModule(config, objective="contrastive", projection_dim=16)
    assert isinstance(module.encoder, VideoConvEncoder)
    # eight distinct clips: a bright disc at its own place, beating with its own phase
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    frames = torch.arange(8.0)[:, None, None]
    x = torch.stack([(((yy - 8 - 2 * i) ** 2 + (xx - 10 - 2 * i) ** 2) < (5 + 2 * torch.sin(frames + i)) ** 2).float()
                     for i in range(8)])
    batch = {"x": (x - x.mean()) / x.std()}


    def held_out_loss() -> float:  # the same two views each time (augmentation draws from a fixed seed)
        with torch.no_grad():
            return float(module._losses(batch, torch.Generator().manual_seed(99))["loss"])

    before = held_out_loss()
    opt = torch.optim.AdamW(module.parameters(), lr=3e-3)
    for step in range(15):
        loss = module._losses(batch, torch.Generator().manual_seed(step))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_out_loss()
    assert after < 0.8 * before, (before, after)
    with pytest.raises(ConfigError, match="masked autoencoder"):
        VideoPretrainModule(config, objective="mae")
    with pytest.raises(ConfigError, match="video transformer"):
        create_model("video_mae_tiny", encoder={"name": "video_cnn"})


def fusion_config(**extra) -> dict:
    return {"name": "cardio_fusion",
            "ecg": {"name": "ecg_vit_tiny", "seconds": 2.0, "dim": 32, "depth": 1, "heads": 2},
            "echo": {"name": "video_cnn", **SMALL},
            "labs": {"name": "labs_encoder", "dim": 16, "heads": 2},
            "note": {"name": "note_encoder", "vocab_size": 64, "max_tokens": 16, "dim": 16, "depth": 1, "heads": 2},
            "dim": 32, "depth": 1, "heads": 2, "proj_dim": 16, **extra}


def test_fusion_reads_the_cnn_and_hides_its_tubelets():
    from cardiodistill.models import model_from_config

    torch.manual_seed(0)
    model = model_from_config(fusion_config()).eval()
    assert model.echo_tubelet_frames == 2
    (batch,), _ = fusion_example(model)
    with torch.no_grad():
        out = model(batch)
        hide = {"echo": torch.zeros(2, 8, dtype=torch.bool)}
        hide["echo"][0, 4:] = True  # the second time slice of the first study
        hidden = model(batch, hide=hide)
    assert out.echo_time.shape == (2, 2, 16) and out.unimodal["echo"].shape == (2, 16)
    assert out.echo_time_present.tolist() == [[True, True], [False, False]]  # the second study has no echo
    assert out.present["echo"].tolist() == [True, False]
    assert hidden.echo_time_present.tolist() == [[True, False], [False, False]]
    assert not torch.allclose(hidden.unimodal["echo"][0], out.unimodal["echo"][0])
    assert torch.equal(model.echo_layout(batch["echo"]).patches, model.encoders["echo"].layout(batch["echo"]).patches)


def test_stage2_step_with_a_cnn_echo_encoder():
    torch.manual_seed(0)
    module = AlignModule(fusion_config(), objectives=("clip", "multimae"), decoder_dim=16, max_steps=2)
    (batch,), _ = fusion_example(module.model)
    hide = make_masks(module.model, batch, module.masking, torch.Generator().manual_seed(0))
    assert hide["echo"].shape == (2, 8)
    losses = module._losses(batch, torch.Generator().manual_seed(0))
    assert torch.isfinite(losses["loss"]) and torch.isfinite(losses["mm_echo"])
    losses["loss"].backward()
    stem = module.model.encoders["echo"].stem[0].weight
    assert stem.grad is not None and float(stem.grad.abs().sum()) > 0


def test_stage_one_leaves_blank_clips_out_of_the_objective():
    """A stream gives a study without an echo as a blank clip (an empty field of view): it is dropped from the
    batch before the objective, so a batch with blanks scores as the same batch without them."""
    torch.manual_seed(0)
    config = {"name": "video_cnn", **model_defaults("video_cnn"), "size": 32, "frames": 8, "widths": [8, 16],
              "dim": 32}
    module = VideoPretrainModule(config, objective="contrastive", projection_dim=16).eval()
    x, mask = torch.randn(3, 8, 32, 32), torch.ones(3, 32, 32, dtype=torch.bool)
    blank_x, blank_mask = torch.zeros(2, 8, 32, 32), torch.zeros(2, 32, 32, dtype=torch.bool)
    with_blanks = {"x": torch.cat([x[:1], blank_x, x[1:]]), "mask": torch.cat([mask[:1], blank_mask, mask[1:]])}
    with torch.no_grad():
        loss = module._losses(with_blanks, torch.Generator().manual_seed(5))["loss"]
        alone = module._losses({"x": x, "mask": mask}, torch.Generator().manual_seed(5))["loss"]
    assert torch.allclose(loss, alone)
