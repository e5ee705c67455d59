"""Stage 1 for video: the clip cache, augmentations, pretraining (both objectives, exact resume),
the frozen-encoder evaluation, and that no patient identifier reaches a run folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cardiodistill.cli import main
from cardiodistill.config import load_config
from cardiodistill.data.augment import VideoAugment
from cardiodistill.data.cohort import clip_spec
from cardiodistill.data.video_clips import ClipCache, ClipDataset, VideoSource, build_clip_cache, pseudonym
from cardiodistill.errors import DataError
from cardiodistill.io.dicom import write_echo_dicom
from cardiodistill.records import VideoClip
from cardiodistill.stages.stage1 import pretrain_video
from cardiodistill.train import load_model
from cardiodistill.video import ClipSpec

# A model small enough for tests: 32 px, 8 frames of one cycle, 2x8x8 tubelets (64 tokens).
TINY = {"name": "video_mae_tiny", "size": 32, "frames": 8, "dim": 32, "depth": 1, "heads": 2,
        "decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2}
PHI = ("DOE^JANE", "MRN-0042-XYZ", "1.2.3.4.5.6.7.8.9.424242")


def cli(*args: str) -> int:
    """Run the command line in this process; its exit status."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return exit_info.value.code


def tiny_config(tmp_path: Path, *, objective: str = "mae", steps: int = 4, sources=None, **extra) -> object:
    model = dict(TINY) if objective == "mae" else {**{k: v for k, v in TINY.items() if not k.startswith("decoder")},
                                                   "name": "video_vit_tiny"}
    overrides = [
        f"pretrain.video.model={json.dumps(model)}",
        f"pretrain.video.objective={objective}",
        f"pretrain.video.sources={json.dumps(sources or [{'kind': 'synth', 'patients': 12}])}",
        f"pretrain.video.optim.max_steps={steps}",
        "pretrain.video.optim.batch_size=4",
        "pretrain.video.optim.warmup_steps=1",
        "pretrain.video.val_fraction=0.2",
        f"pretrain.video.cache_dir={tmp_path / 'clips'}",
        "trainer.checkpoint_every=2",
        "trainer.threads=2",
        *[f"{k}={v}" for k, v in extra.items()],
    ]
    return load_config("quick", overrides)


@pytest.fixture(scope="module")
def synth_cache(tmp_path_factory) -> ClipCache:
    folder = tmp_path_factory.mktemp("cache") / "clips"
    spec = ClipSpec(size=32, frames=8, cycles=1.0)
    return build_clip_cache(folder, [VideoSource(kind="synth", patients=10, clips_per_video=2)], spec,
                            val_fraction=0.2)


# ----------------------------------------------------------------------------------- the cache


def test_clip_cache_holds_prepared_clips_labels_and_is_reused(synth_cache):
    cache = synth_cache
    assert len(cache) == 20  # 10 patients x 2 windows
    frames, mask = cache[3]
    assert frames.shape == (8, 32, 32) and frames.dtype == np.uint8 and mask.shape == (32, 32)
    assert 0.2 < mask.mean() < 0.95  # the sector, not the whole square
    assert not frames[:, ~mask].any()  # nothing outside the field of view
    index = cache.index
    assert {"lvef", "dx_mi", "heart_rate", "period_s", "split"} <= set(index.columns)
    assert (index.groupby("record")["split"].nunique() == 1).all()  # a video never straddles splits
    period = index["period_s"].to_numpy()
    # a cycle per clip: the mean rate's, except where a premature beat's compensatory pause is the cycle seen
    ratio = period * index["heart_rate"].to_numpy() / 60.0
    assert np.mean(np.abs(ratio - 1.0) < 0.15) >= 0.85 and np.all((ratio > 0.8) & (ratio < 2.0)), ratio
    starts = index.groupby("record")["start_s"].agg(["min", "max"])
    assert (starts["max"] > starts["min"]).all()  # two distinct windows per video

    again = build_clip_cache(cache.folder, [VideoSource(kind="synth", patients=10, clips_per_video=2)],
                             cache.spec, val_fraction=0.2)
    assert again.meta == cache.meta
    with pytest.raises(DataError, match="in the way"):
        build_clip_cache(cache.folder, [VideoSource(kind="synth", patients=11)], cache.spec, val_fraction=0.2)


def test_clip_dataset_gives_z_scored_clips_inside_the_mask(synth_cache):
    item = ClipDataset(synth_cache)[0]
    x, mask = item["x"].numpy(), item["mask"].numpy()
    inside = x[:, mask]
    assert abs(inside.mean()) < 1e-4 and abs(inside.std() - 1) < 1e-3
    assert not x[:, ~mask].any()


def test_files_source_skips_bad_videos_and_keeps_patient_identifiers_out(tmp_path):
    videos = tmp_path / "incoming"
    videos.mkdir()
    cache_cfg = VideoSource(kind="synth", patients=3)
    from cardiodistill.data.video_clips import source_videos

    for i, item in enumerate(source_videos(cache_cfg)):
        clip = item.load()
        write_echo_dicom(clip, videos / f"{PHI[0]}_{i}.dcm", patient_id=PHI[1], study_uid=PHI[2], heart_rate=70)
    (videos / f"{PHI[0]}_broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    (videos / "notes.txt").write_text("not a video")
    cache = build_clip_cache(tmp_path / "clips", [VideoSource(kind="files", path=str(videos))],
                             ClipSpec(size=32, frames=8), val_fraction=0.0)
    assert len(cache) == 3
    assert cache.meta["counts"]["files:incoming"] == {"videos": 3, "clips": 3, "skipped": 1}
    assert cache.index["record"].iloc[0] == pseudonym(f"{PHI[0]}_0.dcm")
    (reason,) = cache.meta["skipped"]  # named by its pseudonym, not by its file name
    assert reason.startswith(pseudonym(f"{PHI[0]}_broken.dcm") + ": ")
    for path in (tmp_path / "clips").rglob("*"):
        data = path.read_bytes()
        for value in PHI:
            assert value.encode() not in data, f"{value} leaked into {path.name}"


def test_pseudonyms_depend_on_the_key(monkeypatch):
    plain = pseudonym("P1")
    monkeypatch.setenv("CARDIODISTILL_PSEUDONYM_KEY", "secret")
    assert pseudonym("P1") != plain and len(plain) == 16
    assert pseudonym("P1", key="") == plain


# ----------------------------------------------------------------------------------- augmentation


def test_video_augment_is_seeded_and_keeps_outside_at_zero(synth_cache):
    x = torch.stack([ClipDataset(synth_cache)[i]["x"] for i in range(4)])
    aug = VideoAugment()
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    c = aug(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and torch.isfinite(a).all()
    corners = a[..., :3, :3]  # far outside the ultrasound sector
    assert not corners.any()


# ----------------------------------------------------------------------------------- pretraining


@pytest.mark.parametrize("objective", ["mae", "contrastive"])
def test_pretrain_video_writes_self_describing_models(tmp_path, objective):
    cfg = tiny_config(tmp_path, objective=objective)
    summary = pretrain_video(cfg, tmp_path / "run", show_bar=False)
    assert summary["steps"] == 4 and np.isfinite(summary["metrics"]["train/loss"])
    encoder = load_model(tmp_path / "run" / "encoder.pt")
    assert clip_spec(encoder.model_config) == ClipSpec(size=32, frames=8, cycles=1.0, fps=16.0)
    x = ClipDataset(ClipCache(tmp_path / "clips"))[0]["x"][None]
    assert encoder(x).shape == (1, 32)
    if objective == "mae":
        assert load_model(tmp_path / "run" / "mae.pt", part="encoder")(x).allclose(encoder(x))


def test_pretrain_video_resumes_exactly(tmp_path):
    """A run stopped after its step-2 checkpoint and run again ends with the same weights."""
    import lightning as L

    class Crash(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == 3:
                raise RuntimeError("node lost")

    full = pretrain_video(tiny_config(tmp_path / "a", steps=4), tmp_path / "a" / "run", show_bar=False)
    cfg = tiny_config(tmp_path / "b", steps=4)
    with pytest.raises(RuntimeError, match="node lost"):
        pretrain_video(cfg, tmp_path / "b" / "run", show_bar=False, callbacks=[Crash()])
    resumed = pretrain_video(cfg, tmp_path / "b" / "run", show_bar=False)
    assert full["steps"] == resumed["steps"] == 4
    a = torch.load(tmp_path / "a" / "run" / "mae.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / "run" / "mae.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------- CLI and evaluation


def test_cli_pretrain_then_evaluate_video(tmp_path, capsys):
    run = tmp_path / "pretrain"
    model = json.dumps(TINY)
    assert cli("pretrain", "video", "--out", str(run), "--set", f"pretrain.video.model={model}",
               "--set", "pretrain.video.sources=[{kind: synth, patients: 12}]",
               "--set", "pretrain.video.optim.max_steps=2", "--set", "pretrain.video.optim.batch_size=4") == 0
    assert (run / "run.json").is_file() and (run / "encoder.pt").is_file()
    out = tmp_path / "evaluate"
    assert cli("evaluate", "video", "--checkpoint", str(run / "encoder.pt"), "--out", str(out),
               "--set", "evaluate.video.data.patients=60", "--set", "evaluate.video.label_fractions=[0.5, 1.0]",
               "--set", "evaluate.video.bootstrap=20", "--set", "evaluate.video.embedding_map=pca",
               "--set", "evaluate.video.conditions=[reduced_ef, mi]",
               "--set", "evaluate.video.methods=[probe, finetune, scratch]", "--set", "evaluate.video.epochs=1",
               "--set", "evaluate.video.min_steps=2", "--set", "evaluate.video.batch_size=8") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["cells"]) == 10  # {pretrained, random_init, pixels probes, finetune, scratch} x 2 fractions
    assert {c["method"] for c in metrics["cells"]} == {"probe", "finetune", "scratch"}
    cell = next(c for c in metrics["cells"] if c["encoder"] == "pretrained" and c["label_fraction"] == 1.0)
    assert cell["lvef"]["n"] == metrics["n_test"] and cell["lvef"]["mae"]["value"] > 0
    assert set(cell["conditions"]) == {"reduced_ef", "mi"}
    # the pretrained probe against every other model, paired on the same test clips, per label fraction
    paired = {(d["label_fraction"], d["versus"]): d for d in metrics["paired"]}
    assert set(paired) == {(f, m) for f in (0.5, 1.0) for m in ("random_init", "pixels", "finetune", "scratch")}
    d = paired[(1.0, "pixels")]
    pixels = next(c for c in metrics["cells"] if c["encoder"] == "pixels" and c["label_fraction"] == 1.0)
    assert d["lvef_mae"]["value"] == pytest.approx(cell["lvef"]["mae"]["value"] - pixels["lvef"]["mae"]["value"])
    assert d["macro_auroc"]["value"] == pytest.approx(cell["macro_auroc"]["value"] - pixels["macro_auroc"]["value"])
    assert "Paired differences" in (out / "results.md").read_text()
    for name in ("agreement.png", "embedding_map.png", "results.md"):
        assert (out / name).stat().st_size > 0
    assert "random_init" in capsys.readouterr().out


def test_evaluate_video_alone_in_a_fresh_process_reads_the_simulated_echos(tmp_path):
    """The README's `cardiodistill evaluate video` on its own: nothing else in the process has registered the
    simulator as a data source (in-process tests hide that, since an earlier stage job registered it)."""
    import subprocess
    import sys

    from cardiodistill.models import create_model
    from cardiodistill.train import save_model

    vit = {k: v for k, v in TINY.items() if k != "name" and not k.startswith("decoder")}
    path = save_model(create_model("video_vit_tiny", **vit), tmp_path / "encoder.pt")
    sets = ["evaluate.video.data.patients=40", "evaluate.video.label_fractions=[1.0]", "evaluate.video.bootstrap=10",
            "evaluate.video.embedding_map=pca", "evaluate.video.conditions=[reduced_ef]",
            "evaluate.video.baselines=[]"]
    done = subprocess.run([sys.executable, "-c", "from cardiodistill.cli import main; main()", "evaluate", "video",
                           "--checkpoint", str(path),
                           "--out", str(tmp_path / "out"), *(a for s in sets for a in ("--set", s))],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out" / "metrics.json").is_file()


def test_cli_evaluate_video_rejects_an_ecg_model(tmp_path, capsys):
    from cardiodistill.models import create_model
    from cardiodistill.train import save_model

    path = save_model(create_model("ecg_vit_tiny"), tmp_path / "ecg.pt")
    assert cli("evaluate", "video", "--checkpoint", str(path), "--out", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a video model" in err[0] and "ecg.pt" in err[0]


def test_files_source_needs_a_folder(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        build_clip_cache(tmp_path / "c", [VideoSource(kind="files", path=str(tmp_path / "nope"))], ClipSpec())


def test_prepared_clip_in_cache_equals_prepare_clip(synth_cache):
    """The cache stores exactly what prepare_clip gives for the first window of a video."""
    from cardiodistill.data.video_clips import source_videos
    from cardiodistill.video import prepare_clip

    item = next(source_videos(VideoSource(kind="synth", patients=10, clips_per_video=2)))
    clip: VideoClip = item.load()
    prepared = prepare_clip(clip, synth_cache.spec)
    row = np.flatnonzero(synth_cache.index["record"].to_numpy() == item.record)[0]
    assert np.array_equal(synth_cache[row][0], prepared.frames)


def test_cli_inspect_a_cine_summarises_without_patient_attributes(tmp_path, capsys):
    from cardiodistill.data.video_clips import source_videos

    clip = next(source_videos(VideoSource(kind="synth", patients=1))).load()
    path = write_echo_dicom(clip, tmp_path / "echo.dcm", patient_id=PHI[1], study_uid=PHI[2], heart_rate=66)
    assert cli("inspect", str(path), "--json", "--png", str(tmp_path / "prep.png")) == 0
    text = capsys.readouterr().out
    summary = json.loads(text)
    assert summary["modality"] == "echo" and summary["n_frames"] == clip.n_frames
    assert summary["cycle_period_source"] == "pixels"
    assert abs(summary["heart_rate_bpm"] - clip.meta["heart_rate"]) < 0.1 * clip.meta["heart_rate"]
    assert PHI[1] not in text and PHI[2] not in text
    assert (tmp_path / "prep.png").stat().st_size > 0


def test_pretrain_video_under_ddp_with_two_cpu_processes(tmp_path):
    """Lightning DDP over gloo, two processes: the clip cache is pickled to each rank and reopened there."""
    cfg = tiny_config(tmp_path, steps=2, **{"trainer.accelerator": "cpu", "trainer.devices": 2,
                                            "trainer.strategy": "ddp_spawn", "trainer.threads": 1})
    summary = pretrain_video(cfg, tmp_path / "ddp", show_bar=False)
    assert summary["steps"] == 2 and np.isfinite(summary["metrics"]["val/loss"])
    assert load_model(tmp_path / "ddp" / "encoder.pt").model_config["dim"] == 32


def test_probe_readouts_and_the_pixels_baseline(synth_cache):
    from cardiodistill.evaluate.video_downstream import embed_clips, pixel_features
    from cardiodistill.models import create_model

    torch.manual_seed(0)
    encoder = create_model("video_vit_tiny", size=32, frames=8, dim=32, depth=1, heads=2)
    data = ClipDataset(synth_cache, np.arange(5))
    mean = embed_clips(encoder, data, batch_size=2)
    both = embed_clips(encoder, data, batch_size=2, readout="mean+temporal_std")
    assert mean.shape == (5, 32) and both.shape == (5, 64)
    assert np.allclose(both[:, :32], mean, atol=1e-5)  # the pooled embedding, then the temporal SD
    assert (both[:, 32:] > 0).all()
    pixels = pixel_features(data, batch_size=2)
    assert pixels.shape == (5, 2 * 16 * 16) and np.isfinite(pixels).all()


def test_video_mae_trains_under_bf16_autocast():
    """The ``full`` preset's bf16-mixed precision: masking, decoding and the loss work in bf16."""
    from cardiodistill.models import create_model

    torch.manual_seed(0)
    mae = create_model("video_mae", size=32, frames=8, dim=32, depth=1, heads=2, decoder_dim=32, decoder_depth=1,
                       decoder_heads=2)
    x = torch.randn(2, 8, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mae(x, generator=torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert out["pred"].dtype == torch.bfloat16 and torch.isfinite(out["loss"])
    assert all(torch.isfinite(p.grad).all() for p in mae.parameters() if p.grad is not None)
