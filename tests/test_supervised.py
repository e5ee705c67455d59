"""Students and teachers trained on in-memory arrays: crops, windows, a fit that learns, distillation, real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cardiodistill.config import load_config
from cardiodistill.errors import ConfigError
from cardiodistill.evaluate.metrics import auroc
from cardiodistill.models import create_model
from cardiodistill.signals.leads import LEADS_12
from cardiodistill.train.checkpoints import load_model, save_model
from cardiodistill.train.engine import read_checkpoint
from cardiodistill.train.supervised import (
    ArrayDataset,
    fit_array_student,
    fit_array_teacher,
    init_student_head_from_probe,
    predict_arrays,
    records_to_arrays,
    teacher_targets,
    window_starts,
)

REAL = Path(__file__).resolve().parents[2] / "shared" / "data"
FAST = ["trainer.threads=1", "trainer.checkpoint_every=10", "trainer.log_every=1",
        "distill.backbone={name: student_cnn_tiny}", "distill.min_steps=1", "distill.optim.batch_size=16",
        "distill.optim.warmup_steps=2", "finetune.min_steps=1", "finetune.optim.batch_size=16",
        "finetune.optim.warmup_steps=2"]


def _task(n: int, seed: int, leads: int = 1, samples: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """A two-output toy task at 100 Hz: output 0 is a 5 Hz (vs 2 Hz) rhythm on lead I, output 1 its inverse."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    t = np.arange(samples) / 100.0
    freq = np.where(y == 1, 5.0, 2.0)[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, (n, leads, 1))
    x = np.sin(2 * np.pi * freq * t + phase) + 0.5 * rng.standard_normal((n, leads, samples))
    return x.astype(np.float32), np.stack([y, 1 - y], axis=1).astype(np.float32)


def test_dataset_items_crops_and_padding():
    x = np.arange(2 * 1 * 50, dtype=np.float32).reshape(2, 1, 50)
    targets = np.array([[1.0, np.nan], [0.0, 1.0]], np.float32)
    data = ArrayDataset(x, targets, {"t_logits": np.ones((2, 2), np.float32)}, lengths=np.array([50, 8]), crop=10,
                        repeats=np.array([3, 1]), seed=4)
    assert len(data) == 4 and data.rows.tolist() == [0, 0, 0, 1]
    item = data[0]
    assert set(item) == {"mobile", "targets", "lvef_z", "index", "t_logits"}
    assert item["mobile"].shape == (1, 10) and torch.isnan(item["lvef_z"]) and int(item["index"]) == 0
    np.testing.assert_allclose(item["mobile"].mean().item(), 0.0, atol=1e-5)  # z-scored per window
    # deterministic under the seed, and each repeat of a recording has its own crop
    again = ArrayDataset(x, targets, lengths=np.array([50, 8]), crop=10, repeats=np.array([3, 1]), seed=4)
    assert [again.start(j) for j in range(4)] == [data.start(j) for j in range(4)]
    other = ArrayDataset(x, targets, lengths=np.array([50, 8]), crop=10, repeats=np.array([3, 1]), seed=5)
    starts = [ArrayDataset(x, targets, crop=10, seed=s).start(0) for s in range(20)]
    assert len(set(starts)) > 5 and all(0 <= s <= 40 for s in starts)
    assert [other.start(j) for j in range(3)] != [data.start(j) for j in range(3)]
    # a recording shorter than the crop: zero-padded after its real samples, which are z-scored
    short = data[3]["mobile"][0].numpy()
    assert np.all(short[8:] == 0) and short[:8].mean() == pytest.approx(0, abs=1e-5)
    assert short[:8].std() == pytest.approx(1, abs=1e-4)
    # validation: the middle window
    assert ArrayDataset(x, targets, crop=10, random_crop=False).start(0) == 20


def test_window_starts_and_predict_averages_windows():
    assert window_starts(1000, 1000) == [0]
    assert window_starts(2600, 1000) == [0, 1000, 2000]  # 600 samples left: kept
    assert window_starts(2400, 1000) == [0, 1000]  # 400 left: dropped
    assert window_starts(300, 1000) == [0]  # shorter than a window: one padded window
    torch.manual_seed(0)
    model = create_model("ecg_student", backbone={"name": "student_cnn_tiny", "in_leads": 1},
                         outputs=["a", "b", "c"]).eval()
    x = np.random.default_rng(0).standard_normal((3, 2, 700)).astype(np.float32)
    lengths = np.array([700, 300, 520])
    out = predict_arrays(model, x, lengths=lengths, window=250, batch_size=2)
    assert out["probs"].shape == (3, 3) and out["embedding"].shape == (3, 64)
    # recording 0: windows at 0, 250 and the partial one at 500 (200 of 250 samples), averaged
    wins = np.stack([x[0, :1, s : s + 250] for s in (0, 250)] + [np.pad(x[0, :1, 500:700], ((0, 0), (0, 50)))])
    real = np.array([250, 250, 200])
    mask = np.arange(250)[None, None] < real[:, None, None]
    mean = (wins * mask).sum(-1, keepdims=True) / real[:, None, None]
    std = np.sqrt((((wins - mean) * mask) ** 2).sum(-1, keepdims=True) / real[:, None, None])
    with torch.no_grad():
        probs = model.predict(torch.from_numpy(((wins - mean) / std * mask).astype(np.float32)))[:, :3]
    np.testing.assert_allclose(out["probs"][0], probs.mean(0).numpy(), atol=1e-5)


def _toy_student(run: Path, *sets: str):
    """A student fitted to :func:`_task` (160 training, 32 validation items) in ``run``, and 80 test items."""
    cfg = load_config("quick", [*FAST, "distill.epochs=6", "distill.optim.lr=3e-3", *sets])
    x, y = _task(160, seed=0)
    x_val, y_val = _task(32, seed=1)
    train = ArrayDataset(x, y, crop=250, seed=0)
    val = ArrayDataset(x_val, y_val, crop=250, random_crop=False)
    student = fit_array_student(train, val, run, outputs=["fast", "slow"], n_leads=1, config=cfg)
    return student, _task(80, seed=2)


def test_student_learns_a_toy_task(tmp_path):
    student, (x_test, y_test) = _toy_student(tmp_path / "run")
    log = pd.read_csv(tmp_path / "run" / "logs" / "metrics.csv")
    loss = log["train/loss"].dropna().to_numpy()
    assert loss[-5:].mean() < loss[:5].mean()
    assert (tmp_path / "run" / "best" / "best.ckpt").is_file() and student.project is None
    probs = predict_arrays(student, x_test, window=250)["probs"]
    assert auroc(y_test[:, 0], probs[:, 0]) > 0.9


def test_a_student_with_a_weight_average_keeps_the_averages_best_checkpoint(tmp_path):
    """distill.optim.ema_decay: validation scores the average, and the weights kept are the average's at the best
    validation loss (the checkpoint keeps the live weights beside it)."""
    student, (x_test, y_test) = _toy_student(tmp_path / "run", "distill.optim.ema_decay=0.8")
    best = read_checkpoint(tmp_path / "run" / "best" / "best.ckpt")
    assert int(best["averaging_state"]["n_averaged"]) >= 10
    kept = student.state_dict()
    assert all(torch.equal(kept[k], best["state_dict"][f"model.{k}"]) for k in kept)
    assert any(not torch.equal(kept[k], best["current_model_state"][f"model.{k}"]) for k in kept
               if kept[k].is_floating_point())
    probs = predict_arrays(student, x_test, window=250)["probs"]
    assert auroc(y_test[:, 0], probs[:, 0]) > 0.9


def test_student_starts_from_an_encoders_weights(tmp_path):
    """A lead-agnostic encoder as the backbone: given weights (a stage-1 encoder's), the student starts from them
    and moves them at finetune.encoder_lr_scale of the rate; without, it starts fresh."""
    cfg = load_config("quick", [*FAST, "distill.epochs=1", "distill.min_steps=3", "distill.optim.lr=1e-4",
                                "finetune.encoder_lr_scale=0.1"])
    torch.manual_seed(123)
    encoder = create_model("ecg_cnn", seconds=2.5, widths=[8, 16, 16, 16], dim=16)
    state = {f"encoder.{k}": v.clone() for k, v in encoder.state_dict().items()}
    weights = list(encoder.named_parameters())
    x, y = _task(32, seed=4, samples=250)
    data = ArrayDataset(x, y, crop=250, seed=0)

    def distance(student) -> float:
        now = student.backbone.state_dict()  # weights only: BatchNorm statistics move at any learning rate
        return max(float((now[f"encoder.{k}"] - state[f"encoder.{k}"]).abs().max()) for k, _ in weights)

    started = fit_array_student(data, None, tmp_path / "pre", outputs=["fast", "slow"], n_leads=1, config=cfg,
                                fs=100.0, encoder=encoder.model_config, backbone_state=state)
    fresh = fit_array_student(data, None, tmp_path / "fresh", outputs=["fast", "slow"], n_leads=1, config=cfg,
                              fs=100.0, encoder=encoder.model_config)
    assert started.backbone_config["name"] == fresh.backbone_config["name"] == "ecg_encoder_backbone"
    assert distance(started) < 0.01 < distance(fresh)


def _encoder_student(rhythm: tuple[str, ...] = ()):
    """A lead-I student around a small random ``ecg_cnn`` (2.5 s at 100 Hz), and that encoder's weights."""
    torch.manual_seed(0)
    encoder = create_model("ecg_cnn", seconds=2.5, widths=[8, 16, 16, 16], dim=16)
    student = create_model("ecg_student", backbone={"name": "ecg_encoder_backbone", "encoder": encoder.model_config,
                                                    "in_leads": 1, "fs": 100.0, "seconds": 2.5},
                           outputs=["fast", "slow"], embed_dim=0, rhythm=list(rhythm))
    return student, encoder, {f"encoder.{k}": v.clone() for k, v in encoder.state_dict().items()}


def test_a_probe_start_fits_the_students_head_on_its_frozen_embedding():
    """LP-FT's start: the head becomes, exactly, each output's L2 logistic regression on the standardised frozen
    embedding of the labelled training recordings (repeats counted once, unlabelled ones left out), with each
    output's strength the grid's best on validation; the student's training flag is kept."""
    from sklearn.linear_model import LogisticRegression

    student, _, _ = _encoder_student()
    x, y = _task(96, seed=1, samples=250)
    y_train = y[:64].copy()
    y_train[::4] = np.nan  # a quarter unlabelled
    train = ArrayDataset(x[:64], y_train, crop=250, repeats=3, seed=0)
    val = ArrayDataset(x[64:], y[64:], crop=250, random_crop=False)
    report = init_student_head_from_probe(student, train, val, c=0.1, grid=[0.01, 1.0], names=["fast", "slow"])
    assert student.training and report["n"] == 48 and report["fitted"] == ["fast", "slow"]
    assert set(report["c"]) == {"fast", "slow"} and set(report["c"].values()) <= {0.01, 1.0}
    labelled = np.flatnonzero(np.isfinite(y_train).all(axis=1))
    out = predict_arrays(student.eval(), x[labelled])
    emb = out["embedding"].astype(np.float64)
    z = (emb - emb.mean(0)) / (emb.std(0) + 1e-6)
    for j, name in enumerate(["fast", "slow"]):
        probe = LogisticRegression(C=report["c"][name], max_iter=5000).fit(z, y_train[labelled, j])
        np.testing.assert_allclose(out["logits"][:, j], probe.decision_function(z), atol=1e-4)
    assert auroc(y[64:, 0], predict_arrays(student, x[64:])["probs"][:, 0]) > 0.9  # a 5 vs 2 Hz rhythm
    with pytest.raises(ConfigError, match="rhythm"):
        init_student_head_from_probe(_encoder_student(rhythm=("hr",))[0], train, val)


def test_a_student_from_a_pretrained_backbone_starts_from_the_probe_with_head_init_probe(tmp_path):
    """distill.head_init=probe: a student given a backbone's weights trains from its probe start (at a rate too
    small to move them, it ends with the probe's head); head_init=random keeps SGD's random head."""
    x, y = _task(96, seed=1, samples=250)
    train, val = ArrayDataset(x[:64], y[:64], crop=250, seed=0), ArrayDataset(x[64:], y[64:], random_crop=False)
    probed, encoder, state = _encoder_student()
    probed.backbone.load_state_dict(state)
    cfg = load_config("quick", [*FAST, "distill.epochs=1", "distill.min_steps=2", "distill.optim.lr=1e-7"])
    init_student_head_from_probe(probed, train, val, c=cfg.finetune.probe_c, grid=cfg.finetune.probe_grid)
    heads = {}
    for head in ("probe", "random"):
        student = fit_array_student(train, val, tmp_path / head, outputs=["fast", "slow"], n_leads=1,
                                    config=cfg.model_copy(update={"distill": cfg.distill.model_copy(
                                        update={"head_init": head})}),
                                    fs=100.0, encoder=encoder.model_config, backbone_state=state)
        heads[head] = student.logits.weight.detach()
    torch.testing.assert_close(heads["probe"], probed.logits.weight.detach(), atol=1e-5, rtol=0)
    assert (heads["random"] - probed.logits.weight).abs().max() > 0.1


def test_a_student_from_a_pretrained_backbone_trains_it_with_distill_layer_decay(tmp_path):
    """distill.layer_decay reaches a student that starts from a backbone's weights (its optimizer's rates decay down
    the backbone); one trained from scratch has no pretrained backbone and keeps one rate."""
    x, y = _task(48, seed=2, samples=250)
    train, val = ArrayDataset(x[:40], y[:40], crop=250, seed=0), ArrayDataset(x[40:], y[40:], random_crop=False)
    _, encoder, state = _encoder_student()
    cfg = load_config("quick", [*FAST, "distill.epochs=1", "distill.min_steps=2", "distill.layer_decay=0.5"])
    for run, start in (("pretrained", state), ("scratch", None)):
        fit_array_student(train, val, tmp_path / run, outputs=["fast", "slow"], n_leads=1, config=cfg, fs=100.0,
                          encoder=encoder.model_config, backbone_state=start)
    ckpt = {run: read_checkpoint(tmp_path / run / "checkpoints" / "last.ckpt") for run in ("pretrained", "scratch")}
    assert ckpt["pretrained"]["hyper_parameters"]["layer_decay"] == 0.5
    assert ckpt["scratch"]["hyper_parameters"]["layer_decay"] == 1.0
    n_groups = {run: len(c["optimizer_states"][0]["param_groups"]) for run, c in ckpt.items()}
    assert n_groups["scratch"] == 2 and n_groups["pretrained"] == 2 + 2 * 6  # stem, 4 stages, embedding


def test_teacher_then_distilled_student(tmp_path):
    cfg = load_config("quick", [*FAST, "distill.epochs=1", "finetune.epochs=1"])
    x, y = _task(48, seed=3, leads=12, samples=250)
    teacher = fit_array_teacher(ArrayDataset(x[:40], y[:40]), ArrayDataset(x[40:], y[40:], random_crop=False),
                                tmp_path / "teacher", n_outputs=2, leads=LEADS_12, config=cfg)
    assert teacher.model_config["num_classes"] == 2 and not teacher.training
    extra = teacher_targets(teacher, x, np.arange(40))
    assert extra["t_logits"].shape == (48, 2) and extra["t_embedding"].shape == (48, teacher.num_features)
    np.testing.assert_allclose(extra["t_embedding"][:40].mean(0), 0, atol=1e-4)
    train = ArrayDataset(x[:40], y[:40], {k: v[:40] for k, v in extra.items()})
    val = ArrayDataset(x[40:], y[40:], {k: v[40:] for k, v in extra.items()}, random_crop=False)
    student = fit_array_student(train, val, tmp_path / "student", outputs=["a", "b"], n_leads=2, config=cfg)
    assert student.leads == ("I", "II") and student.project.out_features == teacher.num_features
    log = pd.read_csv(tmp_path / "student" / "logs" / "metrics.csv")
    assert {"train/soft", "train/embedding", "val/label"} <= set(log.columns)
    assert np.isfinite(log["train/soft"].dropna()).all()


@pytest.mark.parametrize("backbone", ["resnet1d_wang", "inception1d"])
def test_the_ptbxl_baselines_train_as_array_teachers(tmp_path, backbone):
    """The field's baselines go through the same teacher engine, predictions and model files as xresnet1d, so a
    benchmark trains them beside its own models on the same split and budget."""
    cfg = load_config("quick", [*FAST, "finetune.epochs=4", "finetune.optim.lr=3e-3"])
    x, y = _task(96, seed=5, samples=250)
    x_test, y_test = _task(48, seed=6, samples=250)
    model = fit_array_teacher(ArrayDataset(x[:80], y[:80]), ArrayDataset(x[80:], y[80:], random_crop=False),
                              tmp_path / backbone, n_outputs=2, leads=["I"], backbone=backbone, config=cfg)
    assert model.model_config["name"] == backbone and model.in_leads == 1 and not model.training
    out = predict_arrays(model, x_test)
    assert out["probs"].shape == (48, 2) and out["embedding"].shape[0] == 48
    assert auroc(y_test[:, 0], out["probs"][:, 0]) > 0.8
    save_model(model, tmp_path / "model.pt")
    np.testing.assert_allclose(predict_arrays(load_model(tmp_path / "model.pt"), x_test)["probs"], out["probs"],
                               atol=1e-6)


def test_real_cinc2017_records():
    root = REAL / "cinc2017"
    if not (root / "REFERENCE.csv").is_file():
        pytest.skip(f"real CinC 2017 data {root} not available")
    from cardiodistill.data.datasets import CinC2017

    data = CinC2017(root)
    x, lengths = records_to_arrays((data[i][0] for i in range(20)), leads=["I"], fs=100.0, seconds=61.0)
    assert x.shape == (20, 1, 6100) and x.dtype == np.float16
    assert ((lengths >= 900) & (lengths <= 6100)).all()  # 9-61 s at 100 Hz
    assert np.all(x[np.arange(6100)[None, None] >= lengths[:, None, None]] == 0)
    items = ArrayDataset(x, np.eye(4, dtype=np.float32)[data.targets[:20]], lengths=lengths, crop=1000)
    assert items[0]["mobile"].shape == (1, 1000) and abs(float(items[0]["mobile"].std()) - 1) < 1e-3
    torch.manual_seed(0)
    model = create_model("ecg_student", backbone={"name": "student_cnn", "in_leads": 1},
                         outputs=["normal", "af", "other", "noisy"]).eval()
    probs = predict_arrays(model, x, lengths=lengths, window=1000)["probs"]
    assert probs.shape == (20, 4) and np.isfinite(probs).all()
