"""Training: one LightningModule per stage, a trainer factory, self-describing checkpoints.

Lightning is imported by the modules that train; :func:`load_model` (checkpoints) needs only torch.
"""

from .checkpoints import load_model, read_model_file, save_model

__all__ = ["load_model", "read_model_file", "save_model"]
