"""Clinical metrics with bootstrap CIs, thresholds, subgroups, retrieval, calibration and the HTML report."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    roc_auc_score,
)

from cardiodistill.errors import ConfigError, DataError
from cardiodistill.evaluate.calibration import (
    apply_temperature,
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    plot_reliability,
    reliability_curve,
)
from cardiodistill.evaluate.clinical import (
    BINARY_METRICS,
    age_bands,
    binary_metrics,
    choose_threshold,
    multilabel_metrics,
    paired_difference,
    plot_label_fraction_curve,
    plot_roc,
    recall_at_k,
    subgroup_metrics,
)
from cardiodistill.evaluate.report import Report


def _scores(n: int, prevalence: float = 0.3, shift: float = 1.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels [n] and probabilities [n], rounded to 2 decimals so that there are ties."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(float)
    return y, np.round(expit(shift * y - 0.8 + rng.normal(0, 1, n)), 2)


def _calibrated(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels [n] drawn from sigmoid(z): the logits z [n] are calibrated by construction."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, n)
    return (rng.random(n) < expit(z)).astype(float), z


# ------------------------------------------------------------------------------------------ binary metrics


def test_binary_metrics_match_sklearn():
    y, p = _scores(600)
    y_nan = np.concatenate([y, [np.nan, np.nan]])  # unlabelled records are left out
    m = binary_metrics(y_nan, np.concatenate([p, [0.9, 0.1]]), threshold=0.4, n_boot=0)
    called = p >= 0.4
    tn, fp, fn, tp = confusion_matrix(y, called).ravel()
    expected = {
        "auroc": roc_auc_score(y, p),
        "auprc": average_precision_score(y, p),
        "balanced_accuracy": balanced_accuracy_score(y, called),
        "f1": f1_score(y, called),
        "sensitivity": tp / (tp + fn),
        "specificity": tn / (tn + fp),
        "ppv": tp / (tp + fp),
        "npv": tn / (tn + fn),
        "prevalence": y.mean(),
    }
    for name, value in expected.items():
        assert m[name]["value"] == pytest.approx(value, abs=1e-12), name
        assert np.isnan(m[name]["ci_low"]) and np.isnan(m[name]["ci_high"])  # n_boot=0: no interval
    assert (m["n"], m["n_pos"], m["threshold"]) == (600, int(y.sum()), 0.4)


def test_bootstrap_interval_contains_point_narrows_and_is_seeded():
    y, p = _scores(200, seed=1)
    small = binary_metrics(y, p, n_boot=300, seed=3)
    for name in BINARY_METRICS:
        assert small[name]["ci_low"] <= small[name]["value"] <= small[name]["ci_high"], name
    assert binary_metrics(y, p, n_boot=300, seed=3) == small
    assert binary_metrics(y, p, n_boot=300, seed=np.random.default_rng(3)) == small
    y2, p2 = _scores(3000, seed=2)
    large = binary_metrics(y2, p2, n_boot=300, seed=3)
    for name in ("auroc", "auprc", "sensitivity", "specificity"):
        width = small[name]["ci_high"] - small[name]["ci_low"]
        assert large[name]["ci_high"] - large[name]["ci_low"] < 0.5 * width, name


def test_binary_metrics_are_nan_safe():
    rng = np.random.default_rng(0)
    m = binary_metrics(np.ones(30), rng.random(30), n_boot=50)
    for name in ("auroc", "auprc", "specificity", "balanced_accuracy"):
        assert np.isnan(m[name]["value"]) and np.isnan(m[name]["ci_low"]), name
    assert 0 < m["sensitivity"]["value"] < 1 and m["prevalence"]["value"] == 1.0
    empty = binary_metrics(np.full(5, np.nan), rng.random(5), n_boot=50)
    assert empty["n"] == 0 and all(np.isnan(empty[name]["value"]) for name in BINARY_METRICS)
    with pytest.raises(DataError, match="labels must be 0, 1"):
        binary_metrics(np.array([0, 1, 2]), np.zeros(3))
    with pytest.raises(DataError, match="NaN or infinite"):
        binary_metrics(np.array([0, 1, 1]), np.array([0.1, np.nan, 0.5]))
    with pytest.raises(ConfigError, match="alpha"):
        binary_metrics(np.array([0, 1]), np.array([0.1, 0.9]), alpha=1.5)


def test_multilabel_masks_unlabelled_and_macro_averages():
    rng = np.random.default_rng(4)
    n = 400
    Y = (rng.random((n, 3)) < [0.2, 0.4, 0.5]).astype(float)
    P = expit(Y * [2.0, 1.0, 0.0] + rng.normal(0, 1, (n, 3)))  # strong, weak and useless predictors
    Y[rng.random((n, 3)) < 0.25] = np.nan
    out = multilabel_metrics(Y, P, ["af", "lvsd", "noise"], thresholds=[0.5, 0.6, 0.5], n_boot=200)
    for c, name in enumerate(["af", "lvsd", "noise"]):
        keep = ~np.isnan(Y[:, c])
        assert out[name]["n"] == keep.sum()
        assert out[name]["auroc"]["value"] == pytest.approx(roc_auc_score(Y[keep, c], P[keep, c]))
        assert out[name]["auprc"]["value"] == pytest.approx(average_precision_score(Y[keep, c], P[keep, c]))
    assert out["lvsd"]["threshold"] == 0.6
    assert out["af"]["auroc"]["value"] > out["lvsd"]["auroc"]["value"] > out["noise"]["auroc"]["value"]
    macro = out["macro"]
    assert macro["n_labels"] == 3
    assert macro["auroc"]["value"] == pytest.approx(np.mean([out[k]["auroc"]["value"] for k in ("af", "lvsd", "noise")]))
    for name in ("auroc", "auprc"):
        assert macro[name]["ci_low"] < macro[name]["value"] < macro[name]["ci_high"]
    with pytest.raises(ConfigError, match="label names"):
        multilabel_metrics(Y, P, ["a", "b"], n_boot=0)


# ------------------------------------------------------------------------------------ thresholds, subgroups


def test_choose_threshold_rules():
    y, p = _scores(800, seed=5)
    youden = choose_threshold(y, p, "youden")
    candidates = np.unique(p)
    j = [np.mean(p[y == 1] >= t) + np.mean(p[y == 0] < t) - 1 for t in candidates]
    assert youden == pytest.approx(candidates[np.argmax(j)])
    f1 = choose_threshold(y, p, "f1")
    assert f1_score(y, p >= f1) == pytest.approx(max(f1_score(y, p >= t) for t in candidates))
    rule_out = choose_threshold(y, p, "sensitivity", target=0.95)
    assert np.mean(p[y == 1] >= rule_out) >= 0.95
    assert np.mean(p[y == 1] >= candidates[candidates > rule_out][0]) < 0.95  # the highest such threshold
    with pytest.raises(ConfigError, match="unknown threshold rule"):
        choose_threshold(y, p, "accuracy")
    with pytest.raises(DataError, match="both classes"):
        choose_threshold(np.ones(10), p[:10])


def test_subgroup_rows_and_age_bands():
    y, p = _scores(300, seed=6)
    age = np.linspace(20, 90, 300)
    age[:3] = np.nan
    bands = age_bands(age)
    assert bands[:3].tolist() == ["missing"] * 3
    assert age_bands([39.9, 40, 59, 60, 74.5, 75]).tolist() == ["<40", "40-59", "40-59", "60-74", "60-74", ">=75"]
    assert age_bands([10, 50], edges=(18.5,)).tolist() == ["<18.5", ">=18.5"]
    sex = np.where(np.arange(300) % 2 == 0, "F", "M").astype(object)
    sex[:6] = None  # 6 patients with the sex unknown: too few to score
    y[sex == "M"] = 1.0  # one class among men
    rows = subgroup_metrics(y, p, {"sex": sex, "age": bands}, threshold=0.5, n_boot=100)
    by_group = {(r["subgroup"], r["group"]): r for r in rows}
    assert [k for k in by_group if k[0] == "sex"] == [("sex", "F"), ("sex", "M"), ("sex", "missing")]
    female = by_group["sex", "F"]
    sel = sex == "F"
    assert female["n"] == sel.sum() and female["n_pos"] == y[sel].sum() and "note" not in female
    assert female["auroc"] == binary_metrics(y[sel], p[sel], n_boot=100)["auroc"]
    assert "one class" in by_group["sex", "M"]["note"] and np.isnan(by_group["sex", "M"]["auroc"]["value"])
    assert "fewer than 10" in by_group["sex", "missing"]["note"]
    assert np.isnan(by_group["sex", "missing"]["sensitivity"]["value"])
    assert {g for s, g in by_group if s == "age"} == {"<40", "40-59", "60-74", ">=75", "missing"}


# ---------------------------------------------------------------------------------------------- retrieval


def test_recall_at_k_perfect_chance_and_collapsed():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 32))
    perfect = recall_at_k(x, 2.0 * x, n_boot=0)  # cosine: the scale does not matter
    assert perfect["recall@1"]["value"] == perfect["recall@10"]["value"] == 1.0 and perfect["median_rank"] == 1.0
    random = recall_at_k(x, rng.normal(size=(300, 32)), ks=(1, 10, 30), chunk=64, n_boot=300)
    assert random["chance@10"] == pytest.approx(10 / 300)
    r30 = random["recall@30"]
    assert abs(r30["value"] - 0.1) < 0.06 and random["recall@1"]["value"] < 0.03
    assert r30["ci_low"] < r30["value"] < r30["ci_high"] and r30["ci_low"] < 0.1 < r30["ci_high"]
    assert 100 < random["median_rank"] < 200
    collapsed = recall_at_k(np.ones((50, 4)), np.ones((50, 4)), n_boot=0)  # ties count against the model
    assert collapsed["recall@10"]["value"] == 0.0 and collapsed["median_rank"] == 50.0


# -------------------------------------------------------------------------------------------- calibration


def test_ece_calibrated_vs_overconfident():
    y, z = _calibrated(20000)
    p = expit(z)
    assert expected_calibration_error(y, p) < 0.015
    assert expected_calibration_error(y, p, strategy="quantile") < 0.015
    overconfident = expit(4.0 * z)
    assert expected_calibration_error(y, overconfident) > 0.1
    mean_pred, frac_pos, count = reliability_curve(y, p, n_bins=10)
    assert count.sum() == len(y) and len(mean_pred) == len(frac_pos) == len(count) <= 10
    assert np.all(np.abs(mean_pred - frac_pos)[count > 500] < 0.04)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        expected_calibration_error(y, z)  # logits are not probabilities
    with pytest.raises(ConfigError, match="strategy"):
        expected_calibration_error(y, p, strategy="equal")


def test_temperature_scaling_recovers_known_temperature():
    y, z = _calibrated(20000, seed=1)
    t = fit_temperature(3.0 * z, y)
    assert t == pytest.approx(3.0, rel=0.08)
    Y = np.stack([y, y[::-1]], axis=1)
    Y[::7, 1] = np.nan  # unlabelled entries are left out of the multi-label fit
    Z = 3.0 * np.stack([z, z[::-1]], axis=1)
    assert fit_temperature(Z, Y) == pytest.approx(3.0, rel=0.08)
    np.testing.assert_allclose(apply_temperature(3.0 * z, 3.0), expit(z))
    report = calibration_report(y, 3.0 * z, t)
    assert report["n"] == len(y) and report["temperature"] == t
    for key in ("ece", "brier", "nll"):
        assert report["after"][key]["value"] < report["before"][key]["value"], key
        assert np.isnan(report["after"][key]["ci_low"])  # n_boot=0: no interval
    assert report["after"]["ece"]["value"] < 0.02
    assert report["before"]["ece"]["value"] == pytest.approx(expected_calibration_error(y, expit(3.0 * z)))
    assert report["before"]["brier"]["value"] == pytest.approx(np.mean((expit(3.0 * z) - y) ** 2))
    with pytest.raises(ConfigError, match="positive"):
        apply_temperature(z, 0.0)


# --------------------------------------------------------------------------------------------- figures


def test_figures_are_written(tmp_path):
    y, p = _scores(300, seed=8)
    paths = [
        plot_roc({"student (1-lead)": (y, p), "teacher": (y, np.clip(p + 0.2 * y, 0, 1))}, tmp_path / "roc.png"),
        plot_reliability({"student": (y, p)}, tmp_path / "reliability.png"),
        plot_label_fraction_curve(
            [{"method": m, "fraction": f, "auroc": a, "ci_low": a - 0.03, "ci_high": a + 0.03}
             for m, base in (("scratch", 0.70), ("distilled", 0.80)) for f, a in ((0.01, base), (0.1, base + 0.05),
                                                                                  (1.0, base + 0.08))],
            tmp_path / "fraction.png"),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert not [f.name for f in tmp_path.iterdir() if f.name.startswith(".tmp-")]


# ---------------------------------------------------------------------------------------------- report


def _small_figure():
    """A tiny matplotlib figure."""
    from cardiodistill.viz import _plt

    fig, ax = _plt().subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    return fig


def test_report_is_self_contained_and_escaped(tmp_path):
    import pandas as pd

    from cardiodistill.evaluate.regression import save_figure

    png = save_figure(_small_figure(), tmp_path / "plot.png")
    m = {"value": 0.8712, "ci_low": 0.8421, "ci_high": 0.8969}
    report = (
        Report("Triage <script>alert(1)</script>", "test set & fold 10")
        .paragraph("Written before any section.")
        .section("Discrimination", "AUROC with 95 % intervals.\n\nSecond <b>paragraph</b>.")
        .table([{"label": "AF <script>x()</script>", "n": 120, "auroc": m, "ece": float("nan")},
                {"label": "LVSD", "n": 80, "auroc": {"value": float("nan"), "ci_low": 0.1, "ci_high": 0.2},
                 "bias": -1.5}],
               caption="Per label")
        .figure(png, "ROC <curve>")
        .section("Agreement (LVEF, %)")
        .table(pd.DataFrame({"bias (%)": [1.25]}, index=pd.Index(["echo"], name="reader")))
        .figure(_small_figure())
        .note("Only 6 patients had sex <unknown>.", kind="warning")
    )
    path = report.write(tmp_path / "out" / "report.html")
    html = path.read_text(encoding="utf-8")
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;paragraph&lt;/b&gt;" in html and "test set &amp; fold 10" in html
    assert "0.871 (0.842-0.897)" in html and "n/a" in html and "-1.500" in html
    assert html.count('src="data:image/png;base64,') == 2
    assert "http://" not in html and "https://" not in html and "<link" not in html
    assert 'href="#section-1"' in html and 'id="section-2"' in html and "Agreement (LVEF, %)" in html
    assert "<th scope=\"col\">reader</th>" in html  # a named index becomes a column
    assert 'class="note warning"' in html and "sex &lt;unknown&gt;" in html
    assert not [p.name for p in path.parent.iterdir() if p.name.startswith(".tmp-")]


def test_report_cells_errors_and_atomic_write(tmp_path, monkeypatch):
    assert Report.metric_cell({"value": 0.5, "ci_low": 0.4, "ci_high": 0.6}) == "0.500 (0.400-0.600)"
    assert Report.metric_cell({"value": -1.2, "ci_low": -2.5, "ci_high": 0.1}, "{:.1f}") == "-1.2 (-2.5 to 0.1)"
    assert Report.metric_cell({"value": 0.9, "ci_low": float("nan"), "ci_high": float("nan")}) == "0.900"
    at_chance = {"value": 0.481, "ci_low": 0.31, "ci_high": 0.66, "chance": 0.5, "vs_chance": "not distinguishable"}
    assert Report.metric_cell(at_chance) == "0.481 (0.310-0.660), not distinguishable from chance"
    assert Report.metric_cell(at_chance, chance=False) == "0.481 (0.310-0.660)"
    assert Report.metric_cell({**at_chance, "vs_chance": "above"}) == "0.481 (0.310-0.660)"
    assert Report.metric_cell({"value": None, "ci_low": None, "ci_high": None}) == "n/a"
    (tmp_path / "bad.png").write_bytes(b"GIF89a")
    with pytest.raises(DataError, match="bad.png: the figure is not a PNG"):
        Report("t").figure(tmp_path / "bad.png")
    with pytest.raises(DataError, match="cannot read the figure"):
        Report("t").figure(tmp_path / "missing.png")
    with pytest.raises(ConfigError, match="note kind"):
        Report("t").note("x", kind="danger")

    path = Report("first").write(tmp_path / "r.html")
    before = path.read_text()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("cardiodistill.io.atomic.os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        Report("second").write(path)
    assert path.read_text() == before and "first" in before
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".html"] == ["r.html"]


# ------------------------------------------------------------------------- honest evidence: chance, pairs, CIs


def test_intervals_say_whether_they_include_chance():
    y, p = _scores(400, seed=9)
    good = binary_metrics(y, p, n_boot=300)
    assert good["auroc"]["chance"] == 0.5 and good["auroc"]["vs_chance"] == "above"
    assert good["auprc"]["chance"] == pytest.approx(y.mean()) and good["auprc"]["vs_chance"] == "above"
    noise = binary_metrics(y, np.random.default_rng(1).random(400), n_boot=300)
    assert noise["auroc"]["ci_low"] < 0.5 < noise["auroc"]["ci_high"]
    assert noise["auroc"]["vs_chance"] == "not distinguishable"
    inverted = binary_metrics(y, 1.0 - p, n_boot=300)
    assert inverted["auroc"]["vs_chance"] == "below"
    assert "vs_chance" not in good["sensitivity"] and "vs_chance" not in binary_metrics(y, p, n_boot=0)["auroc"]


def test_no_threshold_leaves_operating_point_metrics_undefined():
    y, p = _scores(200, seed=10)
    m = binary_metrics(y, p, threshold=None, n_boot=50)
    assert m["threshold"] is None and m["auroc"]["value"] == pytest.approx(roc_auc_score(y, p))
    assert all(np.isnan(m[name]["value"]) for name in ("sensitivity", "specificity", "ppv", "npv", "f1"))
    out = multilabel_metrics(np.stack([y, y], 1), np.stack([p, p], 1), ["a", "b"], thresholds=[0.4, np.nan], n_boot=0)
    assert out["a"]["threshold"] == 0.4 and out["a"]["sensitivity"]["value"] > 0
    assert out["b"]["threshold"] is None and np.isnan(out["b"]["sensitivity"]["value"])


def test_paired_difference_is_scored_on_the_same_resamples():
    y, p = _scores(300, seed=11)
    worse = np.clip(p + np.random.default_rng(2).normal(0, 0.3, 300), 0, 1)
    d = paired_difference(y, worse, p, n_boot=400, seed=0)
    assert d["value"] == pytest.approx(roc_auc_score(y, worse) - roc_auc_score(y, p))
    assert d["ci_low"] < d["value"] < d["ci_high"] < 0 and (d["n"], d["n_pos"]) == (300, int(y.sum()))
    same = paired_difference(y, p, p, n_boot=100)
    assert same["value"] == same["ci_low"] == same["ci_high"] == 0.0  # paired: identical models differ by 0 always
    unpaired = binary_metrics(y, p, n_boot=400)["auroc"]
    assert d["ci_high"] - d["ci_low"] < 2 * (unpaired["ci_high"] - unpaired["ci_low"])
    with pytest.raises(ConfigError, match="paired_difference scores"):
        paired_difference(y, p, p, metric="f1")


def test_macro_point_and_interval_average_the_same_labels():
    """A common label scored well and a rare one (2 positives of 60) scored badly: resamples missing the rare
    label's positives must not be averaged over the common label alone (which pushed the interval above the
    point); the interval is the same statistic as the point, on resamples, over the same labels."""
    from cardiodistill.evaluate.clinical import _bootstrap

    rng = np.random.default_rng(12)
    n = 60
    common = (rng.random(n) < 0.4).astype(float)
    rare = np.zeros(n)
    rare[[3, 40]] = 1.0
    Y = np.stack([common, rare], 1)
    P = np.stack([expit(3 * common + rng.normal(0, 1, n)), rng.random(n) * 0.2], 1)
    P[[3, 40], 1] = 0.01  # the rare label's positives score lowest: AP about 2 / 60
    n_boot, seed = 400, 5
    macro = multilabel_metrics(Y, P, ["common", "rare"], n_boot=n_boot, seed=seed)["macro"]
    per_label = [average_precision_score(Y[:, c], P[:, c]) for c in range(2)]
    assert macro["n_labels"] == 2 and macro["auprc"]["value"] == pytest.approx(np.mean(per_label))
    # the reference: every resample scored with sklearn over BOTH labels, left out when one has a single class
    values = []
    for idx in np.concatenate(list(_bootstrap(n, n_boot, seed, 256, width=2))):
        y_b, p_b = Y[idx], P[idx]
        if all(0 < y_b[:, c].sum() < n for c in range(2)):
            values.append(np.mean([average_precision_score(y_b[:, c], p_b[:, c]) for c in range(2)]))
    assert macro["n_boot_used"] == len(values) < n_boot
    lo, hi = np.quantile(values, [0.025, 0.975])
    assert (macro["auprc"]["ci_low"], macro["auprc"]["ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
    assert macro["auprc"]["ci_low"] <= macro["auprc"]["value"] <= macro["auprc"]["ci_high"]


def test_calibration_intervals_cover_the_point():
    y, z = _calibrated(2000, seed=3)
    report = calibration_report(y, 2.0 * z, 2.0, n_boot=200, seed=1)
    assert report["n_boot"] == 200
    for when in ("before", "after"):
        for key in ("ece", "brier", "nll"):
            m = report[when][key]
            assert m["ci_low"] < m["ci_high"] and m["ci_low"] <= m["value"] * 1.5, (when, key)
    brier = report["after"]["brier"]
    assert brier["ci_low"] < brier["value"] < brier["ci_high"]
    assert report["before"]["ece"]["ci_low"] > report["after"]["ece"]["ci_high"]  # T = 2 really helps here


# --------------------------------------------------------------------- a small pipeline report, end to end

PLANTED_ID = "MRN-0042-PLANTED"


@pytest.fixture(scope="module")
def small_results(tmp_path_factory):
    """``metrics.json``-ready results of a teacher (informative) and a 1-lead student (noise) on 200 validation
    and 200 test studies, scored by the pipeline's own functions; every study has the planted patient id."""
    import json
    from types import SimpleNamespace

    import pandas as pd

    from cardiodistill.evaluate.triage import _json_ready, failure_examples, model_metrics

    rng = np.random.default_rng(20)
    n = 400
    outputs = ("urgent_referral", "af", "hyperkalaemia", "lvsd")
    labels = (rng.random((n, 4)) < [0.3, 0.25, 0.0, 0.3]).astype(float)
    labels[[5, 17], 2] = 1.0  # hyperkalaemia: 2 positives, both in validation, none on test
    cohort = SimpleNamespace(labels=labels, outputs=outputs, lvef_labels=np.full(n, np.nan))
    val, test = np.arange(200), np.arange(200, 400)
    teacher_logits = 2.5 * (labels - 0.5) + rng.normal(0, 1, (n, 4))
    student_logits = rng.normal(0, 1, (n, 4))
    results = {"models": {}, "subgroups": {}}
    probs = {}
    for name, logits, kind in (("teacher (all modalities)", teacher_logits, "teacher"),
                               ("student, 1 lead", student_logits, "student")):
        m = model_metrics({"index": val, "logits": logits[val], "lvef_pct": np.zeros(200)},
                          {"index": test, "logits": logits[test], "lvef_pct": np.zeros(200)},
                          cohort, n_boot=200, rule="youden")
        probs[name] = m.pop("_p_test")[:, 0]
        results["models"][name] = {"kind": kind, **({"leads": ["I"]} if kind == "student" else
                                                     {"modalities_used": ["ecg", "echo"]}), **m}
    y_test = labels[test, 0]
    results["distillation_cost"] = {"reference": "teacher (all modalities)", "metric": "triage AUROC", "students": {
        "student, 1 lead": paired_difference(y_test, probs["student, 1 lead"], probs["teacher (all modalities)"],
                                             n_boot=200)}}
    table = pd.DataFrame({"patient_id": [PLANTED_ID] * n, "lvef": rng.uniform(20, 70, n),
                          "age": rng.integers(20, 96, n).astype(float), "sex": rng.choice(["F", "M"], n),
                          "dx_af": labels[:, 1]})
    threshold = results["models"]["student, 1 lead"]["triage"]["threshold"]
    picked = failure_examples(table, test, y_test, probs["student, 1 lead"], probs["teacher (all modalities)"],
                              threshold, 4, ["dx_af"])
    results["failures"] = {"model": "student, 1 lead", "examples": [e for _, e in picked]}
    results["cohort"] = {"studies": n, "splits": {"train": 0, "val": 200, "test": 200},
                         "modalities_present": {"ecg": 1.0}, "age_test": {"median": 60.0, "iqr": [45.0, 75.0]},
                         "prevalence_test": {k: float(labels[test, i].mean()) for i, k in enumerate(outputs)},
                         "positives_test": {k: int(labels[test, i].sum()) for i, k in enumerate(outputs)},
                         "sex_test": {"F": 100, "M": 100}, "skipped": []}
    results["fusion_analysis"] = {"rsv_mean": {"labs": 1.0, "ecg": 0.0, "echo": 0.0}}
    results = json.loads(json.dumps(_json_ready(results)))  # what metrics.json holds
    return results, table


def test_per_diagnosis_thresholds_come_from_validation(small_results):
    results, _ = small_results
    dx = results["models"]["teacher (all modalities)"]["diagnoses"]
    assert dx["af"]["threshold"] != 0.5 and dx["af"]["sensitivity"]["value"] > 0.5  # not the fixed 0.5 of old
    assert dx["hyperkalaemia"]["n_pos"] == 0 and dx["hyperkalaemia"]["auroc"]["value"] is None


def test_small_report_is_honest_about_chance_and_names_no_patient(small_results, tmp_path):
    import json

    from cardiodistill.evaluate.pipeline_report import chance_findings, write_report
    from cardiodistill.evaluate.regression import save_figure

    results, _ = small_results
    save_figure(_small_figure(), tmp_path / "figures" / "rsv.png")
    student = results["models"]["student, 1 lead"]
    assert student["triage"]["auroc"]["vs_chance"] == "not distinguishable"
    assert results["models"]["teacher (all modalities)"]["triage"]["auroc"]["vs_chance"] == "above"
    (finding,) = chance_findings(results)
    assert finding.startswith("student, 1 lead: urgent referral AUROC") and "not distinguishable" in finding
    metrics = json.dumps(results)
    assert PLANTED_ID not in metrics and '"lo"' not in metrics and '"ci_low"' in metrics
    html = write_report(results, tmp_path / "figures", tmp_path / "report.html").read_text()
    assert PLANTED_ID not in html
    assert html.count("not distinguishable from chance") >= 3  # the note, the headline table, the diagnoses
    assert "What distillation costs" in html and "paired bootstrap" in html
    cost = results["distillation_cost"]["students"]["student, 1 lead"]
    assert Report.metric_cell(cost, "{:+.3f}") in html and cost["ci_low"] < cost["value"] < cost["ci_high"]
    assert "no positive test studies (n=0" in html  # hyperkalaemia, not a row of n/a
    assert "threshold (validation)" in html and "none: validation lacks a class" not in html
    assert "Relative source variance (RSV)" in html and "labs 1.00, ECG 0.00, echo 0.00" in html  # the caption
    assert "Nearly all of it comes from labs" in html
    example = results["failures"]["examples"][0]
    assert f"<td>{example['age']:.0f}</td>" in html and f"<td>{example['student_p']:.3f}</td>" in html
    assert f"{example['age']:.3f}" not in html


def test_real_ids_only_on_request(small_results, tmp_path):
    from cardiodistill.evaluate.pipeline_report import write_report
    from cardiodistill.evaluate.triage import failure_examples
    from cardiodistill.privacy import pseudonym

    results, table = small_results
    assert results["failures"]["examples"][0]["patient"] == pseudonym(PLANTED_ID)
    picked = failure_examples(table, np.arange(10), np.ones(10), np.zeros(10), None, 0.5, 2, [], show_ids=True)
    assert [e["patient_id"] for _, e in picked] == [PLANTED_ID] * 2
    opted = {**results, "failures": {"model": "student, 1 lead", "examples": [e for _, e in picked]}}
    assert PLANTED_ID not in write_report(opted, tmp_path, tmp_path / "hidden.html").read_text()
    assert PLANTED_ID in write_report(opted, tmp_path, tmp_path / "shown.html", show_ids=True).read_text()
