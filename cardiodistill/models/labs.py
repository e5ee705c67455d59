"""Blood-panel encoder: one token per measured lab, so a missing lab is simply absent.

Normalisation (:class:`LabNormaliser`)
    Fitted on the training values of each lab, in canonical units (see
    :data:`~cardiodistill.lab_units.LAB_UNITS`). A lab whose training values are all >= 0 and
    strongly right-skewed (sample skewness above ``skew_threshold``: NT-proBNP, BNP, troponin, CRP)
    is taken through ``log1p`` first. Then each lab is centred on its training median and divided
    by its normal-consistent IQR (``IQR / 1.349``, the standard deviation for Gaussian data; the
    standard deviation, then 1, where the IQR is 0), and clipped to ``+-clip``. Missing values
    (NaN) stay NaN. The statistics are a small JSON dict (:meth:`LabNormaliser.to_dict`) so they
    travel inside a checkpoint with the weights.

Encoder (:class:`LabsEncoder`)
    Lab ``j`` with normalised value ``v`` becomes the token ``value_mlp(v) + lab_embed[j]``; a lab
    that is NaN (not measured) or hidden by ``key_mask_extra`` (masked modelling) gets no token: it
    is removed from every attention's keys and from the pooling, and its value never enters a
    matmul. ``depth`` pre-norm transformer blocks and a final LayerNorm follow; the embedding is
    the mean over present tokens, zeros for a row with no lab at all.

Shapes: ``values`` ``[B, n_labs]`` float, the columns in the normaliser's ``names`` order, NaN for
missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import Tensor, nn

from ..errors import ConfigError, DataError
from ..lab_units import LAB_UNITS
from .registry import register_model, register_test
from .transformer import TokenEncoder, init_weights, masked_mean

__all__ = ["LabNormaliser", "LabsEncoder"]


class LabNormaliser:
    """Robust per-lab standardisation (see the module docstring); ``fit`` first, then ``transform``."""

    def __init__(self, skew_threshold: float = 2.0, clip: float = 6.0):
        if clip <= 0:
            raise ConfigError(f"lab normaliser clip must be > 0, got {clip}")
        self.skew_threshold = float(skew_threshold)
        self.clip = float(clip)
        self.names: list[str] = []
        self.log: np.ndarray = np.zeros(0, dtype=bool)  # [n_labs] log1p before standardising
        self.median: np.ndarray = np.zeros(0)  # [n_labs] in the (log-)transformed scale
        self.scale: np.ndarray = np.ones(0)  # [n_labs] > 0

    def fit(self, values: np.ndarray, names: Sequence[str]) -> LabNormaliser:
        """Fit on training ``values [N, n_labs]`` (canonical units, NaN = missing) with column ``names``."""
        values = self._check(values, len(names))
        if len(set(names)) != len(names):
            raise DataError(f"lab names are not unique: {list(names)}")
        n_labs = values.shape[1]
        self.names = [str(name) for name in names]
        self.log = np.zeros(n_labs, dtype=bool)
        self.median = np.zeros(n_labs)
        self.scale = np.ones(n_labs)
        for j in range(n_labs):
            col = values[:, j][np.isfinite(values[:, j])]
            if col.size == 0:
                continue
            if col.min() >= 0 and col.size >= 3 and np.ptp(col) > 0:
                self.log[j] = stats.skew(col) > self.skew_threshold
            if self.log[j]:
                col = np.log1p(col)
            self.median[j] = np.median(col)
            spread = stats.iqr(col, scale="normal")
            spread = spread if spread > 0 else col.std()
            self.scale[j] = spread if spread > 0 else 1.0
        return self

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Normalised ``float32`` values, same shape as ``values [..., n_labs]``; NaN stays NaN."""
        if not self.names:
            raise ConfigError("LabNormaliser.transform called before fit (or from_dict)")
        values = self._check(values, len(self.names), ndim=None)
        out = np.where(self.log, np.log1p(np.maximum(values, 0.0)), values)
        out = np.clip((out - self.median) / self.scale, -self.clip, self.clip)
        return out.astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """The fitted statistics as JSON types."""
        return {
            "names": list(self.names),
            "log": [bool(v) for v in self.log],
            "median": [float(v) for v in self.median],
            "scale": [float(v) for v in self.scale],
            "skew_threshold": self.skew_threshold,
            "clip": self.clip,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> LabNormaliser:
        """Rebuild from :meth:`to_dict`'s output."""
        keys = {"names", "log", "median", "scale", "skew_threshold", "clip"}
        if set(state) != keys:
            raise ConfigError(f"lab normaliser state has keys {sorted(state)}, expected {sorted(keys)}")
        lengths = {len(state[k]) for k in ("names", "log", "median", "scale")}
        if len(lengths) != 1:
            raise ConfigError("lab normaliser state: names, log, median and scale differ in length")
        norm = cls(skew_threshold=state["skew_threshold"], clip=state["clip"])
        norm.names = [str(name) for name in state["names"]]
        norm.log = np.asarray(state["log"], dtype=bool)
        norm.median = np.asarray(state["median"], dtype=np.float64)
        norm.scale = np.asarray(state["scale"], dtype=np.float64)
        if not np.all(norm.scale > 0):
            raise ConfigError("lab normaliser state: every scale must be > 0")
        return norm

    @classmethod
    def identity(cls, names: Sequence[str], clip: float = 6.0) -> LabNormaliser:
        """A normaliser that passes values through (no log, centre 0, scale 1), clipped to
        ``+-clip``: for labs that arrive standardised already."""
        n_labs = len(names)
        return cls.from_dict({"names": list(names), "log": [False] * n_labs, "median": [0.0] * n_labs,
                              "scale": [1.0] * n_labs, "skew_threshold": 2.0, "clip": clip})

    @staticmethod
    def _check(values: np.ndarray, n_labs: int, ndim: int | None = 2) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        if (ndim is not None and values.ndim != ndim) or values.ndim == 0 or values.shape[-1] != n_labs:
            raise DataError(f"lab values have shape {values.shape}, expected [samples, {n_labs} labs]")
        return values


class LabsEncoder(TokenEncoder):
    """Set encoder over the present labs of a panel (see the module docstring). ``dim``: token width."""

    def __init__(
        self, n_labs: int, dim: int = 128, depth: int = 1, heads: int = 4, mlp_ratio: float = 2.0, dropout: float = 0.0
    ):
        super().__init__()
        if n_labs < 1:
            raise ConfigError(f"labs encoder needs at least one lab, got n_labs={n_labs}")
        self.n_labs = n_labs
        self.dim = dim
        self.value_mlp = nn.Sequential(nn.Linear(1, dim), nn.GELU(), nn.Linear(dim, dim))
        self.lab_embed = nn.Parameter(torch.zeros(n_labs, dim))
        self._init_trunk(dim, depth, heads, mlp_ratio, dropout, "mean", False)
        self.apply(init_weights)
        nn.init.trunc_normal_(self.lab_embed, std=0.02)

    def forward_tokens(self, values: Tensor, key_mask_extra: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Encoded lab tokens ``[B, n_labs, dim]`` (zero where absent) and presence ``[B, n_labs]`` bool.

        ``values``: normalised labs ``[B, n_labs]``, NaN = missing; ``key_mask_extra`` ``[B, n_labs]``
        bool: present labs to hide as well (True = drop the token).
        """
        if values.ndim != 2 or values.shape[1] != self.n_labs:
            raise ValueError(f"expected lab values [batch, {self.n_labs}], got shape {tuple(values.shape)}")
        present = torch.isfinite(values)
        if key_mask_extra is not None:
            if key_mask_extra.shape != values.shape:
                raise ValueError(
                    f"key_mask_extra has shape {tuple(key_mask_extra.shape)}, expected {tuple(values.shape)}"
                )
            present = present & ~key_mask_extra.to(device=values.device, dtype=torch.bool)
        x = torch.where(present, values, torch.zeros((), dtype=values.dtype, device=values.device))
        tokens = self.value_mlp(x.to(self.lab_embed.dtype)[..., None]) + self.lab_embed
        # A row with no lab attends over its (value-free) placeholder tokens instead of over nothing,
        # which would be NaN; its outputs are zeroed below and its pooled embedding is zero.
        key_mask = present | ~present.any(dim=1, keepdim=True)
        tokens, _ = self.encode(tokens, key_mask)
        zero = torch.zeros((), dtype=tokens.dtype, device=tokens.device)
        return torch.where(present[..., None], tokens, zero), present

    def forward_features(self, values: Tensor, key_mask_extra: Tensor | None = None) -> Tensor:
        """Panel embedding ``[B, dim]``: the mean over present lab tokens (zeros for a row with none)."""
        tokens, present = self.forward_tokens(values, key_mask_extra)
        return masked_mean(tokens, present)

    def forward(self, values: Tensor, key_mask_extra: Tensor | None = None) -> Tensor:
        return self.forward_features(values, key_mask_extra)


@register_model("labs_encoder")
def labs_encoder(
    *,
    n_labs: int = len(LAB_UNITS),
    normalisation: str = "LabNormaliser: log1p if skewed, median / IQR, clip +-6",
    dim: int = 128,
    depth: int = 1,
    heads: int = 4,
    mlp_ratio: float = 2.0,
    dropout: float = 0.0,
) -> LabsEncoder:
    """One token per lab. ``n_labs``: input columns (default: the canonical panel, in
    :data:`~cardiodistill.lab_units.LAB_UNITS` order; the names travel with the fitted
    :class:`LabNormaliser`); ``normalisation``: how the values are scaled before they enter."""
    return LabsEncoder(n_labs, dim=dim, depth=depth, heads=heads, mlp_ratio=mlp_ratio, dropout=dropout)


def labs_example(model: LabsEncoder) -> tuple[tuple, dict]:
    """Two random standardised panels ``[2, n_labs]``, the second lab missing in the first row."""
    values = torch.randn(2, model.n_labs, generator=torch.Generator().manual_seed(0))
    values[0, 1 % model.n_labs] = float("nan")
    return (values,), {}


register_test("labs_encoder", example=labs_example, dim=16, heads=2)
