"""Gradient-boosted trees on a recording's features, as a PyTorch module that exports to ONNX.

A network reads the ECG's waveform; a recording's rhythm and beat features
(:data:`~cardiodistill.signals.rhythm.RECORDING_FEATURES`: RR statistics, P-wave coherence, beat shape) are
summaries a gradient-boosted tree model uses better than a linear layer does. :class:`FeatureTrees` holds such a
model (fitted by scikit-learn, :meth:`FeatureTrees.from_sklearn`) as tensors, so it is one more member of a
:class:`~cardiodistill.models.StudentEnsemble`: one model file, one ONNX graph, one runtime.

Layout: every tree is stored complete to ``depth`` in heap order (node ``i``'s children are ``2i + 1`` and
``2i + 2``); a leaf that scikit-learn made above ``depth`` becomes a split that sends every value left into
copies of itself. Per tree: ``feature [2**depth - 1]`` (int16: the column of the model's ``rhythm`` input),
``threshold [2**depth - 1]`` (float32, rounded down from scikit-learn's float64 so that ``x <= threshold`` picks
the same branch for every float32 ``x``) and ``leaf [2**depth]`` (the leaf's value times the learning rate).
Trees are grouped by output, ``trees`` per output; an output's score is ``bias + sum of its trees' leaves``.
Scores are turned into probabilities by a softmax over the outputs (``link="softmax"``: mutually exclusive
classes, as scikit-learn's multi-class model; a binary model's two classes are the score and 0) or a sigmoid
each (``link="sigmoid"``: one output, the positive class of a binary model).
Traversal is ``depth`` rounds of gathers and comparisons on the whole batch of trees at once: exportable,
batch-friendly, about ``2**depth`` bytes of int16/float32 per tree node. A NaN feature goes right.

The split features and thresholds are buffers; the leaf values and biases are parameters (a caller may fine-tune
them by gradient; the toolkit fits the trees with scikit-learn and keeps them). The model has no LVEF output
(:attr:`FeatureTrees.has_lvef` is False): :meth:`FeatureTrees.predict` returns the probabilities only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..signals.rhythm import RHYTHM_FEATURES, check_rhythm_names
from .registry import register_model, register_test

__all__ = ["FeatureTrees", "LINKS"]

LINKS = ("softmax", "sigmoid")


class FeatureTrees(nn.Module):
    """``trees`` complete trees of ``depth`` per output over ``n_features`` columns (module doc)."""

    has_lvef = False

    def __init__(self, n_features: int, n_outputs: int, trees: int, depth: int, link: str = "softmax"):
        super().__init__()
        if n_features < 1 or n_outputs < 1 or trees < 1 or not 1 <= depth <= 12:
            raise ConfigError(f"feature trees need features, outputs and trees (>= 1) and a depth of 1-12, got "
                              f"{n_features} features, {n_outputs} outputs, {trees} trees, depth {depth}")
        if link not in LINKS:
            raise ConfigError(f"link must be one of {LINKS}, got {link!r}")
        if link == "softmax" and n_outputs < 2:
            raise ConfigError("a softmax over one output is constant: use link='sigmoid' for a binary model")
        if n_features > torch.iinfo(torch.int16).max:
            raise ConfigError(f"feature trees take at most {torch.iinfo(torch.int16).max} features, got {n_features}")
        self.n_features, self.n_outputs, self.trees, self.depth, self.link = n_features, n_outputs, trees, depth, link
        n_trees, inner = n_outputs * trees, 2 ** depth - 1
        self.register_buffer("feature", torch.zeros(n_trees, inner, dtype=torch.int16))
        self.register_buffer("threshold", torch.full((n_trees, inner), torch.inf))
        self.leaf = nn.Parameter(torch.zeros(n_trees, inner + 1))
        self.bias = nn.Parameter(torch.zeros(n_outputs))

    def scores(self, features: Tensor) -> Tensor:
        """Each output's raw score ``[B, n_outputs]`` (the bias plus its trees' leaves) of ``features [B, n]``."""
        if features.ndim != 2 or features.shape[1] != self.n_features:
            raise ValueError(f"feature trees take features [batch, {self.n_features}], got {tuple(features.shape)}")
        features = features.float()
        n_trees, inner = self.feature.shape
        offset = torch.arange(n_trees, device=features.device) * inner  # each tree's first node in the flat tables
        feature, threshold = self.feature.reshape(-1).long(), self.threshold.reshape(-1)
        node = torch.zeros(features.shape[0], n_trees, dtype=torch.long, device=features.device)
        for _ in range(self.depth):
            at = node + offset
            value = features.gather(1, feature[at])
            node = 2 * node + 1 + (~(value <= threshold[at])).long()  # left when value <= threshold, else right
        leaf_at = node - inner + torch.arange(n_trees, device=features.device) * (inner + 1)
        leaf = self.leaf.reshape(-1)[leaf_at]
        return self.bias + leaf.reshape(-1, self.n_outputs, self.trees).sum(-1)

    def forward(self, features: Tensor) -> Tensor:
        """The raw scores ``[B, n_outputs]`` of ``features [B, n_features]`` (:meth:`scores`)."""
        return self.scores(features)

    def probabilities(self, features: Tensor) -> Tensor:
        """Probabilities ``[B, n_outputs]`` of ``features [B, n_features]``: the link of the scores."""
        scores = self.scores(features)
        return torch.softmax(scores, dim=1) if self.link == "softmax" else torch.sigmoid(scores)

    def predict(self, x: Tensor | None = None, rhythm: Tensor | None = None) -> Tensor:
        """The student interface: probabilities ``[B, n_outputs]`` from ``rhythm``; the ECG ``x`` is not read."""
        if rhythm is None:
            raise ValueError(f"feature trees need the recording's features [batch, {self.n_features}]")
        return self.probabilities(rhythm)

    @classmethod
    def from_sklearn(cls, model: Any, rhythm: Sequence[str], outputs: Sequence[str], depth: int | None = None
                     ) -> FeatureTrees:
        """A fitted scikit-learn ``GradientBoostingClassifier`` as a ``feature_trees`` model (with its config):
        ``rhythm``, the names of the columns it was fitted on, in order; ``outputs``, its classes' names in the
        order of ``model.classes_``. A binary model takes two names (both classes: a softmax over the score and 0,
        which is the model's own probability) or one (the positive class's: a sigmoid). ``depth``: the depth trees
        are stored at (default: the deepest tree's)."""
        from .registry import create_model

        estimators = getattr(model, "estimators_", None)
        if estimators is None or getattr(model, "n_features_in_", None) != len(rhythm):
            raise ConfigError(f"expected a GradientBoostingClassifier fitted on {len(rhythm)} features")
        n_iter, n_columns = estimators.shape
        binary = n_columns == 1
        if len(outputs) != n_columns and not (binary and len(outputs) == 2):
            raise ConfigError(f"the model has {len(model.classes_)} classes, {len(outputs)} output names given: "
                              f"{list(outputs)}")
        deepest = max(e.tree_.max_depth for e in estimators.ravel())
        depth = max(1, deepest) if depth is None else depth
        if deepest > depth:
            raise ConfigError(f"the model's trees are {deepest} deep, more than depth={depth}")
        trees = create_model("feature_trees", rhythm=list(rhythm), outputs=list(outputs), trees=n_iter, depth=depth,
                             link="sigmoid" if len(outputs) == 1 else "softmax")
        feature = np.zeros(trees.feature.shape, np.int16)
        threshold = np.full(trees.threshold.shape, np.inf, np.float32)
        leaf = np.zeros(trees.leaf.shape, np.float32)
        first = len(outputs) - n_columns  # a binary model's trees score the last output; the first stays 0
        for k in range(n_columns):
            for i in range(n_iter):
                t = (first + k) * n_iter + i
                _fill(estimators[i, k].tree_, feature[t], threshold[t], leaf[t], float(model.learning_rate), depth)
        with torch.no_grad():
            trees.feature.copy_(torch.from_numpy(feature))
            trees.threshold.copy_(torch.from_numpy(threshold))
            trees.leaf.copy_(torch.from_numpy(leaf))
            probe = np.zeros((1, len(rhythm)), np.float32)  # the bias: the model's score less its trees' sum
            raw = np.r_[np.zeros(first), np.asarray(model.decision_function(probe), np.float64).ravel()]
            trees.bias.copy_(torch.from_numpy(raw - trees.scores(torch.from_numpy(probe))[0].double().numpy()))
        return trees


def _fill(tree: Any, feature: np.ndarray, threshold: np.ndarray, leaf: np.ndarray, rate: float, depth: int) -> None:
    """Write scikit-learn ``tree`` (a fitted ``tree_``) into one complete tree's rows, in place (module doc)."""
    inner = 2 ** depth - 1

    def walk(node: int, at: int, level: int) -> None:
        if level == depth:
            leaf[at - inner] = rate * float(tree.value[node].ravel()[0])
            return
        left, right = tree.children_left[node], tree.children_right[node]
        if left == right:  # a leaf above the full depth: every value goes left, both sides carry its value
            feature[at], threshold[at] = 0, np.inf
            walk(node, 2 * at + 1, level + 1)
            walk(node, 2 * at + 2, level + 1)
            return
        t = np.float32(tree.threshold[node])
        feature[at] = tree.feature[node]
        threshold[at] = t if t <= tree.threshold[node] else np.nextafter(t, np.float32(-np.inf))
        walk(left, 2 * at + 1, level + 1)
        walk(right, 2 * at + 2, level + 1)

    walk(0, 0, 0)


@register_model("feature_trees")
def feature_trees(
    *,
    rhythm: Sequence[str] = RHYTHM_FEATURES,
    outputs: Sequence[str] = ("normal", "af", "other", "noisy"),
    trees: int = 100,
    depth: int = 3,
    link: str = "softmax",
) -> FeatureTrees:
    """Gradient-boosted trees on the recording's features ``rhythm`` (names of
    :data:`~cardiodistill.signals.rhythm.RECORDING_FEATURES`, in input order), ``trees`` per output of ``depth``
    (module doc); fitted ones come from :meth:`FeatureTrees.from_sklearn`. The model knows its ``rhythm_names``
    and ``outputs`` as a student does."""
    names = check_rhythm_names(rhythm)
    if not names or not outputs:
        raise ConfigError("feature trees need at least one feature and one output")
    model = FeatureTrees(len(names), len(outputs), trees, depth, link)
    model.rhythm_names, model.outputs = names, list(outputs)
    return model


def _trees_example(model: FeatureTrees) -> tuple[tuple, dict]:
    return (torch.rand(3, model.n_features, generator=torch.Generator().manual_seed(4)),), {}


register_test("feature_trees", example=_trees_example, trees=4, depth=2)
