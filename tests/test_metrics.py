import numpy as np
import pytest
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


def test_paired_macro_auroc_within_groups_does_not_charge_a_recipe_for_its_models_different_scales():
    from cardiodistill.evaluate.metrics import macro_auroc_ci, paired_macro_auroc_ci

    rng = np.random.default_rng(3)
    y = rng.random((600, 2)) < 0.4
    groups = np.repeat([0, 1, 2], 200)
    good = y + rng.normal(0, 0.8, size=y.shape)
    worse = y + rng.normal(0, 1.2, size=y.shape)
    shifted = good + 3.0 * groups[:, None]  # the same ranking within each group, another scale in each
    pooled = paired_macro_auroc_ci(y, shifted, worse, n_boot=200)
    within = paired_macro_auroc_ci(y, shifted, worse, n_boot=200, groups=groups)
    assert within == paired_macro_auroc_ci(y, good, worse, n_boot=200, groups=groups)  # scales cancel
    assert pooled[0] < 0 < within[1]  # pooling makes the better recipe look worse; within groups it is better
    rows = [np.flatnonzero(groups == g) for g in range(3)]
    assert within[0] == pytest.approx(np.mean([macro_auroc_ci(y[r], good[r], n_boot=0)[0]
                                               - macro_auroc_ci(y[r], worse[r], n_boot=0)[0] for r in rows]))
    # one group is the ungrouped comparison, draw for draw
    assert paired_macro_auroc_ci(y, good, worse, n_boot=200, groups=np.zeros(600)) == paired_macro_auroc_ci(
        y, good, worse, n_boot=200)
