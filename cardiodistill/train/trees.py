"""Fit gradient-boosted trees on recordings' features: the :class:`~cardiodistill.models.FeatureTrees` member of a
student ensemble.

scikit-learn's ``GradientBoostingClassifier`` fits them (its defaults unless ``params`` say otherwise: 100 trees
per class, depth 3, learning rate 0.1; a few seconds on 5,000 recordings and 27 features, one core), and
:meth:`FeatureTrees.from_sklearn` stores them as tensors, so they save, load, ensemble and export as any
student does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ..models.trees import FeatureTrees

__all__ = ["fit_feature_trees"]


def fit_feature_trees(features: np.ndarray, target: np.ndarray, *, rhythm: Sequence[str], outputs: Sequence[str],
                      seed: int = 0, **params: Any) -> FeatureTrees:
    """Trees on ``features [N, len(rhythm)]`` (finite; columns named ``rhythm``, in order) for ``target [N]``:
    class indices into ``outputs`` (mutually exclusive classes, every one present; two outputs are the two classes
    of a binary model), or 0/1 for one output (its positive class).
    ``params``: ``GradientBoostingClassifier`` options (``n_estimators``, ``max_depth``, ``learning_rate``...)."""
    from sklearn.ensemble import GradientBoostingClassifier

    x = np.asarray(features, np.float32)
    y = np.asarray(target)
    if x.ndim != 2 or x.shape[1] != len(rhythm) or len(y) != len(x) or len(x) == 0:
        raise DataError(f"expected features [N, {len(rhythm)}] and target [N], got {x.shape} and {y.shape}")
    if not np.isfinite(x).all():
        raise DataError(f"features must be finite; {int((~np.isfinite(x)).sum())} values are not")
    wanted = np.arange(max(2, len(outputs)))
    if not np.array_equal(np.unique(y), wanted):
        raise ConfigError(f"target must hold every class index {wanted.tolist()} of outputs {list(outputs)}, "
                          f"got {np.unique(y).tolist()}")
    model = GradientBoostingClassifier(random_state=seed, **params).fit(x, y)
    return FeatureTrees.from_sklearn(model, rhythm, outputs)
