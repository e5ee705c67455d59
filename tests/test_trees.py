"""Gradient-boosted trees on a recording's features as a model (``feature_trees``): the same probabilities as
scikit-learn's, a member of a student ensemble, and through the export and the edge runtime."""

import numpy as np
import pytest
import torch

from cardiodistill.errors import ConfigError, DataError
from cardiodistill.models import FeatureTrees, create_model
from cardiodistill.signals.rhythm import RECORDING_FEATURES
from cardiodistill.train.checkpoints import load_model, save_model
from cardiodistill.train.supervised import predict_arrays
from cardiodistill.train.trees import fit_feature_trees

sklearn_ensemble = pytest.importorskip("sklearn.ensemble")
NAMES = RECORDING_FEATURES[:5]


def _data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(NAMES))).astype(np.float32)
    x[:, 3] = np.round(x[:, 3])  # repeated values: splits between neighbours
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] + 0.3 * x[:, 3] > 0.5).astype(int)  # three classes
    return x, y


def _probs(model, x):
    with torch.no_grad():
        return model.probabilities(torch.from_numpy(x)).numpy()


def test_the_trees_give_scikit_learns_probabilities():
    x, y = _data()
    fitted = sklearn_ensemble.GradientBoostingClassifier(n_estimators=25, max_depth=3, random_state=0).fit(x, y)
    trees = FeatureTrees.from_sklearn(fitted, NAMES, ["a", "b", "c"])
    assert trees.model_config == {"name": "feature_trees", "rhythm": list(NAMES), "outputs": ["a", "b", "c"],
                                  "trees": 25, "depth": 3, "link": "softmax"}
    unseen, _ = _data(300, seed=1)
    for data in (x, unseen):
        np.testing.assert_allclose(_probs(trees, data), fitted.predict_proba(data), atol=1e-6)
    # leaves above the full depth (pure nodes) are stored as splits that send everything left
    assert any(e.tree_.max_depth < 3 for e in fitted.estimators_.ravel()) or (trees.threshold == torch.inf).any()
    with pytest.raises(ValueError, match=r"features \[batch, 5\]"):
        trees.probabilities(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="need the recording's features"):
        trees.predict(torch.zeros(2, 1, 100))

    # binary: two named classes (a softmax over the score and 0) or the positive one alone (a sigmoid)
    yb = (x[:, 0] > 0).astype(int)
    binary = sklearn_ensemble.GradientBoostingClassifier(n_estimators=10, max_depth=2, random_state=0).fit(x, yb)
    np.testing.assert_allclose(_probs(FeatureTrees.from_sklearn(binary, NAMES, ["no", "yes"]), unseen),
                               binary.predict_proba(unseen), atol=1e-6)
    one = FeatureTrees.from_sklearn(binary, NAMES, ["yes"])
    assert one.link == "sigmoid"
    np.testing.assert_allclose(_probs(one, unseen)[:, 0], binary.predict_proba(unseen)[:, 1], atol=1e-6)

    with pytest.raises(ConfigError, match="3 output names"):
        FeatureTrees.from_sklearn(binary, NAMES, ["a", "b", "c"])
    with pytest.raises(ConfigError, match="fitted on 4 features"):
        FeatureTrees.from_sklearn(fitted, NAMES[:4], ["a", "b", "c"])
    with pytest.raises(ConfigError, match="more than depth=2"):
        FeatureTrees.from_sklearn(fitted, NAMES, ["a", "b", "c"], depth=2)
    with pytest.raises(ConfigError, match="unknown rhythm features"):
        create_model("feature_trees", rhythm=["heart_rate"])
    with pytest.raises(ConfigError, match="use link='sigmoid'"):
        create_model("feature_trees", outputs=["triage"])


def test_a_threshold_that_float32_rounds_up_still_splits_as_scikit_learn():
    """Two neighbouring float32 values whose float64 midpoint (scikit-learn's threshold) rounds up to the larger:
    stored as it rounds, the larger value would go left; rounded down, it goes right as in scikit-learn."""
    # 16 + one step (odd last bit, so the midpoint ties to the even neighbour above); steps of 2e-6, over the
    # 1e-7 below which scikit-learn does not split
    a = np.float32(16.0) + np.float32(2.0 ** -19)
    b = np.nextafter(a, np.float32(32.0))
    assert np.float32((np.float64(a) + np.float64(b)) / 2) == b
    x = np.zeros((40, len(NAMES)), np.float32)
    x[:, 0] = np.where(np.arange(40) % 2, b, a)
    y = (x[:, 0] == b).astype(int)
    fitted = sklearn_ensemble.GradientBoostingClassifier(n_estimators=3, max_depth=1, random_state=0).fit(x, y)
    trees = FeatureTrees.from_sklearn(fitted, NAMES, ["low", "high"])
    assert fitted.estimators_[0, 0].tree_.threshold[0] == (np.float64(a) + np.float64(b)) / 2
    np.testing.assert_allclose(_probs(trees, x), fitted.predict_proba(x), atol=1e-6)
    assert (_probs(trees, x)[:, 1] > 0.5).tolist() == y.astype(bool).tolist()


def test_fit_feature_trees_checks_its_input():
    x, y = _data()
    trees = fit_feature_trees(x, y, rhythm=NAMES, outputs=["a", "b", "c"], n_estimators=5)
    assert trees.trees == 5 and trees.rhythm_names == NAMES and trees.outputs == ["a", "b", "c"]
    with pytest.raises(DataError, match="must be finite"):
        fit_feature_trees(np.where(x > 2, np.nan, x), y, rhythm=NAMES, outputs=["a", "b", "c"])
    with pytest.raises(ConfigError, match=r"every class index \[0, 1, 2, 3\]"):
        fit_feature_trees(x, y, rhythm=NAMES, outputs=["a", "b", "c", "d"])
    with pytest.raises(DataError, match=r"features \[N, 4\]"):
        fit_feature_trees(x, y, rhythm=NAMES[:4], outputs=["a", "b", "c"])


def test_trees_in_an_ensemble_join_the_mean_probability_but_not_the_lvef(tmp_path):
    torch.manual_seed(0)
    x, y = _data(200)
    trees = fit_feature_trees(x, y, rhythm=NAMES, outputs=["a", "b", "c"], n_estimators=8)
    backbone = {"name": "student_cnn_tiny", "in_leads": 1, "seconds": 5.0}
    student = create_model("ecg_student", backbone=backbone, outputs=["a", "b", "c"], rhythm=[NAMES[4]]).eval()
    ensemble = create_model("student_ensemble", members=[student.model_config, trees.model_config]).eval()
    ensemble.members[0].load_state_dict(student.state_dict())
    ensemble.members[1].load_state_dict(trees.state_dict())
    assert ensemble.rhythm_names == NAMES and ensemble.leads == ("I",)
    ecg, features = torch.randn(6, 1, 500), torch.from_numpy(x[:6])
    with torch.no_grad():
        out = ensemble.predict(ecg, features)
        alone = student.predict(ecg, features[:, [4]])
        torch.testing.assert_close(out[:, :3], (alone[:, :3] + trees.probabilities(features)) / 2)
        torch.testing.assert_close(out[:, 3], alone[:, 3])  # the LVEF is the students' alone

    # saved and loaded as one file; predict_arrays scores the trees from the features alone
    path = save_model(ensemble, tmp_path / "ensemble.pt")
    loaded = load_model(path)
    signals = np.random.default_rng(0).normal(size=(6, 1, 500)).astype(np.float32)
    both = predict_arrays(loaded, signals, rhythm=x[:6])["probs"]
    tree_probs = predict_arrays(trees, signals, rhythm=x[:6])
    np.testing.assert_allclose(tree_probs["probs"], _probs(trees, x[:6]), atol=1e-6)
    assert tree_probs["embedding"].shape == (6, 0)
    np.testing.assert_allclose(both, (predict_arrays(student, signals, rhythm=x[:6, [4]])["probs"]
                                      + tree_probs["probs"]) / 2, atol=1e-6)
    with pytest.raises(DataError, match=r"feature trees take rhythm features \[6, 5\]"):
        predict_arrays(trees, signals)

    with pytest.raises(ConfigError, match="one of them a student"):
        create_model("student_ensemble", members=[trees.model_config, trees.model_config])
    with pytest.raises(ConfigError, match="outputs"):
        create_model("student_ensemble", members=[student.model_config, {**trees.model_config,
                                                                         "outputs": ["a", "b", "x"]}])
