"""Training objectives as pure tensor functions (no Lightning, no file I/O)."""

from .contrastive import LearnedTemperature, ProjectionHead, info_nce, nt_xent, retrieval_accuracy
from .mae import masked_patch_loss, normalise_patches, normalised_cross_correlation

__all__ = [
    "LearnedTemperature",
    "ProjectionHead",
    "info_nce",
    "masked_patch_loss",
    "normalise_patches",
    "normalised_cross_correlation",
    "nt_xent",
    "retrieval_accuracy",
]
