"""The PTB-XL benchmark's standard supervised baselines (Strodthoff et al., IEEE JBHI 2021), rebuilt.

Every accuracy benchmark of the toolkit trains these beside its own models, on the same split and
budget, so "ahead of the field's baselines" is measured, not quoted:

* ``resnet1d_wang``: the fully convolutional ResNet of Wang et al. (2017) as the benchmark runs it -
  a kernel-7 stem at stride 1, three basic residual blocks (kernels 5 and 3) that all keep 128
  channels, the second and third at stride 2; about 0.4 M parameters;
* ``inception1d``: InceptionTime (Fawaz et al., 2020) in 1-D - six inception blocks (a 1x1
  bottleneck to 32 channels, then kernels 39, 19 and 9 beside a max-pool branch, 128 channels out)
  with a residual shortcut around every three; about 0.5 M parameters;
* ``xresnet1d101``: :class:`~cardiodistill.models.resnet1d.XResNet1d` with bottleneck blocks
  3-4-23-3 (33 M parameters; registered in :mod:`~cardiodistill.models.resnet1d`).

All three end in the benchmark's head: average and max pooling over time concatenated, then
BN -> dropout -> linear -> ReLU -> BN -> dropout -> linear (``hidden`` units between). Input
``[B, len(leads), S]`` z-scored at 100 Hz, any ``S``; output logits ``[B, num_classes]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..signals.filters import DEFAULT_BAND
from ..signals.leads import LEADS_12
from .ecg_transformer import check_band, lead_ids
from .registry import register_model, register_test
from .resnet1d import check_signal, concat_pool, conv_bn, signal_example

__all__ = ["Inception1d", "ResNet1dWang"]


def _head(features: int, num_classes: int, hidden: int, dropout: float) -> nn.Sequential:
    """The benchmark's head on concat-pooled ``[B, 2 * features]``."""
    return nn.Sequential(
        nn.BatchNorm1d(2 * features), nn.Dropout(dropout / 2), nn.Linear(2 * features, hidden), nn.ReLU(inplace=True),
        nn.BatchNorm1d(hidden), nn.Dropout(dropout), nn.Linear(hidden, num_classes),
    )


class _FixedLeadCNN(nn.Module):
    """``body`` (``[B, in_leads, S] -> [B, C, S']``), concat pooling, the benchmark head."""

    def __init__(self, in_leads: int, body: nn.Module, features: int, num_classes: int, hidden: int, dropout: float):
        super().__init__()
        self.in_leads = in_leads
        self.body = body
        self.head = _head(features, num_classes, hidden, dropout)

    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled features ``[B, 2 * C]``."""
        check_signal(x, self.in_leads)
        return concat_pool(self.body(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))


class _BasicBlock(nn.Module):
    def __init__(self, channels: int, stride: int, kernels: Sequence[int]):
        super().__init__()
        self.convs = nn.Sequential(conv_bn(channels, channels, kernels[0], stride),
                                   conv_bn(channels, channels, kernels[1], act=False))
        self.shortcut = conv_bn(channels, channels, 1, stride, act=False) if stride != 1 else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.convs(x) + self.shortcut(x))


class ResNet1dWang(_FixedLeadCNN):
    """Wang et al.'s ResNet as in the PTB-XL benchmark (module doc)."""

    def __init__(self, in_leads: int, num_classes: int, channels: int = 128, hidden: int = 128, dropout: float = 0.5):
        body = nn.Sequential(conv_bn(in_leads, channels, 7),
                             *(_BasicBlock(channels, 1 if i == 0 else 2, (5, 3)) for i in range(3)))
        super().__init__(in_leads, body, channels, num_classes, hidden, dropout)


class _InceptionBlock(nn.Module):
    """Bottleneck, three long kernels and a max-pool branch, concatenated: ``4 * filters`` channels."""

    def __init__(self, c_in: int, filters: int, kernels: Sequence[int]):
        super().__init__()
        self.bottleneck = nn.Conv1d(c_in, filters, 1, bias=False) if c_in > 1 else nn.Identity()
        width = filters if c_in > 1 else c_in
        self.convs = nn.ModuleList(nn.Conv1d(width, filters, k, padding=k // 2, bias=False) for k in kernels)
        self.pool = nn.Sequential(nn.MaxPool1d(3, stride=1, padding=1), nn.Conv1d(c_in, filters, 1, bias=False))
        self.out = nn.Sequential(nn.BatchNorm1d(filters * (len(kernels) + 1)), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        b = self.bottleneck(x)
        return self.out(torch.cat([conv(b) for conv in self.convs] + [self.pool(x)], dim=1))


class Inception1d(_FixedLeadCNN):
    """InceptionTime in 1-D as in the PTB-XL benchmark (module doc)."""

    def __init__(self, in_leads: int, num_classes: int, depth: int = 6, filters: int = 32,
                 kernels: Sequence[int] = (39, 19, 9), hidden: int = 128, dropout: float = 0.5):
        width = filters * (len(kernels) + 1)
        blocks, shortcuts = [], []
        for i in range(depth):
            blocks.append(_InceptionBlock(in_leads if i == 0 else width, filters, kernels))
            if i % 3 == 2:
                shortcuts.append(conv_bn(in_leads if i == 2 else width, width, 1, act=False))
        body = _InceptionBody(blocks, shortcuts)
        super().__init__(in_leads, body, width, num_classes, hidden, dropout)


class _InceptionBody(nn.Module):
    """Inception blocks with a residual shortcut around every three."""

    def __init__(self, blocks: list[nn.Module], shortcuts: list[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.shortcuts = nn.ModuleList(shortcuts)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        residual = x
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i % 3 == 2:
                x = self.act(x + self.shortcuts[i // 3](residual))
                residual = x
        return x


def _check(leads: Sequence[str], band: Sequence[float] | None) -> int:
    lead_ids(leads)  # validates the names
    check_band(band)
    return len(leads)


# ``leads``: the ordered input leads, as for xresnet1d
@register_model("resnet1d_wang")
def resnet1d_wang(*, fs: float = 100.0, seconds: float = 10.0, leads: Sequence[str] = LEADS_12,
                  normalisation: str = "per-lead z-score", band: Sequence[float] | None = DEFAULT_BAND,
                  num_classes: int = 5, channels: int = 128, hidden: int = 128, dropout: float = 0.5) -> ResNet1dWang:
    """Wang et al.'s ResNet (128 channels, kernels 7 / 5-3) as the PTB-XL benchmark trains it."""
    return ResNet1dWang(_check(leads, band), num_classes, channels, hidden, dropout)


@register_model("inception1d")
def inception1d(*, fs: float = 100.0, seconds: float = 10.0, leads: Sequence[str] = LEADS_12,
                normalisation: str = "per-lead z-score", band: Sequence[float] | None = DEFAULT_BAND,
                num_classes: int = 5, depth: int = 6, filters: int = 32, kernels: Sequence[int] = (39, 19, 9),
                hidden: int = 128, dropout: float = 0.5) -> Inception1d:
    """InceptionTime in 1-D (depth 6, 32 filters per branch, kernels 39 / 19 / 9) as in the PTB-XL benchmark."""
    return Inception1d(_check(leads, band), num_classes, depth, filters, kernels, hidden, dropout)


register_test("resnet1d_wang", "inception1d", example=signal_example, seconds=2.5)
