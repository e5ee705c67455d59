"""Stage 2: cross-modal alignment of a :class:`~cardiodistill.models.fusion.CardioFusion` on paired,
unlabelled studies.

One step masks the batch once (FLIP-style: hidden tokens never reach an encoder, which makes
every objective cheaper and is an augmentation for the contrastive ones) and computes the
selected objectives on the same forward pass:

* ``clip``: symmetric InfoNCE between every pair of modality encoders' projected embeddings;
* ``clip_loo``: each modality against the mean of the others (leave-one-out);
* ``temporal``: the ECG at its R-peak / T end against the echo at end-diastole / end-systole of
  the same beat phase, other phases and other patients as negatives (phases come with the batch,
  found from the signals by :mod:`cardiodistill.signals.phases` and :mod:`cardiodistill.video.phases`);
* ``multimae``: per-modality cross-attention decoders reconstruct the hidden ECG patches (whole
  leads included), echo tubelets (whole frames included) and lab values from the fused tokens;
  with ``modality_dropout`` a whole modality is hidden for some studies and must be predicted
  from the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from ..models import model_from_config
from ..models.fusion import CardioFusion, drop_modalities
from ..models.multimae import MultiModalDecoders, gather_tokens
from ..objectives.alignment import (
    clip_leave_one_out,
    clip_pairwise,
    masked_value_loss,
    temporal_accuracy,
    temporal_contrastive,
)
from ..objectives.contrastive import LearnedTemperature, retrieval_accuracy
from ..objectives.mae import masked_patch_loss
from .module import TrainModule

__all__ = ["AlignModule", "make_masks"]

OBJECTIVES = ("clip", "clip_loo", "temporal", "multimae")


def _touch(*tensors: Tensor | float) -> Tensor | float:
    """Zero that depends on ``tensors``: a small batch may leave a modality's head out of a loss
    (too few studies to pair), and DDP needs every trained parameter in every step's graph."""
    parts = [t.sum() * 0.0 for t in tensors if isinstance(t, Tensor)]
    return sum(parts) if parts else 0.0


def _bernoulli(shape, p: float, generator: torch.Generator, device) -> Tensor:
    return torch.rand(shape, generator=generator, device=device) < p


def make_masks(model: CardioFusion, batch: Mapping[str, Any], masking: Mapping[str, float],
               generator: torch.Generator) -> dict[str, Tensor]:
    """Tokens to hide per modality (``AlignConfig.masking``): random ECG lead-patches plus whole
    leads (at least one present lead stays in view), random echo tubelets plus whole time slices,
    random labs."""
    hide = {}
    device = model.modality_embed.device
    if "ecg" in model.modalities:
        present = batch["ecg_present"].bool()
        b, n_leads = present.shape
        n_p = batch["ecg"].shape[-1] // model.ecg_patch_size
        lead_hide = _bernoulli((b, n_leads), masking["ecg_lead_prob"], generator, device) & present
        all_hidden = (present & ~lead_hide).sum(1) == 0
        first = present.float().argmax(1)
        lead_hide[all_hidden, first[all_hidden]] = False
        hide["ecg"] = lead_hide.repeat_interleave(n_p, 1) | _bernoulli((b, n_leads * n_p), masking["ecg_ratio"],
                                                                       generator, device)
    if "echo" in model.modalities:
        enc = model.encoders["echo"]
        b, n_frames = batch["echo"].shape[:2]
        n_t, n_s = n_frames // enc.tubelet[0], enc.grid[0] * enc.grid[1]
        slices = _bernoulli((b, n_t), masking["echo_frame_ratio"], generator, device)
        hide["echo"] = slices.repeat_interleave(n_s, 1) | _bernoulli((b, n_t * n_s), masking["echo_ratio"],
                                                                     generator, device)
    if "labs" in model.modalities:
        hide["labs"] = _bernoulli(batch["labs"].shape, masking["labs_ratio"], generator, device)
    return hide


class AlignModule(TrainModule):
    """Stage-2 training of a ``cardio_fusion`` model (module doc).

    ``encoder_states``: pretrained weights per modality (``{"ecg": state_dict, ...}``) loaded into
    the model's encoders; those encoders then train at ``encoder_lr_scale`` times the rate.
    """

    kind = "align"
    local_metrics = ("ecg_to_echo_top1", "temporal_top1", "temporal_phase", "temporal_patient")

    def __init__(
        self,
        model_config: dict[str, Any],
        *,
        objectives: Sequence[str] = ("clip", "temporal", "multimae"),
        weights: Mapping[str, float] | None = None,
        temperature: float = 0.1,
        learn_temperature: bool = True,
        masking: Mapping[str, float] | None = None,
        modality_dropout: float = 0.25,
        decoder_dim: int = 128,
        decoder_depth: int = 1,
        lr: float = 5e-4,
        weight_decay: float = 0.05,
        betas: Sequence[float] = (0.9, 0.95),
        warmup_steps: int = 100,
        max_steps: int = 2000,
        seed: int = 0,
        encoder_lr_scale: float = 0.3,
        encoder_states: Mapping[str, Mapping[str, Tensor]] | None = None,
    ):
        super().__init__()
        unknown = set(objectives) - set(OBJECTIVES)
        if unknown:
            raise ConfigError(f"unknown alignment objectives {sorted(unknown)}; choose from {list(OBJECTIVES)}")
        self.save_hyperparameters(ignore=["encoder_states"])
        self.model: CardioFusion = model_from_config(model_config)
        have = set(self.model.modalities)
        if "temporal" in objectives and not {"ecg", "echo"} <= have:
            raise ConfigError(f"align.objectives: temporal needs the ecg and echo modalities; this cohort gives "
                              f"{sorted(have)} - choose other objectives")
        if {"clip", "clip_loo"} & set(objectives) and len(have) < 2:
            raise ConfigError(f"align.objectives: clip needs two modalities; this cohort gives {sorted(have)}")
        for modality, state in (encoder_states or {}).items():
            self.model.encoders[modality].load_state_dict(state)
        self.scaled_prefixes = tuple(f"model.encoders.{m}." for m in (encoder_states or {}))
        self.weights = {o: float((weights or {}).get(o, 1.0)) for o in objectives}
        self.masking = dict(masking or {"ecg_ratio": 0.7, "ecg_lead_prob": 0.25, "echo_frame_ratio": 0.5,
                                        "echo_ratio": 0.5, "labs_ratio": 0.3})
        self.temperatures = torch.nn.ModuleDict({
            o: LearnedTemperature(temperature) for o in ("clip", "clip_loo", "temporal")
            if o in objectives and learn_temperature
        })
        self.decoders = None
        if "multimae" in objectives:
            self.decoders = self._build_decoders(decoder_dim, decoder_depth)
        self._freeze_unused(set(objectives))

    def _freeze_unused(self, objectives: set[str]) -> None:
        """Parts no selected objective reads stay as they are (and DDP needs no unused-parameter
        search): the CLIP heads without clip / clip_loo, the phase heads without temporal, the
        fusion transformer without multimae."""
        m = self.model
        if not objectives & {"clip", "clip_loo"}:
            m.clip_heads.requires_grad_(False)
        if "temporal" not in objectives:
            m.phase_heads.requires_grad_(False)
        if "multimae" not in objectives:
            for part in (m.to_fusion, m.blocks, m.norm):
                part.requires_grad_(False)
            m.modality_embed.requires_grad_(False)

    def _build_decoders(self, dim: int, depth: int) -> MultiModalDecoders:
        m = self.model
        kwargs: dict[str, Any] = {}
        if "ecg" in m.modalities:
            enc = m.encoders["ecg"]
            kwargs.update(ecg_patch=enc.patch_size, ecg_patches=enc.max_patches)
        if "echo" in m.modalities:
            enc = m.encoders["echo"]
            t, ph, pw = enc.tubelet
            kwargs.update(echo_grid=(enc.frames // t, *enc.grid), echo_tubelet_pixels=t * ph * pw)
        if "labs" in m.modalities:
            kwargs.update(n_labs=len(m.lab_names))
        return MultiModalDecoders(m.dim, dim, depth, **kwargs)

    @property
    def encoder(self) -> CardioFusion:
        return self.model

    def _temperature(self, objective: str) -> Tensor | float:
        return self.temperatures[objective]() if objective in self.temperatures else self.hparams.temperature

    def _losses(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, Tensor]:
        model, objectives = self.model, self.weights
        hide = make_masks(model, batch, self.masking, generator)
        drop = {}
        if "multimae" in objectives and self.hparams.modality_dropout > 0:
            has = {m: batch[f"has_{m}"].bool() for m in model.modalities}
            dropped = drop_modalities(has, self.hparams.modality_dropout, generator)
            for m, rows in dropped.items():  # a dropped modality is hidden whole and must be predicted
                if m in hide:
                    hide[m] = hide[m] | rows[:, None]
                else:
                    drop[m] = rows
        out = model(batch, hide=hide, drop=drop)
        losses: dict[str, Tensor] = {}
        if "clip" in objectives or "clip_loo" in objectives:
            emb = model.clip_embeddings(out)
            touch = _touch(*emb.values())
            if "clip" in objectives:
                temperature = self._temperature("clip")
                losses["clip"] = clip_pairwise(emb, out.present, temperature)[0] + touch + _touch(temperature)
            if "clip_loo" in objectives:
                temperature = self._temperature("clip_loo")
                losses["clip_loo"] = clip_leave_one_out(emb, out.present, temperature)[0] + touch + _touch(temperature)
            if not self.training and {"ecg", "echo"} <= set(emb):
                both = out.present["ecg"] & out.present["echo"]
                if int(both.sum()) > 1:
                    losses["ecg_to_echo_top1"] = torch.tensor(retrieval_accuracy(emb["ecg"][both], emb["echo"][both]))
        if "temporal" in objectives:
            ecg_e, echo_e, valid = model.phase_embeddings(out, batch["ecg_phase"], batch["echo_phase"])
            temperature = self._temperature("temporal")
            losses["temporal"] = temporal_contrastive(ecg_e, echo_e, valid, temperature) + _touch(temperature)
            if not self.training:
                acc = temporal_accuracy(ecg_e, echo_e, valid)
                losses.update({f"temporal_{k}": torch.tensor(v) for k, v in acc.items() if v == v})
        if "multimae" in objectives:
            losses.update(self._reconstruction(batch, out, hide))
        total = sum(self.weights[o] * losses[o] for o in objectives)
        return {"loss": total, **losses}

    def _reconstruction(self, batch: dict[str, Any], out, hide: dict[str, Tensor]) -> dict[str, Tensor]:
        model, dec = self.model, self.decoders
        context, context_mask = out.tokens, out.key_mask.clone()
        context_mask[~context_mask.any(1), 0] = True
        parts = {}
        if "ecg" in hide:
            x = batch["ecg"].float()
            b, n_leads, n = x.shape
            patch = model.ecg_patch_size
            exists = (batch["ecg_present"].bool() & batch["has_ecg"].bool()[:, None]).repeat_interleave(n // patch, 1)
            pred, ids, valid = dec("ecg", hide["ecg"] & exists, context, context_mask)
            target = gather_tokens(x.reshape(b, n_leads * (n // patch), patch), ids)
            parts["mm_ecg"] = masked_patch_loss(pred, target, valid)
        if "echo" in hide:
            with torch.no_grad():
                layout = model.echo_layout(batch["echo"].float())
            exists = layout.present & batch["has_echo"].bool()[:, None]
            pred, ids, valid = dec("echo", hide["echo"] & exists, context, context_mask)
            parts["mm_echo"] = masked_patch_loss(pred, gather_tokens(layout.patches, ids), valid)
        if "labs" in hide:
            values = model.normalise_labs(batch["labs"])
            exists = torch.isfinite(values) & batch["has_labs"].bool()[:, None]
            pred, ids, valid = dec("labs", hide["labs"] & exists, context, context_mask)
            target = values.gather(1, ids)
            parts["mm_labs"] = masked_value_loss(pred[..., 0], target, valid)
        parts["multimae"] = torch.stack(list(parts.values())).mean()
        return parts
