"""Training objectives as pure tensor functions (no Lightning, no file I/O)."""

from .mae import masked_patch_loss, normalise_patches, normalised_cross_correlation

__all__ = ["masked_patch_loss", "normalise_patches", "normalised_cross_correlation"]
