"""The splits the real-data benchmarks report on: every recording tested exactly once in cross-validation,
and nothing a model is scored on ever trains it or chooses its checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_cinc_af_features import atrial_residual, rr_randomness  # noqa: E402
from bench_real_students import (  # noqa: E402
    WINDOW,
    abstention_threshold,
    cinc_folds,
    cinc_rhythm,
    cinc_trees,
    ensemble_logits,
    ensemble_name,
    features_of,
    paired_challenge,
    recipe_difference,
    recipe_features,
    recipe_name,
    recipe_tag,
    run_cinc_cv_ensemble,
    teacher_hash,
)
from ship_cinc2017_student import final_split  # noqa: E402


def _labels(n: int = 500) -> np.ndarray:
    return np.random.default_rng(0).choice(4, size=n, p=[0.6, 0.08, 0.28, 0.04])


def test_cross_validation_tests_every_recording_once_and_never_on_its_training_or_checkpoint_rows():
    target = _labels()
    folds = cinc_folds(target, 5, seed=0)
    tested = np.concatenate([f["test"] for f in folds])
    assert len(folds) == 5 and np.array_equal(np.sort(tested), np.arange(len(target)))
    for f in folds:
        parts = [set(f[k].tolist()) for k in ("train", "val", "test")]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert sum(map(len, parts)) == len(target)
        # stratified: each fold's test share of AF is the cohort's, within one recording
        assert abs((target[f["test"]] == 1).sum() - (target == 1).sum() / 5) <= 1
    assert all(np.array_equal(a["test"], b["test"]) for a, b in zip(folds, cinc_folds(target, 5, seed=0)))


def test_the_shipped_model_keeps_a_stratified_tenth_out_of_training():
    target = _labels()
    split = final_split(target)
    assert not set(split["train"]) & set(split["val"])
    assert len(split["train"]) + len(split["val"]) == len(target) and len(split["val"]) == 50


def test_paired_challenge_difference_is_zero_for_the_same_predictions_and_signed_otherwise():
    target = _labels()
    right = target.copy()
    wrong = np.where(np.arange(len(target)) % 3 == 0, (target + 1) % 4, target)
    same = paired_challenge(target, wrong, wrong, n_boot=50, seed=0)
    assert same["value"] == same["ci_low"] == same["ci_high"] == 0
    better = paired_challenge(target, right, wrong, n_boot=50, seed=0)
    assert better["value"] > 0 and better["ci_low"] > 0


def test_the_abstention_threshold_catches_the_most_noisy_recordings_within_the_normal_budget():
    rng = np.random.default_rng(1)
    y = _labels(2000)
    probs = rng.uniform(0, 0.5, size=(len(y), 4))
    probs[np.arange(len(y)), y] += 0.45  # each recording's own class scores higher
    t = abstention_threshold(probs, y, max_normal=0.05)
    abstained = (probs.argmax(1) == 3) | (probs[:, 3] >= t)
    assert abstained[y == 0].mean() <= 0.05
    lower = np.max(probs[:, 3][probs[:, 3] < t])  # the next lower threshold breaks the budget
    assert ((probs.argmax(1) == 3) | (probs[:, 3] >= lower))[y == 0].mean() > 0.05
    assert abstained[y == 3].mean() > (probs.argmax(1) == 3)[y == 3].mean()  # it catches more than the argmax
    assert (probs.argmax(1) == 3)[y == 0].any() and abstention_threshold(probs, y, max_normal=0.0) == 1.0


def test_recipes_compare_on_their_recordings_when_both_predictions_are_here_else_fold_by_fold(tmp_path):
    y = _labels(300)
    rng = np.random.default_rng(1)
    better = np.where(rng.random(len(y)) < 0.8, y, 2)
    worse = np.where(rng.random(len(y)) < 0.6, y, 2)
    runs = {}
    for name, pred in (("better", better), ("worse", worse)):
        (tmp_path / name).mkdir()
        np.savez(tmp_path / name / "oof.npz", probs=np.eye(4)[pred], target=y)
        runs[name] = {"folder": str(tmp_path / name), "folds": 3, "challenge_per_fold": [0.7, 0.8, 0.75]}
    runs["better"]["challenge_per_fold"] = [0.75, 0.81, 0.80]
    paired = recipe_difference(runs["better"], runs["worse"], 200, 0)
    assert paired.startswith(f"{paired_challenge(y, better, worse, 0, 0)['value']:+.3f} (")
    (tmp_path / "worse" / "oof.npz").unlink()  # an earlier run's predictions are not in this checkout
    assert recipe_difference(runs["better"], runs["worse"], 200, 0) == "+0.037 (folds +0.010 to +0.050)"
    assert recipe_difference(runs["better"], {**runs["worse"], "folds": 5}, 200, 0) == "n/a"


def test_a_recipe_with_another_window_gets_its_own_folders_and_key():
    assert recipe_tag(24, []) == "passes24"
    assert recipe_tag(24, [], WINDOW) == recipe_tag(24, [])
    assert recipe_tag(24, ["a=1"], 3000) == "passes24-window30s-a=1"
    assert recipe_name(5, 24, []) == "5-fold, passes 24"  # the keys already in cinc2017_cv.json stay valid
    assert recipe_name(5, 24, ["a=1"], 3000) == "5-fold, passes 24, window 30 s, a=1"
    assert recipe_tag(24, [], WINDOW, True) == "passes24-rhythm"
    assert recipe_tag(24, [], WINDOW, True, True) == "passes24-rhythm-beats"
    assert recipe_name(5, 24, [], WINDOW, True) == "5-fold, passes 24, rhythm features"
    assert recipe_name(5, 24, [], WINDOW, True, True) == "5-fold, passes 24, rhythm and beat features"
    teacher = ["5-fold, passes 24", "5-fold, gradient-boosted trees on the rhythm and beat features"]
    assert recipe_tag(24, [], WINDOW, True, True, teacher) == f"passes24-rhythm-beats-distilled-{teacher_hash(teacher)}"
    assert recipe_name(5, 24, [], WINDOW, False, False, teacher) == (
        f"5-fold, passes 24, distilled from the ensemble of 2 recipes {teacher_hash(teacher)}")
    assert teacher_hash(teacher) != teacher_hash(teacher[::-1]) and len(teacher_hash(teacher)) == 6


def test_each_recipe_reads_its_own_columns_of_the_recording_features():
    from cardiodistill.signals.rhythm import RECORDING_FEATURES, RHYTHM_FEATURES

    table = np.arange(3 * len(RECORDING_FEATURES), dtype=np.float32).reshape(3, -1)
    assert recipe_features(False) == () and features_of(table, ()) is None and features_of(None, ("rr_cv",)) is None
    assert recipe_features(True) == RHYTHM_FEATURES and recipe_features(True, True) == RECORDING_FEATURES
    np.testing.assert_array_equal(features_of(table, RHYTHM_FEATURES), table[:, : len(RHYTHM_FEATURES)])
    picked = features_of(table, ("p_coherence", "rr_cv"))
    np.testing.assert_array_equal(picked, table[:, [RECORDING_FEATURES.index("p_coherence"), 2]])


def test_the_features_table_is_cached_for_the_same_recordings_only(tmp_path, monkeypatch):
    import bench_real_students

    rng = np.random.default_rng(0)
    arrays = {"x": rng.normal(size=(3, 1, 1500)).astype(np.float32), "lengths": np.array([1500, 1200, 1500]),
              "record": np.array(["A1", "A2", "A3"])}
    cache = tmp_path / "features.npz"
    table = cinc_rhythm(arrays, cache)
    assert cache.is_file() and table.shape == (3, len(bench_real_students.RECORDING_FEATURES))

    def never(*args, **kwargs):
        raise AssertionError("recomputed")

    monkeypatch.setattr(bench_real_students, "signal_rhythm", never)
    np.testing.assert_array_equal(cinc_rhythm(arrays, cache), table)  # the same recordings: read back
    with pytest.raises(AssertionError, match="recomputed"):  # other recordings: computed again
        cinc_rhythm({**arrays, "record": np.array(["A1", "A2", "B3"])}, cache)


def test_the_trees_member_fits_on_a_folds_training_recordings_alone(tmp_path):
    import torch

    from cardiodistill.signals.rhythm import RECORDING_FEATURES
    from cardiodistill.train.checkpoints import load_model, read_model_file
    from cardiodistill.train.trees import fit_feature_trees

    target = _labels(300)
    table = np.random.default_rng(1).normal(size=(300, len(RECORDING_FEATURES))).astype(np.float32)
    table[:, 0] += target  # something to learn
    split = cinc_folds(target, 5, seed=0)[0]
    path = cinc_trees(table, target, split, tmp_path / "fold0", seed=0)
    saved = read_model_file(path)
    assert saved["n_train"] == len(split["train"]) and saved["abstain_outputs"] == ["noisy"]
    again = fit_feature_trees(table[split["train"]], target[split["train"]], rhythm=RECORDING_FEATURES,
                              outputs=["normal", "af", "other", "noisy"], seed=0)
    with torch.no_grad():
        rows = torch.from_numpy(table[split["test"]])
        torch.testing.assert_close(load_model(path).probabilities(rows), again.probabilities(rows))
    assert cinc_trees(table, target, split, tmp_path / "fold0", seed=0) == path  # found, not fitted again


def test_distillation_targets_are_the_folds_own_ensemble_and_never_touch_its_test_recordings(tmp_path):
    import torch

    from cardiodistill.models import create_model
    from cardiodistill.signals.rhythm import RECORDING_FEATURES
    from cardiodistill.train.checkpoints import load_model, save_model
    from cardiodistill.train.supervised import predict_arrays, probability_logits

    outputs, names = ["normal", "af", "other", "noisy"], ("rr_cv", "p_coherence")
    target = _labels(200)
    rng = np.random.default_rng(2)
    table = rng.normal(size=(200, len(RECORDING_FEATURES))).astype(np.float32)
    table[:, 0] += target
    folds = cinc_folds(target, 5, seed=0)
    torch.manual_seed(0)  # members of fold 1 only: an untrained student reading two features, and trees
    student = create_model("ecg_student", backbone={"name": "student_cnn_tiny", "in_leads": 1, "seconds": 10.0},
                           outputs=outputs, rhythm=list(names)).eval()
    save_model(student, tmp_path / "a" / "fold1" / "student.pt", task="multiclass", triage=None, leads=["I"],
               outputs=outputs, lvef=False, band_hz=[0.5, 40.0])
    trees = load_model(cinc_trees(table, target, folds[1], tmp_path / "b" / "fold1", seed=0))
    entries = [{"folder": str(tmp_path / "a")}, {"folder": str(tmp_path / "b")}]
    arrays = {"x": rng.normal(size=(200, 1, 1500)).astype(np.float32), "target": target,
              "lengths": np.full(200, 1500)}
    cache = tmp_path / "teacher_logits.npz"
    logits = ensemble_logits(entries, 1, arrays, folds[1], table, cache)
    assert logits.shape == (200, 4) and cache.is_file()
    assert np.isnan(logits[folds[1]["test"]]).all()  # the fold's test recordings get no target
    seen = np.concatenate([folds[1]["train"], folds[1]["val"]])
    p_student = predict_arrays(load_model(tmp_path / "a" / "fold1" / "student.pt"), arrays["x"][seen],
                               lengths=arrays["lengths"][seen], window=WINDOW, rhythm=features_of(table[seen], names))
    with torch.no_grad():
        p_trees = trees.probabilities(torch.from_numpy(table[seen])).numpy()
    np.testing.assert_allclose(logits[seen], probability_logits((p_student["probs"] + p_trees) / 2), atol=1e-3)
    np.testing.assert_array_equal(ensemble_logits([], 1, arrays, folds[1], table, cache), logits)  # read back


def test_an_ensemble_is_cross_validated_only_from_recipes_of_the_same_folds_and_windows(tmp_path):
    recipes = {"a": {"folds": 5, "window": 1000, "folder": "x"}, "b": {"folds": 3, "window": 1000, "folder": "y"},
               "c": {"folds": 5, "window": 3000, "folder": "z"}}
    with pytest.raises(SystemExit, match="different folds or windows"):
        run_cinc_cv_ensemble(tmp_path, recipes, ["a", "b"], 10)
    with pytest.raises(SystemExit, match="different folds or windows"):
        run_cinc_cv_ensemble(tmp_path, recipes, ["a", "c"], 10)
    with pytest.raises(SystemExit, match=r"not cross-validated: \['d'\]"):
        run_cinc_cv_ensemble(tmp_path, recipes, ["a", "d"], 10)
    assert ensemble_name(["a", "b"]) == "ensemble of a + b"


@pytest.mark.skipif(not (Path(__file__).resolve().parents[2] / "shared" / "data" / "ptbxl").is_dir(),
                    reason="../shared/data is not here")
def test_the_af_diagnostic_reads_randomness_in_rr_and_fibrillatory_waves_between_beats():
    fs, rng = 100.0, np.random.default_rng(0)
    regular = np.cumsum(np.full(40, 80) + rng.integers(-1, 2, 40))
    chaotic = np.cumsum(rng.integers(45, 115, 40))
    calm, random = rr_randomness(regular, fs), rr_randomness(chaotic, fs)
    assert random["rr_sample_entropy"] > calm["rr_sample_entropy"] and random["cosen"] > calm["cosen"]
    assert random["drr_cell_share"] > calm["drr_cell_share"]
    assert calm["local_irregular_share"] == 0.0 and random["local_irregular_share"] > 0.9
    assert set(rr_randomness(regular[:3], fs).values()) == {0.0}  # too few beats

    t = np.arange(3000) / fs
    beats = np.zeros_like(t)
    for p in regular[regular < 2950]:
        beats += np.exp(-0.5 * ((np.arange(3000) - p) / 1.5) ** 2)  # a narrow QRS
    waves = beats + 0.08 * np.sin(2 * np.pi * 6.0 * t)
    clean, fibrillating = atrial_residual(beats, regular, fs), atrial_residual(waves, regular, fs)
    assert fibrillating["fwave_band_share"] > 0.8 > clean["fwave_band_share"]
    assert abs(fibrillating["residual_peak_hz"] - 6.0) < 0.5
    assert fibrillating["residual_tq_log"] > clean["residual_tq_log"]


def test_ptbxl_cross_validation_tests_each_record_of_folds_1_8_once_and_no_patient_on_both_sides():
    from bench_ptbxl_cv import CV_FOLDS, Data

    data = Data(report_fold=9, seed=0)
    splits = [data.split(k) for k in range(len(CV_FOLDS))]
    tested = np.concatenate([s["test"] for s in splits])
    assert np.array_equal(np.sort(tested), np.arange(len(data.y))) and set(np.unique(data.fold)) == set(range(1, 9))
    patients = data.meta["patient_id"].to_numpy()
    for s in splits:
        assert not set(s["fit"]) & set(s["val"]) and not (set(s["fit"]) | set(s["val"])) & set(s["test"])
        assert len(s["fit"]) + len(s["val"]) + len(s["test"]) == len(data.y)
        assert not set(patients[s["test"]]) & set(patients[np.r_[s["fit"], s["val"]]])
    assert len(data.y_report) == 183  # fold 9: scored once, never in a fold


@pytest.mark.skipif(not (Path(__file__).resolve().parents[2] / "shared" / "data" / "ptbxl").is_dir(),
                    reason="../shared/data is not here")
def test_ptbxl_low_label_shares_are_nested_seeded_subsets_of_the_fold_and_keep_its_split():
    from bench_ptbxl_cv import CV_FOLDS, RECIPES, Data

    data = Data(report_fold=9, seed=0)
    for k in range(len(CV_FOLDS)):
        full, tenth, quarter = data.split(k), data.split(k, 0.1), data.split(k, 0.25)
        for part in ("fit", "val", "test"):
            assert np.array_equal(full[part], tenth[part])  # the fold itself does not move with the share
        assert np.array_equal(full["fit_labelled"], full["fit"]) and np.array_equal(full["val_labelled"], full["val"])
        for part in ("fit", "val"):
            assert set(tenth[f"{part}_labelled"]) <= set(quarter[f"{part}_labelled"]) <= set(full[part])
            assert len(tenth[f"{part}_labelled"]) == max(1, round(0.1 * len(full[part])))
        assert np.array_equal(tenth["fit_labelled"], Data(report_fold=9, seed=0).split(k, 0.1)["fit_labelled"])
    folders = [r.folder for r in RECIPES]
    assert len(set(folders)) == len(folders) and all(c.isalnum() or c in "-_" for f in folders for c in f)


def test_ptbxl_stage1_reads_no_record_a_fold_scores_and_its_students_share_one_network():
    from bench_ptbxl_cv import (
        CV_FOLDS,
        DECAY_SHARES,
        LAYER_DECAY,
        PROBE_RATES,
        PROBE_SHARES,
        RECIPES,
        SLOWER,
        STAGE1_SHARES,
        SWEEP_SHARES,
        stage1_sources,
    )

    for k, test_folds in enumerate(CV_FOLDS):
        ptbxl = [s for s in stage1_sources(k) if s.kind == "ptbxl"]
        assert len(ptbxl) == 1 and set(ptbxl[0].folds) == set(range(1, 9)) - set(test_folds)  # never 9-10
    for share in STAGE1_SHARES:  # scratch and stage 1 at every share: one network, two starts
        starts = {r.start for r in RECIPES if r.share == share and r.start}
        assert starts == {"scratch", "stage 1"}
        # each stage-1 recipe at every rate, on labels; distilled at three, all from the same teacher
        stage1 = [r for r in RECIPES if r.share == share and r.start == "stage 1" and r.kind == "student"]
        slower = {(rate, False) for rate in SLOWER} | {(SLOWER[0], True)} if share in SWEEP_SHARES else set()
        assert {(r.lr_scale, bool(r.teacher)) for r in stage1} == {(1.0, False), (1.0, True), (0.3, False), (0.3, True),
                                                                   *slower}
        assert all(r.every_record for r in stage1 if r.teacher)  # the teacher's targets on every training record
        assert len({r.teacher for r in stage1 if r.teacher}) == 1
        # the linear-probe starts (LP-FT): on labels at the slower rates, distilled at 0.1 x, where labels are few
        probed = {(r.lr_scale, bool(r.teacher)) for r in stage1 if r.probe}
        assert probed == ({*((rate, False) for rate in PROBE_RATES), (SLOWER[0], True)} if share in PROBE_SHARES
                          else set())
        assert all(r.start == "stage 1" for r in RECIPES if r.probe)
        # the layer-wise decay: 0.3 x at the top on labels at every share, distilled where the probe ran too
        decayed = {(r.lr_scale, bool(r.teacher), r.layer_decay) for r in stage1 if r.layer_decay != 1}
        assert decayed == ({(0.3, False, LAYER_DECAY), *([(0.3, True, LAYER_DECAY)] if share in PROBE_SHARES else [])}
                           if share in DECAY_SHARES else set())
    assert 0.3 * LAYER_DECAY ** 5 == pytest.approx(0.03, rel=0.01)  # the stem, five layers below the embedding
    assert all(r.start == "stage 1" and not r.probe for r in RECIPES if r.layer_decay != 1)


@pytest.mark.skipif(not (Path(__file__).resolve().parents[2] / "shared" / "data" / "ptbxl").is_dir(),
                    reason="../shared/data is not here")
def test_ptbxl_export_gate_data_is_the_folds_validation_records_as_z_scored_lead_i(tmp_path):
    from bench_ptbxl_cv import Data, lead_i_validation

    data = Data(report_fold=9, seed=0)
    lead_i_validation(data, 1, tmp_path / "val.npz")
    saved, split = np.load(tmp_path / "val.npz"), data.split(1)
    assert saved["x"].shape == (len(split["val"]), 1, data.x.shape[-1])
    assert np.array_equal(saved["y"], data.y[split["val"]], equal_nan=True)  # the validation records, every label
    lead_i = data.x[split["val"], :1].astype(np.float64)
    z = (lead_i - lead_i.mean(-1, keepdims=True)) / lead_i.std(-1, keepdims=True)
    assert np.allclose(saved["x"], z, atol=1e-3)


def test_ptbxl_a_chosen_rate_takes_in_each_fold_the_member_with_the_lower_validation_loss(tmp_path):
    from bench_ptbxl_cv import BY_NAME, RECIPES, _fold_model

    choice = next(r for r in RECIPES if r.kind == "choice")
    fast, slow = (BY_NAME[m] for m in choice.members)
    assert fast.lr_scale == 1.0 and slow.lr_scale < 1.0 and fast.share == slow.share == choice.share
    for k, losses in enumerate([(0.7, 0.5), (0.4, 0.6)]):
        for recipe, loss in zip((fast, slow), losses):
            log = tmp_path / recipe.folder / f"fold{k}" / "logs"
            log.mkdir(parents=True)  # Lightning's CSV log: training rows carry no validation loss
            (log / "metrics.csv").write_text(f"epoch,step,val/label\n1,10,\n1,19,{loss + 0.2}\n2,39,{loss}\n")
    assert _fold_model(choice, 0, tmp_path).parts[-3] == slow.folder
    assert _fold_model(choice, 1, tmp_path).parts[-3] == fast.folder


def test_ptbxl_students_never_start_from_a_stage1_encoder_of_another_length(tmp_path):
    from bench_ptbxl_cv import stage1

    from cardiodistill.config import Config
    from cardiodistill.models import create_model
    from cardiodistill.train.checkpoints import save_model

    encoder = tmp_path / "stage1" / "fold0" / "encoder.pt"
    save_model(create_model("ecg_cnn", fs=100.0), encoder, objective="clocs", steps=1200)
    assert stage1(None, 0, tmp_path, Config(), steps=1200) == encoder  # there: reused, nothing trained
    with pytest.raises(SystemExit, match=r"encoder\.pt: a stage-1 encoder of 1200 steps, where this run asks for 2400"):
        stage1(None, 0, tmp_path, Config(), steps=2400)


def test_the_benchmarks_paired_macro_difference_is_the_librarys_as_a_results_entry():
    from bench_real_students import paired_macro_delta

    from cardiodistill.evaluate.metrics import paired_macro_auroc_ci

    rng = np.random.default_rng(1)
    y = (rng.random((200, 4)) < [0.3, 0.05, 0.5, 0.02]).astype(float)
    a, b = rng.random((200, 4)) + 0.5 * y, np.round(rng.random((200, 4)) + 0.3 * y, 1)  # ties in b
    groups = np.arange(200) % 4
    for g in (None, groups):
        entry = paired_macro_delta(y, a, b, 200, 3, groups=g)
        assert tuple(entry.values()) == paired_macro_auroc_ci(y, a, b, n_boot=200, seed=3, groups=g)
        assert list(entry) == ["value", "ci_low", "ci_high"] and entry["ci_low"] < entry["value"] < entry["ci_high"]


def test_ptbxl_versus_pairs_each_recipe_with_its_twin_in_another_run(tmp_path):
    from types import SimpleNamespace

    from bench_ptbxl_cv import RECIPES, versus

    rng = np.random.default_rng(0)
    y, y_report = (rng.random((160, 5)) < 0.3).astype(np.float32), (rng.random((40, 5)) < 0.3).astype(np.float32)
    data = SimpleNamespace(y=y, y_report=y_report, cv_fold=np.arange(160) % 4, report_fold=9,
                           split=lambda k, share=1.0: {"test": np.flatnonzero(np.arange(160) % 4 == k)})
    noise = rng.random((200, 5))
    sharp, blurred = np.r_[y, y_report] + noise, np.r_[y, y_report] * 0.3 + noise
    recipe, absent = RECIPES[4], RECIPES[5]
    for run, p in (("a", sharp), ("b", blurred)):
        cache = tmp_path / run / recipe.folder / "predictions-fold9.npz"
        cache.parent.mkdir(parents=True)
        np.savez(cache, oof=p[:160], report=p[160:], fold_auroc=np.full(4, 0.8 if run == "a" else 0.6))
    diff = versus(data, tmp_path / "a", tmp_path / "b", n_boot=100, seed=0)
    assert set(diff["recipes"]) == {recipe.name} and absent.name not in diff["recipes"]  # only recipes both have
    m = diff["recipes"][recipe.name]
    assert (m["fold_mean"], m["other_fold_mean"]) == (0.8, 0.6)
    for key in ("folds_minus_other", "cv_minus_other", "report_minus_other"):
        assert m[key]["ci_low"] > 0  # the sharper predictions rank better, paired over the same records
    assert versus(data, tmp_path / "a", tmp_path / "a", n_boot=50, seed=0)["recipes"][recipe.name][
        "folds_minus_other"]["value"] == 0
