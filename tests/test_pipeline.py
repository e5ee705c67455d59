"""Stages 2 and 3 end to end on a tiny simulated cohort: align -> finetune -> distill -> evaluate -> report.

The models are shrunk to a few thousand parameters and trained for a handful of steps: these tests
check the plumbing (files, resumption, missing modalities, DDP, the report), not the accuracy,
which benchmarks/bench_ablation.py measures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

from cardiodistill.cli import main
from cardiodistill.config import load_config
from cardiodistill.data.cohort import open_cohort, paired_spec
from cardiodistill.data.streaming import open_stream, write_stream
from cardiodistill.errors import ConfigError
from cardiodistill.models import create_model
from cardiodistill.models.fusion import drop_modalities
from cardiodistill.stages.stage2 import cohort_lab_stats, encoder_config, run_align, unaligned_fusion
from cardiodistill.synth.cohort import write_cohort
from cardiodistill.train.checkpoints import load_model, read_model_file
from cardiodistill.train.engine import read_checkpoint

TINY_MAE = ("{name: ecg_mae_tiny, fs: 100.0, patch_size: 50, dim: 32, depth: 1, heads: 2, decoder_dim: 32, "
            "decoder_depth: 1}")
TINY = [
    'align.ecg_model={"name": "ecg_vit_tiny", "fs": 100.0, "patch_size": 50, "dim": 32, "depth": 1, "heads": 2}',
    'align.video_model={"name": "video_vit_tiny", "size": 32, "frames": 8, "tubelet": [2, 8, 8], "dim": 32, '
    '"depth": 1, "heads": 2}',
    'align.labs_model={"name": "labs_encoder", "dim": 32, "depth": 1, "heads": 2}',
    'align.note_model={"name": "note_encoder", "dim": 32, "depth": 1, "heads": 2, "max_tokens": 64}',
    'align.fusion={"dim": 32, "depth": 1, "heads": 2, "proj_dim": 16}',
    "align.decoder_dim=32",
    "align.optim.batch_size=8", "align.optim.max_steps=3", "align.optim.warmup_steps=1",
    "finetune.optim.batch_size=8", "finetune.min_steps=3", "finetune.epochs=1", "finetune.labelled=0.5",
    "distill.optim.batch_size=8", "distill.min_steps=3", "distill.epochs=1",
    'distill.backbone={"name": "student_cnn_tiny"}',
    "finetune.label_fractions=[0.5, 1.0]",
    "pipeline.bootstrap=20", "pipeline.failures=2",
    "trainer.checkpoint_every=2", "trainer.threads=2",
]


def cli(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return exit_info.value.code


def tiny_config(**extra):
    return load_config("quick", TINY + [f"{k}={v}" for k, v in extra.items()])


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cohort")
    cfg = load_config("quick", ["synth.patients=40", "synth.chunk_size=40", "synth.echo.size=48",
                                "synth.splits.train=0.5", "synth.splits.val=0.25", "synth.splits.test=0.25"])
    write_cohort(cfg, out)
    return out


@pytest.fixture(scope="module")
def cohort(cohort_dir):
    cfg = tiny_config()
    ecg = encoder_config(None, cfg.align.ecg_model, "e")
    video = encoder_config(None, cfg.align.video_model, "v")
    return open_cohort(cfg, cohort_dir, paired_spec(ecg[0], video[0]))


@pytest.fixture(scope="module")
def pipeline_run(cohort_dir, tmp_path_factory):
    """The command-line chain, once: align, finetune, two students, evaluate (with the report)."""
    root = tmp_path_factory.mktemp("run")
    sets = [arg for item in TINY for arg in ("--set", item)]
    assert cli("align", "--cohort", str(cohort_dir), "-o", str(root / "align"), *sets) == 0
    assert cli("finetune", "--cohort", str(cohort_dir), "--aligned", str(root / "align" / "aligned.pt"),
               "-o", str(root / "teacher"), *sets) == 0
    assert cli("distill", "--cohort", str(cohort_dir), "--teacher", str(root / "teacher"), "--leads", "1",
               "-o", str(root / "s1"), *sets) == 0
    assert cli("distill", "--cohort", str(cohort_dir), "--teacher", str(root / "teacher"), "--leads", "6",
               "--no-teacher", "-o", str(root / "s6"), *sets) == 0
    assert cli("evaluate", "pipeline", "--cohort", str(cohort_dir), "--teacher", str(root / "teacher" / "teacher.pt"),
               "--student", str(root / "s1" / "student.pt"), "--student", str(root / "s6" / "student.pt"),
               "--aligned", str(root / "align" / "aligned.pt"), "-o", str(root / "eval"), *sets) == 0
    return root


def test_cohort_splits_hide_labels_of_unlabelled_training_studies(cohort):
    s = cohort.splits
    assert set(s["labelled"]) <= set(s["train"]) and 0 < len(s["labelled"]) < len(s["train"])
    unlabelled = np.setdiff1d(s["train"], s["labelled"])
    assert np.isnan(cohort.targets[unlabelled]).all() and np.isnan(cohort.lvef[unlabelled]).all()
    assert np.isfinite(cohort.targets[s["test"], 0]).all()  # test keeps its labels, for evaluation only
    assert cohort.outputs[0] == "triage" and cohort.labels.shape == (len(cohort.cache), len(cohort.outputs))


def test_modality_dropout_never_drops_everything():
    g = torch.Generator().manual_seed(0)
    present = {m: torch.rand(200, generator=g) > 0.3 for m in ("ecg", "echo", "labs")}
    present["ecg"][:50] = True
    drop = drop_modalities(present, 0.9, g)
    kept = sum((present[m] & ~drop[m]).int() for m in present)
    has_any = sum(present[m].int() for m in present) > 0
    assert (kept[has_any] >= 1).all()
    assert all(not (drop[m] & ~present[m]).any() for m in present)  # only present modalities are dropped


def test_alignment_objectives_train_and_export_an_aligned_model(cohort, tmp_path):
    cfg = tiny_config(**{"align.objectives": "[clip, clip_loo, temporal, multimae]"})
    ecg = encoder_config(None, cfg.align.ecg_model, "e")
    video = encoder_config(None, cfg.align.video_model, "v")
    summary = run_align(cfg, cohort, tmp_path / "a", ecg=ecg, video=video, show_bar=False)
    metrics = summary["metrics"]
    for key in ("train/clip", "train/clip_loo", "train/temporal", "train/mm_ecg", "train/mm_echo", "train/mm_labs"):
        assert np.isfinite(metrics[key]), key
    model = load_model(tmp_path / "a" / "aligned.pt")
    assert model.modalities == ("ecg", "echo", "labs", "note")
    # resuming a finished run does no more steps; asking for more continues from the checkpoint
    cfg2 = tiny_config(**{"align.objectives": "[clip, clip_loo, temporal, multimae]", "align.optim.max_steps": 5})
    again = run_align(cfg2, cohort, tmp_path / "a", ecg=ecg, video=video, show_bar=False)
    assert again["steps"] == 5


def test_the_no_stage_2_fusion_is_drawn_under_the_run_seed(cohort):
    """The ablation without stage 2 is the same model each time (seeded, the caller's random state untouched)."""
    cfg = tiny_config()
    ecg = encoder_config(None, cfg.align.ecg_model, "e")
    video = encoder_config(None, cfg.align.video_model, "v")
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    _, first = unaligned_fusion(cfg, cohort, ecg, video)
    torch.testing.assert_close(torch.rand(3), before)  # the global stream goes on as if nothing was drawn
    _, again = unaligned_fusion(cfg, cohort, ecg, video)
    _, other = unaligned_fusion(tiny_config(**{"trainer.seed": 1}), cohort, ecg, video)
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first if first[k].is_floating_point())


def test_alignment_with_a_convolutional_ecg_encoder(cohort, tmp_path):
    """Stage 2 from the CPU-scale stage-1 encoder: every objective, its tokens at the transformer's patch grid."""
    cfg = tiny_config(**{"align.objectives": "[clip, temporal, multimae]", "align.optim.max_steps": 2})
    encoder = create_model("ecg_cnn", widths=[8, 16], depth_per_stage=1, dim=16)
    video = encoder_config(None, cfg.align.video_model, "v")
    summary = run_align(cfg, cohort, tmp_path / "a", ecg=(encoder.model_config, encoder.state_dict()), video=video,
                        show_bar=False)
    for key in ("train/clip", "train/temporal", "train/mm_ecg", "train/mm_echo"):
        assert np.isfinite(summary["metrics"][key]), key
    model = load_model(tmp_path / "a" / "aligned.pt")
    assert model.ecg_patch_size == 50 and type(model.encoders["ecg"]).__name__ == "EcgConvEncoder"


def test_teacher_works_with_any_modality_missing(pipeline_run, cohort):
    teacher = load_model(pipeline_run / "teacher" / "teacher.pt")
    batch = next(iter(torch.utils.data.DataLoader(cohort.dataset("test"), batch_size=6)))
    with torch.no_grad():
        full = teacher(batch)["logits"]
        for m in ("ecg", "echo", "labs", "note"):
            drop = {m: torch.ones(6, dtype=torch.bool)}
            out = teacher(batch, drop=drop)["logits"]
            assert torch.isfinite(out).all() and not torch.allclose(out, full), m
        no_echo = dict(batch, has_echo=torch.zeros(6, dtype=torch.bool))
        assert torch.allclose(teacher(no_echo)["logits"], teacher(batch, drop={"echo": torch.ones(6, dtype=torch.bool)})
                              ["logits"], atol=1e-5)


def test_teacher_outputs_are_cached_for_every_study(pipeline_run, cohort):
    with np.load(pipeline_run / "teacher" / "teacher_outputs.npz") as saved:
        assert sorted(saved["index"].tolist()) == list(range(len(cohort.cache)))
        assert saved["logits"].shape == (len(cohort.cache), len(cohort.outputs))
        assert np.isfinite(saved["embedding"]).all()


def test_students_read_their_leads_and_record_how_they_were_trained(pipeline_run):
    one = load_model(pipeline_run / "s1" / "student.pt")
    six = load_model(pipeline_run / "s6" / "student.pt")
    assert list(one.leads) == ["I"] and len(six.leads) == 6
    assert read_model_file(pipeline_run / "s1" / "student.pt")["distilled"] is True
    assert read_model_file(pipeline_run / "s6" / "student.pt")["distilled"] is False
    with torch.no_grad():
        out = one.predict(torch.randn(2, 1, 1000))
    assert out.shape == (2, len(one.outputs) + 1) and ((out[:, :-1] >= 0) & (out[:, :-1] <= 1)).all()


def test_evaluation_reports_every_model_with_intervals(pipeline_run):
    results = json.loads((pipeline_run / "eval" / "metrics.json").read_text())
    models = results["models"]
    assert "teacher (all modalities)" in models and "teacher (12-lead ECG only)" in models
    assert sum(m["kind"] == "student" for m in models.values()) == 2
    auroc = models["teacher (all modalities)"]["triage"]["auroc"]
    assert {"value", "ci_low", "ci_high"} <= set(auroc)
    for key in ("auprc", "balanced_accuracy", "f1", "sensitivity", "specificity"):
        assert key in models["teacher (all modalities)"]["triage"]
    assert {"before", "after", "temperature"} <= set(models["teacher (all modalities)"]["calibration"])
    assert "mae" in models["teacher (all modalities)"]["lvef"]
    assert {r["subgroup"] for rows in results["subgroups"].values() for r in rows} == {"sex", "age"}
    assert "recall@1" in results["stage2"]["retrieval_ecg_to_echo"]
    assert {"R-peak", "T end", "end-diastole", "end-systole"} <= set(results["phases"])
    assert set(results["fusion_analysis"]["rsv_mean"]) == {"ecg", "echo", "labs", "note"}
    for name in ("roc_triage", "reliability", "label_fraction", "attention_rollout", "rsv"):
        assert (pipeline_run / "eval" / "figures" / f"{name}.png").stat().st_size > 0


def test_report_is_one_self_contained_html_file(pipeline_run, tmp_path):
    html = (pipeline_run / "eval" / "report.html").read_text()
    for heading in ("Results at a glance", "Cohort", "Calibration", "Subgroups", "Stage 2", "Methods"):
        assert heading in html
    assert "data:image/png;base64," in html and "http://" not in html
    assert cli("report", str(pipeline_run / "eval"), "-o", str(tmp_path / "r.html")) == 0
    assert (tmp_path / "r.html").read_text().count("<h2") == html.count("<h2")


def test_commands_refuse_bad_input_in_one_line(cohort_dir, tmp_path, capsys):
    assert cli("finetune", "--cohort", str(tmp_path), "--aligned", str(tmp_path / "none.pt"), "-o",
               str(tmp_path / "t")) == 2
    assert "no such model file" in capsys.readouterr().err
    assert cli("report", str(tmp_path)) == 2
    assert "metrics.json" in capsys.readouterr().err


def test_stage1_must_not_share_the_cohort_seed():
    from cardiodistill.stages.demo import stage1_sources_differ

    stage1_sources_differ(load_config("quick"))
    with pytest.raises(ConfigError, match="test patients"):
        stage1_sources_differ(load_config("quick", ['pretrain.ecg.sources=[{"kind": "synth", "seed": 0}]']))


def test_alignment_under_ddp_with_two_cpu_processes(cohort, tmp_path):
    cfg = tiny_config(**{"align.optim.max_steps": 2, "trainer.accelerator": "cpu", "trainer.devices": 2,
                         "trainer.strategy": "ddp_spawn", "trainer.threads": 1, "align.optim.batch_size": 4})
    ecg = encoder_config(None, cfg.align.ecg_model, "e")
    video = encoder_config(None, cfg.align.video_model, "v")
    summary = run_align(cfg, cohort, tmp_path / "ddp", ecg=ecg, video=video, show_bar=False)
    assert summary["steps"] == 2
    assert (tmp_path / "ddp" / "aligned.pt").is_file()


def test_fusion_trains_under_bf16_autocast_with_gradient_checkpointing(cohort):
    cfg = tiny_config()
    fusion = create_model("cardio_fusion", ecg=encoder_config(None, cfg.align.ecg_model, "e")[0],
                          echo=encoder_config(None, cfg.align.video_model, "v")[0],
                          labs={"name": "labs_encoder", "dim": 32, "depth": 1, "heads": 2,
                                "n_labs": len(cohort.cache.lab_names)},
                          note={"name": "note_encoder", "dim": 32, "depth": 1, "heads": 2, "max_tokens": 64},
                          lab_stats=cohort_lab_stats(cohort), dim=32, depth=2, heads=2, grad_checkpointing=True)
    batch = next(iter(torch.utils.data.DataLoader(cohort.dataset("train"), batch_size=4)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fusion(batch)
    out.pooled.float().sum().backward()
    assert all(p.grad is not None for p in fusion.blocks.parameters())


def test_student_can_start_from_the_teachers_ecg_encoder(pipeline_run, cohort, tmp_path):
    from cardiodistill.models import EncoderBackbone
    from cardiodistill.stages.stage3 import run_distill

    cfg = tiny_config(**{"distill.backbone": '{"name": "ecg_encoder"}', "distill.min_steps": 1})
    summary = run_distill(cfg, cohort, pipeline_run / "teacher", tmp_path / "s", n_leads=2, show_bar=False)
    student = load_model(tmp_path / "s" / "student.pt")
    assert summary["steps"] > 0 and tuple(student.leads) == ("I", "II")
    assert isinstance(student.backbone, EncoderBackbone)
    with torch.no_grad():
        assert torch.isfinite(student.predict(torch.randn(2, 2, 1000))).all()


def test_student_can_start_from_a_stage_one_encoder_file(cohort, tmp_path):
    from cardiodistill.models import EcgConvEncoder
    from cardiodistill.stages.stage3 import run_distill
    from cardiodistill.train.checkpoints import save_model

    encoder = create_model("ecg_cnn", widths=[8, 16], depth_per_stage=1, dim=16)
    save_model(encoder, tmp_path / "encoder.pt")
    cfg = tiny_config(**{"distill.backbone": f'{{"name": "pretrained", "path": "{tmp_path / "encoder.pt"}"}}',
                         "distill.min_steps": 1, "distill.optim.lr": 1e-12, "distill.optim.warmup_steps": 1,
                         "distill.layer_decay": 0.5})
    run_distill(cfg, cohort, None, tmp_path / "s", n_leads=1, distil=False, show_bar=False)
    student = load_model(tmp_path / "s" / "student.pt")
    last = read_checkpoint(tmp_path / "s" / "checkpoints" / "last.ckpt")  # the backbone's rate decays by layer
    rates = {g["initial_lr"] for g in last["optimizer_states"][0]["param_groups"]}
    assert last["hyper_parameters"]["layer_decay"] == 0.5 and len(rates) == 1 + 4  # heads; stem, 2 stages, embedding
    assert isinstance(student.backbone.encoder, EcgConvEncoder) and tuple(student.leads) == ("I",)
    start = encoder.state_dict()
    for name, value in student.backbone.encoder.state_dict().items():  # a vanishing rate: the file's weights
        if value.is_floating_point() and "running" not in name:
            torch.testing.assert_close(value, start[name], atol=1e-6, rtol=0)
    bad = tiny_config(**{"distill.backbone": '{"name": "pretrained"}'})
    with pytest.raises(ConfigError, match="path of a stage-1 encoder"):
        run_distill(bad, cohort, None, tmp_path / "t", n_leads=1, distil=False, show_bar=False)


STAGE1_TINY = [
    'pretrain.ecg.model={"name": "ecg_mae_tiny", "fs": 100.0, "patch_size": 50, "dim": 32, "depth": 1, "heads": 2, '
    '"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2}',
    'pretrain.ecg.sources=[{"kind": "synth", "patients": 8, "seed": 1}]',
    "pretrain.ecg.optim.max_steps=2", "pretrain.ecg.optim.batch_size=8", "pretrain.ecg.optim.warmup_steps=1",
    # the quick preset's kind of echo encoder (video_cnn under SimCLR), small
    'pretrain.video.model={"name": "video_cnn", "size": 32, "frames": 8, "widths": [8, 16], "dim": 32}',
    'pretrain.video.sources=[{"kind": "synth", "patients": 8, "seed": 1}]',
    "pretrain.video.optim.max_steps=2", "pretrain.video.optim.batch_size=4", "pretrain.video.optim.warmup_steps=1",
    "synth.patients=48", "synth.echo.size=48", "synth.splits.train=0.5", "synth.splits.val=0.25",
    "synth.splits.test=0.25", "distill.leads=[1, 6]",
]


def test_demo_runs_all_stages_and_writes_the_report_and_the_exported_student(tmp_path):
    out = tmp_path / "demo"
    sets = [arg for item in TINY + STAGE1_TINY for arg in ("--set", item)]
    assert cli("demo", "--out", str(out), *sets) == 0
    for path in ("stage1-ecg/encoder.pt", "stage1-video/encoder.pt", "align/aligned.pt", "teacher/teacher.pt",
                 "student-1-lead/student.pt", "student-6-lead/student.pt", "evaluation/metrics.json", "report.html",
                 "run.json"):
        assert (out / path).is_file(), path
    # the exported student carries its contract and reads the cohort's handheld files without torch's help
    from cardiodistill.edge import EdgeModel
    from cardiodistill.edge.predict import predict_file

    edge = EdgeModel.load(out / "student.onnx")
    assert edge.spec.leads == ("I",) and edge.spec.gate["precision"] == edge.spec.precision
    assert edge.spec.triage == "triage" and 0 < edge.spec.thresholds["triage"] < 1
    row = predict_file(edge, next((out / "cohort" / "mobile").glob("*.hea")))
    assert row["error"] is None and 0 <= row["triage_probability"] <= 1
    results = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert {"student, 1 lead", "student, 6 leads", "teacher (all modalities)"} <= set(results["models"])
    # an interrupted demo (no run.json yet) continues: every finished stage is kept, nothing retrains
    mtime = (out / "align" / "aligned.pt").stat().st_mtime_ns
    (out / "run.json").unlink()
    assert cli("demo", "--out", str(out), *sets) == 0
    assert (out / "align" / "aligned.pt").stat().st_mtime_ns == mtime


def test_probe_mode_trains_the_heads_only(pipeline_run, cohort, tmp_path):
    from cardiodistill.stages.stage3 import run_finetune

    cfg = tiny_config(**{"finetune.mode": "probe", "finetune.modalities": "[ecg, labs]"})
    run_finetune(cfg, cohort, tmp_path / "t", aligned=pipeline_run / "align" / "aligned.pt", show_bar=False)
    teacher = load_model(tmp_path / "t" / "teacher.pt")
    aligned = load_model(pipeline_run / "align" / "aligned.pt")
    assert teacher.fusion.modalities == ("ecg", "labs")
    for name, value in teacher.fusion.encoders["ecg"].state_dict().items():
        assert torch.equal(value, aligned.encoders["ecg"].state_dict()[name]), name


def test_the_teacher_starts_its_labs_encoder_afresh_unless_told_otherwise(pipeline_run, cohort, tmp_path):
    from cardiodistill.stages.stage3 import fresh_encoders, run_finetune
    from cardiodistill.train.checkpoints import read_model_file

    aligned_file = read_model_file(pipeline_run / "align" / "aligned.pt")
    config, state = dict(aligned_file["model_config"]), aligned_file["state_dict"]
    before = torch.random.get_rng_state()
    new = fresh_encoders(config, state, ["labs"], seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)  # the global random state is left alone
    labs = [k for k in state if k.startswith("encoders.labs.")]
    assert labs and all(torch.equal(new[k], fresh_encoders(config, state, ["labs"], seed=3)[k]) for k in labs)
    assert any(not torch.equal(new[k], state[k]) for k in labs)
    assert all(torch.equal(new[k], state[k]) for k in state if k not in labs)

    # probe mode leaves the encoders as they start: the default draws the labs encoder anew, [] keeps stage 2's
    for fresh, folder in (("[labs]", "fresh"), ("[]", "kept")):
        cfg = tiny_config(**{"finetune.mode": "probe", "finetune.fresh_encoders": fresh})
        run_finetune(cfg, cohort, tmp_path / folder, aligned=pipeline_run / "align" / "aligned.pt", show_bar=False)
    start = fresh_encoders(config, state, ["labs"], seed=tiny_config().trainer.seed)
    for folder, expected in (("fresh", start), ("kept", state)):
        got = read_model_file(tmp_path / folder / "teacher.pt")["state_dict"]
        assert all(torch.equal(got[f"fusion.{k}"], expected[k]) for k in labs), folder


def test_attention_maps_are_recorded_from_one_forward_pass(pipeline_run, cohort):
    fusion = load_model(pipeline_run / "align" / "aligned.pt")
    batch = next(iter(torch.utils.data.DataLoader(cohort.dataset("test"), batch_size=3)))
    batch["has_echo"][0] = False  # one study without its echo: its echo tokens get no attention
    maps, out = fusion.attention_maps(batch)
    assert len(maps) == len(fusion.blocks) and maps[0].shape[-1] == out.tokens.shape[1]
    torch.testing.assert_close(maps[0].sum(-1), torch.ones_like(maps[0].sum(-1)))
    echo = out.token_modality == fusion.modalities.index("echo")
    assert (maps[0][0][..., echo] == 0).all()
    with torch.no_grad():
        torch.testing.assert_close(fusion(batch).pooled, out.pooled)


def test_a_cohort_without_echo_or_labs_aligns_the_modalities_it_has(cohort_dir, tmp_path, monkeypatch):
    import pandas as pd

    monkeypatch.setenv("CARDIODISTILL_ALLOW_OUTSIDE_PATHS", "1")  # the manifest names the other cohort's files

    manifest = pd.read_csv(cohort_dir / "manifest.csv")
    for column in ("ecg_path", "mobile_path", "note_path"):
        manifest[column] = [str(cohort_dir / p) for p in manifest[column]]
    manifest["echo_path"] = ""
    (tmp_path / "c").mkdir()
    manifest.to_csv(tmp_path / "c" / "manifest.csv", index=False)  # no labs.csv, no echo files
    cfg = tiny_config(**{"align.optim.max_steps": 1})
    ecg = encoder_config(None, cfg.align.ecg_model, "e")
    video = encoder_config(None, cfg.align.video_model, "v")
    data = open_cohort(cfg, tmp_path / "c", paired_spec(ecg[0], video[0]))
    from cardiodistill.errors import ConfigError

    with pytest.raises(ConfigError, match="temporal needs the ecg and echo"):
        run_align(cfg, data, tmp_path / "a", ecg=ecg, video=video, show_bar=False)
    cfg = tiny_config(**{"align.optim.max_steps": 1, "align.objectives": "[clip, multimae]"})
    run_align(cfg, data, tmp_path / "a", ecg=ecg, video=video, show_bar=False)
    assert load_model(tmp_path / "a" / "aligned.pt").modalities == ("ecg", "note")


def test_heads_fitted_on_the_frozen_embedding_before_fine_tuning(pipeline_run, cohort):
    """LP-FT: the probe heads reproduce a logistic regression on the standardised frozen embedding;
    after training the standardisation follows the final embedding."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from cardiodistill.train.teacher import init_heads_from_probe, predict_studies, recalibrate_standardise

    teacher = load_model(pipeline_run / "teacher" / "teacher.pt")
    train = cohort.with_targets(cohort.dataset("train"))
    # targets a linear function of the embedding can express: the probe must find them
    teacher.eval()
    seen = predict_studies(teacher, train, keys=("embedding",))
    emb, rows = seen["embedding"], seen["index"]
    score = (emb - emb.mean(0)) @ np.random.default_rng(0).normal(size=emb.shape[1])
    targets = np.full((len(cohort.cache), len(teacher.outputs)), np.nan, np.float32)  # indexed by cache row
    targets[rows, 0] = y = (score > np.median(score)).astype(np.float32)
    train = cohort.with_targets(cohort.dataset("train"), {"targets": targets})
    report = init_heads_from_probe(teacher, train, c=10.0)
    assert report["n"] == len(emb) and report["fitted"][0] == teacher.outputs[0]
    logits = predict_studies(teacher, train, keys=("logits",))["logits"][:, 0]
    assert roc_auc_score(y, logits) > 0.95
    z = (emb - emb.mean(0)) / np.sqrt(emb.var(0) + teacher.standardise.eps)
    expected = LogisticRegression(C=10.0, max_iter=5000).fit(z, y).decision_function(z)
    np.testing.assert_allclose(logits, expected, atol=1e-3)

    # after fine-tuning, the heads' standardisation is reset to the final embedding's statistics
    teacher.standardise.running_mean.add_(1.0)
    recalibrate_standardise(teacher, train)
    np.testing.assert_allclose(teacher.standardise.running_mean.numpy(), emb.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(teacher.standardise.running_var.numpy(), emb.var(0), rtol=1e-3, atol=1e-9)


def _linear_targets(teacher, cohort, seed=0):
    """Targets ``[cache rows, outputs]``: triage on every study, set by a linear function of ``teacher``'s fused
    embedding plus noise; every other output unknown (NaN)."""
    from cardiodistill.train.teacher import predict_studies

    teacher.eval()
    seen = predict_studies(teacher, cohort.dataset(np.arange(len(cohort.cache))), keys=("embedding",))
    emb, rows = seen["embedding"], seen["index"]
    rng = np.random.default_rng(seed)
    score = (emb - emb.mean(0)) / emb.std(0).clip(1e-12) @ rng.normal(size=emb.shape[1])
    score += rng.normal(scale=score.std(), size=len(score))
    targets = np.full((len(cohort.cache), len(teacher.outputs)), np.nan, np.float32)
    targets[rows, 0] = score > np.median(score)
    return targets


def test_each_probe_head_takes_the_l2_strength_with_the_lowest_validation_loss(pipeline_run, cohort):
    """With validation studies, an output's inverse L2 strength is the one of the grid whose logistic regression
    has the lowest log loss on them (checked against sklearn fits of every candidate); without, ``c``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    from cardiodistill.train.teacher import init_heads_from_probe, predict_studies

    teacher = load_model(pipeline_run / "teacher" / "teacher.pt")
    targets = _linear_targets(teacher, cohort)
    train, val = (cohort.with_targets(cohort.dataset(split), {"targets": targets}) for split in ("train", "val"))
    grid = [1e-3, 0.1, 10.0]
    report = init_heads_from_probe(teacher, train, c=0.5, val=val, grid=grid)
    emb = {k: predict_studies(teacher, d, keys=("embedding",)) for k, d in (("train", train), ("val", val))}
    mean, var = emb["train"]["embedding"].mean(0), emb["train"]["embedding"].var(0)
    z = {k: (e["embedding"] - mean) / np.sqrt(var + teacher.standardise.eps) for k, e in emb.items()}
    y = {k: targets[e["index"], 0] for k, e in emb.items()}
    losses = {g: log_loss(y["val"], LogisticRegression(C=g, max_iter=5000).fit(z["train"], y["train"])
                          .predict_proba(z["val"])[:, 1]) for g in grid}
    assert report["c"][teacher.outputs[0]] == min(losses, key=losses.get)
    assert len(set(losses.values())) == len(grid)  # the candidates differ, so the choice is a real one
    assert init_heads_from_probe(teacher, train, c=0.5)["c"][teacher.outputs[0]] == 0.5
    assert init_heads_from_probe(teacher, train, c=0.5, val=val, grid=[])["c"][teacher.outputs[0]] == 0.5


def test_the_teacher_keeps_its_probe_start_when_fine_tuning_loses_on_validation(pipeline_run, cohort, tmp_path):
    """The fine-tuned teacher and its probe start are weighed on the validation studies' loss, and the lower
    is kept, whichever it is; ``run_finetune`` records the choice in ``teacher.pt`` (the quick preset, whose
    validation split is too small to choose on, keeps the fine-tuned teacher and one strength)."""
    from cardiodistill.stages.stage3 import keep_probe_if_better, run_finetune
    from cardiodistill.train.teacher import TeacherModule, validation_loss

    quick = read_model_file(pipeline_run / "teacher" / "teacher.pt")
    assert quick["kept"] == "finetune" and set(quick["probe_c"].values()) == {tiny_config().finetune.probe_c}
    cfg = tiny_config(**{"finetune.keep_probe": "true", "finetune.probe_grid": "[0.01, 1.0]"})
    run_finetune(cfg, cohort, tmp_path / "t", aligned=pipeline_run / "align" / "aligned.pt", show_bar=False)
    data = read_model_file(tmp_path / "t" / "teacher.pt")
    assert set(data["probe_c"].values()) <= {0.01, 1.0}
    better = data["val_loss_probe"] < data["val_loss_finetune"]
    assert data["kept"] == ("probe" if better else "finetune")

    val = cohort.with_targets(cohort.dataset("val"))
    module = TeacherModule(data["model_config"])
    module.model.load_state_dict(data["state_dict"])
    good = {k: v.clone() for k, v in module.model.state_dict().items()}
    bad = {**good, "head.bias": good["head.bias"] + 20.0}  # every output called positive, far off
    module.model.load_state_dict(bad)  # the "fine-tuned" weights are the bad ones: the probe start comes back
    kept = keep_probe_if_better(module, good, val)
    assert kept["kept"] == "probe" and kept["val_loss_probe"] < kept["val_loss_finetune"]
    assert all(torch.equal(v, good[k]) for k, v in module.model.state_dict().items())
    assert kept["val_loss_probe"] == pytest.approx(validation_loss(module, val)["loss"])
    kept = keep_probe_if_better(module, bad, val)  # now the start is the bad one: the fine-tuned weights stay
    assert kept["kept"] == "finetune"
    assert all(torch.equal(v, good[k]) for k, v in module.model.state_dict().items())


def test_held_norm_statistics_keep_the_probe_start_while_the_rest_trains(pipeline_run, cohort, tmp_path):
    """``finetune.freeze_norm_stats``: the batch-norm layers stay in eval mode whatever put the model in training
    mode (Lightning does not call ``train()`` when a fit starts; the probe's passes do), so a fine-tuning run that
    moves no weight ends exactly where its probe start was (on the value preset's cohort, without the hold, such a
    run's validation loss went from 0.487 to 1.85: docs/benchmarks.md)."""
    from cardiodistill.stages.stage3 import run_finetune
    from cardiodistill.train.teacher import TeacherModule

    data = read_model_file(pipeline_run / "teacher" / "teacher.pt")
    module = TeacherModule(data["model_config"], freeze_norm_stats=True)
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and module.training
    module.model.train()  # what the probe's passes leave behind
    module.on_train_epoch_start()
    assert not any(m.training for m in norms) and module.model.fusion.training
    module.eval(), module.train()
    assert not any(m.training for m in norms)

    settings = {"finetune.keep_probe": "true", "finetune.probe_grid": "[0.1]", "finetune.modality_dropout": "0",
                "finetune.optim.lr": "1e-12"}
    cfg = tiny_config(**settings, **{"finetune.freeze_norm_stats": "true"})
    run_finetune(cfg, cohort, tmp_path / "t", aligned=pipeline_run / "align" / "aligned.pt", show_bar=False)
    held = read_model_file(tmp_path / "t" / "teacher.pt")
    assert held["val_loss_finetune"] == pytest.approx(held["val_loss_probe"], abs=1e-5)


def test_a_stage_job_trains_the_same_model_whatever_ran_before_it(pipeline_run, cohort, tmp_path):
    """Each job seeds itself: the ablation trains many models in one process, and a model's initial
    weights must not depend on which others were trained before it."""
    from cardiodistill.stages.stage3 import run_distill

    cfg = tiny_config()
    run_distill(cfg, cohort, None, tmp_path / "a", n_leads=1, distil=False, show_bar=False)
    torch.rand(1000), np.random.rand(1000)  # what another job would consume
    run_distill(cfg, cohort, None, tmp_path / "b", n_leads=1, distil=False, show_bar=False)
    a, b = (read_model_file(tmp_path / k / "student.pt")["state_dict"] for k in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


DDP = {"trainer.accelerator": "cpu", "trainer.devices": 2, "trainer.strategy": "ddp_spawn", "trainer.threads": 1}


def test_teacher_and_student_under_ddp_with_two_cpu_processes(pipeline_run, cohort, tmp_path):
    """Stage 3 on two CPU processes (gloo): the teacher, from the aligned model, and a distilled student."""
    from cardiodistill.stages.stage3 import run_distill, run_finetune

    cfg = tiny_config(**DDP, **{"finetune.optim.batch_size": 4, "distill.optim.batch_size": 4})  # 12 labelled studies
    teacher = run_finetune(cfg, cohort, tmp_path / "teacher", aligned=pipeline_run / "align" / "aligned.pt",
                           show_bar=False)
    assert teacher["steps"] > 0 and (tmp_path / "teacher" / "teacher.pt").is_file()
    assert (tmp_path / "teacher" / "teacher_outputs.npz").is_file()
    student = run_distill(cfg, cohort, tmp_path / "teacher", tmp_path / "student", n_leads=1, show_bar=False)
    assert student["steps"] > 0
    with torch.no_grad():
        assert torch.isfinite(load_model(tmp_path / "student" / "student.pt").predict(torch.randn(2, 1, 1000))).all()


def test_align_launched_by_torchrun_on_two_cpu_processes(cohort_dir, tmp_path):
    """The multi-node recipe of README's Scale section, on one machine: torchrun starts two processes,
    each runs the command (both build the same paired cache; the first in place is kept), Lightning
    takes the ranks from the launcher, one aligned model is written and one process speaks."""
    out, cache = tmp_path / "align", tmp_path / "cache"
    sets = [arg for item in TINY for arg in ("--set", item)]
    ddp = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp", "trainer.threads=1",
           "align.optim.batch_size=4", f"pipeline.cache_dir={cache}"]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
         "cardiodistill.cli", "align", "--cohort", str(cohort_dir), "-o", str(out), *sets,
         *(arg for item in ddp for arg in ("--set", item))],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_model_file(out / "aligned.pt")["steps"] == 3
    assert proc.stderr.count("alignment finished") == 1 and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["align", "cache"]  # no build left behind


class _Crash(L.Callback):
    """A job killed at ``at_step``."""

    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.at_step:
            raise RuntimeError("node lost")


@pytest.fixture(scope="module")
def stream_dir(cohort, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stream") / "cohort"
    write_stream(cohort.cache, out, labelled=tiny_config().finetune.labelled, chunk_bytes="100kB")
    return out


def test_alignment_from_a_stream_resumes_mid_epoch_bit_for_bit(cohort, stream_dir, tmp_path):
    """Stage 2 on the streaming format: 20 training studies in batches of 4 (5 steps an epoch), killed at step 3
    after the checkpoint of step 2, run again: the same weights as the run that was never stopped."""
    cfg = tiny_config(**{"align.optim.max_steps": 7, "trainer.checkpoint_every": 2, "align.optim.batch_size": 4})
    ecg = encoder_config(None, cfg.align.ecg_model, "e")
    video = encoder_config(None, cfg.align.video_model, "v")
    data = open_stream(stream_dir, paired_spec(ecg[0], video[0]))
    assert cohort_lab_stats(data) == cohort_lab_stats(cohort)  # the model is sized and normalised as from the cache
    summary = run_align(cfg, data, tmp_path / "straight", ecg=ecg, video=video, show_bar=False)
    assert summary["steps"] == 7 and summary["n_train"] == len(cohort.splits["train"])
    with pytest.raises(RuntimeError, match="node lost"):
        run_align(cfg, data, tmp_path / "resumed", ecg=ecg, video=video, show_bar=False, callbacks=[_Crash(3)])
    run_align(cfg, data, tmp_path / "resumed", ecg=ecg, video=video, show_bar=False)
    reference = load_model(tmp_path / "straight" / "aligned.pt").state_dict()
    resumed = load_model(tmp_path / "resumed" / "aligned.pt").state_dict()
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)


def test_the_stream_command_writes_what_align_reads(cohort_dir, tmp_path):
    sets = [arg for item in TINY + ["align.optim.max_steps=1"] for arg in ("--set", item)]
    assert cli("stream", "--cohort", str(cohort_dir), "-o", str(tmp_path / "s"), *sets) == 0
    assert (tmp_path / "s" / "stream.json").is_file()
    assert cli("align", "--stream", str(tmp_path / "s"), "-o", str(tmp_path / "a"), *sets) == 0
    assert load_model(tmp_path / "a" / "aligned.pt").modalities == ("ecg", "echo", "labs", "note")
    assert cli("align", "--stream", str(tmp_path / "s"), "--cohort", str(cohort_dir), "-o", str(tmp_path / "b")) != 0


def test_a_student_distils_from_a_stream_with_the_teachers_cached_targets(pipeline_run, cohort, stream_dir):
    """Stage 3b from a stream: each training study arrives with the targets and teacher outputs the cohort path
    gives it (from teacher_outputs.npz, by cache row)."""
    from cardiodistill.stages.stage3 import _stream_students, _teacher_arrays, _teacher_outputs

    cfg = tiny_config()
    extra, frame, train, _, n_train = _stream_students(cfg, open_stream(stream_dir), pipeline_run / "teacher", True)
    assert n_train == len(cohort.splits["train"]) and frame[1] == cohort.outputs
    reference = cohort.with_targets(cohort.dataset(cohort.splits["train"], modalities=("mobile",)),
                                    _teacher_arrays(_teacher_outputs(pipeline_run / "teacher")[1],
                                                    cohort.splits["train"]))
    by_row = {int(reference[i]["index"]): reference[i] for i in range(len(reference))}
    for i in range(3):
        item = train[i]
        want = by_row[int(item["index"])]
        for name in ("mobile", "targets", "lvef_z", "t_logits", "t_lvef", "t_embedding"):
            assert torch.equal(torch.nan_to_num(item[name]), torch.nan_to_num(want[name])), name
    with pytest.raises(ConfigError, match="labels-only student reads the cohort"):
        _stream_students(cfg, open_stream(stream_dir), pipeline_run / "teacher", False)


def test_the_teacher_and_students_train_from_a_stream(pipeline_run, stream_dir, tmp_path):
    """finetune --stream and distill --stream: the teacher learns from the stream's labelled studies and caches
    what its students need, the same targets, splits and statistics as the teacher of the cohort folder."""
    sets = [arg for item in TINY for arg in ("--set", item)]
    assert cli("finetune", "--stream", str(stream_dir), "--aligned", str(pipeline_run / "align" / "aligned.pt"),
               "-o", str(tmp_path / "t"), *sets) == 0
    with np.load(tmp_path / "t" / "teacher_outputs.npz") as streamed, \
            np.load(pipeline_run / "teacher" / "teacher_outputs.npz") as cached:
        assert sorted(streamed["index"]) == sorted(cached["index"])
        for name in ("targets", "lvef_z", "split", "outputs", "lvef_stats", "source"):
            assert np.array_equal(streamed[name], cached[name], equal_nan=name in ("targets", "lvef_z")), name
    teacher = read_model_file(tmp_path / "t" / "teacher.pt")
    assert teacher["n_labelled"] == read_model_file(pipeline_run / "teacher" / "teacher.pt")["n_labelled"]
    assert cli("distill", "--stream", str(stream_dir), "--teacher", str(tmp_path / "t"), "--leads", "1",
               "-o", str(tmp_path / "s"), *sets) == 0
    student = read_model_file(tmp_path / "s" / "student.pt")
    assert student["distilled"] and student["n_train"] == open_stream(stream_dir).meta["splits"]["train"]
    # the stream's labelled studies were chosen with finetune.labelled; another share is refused
    assert cli("finetune", "--stream", str(stream_dir), "--aligned", str(pipeline_run / "align" / "aligned.pt"),
               "-o", str(tmp_path / "u"), *sets, "--set", "finetune.labelled=0.9") != 0


def test_distillation_from_a_stream_under_ddp_with_two_cpu_processes(pipeline_run, stream_dir, tmp_path):
    from cardiodistill.stages.stage3 import run_distill

    cfg = tiny_config(**{"distill.min_steps": 2, "trainer.accelerator": "cpu", "trainer.devices": 2,
                         "trainer.strategy": "ddp_spawn", "trainer.threads": 1, "distill.optim.batch_size": 4})
    summary = run_distill(cfg, open_stream(stream_dir), pipeline_run / "teacher", tmp_path / "ddp", n_leads=1,
                          show_bar=False)
    assert summary["steps"] >= 2 and (tmp_path / "ddp" / "student.pt").is_file()


def test_the_teacher_from_a_stream_under_ddp_with_two_cpu_processes(pipeline_run, stream_dir, tmp_path):
    """Two ranks share the labelled studies; the teacher's outputs afterwards cover every study once."""
    from cardiodistill.stages.stage3 import run_finetune

    cfg = tiny_config(**{"finetune.min_steps": 2, "trainer.accelerator": "cpu", "trainer.devices": 2,
                         "trainer.strategy": "ddp_spawn", "trainer.threads": 1, "finetune.optim.batch_size": 2})
    summary = run_finetune(cfg, open_stream(stream_dir), tmp_path / "ddp",
                           aligned=pipeline_run / "align" / "aligned.pt", show_bar=False)
    assert summary["steps"] >= 2
    with np.load(tmp_path / "ddp" / "teacher_outputs.npz") as saved:
        assert sorted(saved["index"]) == list(range(open_stream(stream_dir).n_studies))


def test_the_teacher_from_a_stream_launched_by_torchrun(pipeline_run, stream_dir, tmp_path):
    """Under torchrun's ddp (unlike ddp_spawn) every process is still in the process group when the trained teacher
    passes over the studies: each must read the whole stream there (``whole=True``), or the cache would hold one
    rank's share. One process writes it and speaks."""
    out = tmp_path / "teacher"
    sets = [*TINY, "finetune.min_steps=2", "finetune.optim.batch_size=2", "trainer.accelerator=cpu",
            "trainer.devices=2", "trainer.strategy=ddp", "trainer.threads=1"]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
         "cardiodistill.cli", "finetune", "--stream", str(stream_dir), "--aligned",
         str(pipeline_run / "align" / "aligned.pt"), "-o", str(out), *(arg for item in sets for arg in ("--set", item))],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out / "teacher_outputs.npz") as saved:
        assert sorted(saved["index"]) == list(range(open_stream(stream_dir).n_studies))
    assert "Traceback" not in proc.stderr

def test_stage_one_pretrains_the_ecg_encoder_from_a_stream(stream_dir, tmp_path):
    """pretrain ecg --stream: the stream's 12-lead ECGs as stage 1's windows; an encoder that wants other
    inputs is refused with both specs named."""
    mae = TINY_MAE
    sets = ["--set", f"pretrain.ecg.model={mae}", "--set", "pretrain.ecg.optim.max_steps=2",
            "--set", "pretrain.ecg.optim.batch_size=4", "--set", "trainer.threads=1"]
    assert cli("pretrain", "ecg", "--stream", str(stream_dir), "--out", str(tmp_path / "pre"), *sets) == 0
    run = json.loads((tmp_path / "pre" / "run.json").read_text())
    assert run["n_train_windows"] == open_stream(stream_dir).meta["splits"]["train"]
    assert read_model_file(tmp_path / "pre" / "encoder.pt")["steps"] == 2
    assert not (tmp_path / "pre" / "windows").exists()  # no window cache: the stream is read as it is
    other = mae.replace("fs: 100.0", "fs: 250.0")
    assert cli("pretrain", "ecg", "--stream", str(stream_dir), "--out", str(tmp_path / "bad"), *sets,
               "--set", f"pretrain.ecg.model={other}") != 0


def test_stage_one_from_a_stream_under_ddp_with_two_cpu_processes(stream_dir, tmp_path):
    from cardiodistill.stages.stage1 import pretrain_ecg

    mae = TINY_MAE
    cfg = load_config("quick", [f"pretrain.ecg.model={mae}", "pretrain.ecg.optim.max_steps=2",
                                "pretrain.ecg.optim.batch_size=4", "trainer.accelerator=cpu", "trainer.devices=2",
                                "trainer.strategy=ddp_spawn", "trainer.threads=1"])
    summary = pretrain_ecg(cfg, tmp_path / "ddp", stream=open_stream(stream_dir), show_bar=False)
    assert summary["steps"] == 2 and (tmp_path / "ddp" / "encoder.pt").is_file()


TINY_VIDEO_MAE = ("{name: video_mae_tiny, size: 32, frames: 8, dim: 32, depth: 1, heads: 2, decoder_dim: 32, "
                  "decoder_depth: 1}")


def test_stage_one_pretrains_the_video_encoder_from_a_stream(stream_dir, tmp_path):
    """pretrain video --stream: the stream's echo clips as stage 1's clips, no clip cache of its own; an encoder
    that wants other clips is refused with both specs named."""
    sets = ["--set", f"pretrain.video.model={TINY_VIDEO_MAE}", "--set", "pretrain.video.optim.max_steps=2",
            "--set", "pretrain.video.optim.batch_size=4", "--set", "trainer.threads=1"]
    assert cli("pretrain", "video", "--stream", str(stream_dir), "--out", str(tmp_path / "pre"), *sets) == 0
    run = json.loads((tmp_path / "pre" / "run.json").read_text())
    assert run["n_train_clips"] == open_stream(stream_dir).meta["splits"]["train"]
    saved = read_model_file(tmp_path / "pre" / "encoder.pt")
    assert saved["steps"] == 2 and saved["stream"] == str(stream_dir)
    assert not (tmp_path / "pre" / "clips").exists()
    other = TINY_VIDEO_MAE.replace("size: 32", "size: 48")
    assert cli("pretrain", "video", "--stream", str(stream_dir), "--out", str(tmp_path / "bad"), *sets,
               "--set", f"pretrain.video.model={other}") != 0


def test_stage_one_video_from_a_stream_under_ddp_with_two_cpu_processes(stream_dir, tmp_path):
    from cardiodistill.stages.stage1 import pretrain_video

    cfg = load_config("quick", [f"pretrain.video.model={TINY_VIDEO_MAE}", "pretrain.video.optim.max_steps=2",
                                "pretrain.video.optim.batch_size=4", "trainer.accelerator=cpu", "trainer.devices=2",
                                "trainer.strategy=ddp_spawn", "trainer.threads=1"])
    summary = pretrain_video(cfg, tmp_path / "ddp", stream=open_stream(stream_dir), show_bar=False)
    assert summary["steps"] == 2 and (tmp_path / "ddp" / "encoder.pt").is_file()


def test_the_simulator_writes_the_stream_with_synth_stream(tmp_path):
    """synth.stream=true (the full preset's) writes OUT/stream for the align encoders' inputs beside the files."""
    sets = [arg for item in TINY + ["synth.chunk_size=16", "synth.echo.size=48", "synth.stream=true",
                                    "synth.splits.train=0.5", "synth.splits.val=0.25", "synth.splits.test=0.25"]
            for arg in ("--set", item)]
    assert cli("synth", "-o", str(tmp_path / "c"), "--patients", "16", *sets) == 0
    cfg = load_config("quick", TINY)
    ecg = encoder_config(None, cfg.align.ecg_model, "e")
    video = encoder_config(None, cfg.align.video_model, "v")
    stream = open_stream(tmp_path / "c" / "stream", paired_spec(ecg[0], video[0]))  # the encoders' spec, or it raises
    manifest = pd.read_csv(tmp_path / "c" / "manifest.csv")
    assert stream.n_studies == 16 and stream.meta["labelled_fraction"] == cfg.finetune.labelled
    per_split = {s: n for s, n in stream.meta["splits"].items() if s != "labelled"}
    assert per_split == manifest["split"].value_counts().to_dict()


def test_alignment_from_a_stream_under_ddp_with_two_cpu_processes(stream_dir, tmp_path):
    cfg = tiny_config(**{"align.optim.max_steps": 2, "trainer.accelerator": "cpu", "trainer.devices": 2,
                         "trainer.strategy": "ddp_spawn", "trainer.threads": 1, "align.optim.batch_size": 4})
    ecg = encoder_config(None, cfg.align.ecg_model, "e")
    video = encoder_config(None, cfg.align.video_model, "v")
    summary = run_align(cfg, open_stream(stream_dir), tmp_path / "ddp", ecg=ecg, video=video, show_bar=False)
    assert summary["steps"] == 2 and (tmp_path / "ddp" / "aligned.pt").is_file()
