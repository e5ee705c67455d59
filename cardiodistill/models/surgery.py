"""Weight surgery between the stages: pure functions on model configs and state dicts.

Stage 3 starts from stage 2's fusion model with fewer modalities, or without stage 2 from the
stage-1 encoders under a fresh fusion transformer; a student may start from the teacher's fine-tuned
ECG encoder. These functions move the weights; they never read files (the stage jobs read a model file
with :func:`~cardiodistill.train.checkpoints.read_model_file` and pass its config and state dict).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from .registry import model_from_config

__all__ = ["fusion_with_encoders", "strip_prefix", "subset_fusion_state", "teacher_ecg_encoder"]

FUSION_PARTS = ("encoders.", "to_fusion.", "clip_heads.", "phase_heads.")  # per-modality parts of a fusion model


def strip_prefix(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries of ``state`` under ``prefix``, with the prefix removed (a sub-module's state dict)."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def subset_fusion_state(state: Mapping[str, Tensor], old: Sequence[str], new: Sequence[str]) -> dict[str, Tensor]:
    """A fusion state dict for the modalities ``new`` (a subset of ``old``): the parts of dropped
    modalities go, and the modality embedding keeps the rows of the kept ones."""
    dropped = [m for m in old if m not in new]
    kept = {k: v for k, v in state.items() if not any(k.startswith(p + m + ".") for p in FUSION_PARTS for m in dropped)}
    kept["modality_embed"] = state["modality_embed"][[list(old).index(m) for m in new]]
    return kept


def fusion_with_encoders(config: Mapping[str, Any], encoder_states: Mapping[str, Mapping[str, Tensor] | None]
                         ) -> dict[str, Tensor]:
    """The state dict of a fresh fusion model built from ``config`` (under the caller's seed) with the
    given encoders' weights loaded (``{"ecg": state or None, ...}``; modalities the model lacks are skipped)."""
    model = model_from_config(dict(config))
    for modality, state in encoder_states.items():
        if state is not None and modality in model.encoders:
            model.encoders[modality].load_state_dict(state)
    return model.state_dict()


def teacher_ecg_encoder(teacher: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The (fine-tuned) ECG encoder of a teacher, from its ``{"model_config", "state_dict"}``: the
    encoder's config and weights."""
    return teacher["model_config"]["fusion"]["ecg"], strip_prefix(teacher["state_dict"], "fusion.encoders.ecg.")
