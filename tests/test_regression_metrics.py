"""Regression agreement (metrics with CIs, Bland-Altman, ridge probe) and embedding maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import foldnorm

from cardiodistill.errors import ConfigError
from cardiodistill.evaluate.embedding import embedding_map, knn_label_agreement, plot_embedding_map
from cardiodistill.evaluate.regression import plot_agreement, plot_bland_altman, regression_metrics, ridge_probe


def _lvef(n: int, bias: float, sigma: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.uniform(20, 75, n)
    return y, y + bias + rng.normal(0, sigma, n)


def _assert_png(path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert not [p.name for p in path.parent.iterdir() if p.name.startswith(".tmp-")]


def _clusters(n_per: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 6, (3, d))
    y = np.repeat(np.arange(3), n_per)
    return centres[y] + rng.normal(0, 1, (len(y), d)), y


def test_bland_altman_recovers_known_bias_and_spread():
    bias, sigma = 3.0, 5.0
    y, pred = _lvef(2000, bias, sigma)
    m = regression_metrics(y, pred, n_boot=300)
    assert m["n"] == 2000 and m["n_dropped"] == 0
    truth = {"bias": bias, "sd_diff": sigma, "loa_low": bias - 1.96 * sigma, "loa_high": bias + 1.96 * sigma,
             "mae": foldnorm(bias / sigma, scale=sigma).mean(), "rmse": np.hypot(bias, sigma)}
    for name, value in truth.items():
        assert m[name]["ci_low"] < value < m[name]["ci_high"], (name, m[name], value)
    assert m["loa_high"]["value"] == pytest.approx(m["bias"]["value"] + 1.96 * m["sd_diff"]["value"])
    assert m["bias"]["value"] == pytest.approx(np.mean(pred - y))
    # Pearson r and R^2 against numpy's own definitions
    assert m["pearson_r"]["value"] == pytest.approx(np.corrcoef(y, pred)[0, 1])
    assert m["r2"]["value"] == pytest.approx(1 - np.sum((pred - y) ** 2) / np.sum((y - y.mean()) ** 2))
    for entry in (m[name] for name in truth):
        assert entry["ci_low"] <= entry["value"] <= entry["ci_high"]
    json.dumps(m, allow_nan=False)  # plain floats, no NaN


def test_perfect_prediction_and_nan_pairs():
    y, _ = _lvef(50, 0.0, 1.0)
    m = regression_metrics(y, y, n_boot=50)
    assert m["mae"]["value"] == 0 and m["rmse"]["value"] == 0 and m["sd_diff"]["value"] == 0
    assert m["pearson_r"]["value"] == pytest.approx(1.0) and m["r2"]["value"] == pytest.approx(1.0)

    pred = y + 1.0
    y_nan, pred_nan = y.copy(), pred.copy()
    y_nan[[0, 3]] = np.nan
    pred_nan[[3, 7]] = np.nan
    m = regression_metrics(y_nan, pred_nan, n_boot=50)
    assert m["n"] == 47 and m["n_dropped"] == 3
    assert m == {**regression_metrics(np.delete(y, [0, 3, 7]), np.delete(pred, [0, 3, 7]), n_boot=50), "n_dropped": 3}
    # a constant truth has no r or R^2: None, never NaN
    flat = regression_metrics(np.full(10, 55.0), np.linspace(50, 60, 10), n_boot=20)
    assert flat["pearson_r"] == {"value": None, "ci_low": None, "ci_high": None} and flat["r2"]["value"] is None
    assert regression_metrics(y, pred, n_boot=0)["mae"] == {"value": pytest.approx(1.0), "ci_low": None,
                                                            "ci_high": None}


def test_regression_metrics_errors_and_determinism():
    with pytest.raises(ValueError, match="at least 3 pairs"):
        regression_metrics([1.0, 2.0, np.nan, 4.0], [1.0, 2.0, 3.0, np.nan])
    with pytest.raises(ValueError, match="same length"):
        regression_metrics(np.zeros(5), np.zeros(6))
    with pytest.raises(ConfigError, match="ci"):
        regression_metrics(np.arange(5.0), np.arange(5.0), ci=95)
    y, pred = _lvef(200, 1.0, 4.0)
    a = regression_metrics(y, pred, n_boot=200, seed=3)
    assert a == regression_metrics(y, pred, n_boot=200, seed=3)
    assert a["mae"]["ci_low"] != regression_metrics(y, pred, n_boot=200, seed=4)["mae"]["ci_low"]
    # a wider level gives a wider interval around the same point estimate
    wide = regression_metrics(y, pred, n_boot=200, seed=3, ci=0.99)
    assert wide["bias"]["ci_low"] < a["bias"]["ci_low"] and wide["bias"]["ci_high"] > a["bias"]["ci_high"]


def test_ridge_probe_recovers_linear_target_without_looking_at_test():
    rng = np.random.default_rng(0)
    scales = rng.uniform(0.1, 50, 30)  # standardisation matters
    x = rng.normal(0, 1, (400, 30)) * scales
    w = rng.normal(0, 1, 30) / scales
    y = x @ w + 55 + rng.normal(0, 0.3, 400)
    y_train = y[:300].copy()
    y_train[:5] = np.nan
    pred, info = ridge_probe(x[:300], y_train, x[300:])
    assert pred.shape == (100,)
    assert info["n_train"] == 295 and info["n_dropped"] == 5 and info["alpha"] in info["alphas"]
    assert regression_metrics(y[300:], pred, n_boot=0)["r2"]["value"] > 0.9
    pred_again, info_again = ridge_probe(x[:300], y_train, rng.normal(0, 1e6, (7, 30)))
    assert info_again == info and pred_again.shape == (7,)
    np.testing.assert_array_equal(ridge_probe(x[:300], y_train, x[300:])[0], pred)
    with pytest.raises(ConfigError, match="folds"):
        ridge_probe(x[:4], y[:4], x[300:], folds=5)
    with pytest.raises(ValueError, match="x_test"):
        ridge_probe(x[:300], y[:300], x[300:, :5])


def test_agreement_plots_write_pngs(tmp_path):
    y, pred = _lvef(300, 2.0, 5.0)
    pred[:3] = np.nan
    path = plot_agreement(y, pred, tmp_path / "agreement.png", title="LVEF")
    _assert_png(path)
    _assert_png(plot_bland_altman(y, pred, tmp_path / "ba.png", units=""))
    with pytest.raises(ConfigError, match="panels"):
        plot_agreement(y, pred, tmp_path / "bad.png", panels=("histogram",))
    assert not (tmp_path / "bad.png").exists()


def test_embedding_map_shape_and_determinism():
    x, _ = _clusters(40, 80)
    for method in ("pca", "tsne"):
        xy = embedding_map(x, method=method, seed=1)
        assert xy.shape == (120, 2) and np.isfinite(xy).all()
        np.testing.assert_array_equal(xy, embedding_map(x, method=method, seed=1))
    assert embedding_map(x[:5], method="tsne").shape == (5, 2)  # perplexity adapted to a tiny set
    with pytest.raises(ConfigError, match="umap"):
        embedding_map(x, method="umap")
    with pytest.raises(ValueError, match="N >= 3"):
        embedding_map(x[:2])


def test_plot_embedding_map(tmp_path):
    x, y = _clusters(40, 8)
    xy = embedding_map(x)
    rng = np.random.default_rng(0)
    lvef = rng.uniform(20, 70, len(y))
    lvef[::9] = np.nan
    labels = {"cluster": y, "reduced EF": lvef < 40, "LVEF (%)": lvef, "view": np.array(["A4C", "PLAX"] * 60)}
    _assert_png(plot_embedding_map(xy, labels, tmp_path / "map.png", title="embedding"))
    with pytest.raises(ValueError, match=r"\[N\]"):
        plot_embedding_map(xy, {"short": y[:10]}, tmp_path / "bad.png")


def test_knn_agreement_separates_clusters_from_shuffled_labels():
    x, y = _clusters(40, 8)
    clustered = knn_label_agreement(x, y, k=10)
    shuffled = knn_label_agreement(x, np.random.default_rng(0).permutation(y), k=10)
    assert clustered["chance"] == pytest.approx(39 / 119) == shuffled["chance"]
    assert clustered["agreement"] > 0.95 and clustered["lift"] > 2.5
    assert abs(shuffled["agreement"] - shuffled["chance"]) < 0.1
    missing = y.astype(float)
    missing[:10] = np.nan
    assert knn_label_agreement(x, missing, k=10)["n"] == 110
    with pytest.raises(ConfigError, match="k must"):
        knn_label_agreement(x, y, k=120)
