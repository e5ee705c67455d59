import numpy as np
from sklearn.metrics import roc_auc_score

from cardiodistill.evaluate.metrics import auroc, auroc_ci, bootstrap_interval


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.random(400) < 0.3
    s = np.round(y + rng.normal(0, 1, 400), 1)  # rounding creates ties
    assert abs(auroc(y, s) - roc_auc_score(y, s)) < 1e-12
    assert np.isnan(auroc(np.ones(5), np.arange(5)))


def test_bootstrap_interval_covers_and_shrinks():
    rng = np.random.default_rng(1)

    def sample(n):
        y = rng.random(n) < 0.4
        return y, y * 1.0 + rng.normal(0, 1, n)

    y, s = sample(300)
    auc, lo, hi = auroc_ci(y, s, n_boot=500)
    assert lo < auc < hi
    # the true AUROC of N(1,1) vs N(0,1) is Phi(1/sqrt 2) = 0.760
    assert lo < 0.76 < hi
    y2, s2 = sample(3000)
    _, lo2, hi2 = auroc_ci(y2, s2, n_boot=500)
    assert (hi2 - lo2) < 0.5 * (hi - lo)


def test_bootstrap_interval_of_a_paired_difference():
    """Two models scored on the same resampled records: the shared difficulty cancels, so the paired
    interval of their difference is much narrower than either model's own interval."""
    rng = np.random.default_rng(2)
    y = rng.random(400) < 0.5
    shared = rng.normal(0, 1, 400)  # what makes a record hard for both
    a, b = y + shared + rng.normal(0, 0.3, 400), y + shared + rng.normal(0, 0.3, 400) + 0.2 * y
    delta = bootstrap_interval(lambda rows: auroc(y[rows], b[rows]) - auroc(y[rows], a[rows]), len(y), n_boot=300)
    alone = bootstrap_interval(lambda rows: auroc(y[rows], a[rows]), len(y), n_boot=300)
    assert delta["value"] == auroc(y, b) - auroc(y, a) and delta["ci_low"] < delta["value"] < delta["ci_high"]
    assert delta["ci_high"] - delta["ci_low"] < 0.5 * (alone["ci_high"] - alone["ci_low"])
    assert bootstrap_interval(lambda rows: auroc(y[rows], a[rows]), len(y), n_boot=300) == alone  # seeded
    undefined = bootstrap_interval(lambda rows: float("nan"), 10, n_boot=5)
    assert np.isnan(undefined["ci_low"]) and np.isnan(undefined["ci_high"])
