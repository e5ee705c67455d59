"""xresnet1d: a 1-D "bag of tricks" ResNet, the strong supervised baseline for ECG classification.

The xresnet of He et al. ("Bag of Tricks for Image Classification", 2019), in 1-D as used by the
PTB-XL benchmark (Strodthoff et al., 2021), where xresnet1d101 is among the best models:

* stem: three conv-BN-ReLU (widths 32, 32, 64; stride 2 on the first), then max-pool /2;
* four stages of residual blocks, stride 1 in the first stage and 2 in the others; a block is
  *basic* (two k-convs, expansion 1) or *bottleneck* (1-conv, k-conv, 1-conv, expansion 4);
* shortcut: average-pool /2 (instead of a strided 1x1 conv, which would drop 3 of 4 samples)
  then a 1x1 conv + BN where the width changes; the last BN of every block starts at zero so
  each block begins as the identity;
* head: global average and max pooling concatenated -> BN -> dropout -> linear.

Stage widths are ``base_width * (1, 2, 4, 8)`` = 64, 128, 256, 512 for ``base_width`` 64, times
the expansion at each block's output (2048 features before pooling for xresnet1d50, so 4096
after concat pooling). The time axis shrinks 32-fold (stem 4, stages 8).

Input ``[B, L, S]`` with a fixed, ordered lead set given at creation (``in_leads = len(leads)``);
output logits ``[B, num_classes]`` (``num_classes=0``: the pooled features, for use as an encoder
or as a compact 1-D CNN student). ``forward_features`` always gives the pooled ``[B, 2 * C]``.

Parameter counts (12 leads, 5 classes, measured in ``tests/test_models.py``): ``xresnet1d50``
18.5 M (layers 3-4-6-3, bottleneck), ``xresnet1d101`` 33.1 M (3-4-23-3), ``xresnet1d_small`` 0.73 M (layers 1-1-1-1, basic, base 32).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..signals.filters import DEFAULT_BAND
from ..signals.leads import LEADS_12
from .ecg_transformer import check_band, lead_ids
from .registry import register_model, register_test


def conv_bn(
    ni: int, nf: int, kernel_size: int, stride: int = 1, *, act: bool = True, zero_bn: bool = False
) -> nn.Sequential:
    """Conv1d (same padding, no bias) -> BatchNorm1d (gamma 0 if ``zero_bn``) -> optional ReLU."""
    conv = nn.Conv1d(ni, nf, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
    nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
    bn = nn.BatchNorm1d(nf)
    nn.init.constant_(bn.weight, 0.0 if zero_bn else 1.0)
    return nn.Sequential(conv, bn, nn.ReLU(inplace=True)) if act else nn.Sequential(conv, bn)


def check_signal(x: Tensor, in_leads: int) -> None:
    """A fixed-lead CNN's input must be ``[batch, in_leads, samples]``."""
    if x.ndim != 3 or x.shape[1] != in_leads:
        raise ValueError(f"expected a signal [batch, {in_leads} leads, samples], got shape {tuple(x.shape)}")


def concat_pool(x: Tensor) -> Tensor:
    """Global average and max pooling over time, concatenated: ``[B, C, T] -> [B, 2 * C]``."""
    return torch.cat([x.mean(dim=-1), x.amax(dim=-1)], dim=1)


class ResBlock(nn.Module):
    """xresnet residual block; ``ni``/``nf`` are pre-expansion widths, as in fastai."""

    def __init__(self, expansion: int, ni: int, nf: int, stride: int, kernel_size: int):
        super().__init__()
        n_in, n_out = ni * expansion, nf * expansion
        if expansion == 1:
            self.convs = nn.Sequential(
                conv_bn(n_in, nf, kernel_size, stride),
                conv_bn(nf, n_out, kernel_size, act=False, zero_bn=True),
            )
        else:
            self.convs = nn.Sequential(
                conv_bn(n_in, nf, 1),
                conv_bn(nf, nf, kernel_size, stride),
                conv_bn(nf, n_out, 1, act=False, zero_bn=True),
            )
        shortcut = []
        if stride != 1:
            shortcut.append(nn.AvgPool1d(stride, ceil_mode=True))
        if n_in != n_out:
            shortcut.append(conv_bn(n_in, n_out, 1, act=False))
        self.shortcut = nn.Sequential(*shortcut)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.convs(x) + self.shortcut(x))


class XResNet1d(nn.Module):
    """1-D xresnet over ``in_leads`` input channels (see the module docstring)."""

    def __init__(
        self,
        *,
        in_leads: int,
        num_classes: int,
        layers: Sequence[int] = (3, 4, 6, 3),
        expansion: int = 4,
        base_width: int = 64,
        kernel_size: int = 5,
        dropout: float = 0.5,
    ):
        super().__init__()
        if expansion not in (1, 4):
            raise ConfigError(f"expansion must be 1 (basic blocks) or 4 (bottleneck), got {expansion}")
        if len(layers) != 4:
            raise ConfigError(f"layers must give 4 stage depths, got {list(layers)}")
        if kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be odd, got {kernel_size}")
        self.in_leads = in_leads
        stem = (in_leads, 32, 32, 64)
        self.stem = nn.Sequential(
            *(conv_bn(stem[i], stem[i + 1], kernel_size, stride=2 if i == 0 else 1) for i in range(3)),
            nn.MaxPool1d(3, stride=2, padding=1),
        )
        widths = [64 // expansion] + [base_width * m for m in (1, 2, 4, 8)]
        self.stages = nn.Sequential(
            *(
                nn.Sequential(
                    *(
                        ResBlock(
                            expansion,
                            widths[i] if j == 0 else widths[i + 1],
                            widths[i + 1],
                            stride=(1 if i == 0 else 2) if j == 0 else 1,
                            kernel_size=kernel_size,
                        )
                        for j in range(n_blocks)
                    )
                )
                for i, n_blocks in enumerate(layers)
            )
        )
        self.num_features = 2 * widths[-1] * expansion
        self.head = (
            nn.Sequential(
                nn.BatchNorm1d(self.num_features), nn.Dropout(dropout), nn.Linear(self.num_features, num_classes)
            )
            if num_classes > 0
            else nn.Identity()
        )

    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled features ``[B, 2 * C]``: global average and max over time, concatenated."""
        check_signal(x, self.in_leads)
        return concat_pool(self.stages(self.stem(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))


# ``leads``: the ordered input leads (channel i of the input is leads[i]); ``in_leads = len(leads)``.
@register_model("xresnet1d50")
@register_model("xresnet1d101", layers=(3, 4, 23, 3))
@register_model("xresnet1d_small", layers=(1, 1, 1, 1), expansion=1, base_width=32, dropout=0.2)
def xresnet1d(
    *,
    fs: float = 100.0,
    seconds: float = 10.0,
    leads: Sequence[str] = LEADS_12,
    normalisation: str = "per-lead z-score",
    band: Sequence[float] | None = DEFAULT_BAND,
    num_classes: int = 5,
    layers: Sequence[int] = (3, 4, 6, 3),
    expansion: int = 4,
    base_width: int = 64,
    kernel_size: int = 5,
    dropout: float = 0.5,
) -> XResNet1d:
    """``xresnet1d50``: bottleneck blocks 3-4-6-3, widths 64-512 (x4), kernel 5, at 100 Hz as in
    PTB-XL; ``xresnet1d101``: blocks 3-4-23-3, the PTB-XL benchmark's strongest; ``xresnet1d_small``: CPU-sized, basic blocks 1-1-1-1, widths 32-256."""
    lead_ids(leads)  # validates the names (LeadError on an unknown one)
    check_band(band)
    return XResNet1d(
        in_leads=len(leads), num_classes=num_classes, layers=layers, expansion=expansion,
        base_width=base_width, kernel_size=kernel_size, dropout=dropout,
    )


def signal_example(model: nn.Module) -> tuple[tuple, dict]:
    """Two random windows ``[2, in_leads, fs * seconds]`` for a fixed-lead CNN: ``((x,), {})``."""
    config = model.model_config
    n_samples = round(config["fs"] * config["seconds"])
    x = torch.randn(2, model.in_leads, n_samples, generator=torch.Generator().manual_seed(0))
    return (x,), {}


register_test("xresnet1d50", "xresnet1d101", "xresnet1d_small", example=signal_example, seconds=2.5)
