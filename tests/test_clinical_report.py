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
        assert np.isnan(m[name]["lo"]) and np.isnan(m[name]["hi"])  # n_boot=0: no interval
    assert (m["n"], m["n_pos"], m["threshold"]) == (600, int(y.sum()), 0.4)


def test_bootstrap_interval_contains_point_narrows_and_is_seeded():
    y, p = _scores(200, seed=1)
    small = binary_metrics(y, p, n_boot=300, seed=3)
    for name in BINARY_METRICS:
        assert small[name]["lo"] <= small[name]["value"] <= small[name]["hi"], name
    assert binary_metrics(y, p, n_boot=300, seed=3) == small
    assert binary_metrics(y, p, n_boot=300, seed=np.random.default_rng(3)) == small
    y2, p2 = _scores(3000, seed=2)
    large = binary_metrics(y2, p2, n_boot=300, seed=3)
    for name in ("auroc", "auprc", "sensitivity", "specificity"):
        assert large[name]["hi"] - large[name]["lo"] < 0.5 * (small[name]["hi"] - small[name]["lo"]), name


def test_binary_metrics_are_nan_safe():
    rng = np.random.default_rng(0)
    m = binary_metrics(np.ones(30), rng.random(30), n_boot=50)
    for name in ("auroc", "auprc", "specificity", "balanced_accuracy"):
        assert np.isnan(m[name]["value"]) and np.isnan(m[name]["lo"]), name
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
        assert macro[name]["lo"] < macro[name]["value"] < macro[name]["hi"]
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
    perfect = recall_at_k(x, 2.0 * x)  # cosine: the scale does not matter
    assert perfect["recall@1"] == perfect["recall@10"] == 1.0 and perfect["median_rank"] == 1.0
    random = recall_at_k(x, rng.normal(size=(300, 32)), ks=(1, 10, 30), chunk=64)
    assert random["chance@10"] == pytest.approx(10 / 300)
    assert abs(random["recall@30"] - 0.1) < 0.06 and random["recall@1"] < 0.03
    assert 100 < random["median_rank"] < 200
    collapsed = recall_at_k(np.ones((50, 4)), np.ones((50, 4)))  # ties count against the model
    assert collapsed["recall@10"] == 0.0 and collapsed["median_rank"] == 50.0


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
        assert report["after"][key] < report["before"][key], key
    assert report["after"]["ece"] < 0.02
    with pytest.raises(ConfigError, match="positive"):
        apply_temperature(z, 0.0)


# --------------------------------------------------------------------------------------------- figures


def test_figures_are_written(tmp_path):
    y, p = _scores(300, seed=8)
    paths = [
        plot_roc({"student (1-lead)": (y, p), "teacher": (y, np.clip(p + 0.2 * y, 0, 1))}, tmp_path / "roc.png"),
        plot_reliability({"student": (y, p)}, tmp_path / "reliability.png"),
        plot_label_fraction_curve(
            [{"method": m, "fraction": f, "auroc": a, "lo": a - 0.03, "hi": a + 0.03}
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
    m = {"value": 0.8712, "lo": 0.8421, "hi": 0.8969}
    report = (
        Report("Triage <script>alert(1)</script>", "test set & fold 10")
        .paragraph("Written before any section.")
        .section("Discrimination", "AUROC with 95 % intervals.\n\nSecond <b>paragraph</b>.")
        .table([{"label": "AF <script>x()</script>", "n": 120, "auroc": m, "ece": float("nan")},
                {"label": "LVSD", "n": 80, "auroc": {"value": float("nan"), "lo": 0.1, "hi": 0.2}, "bias": -1.5}],
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
    assert Report.metric_cell({"value": 0.5, "lo": 0.4, "hi": 0.6}) == "0.500 (0.400-0.600)"
    assert Report.metric_cell({"value": -1.2, "ci_low": -2.5, "ci_high": 0.1}, "{:.1f}") == "-1.2 (-2.5 to 0.1)"
    assert Report.metric_cell({"value": 0.9, "lo": float("nan"), "hi": float("nan")}) == "0.900"
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
