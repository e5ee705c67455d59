"""A lead-agnostic convolutional ECG encoder that learns in CPU minutes (stage 1 beside the transformer MAE).

Input
    The same call as :class:`~cardiodistill.models.EcgTransformer`: ``x [B, L, S]`` per-lead z-scored
    signal, ``leads`` (names, or ids ``[L]`` / ``[B, L]`` into
    :data:`~cardiodistill.signals.leads.LEADS_12`) and an optional ``lead_mask [B, L]``. Any subset
    of the 12 leads, in any order, is accepted.

Lead slots
    Each present lead is written into its own slot of a 12-slot signal in ``LEADS_12`` order; absent
    slots are zero. Twelve *presence* channels (1 where the slot's lead was recorded, else 0) are
    appended, so the network can tell a missing lead from a flat one. The trunk therefore sees
    ``[B, 24, S]`` whatever leads were given, and pretraining with random lead subsets (the ``clocs``
    objective's lead split, or lead dropout) teaches it to work from any of them. This is the
    zero-filled, mask-informed input of reduced-lead work (e.g. the PhysioNet/CinC 2021 entries),
    chosen over a per-lead shared trunk because it costs one trunk pass per record, not one per lead:
    a 12-lead training step is about 10x cheaper, which is what lets it learn on two CPU cores.

Trunk
    The student's depthwise-separable residual CNN (:class:`~cardiodistill.models.student.StudentCNN`:
    a strided stem, MobileNet-style blocks with squeeze-excitation, time shrinks ``2 ** (1 + stages)``
    fold) on the 24 channels, global average and max pooling, a linear map to ``dim``. Any window of
    at least ``2 ** (1 + stages)`` samples works (the pooling is global), so a model pretrained on 5 s
    segments embeds 10 s windows.

In stages 2-3
    The fusion model reads an ECG encoder as a grid of lead patches (``patch_size`` samples, 0.5 s at
    100 Hz, as the transformer's tokens), because masked modelling hides lead patches and the temporal
    objective points at the patch of an R peak. :meth:`EcgConvEncoder.encode_patches` gives that view:
    the hidden patches are zeroed *with their presence channel* before the trunk (the presence channels
    are per sample, so the network is told what it was not shown), and each patch's token is the trunk's
    head applied to the average and maximum of the last feature map over that patch - the same head,
    on the same pooling, as the pooled embedding, so a stage-1 encoder's tokens mean something before
    stage 2 trains them.

Why a CNN here
    At 10 % of PTB-XL labels every transformer variant of the CPU preset stayed near chance while a
    supervised 0.7 M CNN reached 0.86 (docs/benchmarks.md): on two cores the transformer's MAE never
    left its plateau. Convolutional encoders with contrastive objectives learn in a few hundred steps
    (CLOCS, Kiyasseh et al. 2021; CPC with small encoders, arXiv 2103.12676). ``ecg_cnn`` is that
    encoder; ``ecg_cnn_base`` a wider one for GPU presets.

Parameter counts (``tests/test_ecg_cnn.py``): ``ecg_cnn`` 0.15 M, ``ecg_cnn_base`` 0.57 M.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..signals.filters import DEFAULT_BAND
from ..signals.leads import LEADS_12
from .ecg_transformer import PAD_LEAD_ID, LeadsArg, _resolve_leads, check_band, ecg_example, lead_ids
from .registry import register_model, register_test
from .resnet1d import concat_pool
from .student import StudentCNN

__all__ = ["EcgConvEncoder", "ecg_cnn"]

N_SLOTS = len(LEADS_12)


class EcgConvEncoder(nn.Module):
    """Lead slots plus presence channels through a :class:`StudentCNN` trunk (module doc)."""

    def __init__(self, trunk: StudentCNN, *, patch_size: int = 50, max_patches: int = 20):
        super().__init__()
        if trunk.in_leads != 2 * N_SLOTS:
            raise ValueError(f"the trunk must read {2 * N_SLOTS} channels (12 lead slots + 12 presence), "
                             f"got {trunk.in_leads}")
        if patch_size < 1 or max_patches < 1:
            raise ValueError(f"patch_size and max_patches must be positive, got {patch_size} and {max_patches}")
        self.trunk = trunk
        self.embed_dim = trunk.dim
        self.min_samples = 2 ** (1 + len(trunk.stages))
        self.patch_size, self.max_patches = patch_size, max_patches

    def slots(self, x: Tensor, leads: LeadsArg, lead_mask: Tensor | None = None,
              sample_mask: Tensor | None = None) -> Tensor:
        """``[B, 24, S]``: the present leads in their ``LEADS_12`` slots (zeros elsewhere), then one
        presence channel per slot: 1 where the slot's lead was recorded and, with ``sample_mask [B, L, S]``,
        shown at that sample (what is not shown is zeroed in the signal too)."""
        if x.ndim != 3:
            raise ValueError(f"expected a signal [batch, leads, samples], got shape {tuple(x.shape)}")
        b, n_leads, n_samples = x.shape
        if n_samples < self.min_samples:
            raise ValueError(f"{n_samples} samples are too few for this encoder (at least {self.min_samples})")
        ids, present = _resolve_leads(leads, lead_mask, b, n_leads, x.device)
        shown = present[..., None] if sample_mask is None else present[..., None] & sample_mask.bool()
        x = torch.where(shown, x, torch.zeros((), dtype=x.dtype, device=x.device))
        # a spare slot (index PAD_LEAD_ID) collects the absent leads and is dropped
        slot_ids = ids[..., None]
        slots = x.new_zeros(b, PAD_LEAD_ID + 1, n_samples).scatter_add(1, slot_ids.expand(-1, -1, n_samples), x)
        has = x.new_zeros(b, PAD_LEAD_ID + 1, shown.shape[-1]).scatter_add(
            1, slot_ids.expand(-1, -1, shown.shape[-1]), shown.to(x.dtype))[:, :N_SLOTS].clamp(max=1.0)
        return torch.cat([slots[:, :N_SLOTS], has.expand(-1, -1, n_samples)], dim=1)

    def encode_patches(self, x: Tensor, leads: LeadsArg, keep: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The fusion model's view (module doc, "In stages 2-3").

        ``keep [B, L * P]`` (lead-major, ``P = S // patch_size``): the lead patches the encoder may see; the
        rest are zeroed with their presence channel (samples past ``P * patch_size`` follow their lead's
        last patch). Returns ``(pooled [B, dim], tokens [B, P, dim], token present [B, P])``; a row with
        nothing kept gets a zero embedding and no present token.
        """
        b, n_leads, n_samples = x.shape
        n_p = n_samples // self.patch_size
        if n_p < 1 or keep.shape != (b, n_leads * n_p):
            raise ValueError(f"keep has shape {tuple(keep.shape)}, expected {(b, n_leads * n_p)} for "
                             f"{n_leads} leads of {n_samples} samples in patches of {self.patch_size}")
        keep = keep.bool().view(b, n_leads, n_p)
        seen = keep.any(2)
        anything = seen.any(1)
        lead_mask = seen.clone()
        lead_mask[~anything, 0] = True  # the slots want a lead per row; nothing of it is shown
        shown = keep.repeat_interleave(self.patch_size, 2)
        shown = torch.cat([shown, keep[..., -1:].expand(-1, -1, n_samples - shown.shape[-1])], 2)
        fmap = self.trunk.feature_map(self.slots(x, leads, lead_mask, shown))
        pooled = self.trunk.head(concat_pool(fmap))
        per_patch = torch.cat([F.adaptive_avg_pool1d(fmap, n_p), F.adaptive_max_pool1d(fmap, n_p)], 1)
        tokens = self.trunk.head(per_patch.transpose(1, 2))
        pooled = torch.where(anything[:, None], pooled, torch.zeros((), dtype=pooled.dtype, device=pooled.device))
        return pooled, tokens, keep.any(1)

    def forward_features(self, x: Tensor, leads: LeadsArg, lead_mask: Tensor | None = None) -> Tensor:
        """Pooled embedding ``[B, dim]``."""
        return self.trunk.forward_features(self.slots(x, leads, lead_mask))

    def forward(self, x: Tensor, leads: LeadsArg, lead_mask: Tensor | None = None) -> Tensor:
        return self.forward_features(x, leads, lead_mask)

    def lr_layers(self) -> list[nn.Module]:
        """The trunk's layers from input to output (layer-wise learning-rate decay)."""
        return self.trunk.lr_layers()


# ``leads`` is the lead set a model was trained for (metadata, as for ecg_vit); any subset is accepted.
@register_model("ecg_cnn")
@register_model("ecg_cnn_base", widths=(64, 128, 192, 256), dim=256)
def ecg_cnn(
    *,
    fs: float = 100.0,
    seconds: float = 10.0,
    leads: Sequence[str] = LEADS_12,
    normalisation: str = "per-lead z-score",
    band: Sequence[float] | None = DEFAULT_BAND,
    widths: Sequence[int] = (32, 64, 96, 128),
    depth_per_stage: int = 2,
    kernel_size: int = 7,
    dim: int = 128,
    dropout: float = 0.1,
    se: bool = True,
    act: str = "relu",
    patch_size: int = 50,
) -> EcgConvEncoder:
    """The lead-agnostic CNN encoder. ``ecg_cnn``: widths 32-128, dim 128, 100 Hz 10 s windows;
    ``ecg_cnn_base``: widths 64-256, dim 256. ``patch_size``: samples per lead patch in stages 2-3."""
    lead_ids(leads)  # validates the names
    check_band(band)
    return EcgConvEncoder(StudentCNN(2 * N_SLOTS, tuple(widths), depth_per_stage, kernel_size, dim, dropout,
                                     se=se, act=act),
                          patch_size=patch_size, max_patches=max(1, int(round(seconds * fs)) // patch_size))


register_test("ecg_cnn", "ecg_cnn_base", example=ecg_example, seconds=2.5)
