"""Stage 1 for ECG: training windows, the resumable sampler, pretraining, checkpoints, evaluation."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

from cardiodistill.cli import main
from cardiodistill.config import load_config
from cardiodistill.data.ecg_windows import (
    EcgSource,
    WindowCache,
    WindowSpec,
    build_window_cache,
    record_windows,
    source_loaders,
)
from cardiodistill.data.sampling import ResumableSampler
from cardiodistill.errors import ConfigError, DataError
from cardiodistill.evaluate.ecg_downstream import evaluate_ecg_encoder, label_subset, parse_lead_set, results_table
from cardiodistill.evaluate.metrics import auroc, macro_auroc_ci, paired_macro_auroc_ci
from cardiodistill.io.wfdb import write_wfdb
from cardiodistill.privacy import pseudonym
from cardiodistill.records import EcgRecord
from cardiodistill.signals.leads import LEADS_12, LIMB_LEADS
from cardiodistill.stages.stage1 import pretrain_ecg
from cardiodistill.train import load_model
from cardiodistill.train.engine import read_checkpoint

TINY_MAE = "{name: ecg_mae_tiny, fs: 100.0, patch_size: 50, dim: 32, depth: 1, heads: 2, decoder_dim: 32, decoder_depth: 1}"


def _beats(fs: float, seconds: float, rate_bpm: float, leads: int, seed: int = 0) -> np.ndarray:
    """Narrow Gaussian 'QRS' spikes at a fixed rate plus a little noise, mV, ``[leads, S]``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(fs * seconds)) / fs
    beats = np.arange(0.3, seconds, 60.0 / rate_bpm)
    wave = np.exp(-0.5 * ((t[None, :] - beats[:, None]) / 0.02) ** 2).sum(0)
    gains = rng.uniform(0.5, 1.5, size=(leads, 1))
    return (gains * wave + 0.02 * rng.standard_normal((leads, len(t)))).astype(np.float32)


# ----------------------------------------------------------------------------------- windows


def test_record_windows_resample_pad_zscore_and_lead_slots():
    record = EcgRecord(_beats(300.0, 25.0, 70, 1), 300.0, ("I",), "mem")
    windows, present, starts = record_windows(record, WindowSpec(100.0, 10.0))
    assert windows.shape == (3, 12, 1000) and windows.dtype == np.float32
    assert present[:, 0].all() and not present[:, 1:].any()  # lead I goes to slot 0, nothing else
    np.testing.assert_allclose(starts, [0.0, 10.0, 20.0])
    assert not windows[:, 1:].any()
    # the 5-s tail is padded: zero after its 500 real samples, z-scored over those samples only
    assert not windows[2, 0, 500:].any()
    np.testing.assert_allclose(windows[2, 0, :500].mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(windows[2, 0, :500].std(), 1.0, atol=1e-4)
    np.testing.assert_allclose(windows[0, 0].std(), 1.0, atol=1e-4)
    # at most max_windows, spread over the record (first and last kept)
    _, _, picked = record_windows(record, WindowSpec(100.0, 10.0), max_windows=2)
    np.testing.assert_allclose(picked, [0.0, 20.0])


def test_record_windows_flat_lead_is_absent_and_leads_are_canonical():
    signal = _beats(500.0, 10.0, 60, 3)
    signal[1] = 0.25  # a flat (disconnected) lead
    record = EcgRecord(signal, 500.0, ("V2", "MLII", "I"), "mem")
    windows, present, _ = record_windows(record, WindowSpec(100.0, 10.0))
    assert windows.shape == (1, 12, 1000)
    assert [LEADS_12[i] for i in np.flatnonzero(present[0])] == ["I", "V2"]
    assert not windows[0, LEADS_12.index("II")].any()
    # a 3-s record is shorter than half a window: no window at all
    assert len(record_windows(EcgRecord(signal[:, :1500], 500.0, ("V2", "II", "I")), WindowSpec(100.0, 10.0))[0]) == 0


def _ecg_folder(root: Path, n: int = 6) -> Path:
    for i in range(n):
        write_wfdb(EcgRecord(_beats(500.0, 10.0, 60 + 10 * i, 12, seed=i), 500.0, LEADS_12), root / f"r{i}")
    (root / "broken.hea").write_text("this is not a WFDB header\n")
    return root


def test_window_cache_mixes_sources_skips_bad_files_and_is_reused(tmp_path):
    folder = _ecg_folder(tmp_path / "ecgs")
    sources = [EcgSource("files", str(folder)), EcgSource("synth", patients=3, seed=2)]
    spec = WindowSpec(100.0, 10.0)
    seen = []
    cache = build_window_cache(tmp_path / "cache", sources, spec, val_fraction=0.3,
                               progress=lambda source, done: seen.append(source))
    counts = cache.meta["counts"]
    assert counts["files:ecgs"] == {"records": 6, "windows": 6, "skipped": 1}
    assert counts["synth"]["records"] == 6  # 3 patients: a 12-lead and a handheld ECG each
    assert any(reason.startswith(pseudonym("broken") + ": ") for reason in cache.meta["skipped"])
    assert len(cache) == 12 and set(seen) == {"files:ecgs", "synth"}
    x, present = cache[0]
    assert x.shape == (12, 1000) and x.dtype == np.float32 and present.all()
    # handheld records fill only their six limb-lead slots
    mobile = cache.index["record"].str.endswith("/mobile").to_numpy()
    assert (cache.present[mobile][:, :6].all()) and not cache.present[mobile][:, 6:].any()
    # the split is by record: no record on both sides
    splits = cache.index.groupby("record")["split"].nunique()
    assert (splits == 1).all() and set(cache.index["split"]) <= {"train", "val"}
    # reused when asked the same; refused when something else is in the way
    assert len(build_window_cache(tmp_path / "cache", sources, spec, val_fraction=0.3)) == 12
    with pytest.raises(DataError, match="other sources or another spec"):
        build_window_cache(tmp_path / "cache", sources[:1], spec, val_fraction=0.3)
    assert len(WindowCache(tmp_path / "cache")) == 12


def test_a_source_leaves_out_the_records_it_is_told_to(tmp_path):
    folder = _ecg_folder(tmp_path / "ecgs")
    ids = [rid for rid, _ in source_loaders(EcgSource("files", str(folder)))]
    ids.sort(key=lambda rid: "broken" in rid)  # six readable records, then the broken one
    left_out = tmp_path / "held-out.txt"
    left_out.write_text(f"# the evaluation's test records\n{ids[0]}\n\n{ids[1].rsplit('/', 1)[-1]}  # a bare name\n")
    source = EcgSource("files", str(folder), exclude=str(left_out))
    assert sorted(rid for rid, _ in source_loaders(source)) == sorted(ids[2:])
    spec = WindowSpec(100.0, 10.0)
    cache = build_window_cache(tmp_path / "cache", [source], spec, val_fraction=0.0)
    assert not set(cache.index["record"]) & {pseudonym(i) for i in ids[:2]} and len(cache) == 4
    left_out.write_text(ids[0])  # another list is another cache
    with pytest.raises(DataError, match="other sources or another spec"):
        build_window_cache(tmp_path / "cache", [source], spec, val_fraction=0.0)
    with pytest.raises(DataError, match="cannot read the list of records to exclude"):
        list(source_loaders(EcgSource("files", str(folder), exclude=str(tmp_path / "missing.txt"))))

def test_resumable_sampler_orders_shards_and_skips():
    a = list(ResumableSampler(103, 8, seed=1))
    assert sorted(a) == list(range(103)) and a == list(ResumableSampler(103, 8, seed=1))
    epoch1 = ResumableSampler(103, 8, seed=1)
    epoch1.set_epoch(1)
    assert list(epoch1) != a
    ranks = [list(ResumableSampler(103, 8, seed=1, rank=r, world=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 51 and not set(ranks[0]) & set(ranks[1])
    # 12 samples per epoch in batches of 4 = 3 steps per epoch; after step 5 the run is 2 batches into epoch 1
    sampler = ResumableSampler(12, 4, seed=3)
    sampler.set_epoch(1)
    full = list(sampler)
    sampler.resume_at(5)
    assert list(sampler) == full[8:]
    assert list(sampler) == full  # the skip applies once


# ----------------------------------------------------------------------------------- pretraining


def _pretrain_config(*extra: str):
    return load_config("quick", [
        "pretrain.ecg.sources=[{kind: synth, patients: 30}]", f"pretrain.ecg.model={TINY_MAE}",
        "pretrain.ecg.optim.batch_size=16", "pretrain.ecg.optim.max_steps=6", "pretrain.ecg.optim.warmup_steps=2",
        "pretrain.ecg.val_fraction=0.2", "trainer.checkpoint_every=1", "trainer.threads=1", *extra,
    ])


class _Crash(L.Callback):
    """A job killed at ``at_step`` (a crash; Lightning turns Ctrl-C into ``sys.exit``)."""

    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.at_step:
            raise RuntimeError("node lost")


def test_pretraining_resumes_exactly_and_exports_self_describing_models(tmp_path):
    config = _pretrain_config()
    summary = pretrain_ecg(config, tmp_path / "straight", show_bar=False)
    assert summary["steps"] == 6 and summary["n_val_windows"] > 0
    assert np.isfinite(summary["metrics"]["val/loss"])
    reference = load_model(tmp_path / "straight" / "mae.pt").state_dict()

    # interrupted mid-epoch (3 steps per epoch here), then run again: the same weights, bit for bit
    with pytest.raises(RuntimeError, match="node lost"):
        pretrain_ecg(config, tmp_path / "resumed", show_bar=False, callbacks=[_Crash(4)])
    assert (tmp_path / "resumed" / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "resumed" / "mae.pt").exists()
    logs = tmp_path / "resumed" / "logs"
    earlier = (logs / "metrics.csv").read_text()
    pretrain_ecg(config, tmp_path / "resumed", show_bar=False)
    resumed = load_model(tmp_path / "resumed" / "mae.pt").state_dict()
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
    assert (logs / "metrics.1.csv").read_text() == earlier and (logs / "metrics.csv").is_file()  # history kept

    # one call rebuilds the encoder, and its config says how to prepare the input
    encoder = load_model(tmp_path / "straight" / "encoder.pt")
    assert encoder.model_config["fs"] == 100.0 and encoder.model_config["patch_size"] == 50
    assert encoder.model_config["leads"] == list(LEADS_12)
    assert encoder.model_config["normalisation"] == "per-lead z-score"
    from_mae = load_model(tmp_path / "straight" / "mae.pt", part="encoder")
    from_ckpt = load_model(tmp_path / "straight" / "checkpoints" / "last.ckpt", part="encoder")
    x = torch.randn(2, 12, 1000)
    out = encoder(x, LEADS_12)
    assert torch.equal(out, from_mae(x, LEADS_12)) and torch.equal(out, from_ckpt(x, LEADS_12))


def test_a_weight_average_resumes_exactly_and_is_what_the_run_exports(tmp_path):
    """optim.ema_decay: the exported model is the exponential moving average of the weights (not the last step's
    weights), and a run killed mid-epoch resumes both the live weights and the average from last.ckpt."""
    config = _pretrain_config("pretrain.ecg.optim.ema_decay=0.5")
    assert pretrain_ecg(config, tmp_path / "straight", show_bar=False)["steps"] == 6  # a counter is not averaged
    reference = load_model(tmp_path / "straight" / "mae.pt").state_dict()
    with pytest.raises(RuntimeError, match="node lost"):
        pretrain_ecg(config, tmp_path / "resumed", show_bar=False, callbacks=[_Crash(4)])
    pretrain_ecg(config, tmp_path / "resumed", show_bar=False)
    resumed = load_model(tmp_path / "resumed" / "mae.pt").state_dict()
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)

    # the file holds the average: the checkpoint keeps the live weights beside it, and they differ
    ckpt = read_checkpoint(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    live = {k.removeprefix("model."): v for k, v in ckpt["current_model_state"].items() if k.startswith("model.")}
    average = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    assert int(ckpt["averaging_state"]["n_averaged"]) == 6
    weights = [k for k, v in reference.items() if v.is_floating_point() and "running" not in k]
    assert all(torch.equal(reference[k], average[k]) for k in weights)
    assert any(not torch.equal(reference[k], live[k]) for k in weights)
    plain = pretrain_ecg(_pretrain_config(), tmp_path / "plain", show_bar=False)
    assert plain["steps"] == 6
    assert all(torch.equal(live[k], v) for k, v in load_model(tmp_path / "plain" / "mae.pt").state_dict().items()
               if k in weights)


class _Payload:
    """What a planted checkpoint would run when unpickled: it creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("force_unsafe_default", [False, True])
def test_a_planted_checkpoint_never_runs(tmp_path, monkeypatch, force_unsafe_default):
    """A pickle payload as last.ckpt is refused in one line before Lightning reads it, and Lightning's own
    loader reads weights only too - also under torch's pre-2.6 default (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD)."""
    from cardiodistill.train.engine import SafeCheckpointIO

    if force_unsafe_default:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "payload-ran"
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": {}, "loops": {}, "payload": _Payload(marker)}, ckpt)
    with pytest.raises(DataError, match="holds objects other than weights; delete it or pass --overwrite") as err:
        pretrain_ecg(_pretrain_config(), tmp_path / "run", show_bar=False)
    assert "\n" not in str(err.value) and str(ckpt) in str(err.value)
    with pytest.raises(DataError):
        SafeCheckpointIO().load_checkpoint(ckpt, weights_only=False)
    assert not marker.exists()


def test_a_truncated_or_foreign_checkpoint_is_one_line(tmp_path):
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "loops": {}}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:300])
    with pytest.raises(DataError, match="is not a readable checkpoint") as err:
        pretrain_ecg(_pretrain_config(), tmp_path / "run", show_bar=False)
    assert "\n" not in str(err.value) and str(ckpt) in str(err.value)
    torch.save({"format": "something else"}, ckpt)
    with pytest.raises(DataError, match="not a training checkpoint"):
        pretrain_ecg(_pretrain_config(), tmp_path / "run", show_bar=False)


def test_contrastive_pretraining_runs(tmp_path):
    config = _pretrain_config(
        "pretrain.ecg.objective=contrastive", "pretrain.ecg.optim.max_steps=3",
        "pretrain.ecg.model={name: ecg_vit_tiny, fs: 100.0, patch_size: 50, dim: 32, depth: 1, heads: 2}",
    )
    summary = pretrain_ecg(config, tmp_path / "simclr", show_bar=False)
    assert summary["steps"] == 3 and np.isfinite(summary["metrics"]["train/loss"])
    assert load_model(tmp_path / "simclr" / "encoder.pt").model_config["dim"] == 32


def test_load_model_rejects_other_files(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="other.pt.*not a cardiodistill model"):
        load_model(tmp_path / "other.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(DataError, match="not a readable torch file"):
        load_model(tmp_path / "text.pt")


# ----------------------------------------------------------------------------------- evaluation


def test_label_subsets_are_nested_and_cover_every_class():
    y = np.zeros((200, 3), np.float32)
    y[:100, 0] = 1
    y[100:, 1] = 1
    y[7, 2] = 1  # one rare positive
    small, large = label_subset(y, 0.05, seed=0), label_subset(y, 0.5, seed=0)
    assert set(small) <= set(large)
    assert len(small) == 11 and len(large) == 101 and 7 in small  # 10 and 100, plus the rare positive
    assert (y[small].sum(0) > 0).all() and (y[small].sum(0) < len(small)).all()
    assert parse_lead_set("limb6") == LIMB_LEADS and parse_lead_set("V2+I+MLII") == ("I", "II", "V2")


def test_paired_macro_auroc_difference_cancels_what_records_share():
    rng = np.random.default_rng(1)
    y = rng.random((400, 2)) < 0.4
    good = y + rng.normal(0, 0.8, size=(400, 2))
    worse = y + rng.normal(0, 1.6, size=(400, 2))
    delta, lo, hi = paired_macro_auroc_ci(y, good, worse, n_boot=300)
    assert delta == pytest.approx(macro_auroc_ci(y, good, n_boot=0)[0] - macro_auroc_ci(y, worse, n_boot=0)[0])
    assert 0 < lo < delta < hi
    assert paired_macro_auroc_ci(y, good, good, n_boot=100) == (0.0, 0.0, 0.0)
    # two models that err on the same records: the paired interval is far narrower than either model's own
    close = good + rng.normal(0, 0.2, size=(400, 2))
    _, lo_close, hi_close = paired_macro_auroc_ci(y, good, close, n_boot=300)
    _, lo_a, hi_a, _ = macro_auroc_ci(y, good, n_boot=300)
    assert hi_close - lo_close < 0.5 * (hi_a - lo_a)


def test_macro_auroc_ci_averages_per_class_aurocs():
    rng = np.random.default_rng(0)
    y = rng.random((300, 3)) < 0.3
    scores = y + rng.normal(0, [[0.5, 1.0, 3.0]], size=(300, 3))
    macro, lo, hi, per_class = macro_auroc_ci(y, scores, n_boot=300)
    assert per_class == [auroc(y[:, c], scores[:, c]) for c in range(3)]
    assert macro == pytest.approx(np.mean(per_class)) and lo < macro < hi
    assert per_class[0] > per_class[1] > per_class[2]


def test_auroc_over_several_runs_is_their_mean_and_one_run_is_the_plain_case():
    rng = np.random.default_rng(2)
    y = rng.random((200, 2)) < 0.4
    runs_a = np.stack([y + rng.normal(0, 0.8, size=(200, 2)) for _ in range(3)])
    runs_b = np.stack([y + rng.normal(0, 1.6, size=(200, 2)) for _ in range(3)])
    assert macro_auroc_ci(y, runs_a[:1], n_boot=200) == macro_auroc_ci(y, runs_a[0], n_boot=200)
    assert paired_macro_auroc_ci(y, runs_a[:1], runs_b[:1], n_boot=200) == pytest.approx(
        paired_macro_auroc_ci(y, runs_a[0], runs_b[0], n_boot=200))
    macro, lo, hi, per_class = macro_auroc_ci(y, runs_a, n_boot=200)
    each = [macro_auroc_ci(y, run, n_boot=0)[0] for run in runs_a]
    assert macro == pytest.approx(np.mean(each)) and lo < macro < hi
    assert per_class[0] == pytest.approx(np.mean([auroc(y[:, 0], run[:, 0]) for run in runs_a]))
    delta, lo, hi = paired_macro_auroc_ci(y, runs_a, runs_b, n_boot=200)
    each = [paired_macro_auroc_ci(y, a, b, n_boot=0)[0] for a, b in zip(runs_a, runs_b)]
    assert delta == pytest.approx(np.mean(each))
    assert 0 < lo < delta < hi
    with pytest.raises(ValueError, match="the same number of runs"):
        paired_macro_auroc_ci(y, runs_a, runs_b[:2])


def _labelled_folder(root: Path, n: int = 160) -> Path:
    """A PTB-XL subset-layout folder whose two classes differ in heart rate (60 vs 120 bpm)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    mi = rng.random(n) < 0.4
    signals = np.stack([_beats(100.0, 10.0, 120 if m else 60, 12, seed=i) for i, m in enumerate(mi)])
    np.save(root / "signals.npy", signals.astype(np.float16))
    pd.DataFrame({
        "ecg_id": np.arange(1, n + 1), "patient_id": np.arange(n),
        "scp_codes": ["{'IMI': 100.0}" if m else "{'NORM': 100.0}" for m in mi],
        "strat_fold": np.where(np.arange(n) < 3 * n // 4, 1 + np.arange(n) % 8, 9),
    }).to_csv(root / "meta.csv", index=False)
    pd.DataFrame({"code": ["NORM", "IMI"], "diagnostic": [1, 1], "form": [0, 0], "rhythm": [0, 0],
                  "diagnostic_class": ["NORM", "MI"], "diagnostic_subclass": ["NORM", "IMI"]}).to_csv(
        root / "scp_statements.csv", index=False)
    return root


def test_evaluation_grid_scores_learnable_labels_and_resumes(tmp_path, monkeypatch):
    data = _labelled_folder(tmp_path / "ptbxl")
    pretrain_ecg(_pretrain_config("pretrain.ecg.optim.max_steps=2"), tmp_path / "pre", show_bar=False)
    cfg = load_config("quick", [
        f"evaluate.ecg.data={data}", "evaluate.ecg.lead_sets=[I, limb6]", "evaluate.ecg.label_fractions=[0.5, 1.0]",
        "evaluate.ecg.methods=[linear, finetune, supervised, baselines]", "evaluate.ecg.baselines=[resnet1d_wang]",
        "evaluate.ecg.epochs=2", "evaluate.ecg.min_steps=20",
        "evaluate.ecg.bootstrap=50", "trainer.threads=1",
    ])
    results = evaluate_ecg_encoder(tmp_path / "pre" / "mae.pt", cfg.evaluate.ecg, cfg.trainer, tmp_path / "eval")
    assert results["classes"] == ["MI", "NORM"] and results["n_train"] == 120 and results["n_eval"] == 40
    assert len(results["cells"]) == 2 * 2 * 4
    by_key = {(c["method"], c["leads"], c["label_fraction"]): c for c in results["cells"]}
    # heart rate is in every lead: the supervised CNN must find it
    assert by_key[("supervised", "I", 1.0)]["macro_auroc"] > 0.9
    assert by_key[("resnet1d_wang", "I", 1.0)]["macro_auroc"] > 0.9  # the field's baseline, trained the same way
    assert all(0 <= c["ci_low"] <= c["macro_auroc"] <= c["ci_high"] <= 1 for c in results["cells"])
    assert by_key[("linear", "I", 0.5)]["n_train"] == 60
    # the methods against the supervised CNN and the field's baseline (no scratch run here), on the same records
    paired = {(p["method"], p["baseline"], p["leads"], p["label_fraction"]): p for p in results["paired"]}
    assert {k[:2] for k in paired} == {("linear", "supervised"), ("finetune", "supervised"),
                                       ("finetune", "resnet1d_wang")} and len(paired) == 3 * 2 * 2
    for (method, baseline, leads, fraction), p in paired.items():
        expected = by_key[(method, leads, fraction)]["macro_auroc"] - by_key[(baseline, leads, fraction)]["macro_auroc"]
        assert p["delta"] == pytest.approx(expected) and p["ci_low"] <= p["delta"] <= p["ci_high"]
    assert "finetune - supervised" in results_table(results)
    recon = results["reconstruction"]
    assert recon["n_patches"] > 0 and "baseline_interp_mse" in recon
    assert (tmp_path / "eval" / "reconstruction.png").stat().st_size > 0

    # finished cells are read back, not retrained
    monkeypatch.setattr("cardiodistill.evaluate.ecg_downstream._run_method",
                        lambda *a, **k: pytest.fail("a finished cell was run again"))
    again = evaluate_ecg_encoder(tmp_path / "pre" / "mae.pt", cfg.evaluate.ecg, cfg.trainer, tmp_path / "eval")
    assert [c["macro_auroc"] for c in again["cells"]] == [c["macro_auroc"] for c in results["cells"]]


def test_evaluation_repeats_run_each_cell_with_its_own_seed_and_pair_the_runs(tmp_path, monkeypatch):
    data = _labelled_folder(tmp_path / "ptbxl")
    pretrain_ecg(_pretrain_config("pretrain.ecg.optim.max_steps=2"), tmp_path / "pre", show_bar=False)
    cfg = load_config("quick", [
        f"evaluate.ecg.data={data}", "evaluate.ecg.lead_sets=[I]", "evaluate.ecg.label_fractions=[0.5]",
        "evaluate.ecg.methods=[finetune, scratch]", "evaluate.ecg.bootstrap=50", "evaluate.ecg.repeats=3",
        "evaluate.ecg.seed=4", "trainer.threads=1",
    ])
    seen = []

    def fake_run(method, encoder, encoder_config, train, evaluation, leads, run_cfg, trainer_cfg):
        seen.append((method, run_cfg.seed, tuple(train["ecg_id"])))
        noise = {"finetune": 0.6, "scratch": 1.5}[method]
        return evaluation["y"] + np.random.default_rng(run_cfg.seed).normal(0, noise, evaluation["y"].shape)

    monkeypatch.setattr("cardiodistill.evaluate.ecg_downstream._run_method", fake_run)
    results = evaluate_ecg_encoder(tmp_path / "pre" / "mae.pt", cfg.evaluate.ecg, cfg.trainer, tmp_path / "eval")
    assert sorted({seed for _, seed, _ in seen}) == [4, 5, 6] and len(seen) == 6
    subsets = {(method, seed): ids for method, seed, ids in seen}
    assert len({subsets[("finetune", s)] for s in (4, 5, 6)}) == 3  # each seed its own label subset...
    assert all(subsets[("finetune", s)] == subsets[("scratch", s)] for s in (4, 5, 6))  # ...the same for both
    cells = {c["method"]: c for c in results["cells"]}
    assert len(cells) == 2 and cells["finetune"]["seeds"] == [4, 5, 6]
    runs = {m: np.array(c["runs"]) for m, c in cells.items()}
    assert cells["finetune"]["macro_auroc"] == pytest.approx(runs["finetune"].mean())
    assert cells["finetune"]["sd_runs"] == pytest.approx(runs["finetune"].std(ddof=1))
    (paired,) = results["paired"]
    assert (paired["method"], paired["baseline"]) == ("finetune", "scratch")
    assert paired["runs"] == pytest.approx(list(runs["finetune"] - runs["scratch"]))
    assert paired["delta"] == pytest.approx(np.mean(paired["runs"])) and 0 < paired["ci_low"] < paired["ci_high"]
    assert "Means over 3 runs (seeds 4, 5, 6)" in results_table(results)
    assert sorted(p.name for p in (tmp_path / "eval" / "cells").glob("finetune*.json")) == [
        "finetune__I__0.5.json", "finetune__I__0.5__run1.json", "finetune__I__0.5__run2.json"]


def test_finetuning_moves_the_pretrained_encoder_at_its_fraction_of_the_rate(monkeypatch):
    """``finetune_lr_scale``: the pretrained encoder at that fraction of the rate, its new head at the rate;
    scratch runs (nothing pretrained) and the fixed-lead CNNs (their head is inside them) at the rate."""
    from cardiodistill.evaluate import ecg_downstream
    from cardiodistill.train.ecg import EcgClassifierModule

    module = EcgClassifierModule({"name": "ecg_cnn"}, 2, ["I"], lr=1e-3, encoder_lr_scale=0.3)
    optimizer = module.configure_optimizers()["optimizer"]
    by_param = {id(p): group["initial_lr"] for group in optimizer.param_groups for p in group["params"]}
    assert {by_param[id(p)] for p in module.backbone.parameters()} == {1e-3 * 0.3}
    assert {by_param[id(p)] for p in module.head.parameters()} == {1e-3}
    cnn = EcgClassifierModule({"name": "resnet1d_wang"}, 2, ["I"], lr=1e-3, encoder_lr_scale=0.3)
    assert {g["initial_lr"] for g in cnn.configure_optimizers()["optimizer"].param_groups} == {1e-3}

    cfg = load_config("quick", ["evaluate.ecg.finetune_lr_scale=0.3"]).evaluate.ecg
    scales = {}
    monkeypatch.setattr(ecg_downstream, "train_classifier",
                        lambda config, state, *a, encoder_lr_scale, **k: scales.setdefault(state is None,
                                                                                           encoder_lr_scale))
    encoder = torch.nn.Linear(2, 2)
    for method in ("finetune", "scratch"):
        ecg_downstream._run_method(method, encoder, {"name": "ecg_cnn"}, {}, {}, ["I"], cfg, None)
    assert scales == {False: 0.3, True: 1.0}


def test_layer_decay_slows_a_pretrained_backbone_layer_by_layer_from_its_top():
    """``layer_decay``: the backbone's top layer at ``encoder_lr_scale`` times the rate, each layer below at
    ``layer_decay`` times the one above (the CNN's stem lowest); the new heads at the rate; 1 keeps one rate; a
    transformer's token embedding sits one layer below its first block; a backbone that lists no layers is refused."""
    from cardiodistill.models import create_model
    from cardiodistill.train.distill import StudentModule
    from cardiodistill.train.module import param_groups

    backbone = {"name": "ecg_encoder_backbone", "encoder": {"name": "ecg_cnn", "seconds": 2.5}, "in_leads": 1,
                "fs": 100.0, "seconds": 2.5}
    config = create_model("ecg_student", backbone=backbone, outputs=["a"], embed_dim=0).model_config
    state = StudentModule(config).model.backbone.state_dict()

    def rates(layer_decay: float) -> tuple[StudentModule, dict[int, float]]:
        module = StudentModule(config, lr=1e-3, encoder_lr_scale=0.3, layer_decay=layer_decay, backbone_state=state)
        groups = module.configure_optimizers()["optimizer"].param_groups
        return module, {id(p): g["initial_lr"] for g in groups for p in g["params"]}

    module, lr = rates(0.5)
    trunk = module.model.backbone.encoder.trunk
    layers = [trunk.stem, *trunk.stages, trunk.head]
    for depth, layer in enumerate(reversed(layers)):
        expected = 3e-4 * 0.5 ** depth
        assert all(lr[id(p)] == pytest.approx(expected) for p in layer.parameters())
    assert {lr[id(p)] for p in module.model.logits.parameters()} == {1e-3}
    module, lr = rates(1.0)
    (one,) = {lr[id(p)] for p in module.model.backbone.parameters()}
    assert one == pytest.approx(3e-4)
    assert len(param_groups(module, 0.01, ("model.backbone.",), 0.3)) == 4  # decay or not, backbone or not

    vit = create_model("ecg_vit_tiny", fs=100.0)
    depth = {p: g["lr_scale"] for g in param_groups(vit, 0.0, ("",), 1.0, 0.5) for p in g["params"]}
    n = len(vit.blocks) + 1  # the blocks and the final norm
    assert {depth[p] for p in vit.norm.parameters()} == {1.0}
    assert {depth[p] for p in vit.blocks[0].parameters()} == {0.5 ** (n - 1)}
    assert depth[vit.patch_embed.weight] == 0.5 ** n
    with pytest.raises(ConfigError, match="lists its layers"):
        param_groups(torch.nn.Sequential(torch.nn.Linear(2, 2)), 0.0, ("0.",), 0.3, 0.5)


def test_comparing_two_evaluations_pairs_their_cells_over_the_same_records(tmp_path, monkeypatch):
    data = _labelled_folder(tmp_path / "ptbxl")
    pretrain_ecg(_pretrain_config("pretrain.ecg.optim.max_steps=2"), tmp_path / "pre", show_bar=False)
    sets = [f"evaluate.ecg.data={data}", "evaluate.ecg.lead_sets=[I]", "evaluate.ecg.label_fractions=[0.5]",
            "evaluate.ecg.methods=[finetune, scratch]", "evaluate.ecg.bootstrap=50", "evaluate.ecg.repeats=2",
            "trainer.threads=1"]
    cfg = load_config("quick", sets)
    noise = {"finetune": 0.6, "scratch": 1.5}

    def fake_run(method, encoder, encoder_config, train, evaluation, leads, run_cfg, trainer_cfg):
        return evaluation["y"] + np.random.default_rng(run_cfg.seed).normal(0, noise[method], evaluation["y"].shape)

    monkeypatch.setattr("cardiodistill.evaluate.ecg_downstream._run_method", fake_run)
    model = tmp_path / "pre" / "mae.pt"
    first = evaluate_ecg_encoder(model, cfg.evaluate.ecg, cfg.trainer, tmp_path / "a")
    noise["finetune"] = 1.0  # the second run's fine-tuning: another encoder or rate, worse here
    second = evaluate_ecg_encoder(model, cfg.evaluate.ecg, cfg.trainer, tmp_path / "b", compare=tmp_path / "a")
    rows = {r["method"]: r for r in second["compared_with"]["rows"]}
    assert second["compared_with"]["run"] == str(tmp_path / "a") and set(rows) == {"finetune", "scratch"}
    runs = {name: {c["method"]: np.array(c["runs"]) for c in res["cells"]}
            for name, res in (("a", first), ("b", second))}
    assert rows["finetune"]["runs"] == pytest.approx(list(runs["b"]["finetune"] - runs["a"]["finetune"]))
    assert rows["finetune"]["delta"] < 0 and rows["finetune"]["ci_high"] < 0  # the noisier scores rank worse
    assert rows["scratch"]["delta"] == 0  # the same cells: nothing between them
    assert f"This run minus {tmp_path / 'a'}" in results_table(second)

    with pytest.raises(ConfigError, match="not an evaluate-ecg run folder"):  # refused before anything trains
        evaluate_ecg_encoder(model, cfg.evaluate.ecg, cfg.trainer, tmp_path / "c", compare=tmp_path / "missing")
    other = load_config("quick", sets + ["evaluate.ecg.train_folds=[1, 2, 3]", "evaluate.ecg.eval_folds=[8]"])
    evaluate_ecg_encoder(model, other.evaluate.ecg, other.trainer, tmp_path / "fold8")
    with pytest.raises(DataError, match="scored other records"):
        evaluate_ecg_encoder(model, cfg.evaluate.ecg, cfg.trainer, tmp_path / "b", compare=tmp_path / "fold8")
    fewer = load_config("quick", sets + ["evaluate.ecg.repeats=1", "evaluate.ecg.label_fractions=[1.0]"])
    with pytest.raises(ConfigError, match="shares no finished cell"):
        evaluate_ecg_encoder(model, fewer.evaluate.ecg, fewer.trainer, tmp_path / "d", compare=tmp_path / "a")


def _cli(*args: str) -> int:
    try:
        main(list(args))
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0


def test_cli_pretrain_and_evaluate(tmp_path, capsys):
    data = _labelled_folder(tmp_path / "ptbxl", n=80)
    sets = ["--set", "pretrain.ecg.sources=[{kind: synth, patients: 20}]", "--set", f"pretrain.ecg.model={TINY_MAE}",
            "--set", "pretrain.ecg.optim.max_steps=2", "--set", "pretrain.ecg.optim.batch_size=8",
            "--set", "trainer.threads=1"]
    assert _cli("pretrain", "ecg", "--out", str(tmp_path / "pre"), *sets) == 0
    assert (tmp_path / "pre" / "run.json").is_file() and (tmp_path / "pre" / "encoder.pt").is_file()
    assert _cli("evaluate", "ecg", "--checkpoint", str(tmp_path / "pre" / "encoder.pt"), "--data", str(data),
                "--out", str(tmp_path / "eval"), "--set", "evaluate.ecg.methods=[linear]",
                "--set", "evaluate.ecg.lead_sets=[I]", "--set", "evaluate.ecg.label_fractions=[1.0]",
                "--set", "evaluate.ecg.bootstrap=20") == 0
    assert "| linear | 100% (60) |" in capsys.readouterr().out
    assert (tmp_path / "eval" / "results.md").is_file() and (tmp_path / "eval" / "metrics.json").is_file()
    assert _cli("evaluate", "ecg", "--checkpoint", str(tmp_path / "missing.pt"), "--data", str(data),
                "--out", str(tmp_path / "eval2")) == 2
    assert "missing.pt: no such model file" in capsys.readouterr().err


@pytest.mark.parametrize("ema_decay", [0.0, 0.5])
def test_pretraining_under_ddp_with_two_cpu_processes(tmp_path, ema_decay):
    """Lightning DDP over gloo, two processes: each rank reads its own share of the windows. With a weight
    average, the model the main process writes is the average (rank 0's, handed back by the spawn launcher)."""
    config = _pretrain_config("pretrain.ecg.optim.max_steps=3", "pretrain.ecg.optim.batch_size=8",
                              "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp_spawn",
                              f"pretrain.ecg.optim.ema_decay={ema_decay}")
    summary = pretrain_ecg(config, tmp_path / "ddp", show_bar=False)
    assert summary["steps"] == 3 and np.isfinite(summary["metrics"]["val/loss"])
    assert load_model(tmp_path / "ddp" / "encoder.pt").model_config["dim"] == 32
    ckpt = read_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.ckpt")
    exported = load_model(tmp_path / "ddp" / "mae.pt").state_dict()
    assert all(torch.equal(v, ckpt["state_dict"][f"model.{k}"]) for k, v in exported.items())
    assert ("averaging_state" in ckpt) == bool(ema_decay)


class _RecordsItsProcessGroup(L.LightningModule):
    """A one-layer model that writes, as the fit ends in each rank, whether a process group is still open."""

    def __init__(self, folder: str):
        super().__init__()
        self.folder, self.layer = folder, torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def teardown(self, stage: str) -> None:  # Lightning calls it after every callback's teardown
        Path(self.folder, f"rank{self.global_rank}").write_text(str(torch.distributed.is_initialized()))


def test_spawned_workers_close_their_process_group_before_they_exit(tmp_path):
    """Lightning leaves a gloo group open; a spawned worker that exits with it open aborts now and then."""
    from cardiodistill.config import TrainerConfig
    from cardiodistill.train.engine import make_trainer

    trainer = make_trainer(TrainerConfig(accelerator="cpu", devices=2, strategy="ddp_spawn", threads=1), None,
                           max_steps=2, checkpoint_every=None, progress=False)
    data = torch.utils.data.TensorDataset(torch.randn(8, 2))
    trainer.fit(_RecordsItsProcessGroup(str(tmp_path)), torch.utils.data.DataLoader(data, batch_size=2))
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"rank0": "False", "rank1": "False"}
