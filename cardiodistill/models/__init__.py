"""Models: a lead-agnostic ECG transformer (+ masked autoencoder) and an xresnet1d baseline.

Build by name through the registry; every model carries ``.model_config`` for its checkpoint::

    from cardiodistill.models import create_model, model_from_config
    encoder = create_model("ecg_vit_tiny")
    embedding = encoder.forward_features(x, leads=("I", "II"))   # x: [B, 2, 2500] z-scored, 250 Hz

Models never read files; checkpoints are the trainer's business.
"""

from .ecg_transformer import PAD_LEAD_ID, EcgMAE, EcgTransformer, TokenLayout, lead_ids
from .registry import create_model, list_models, model_defaults, model_from_config, register_model
from .resnet1d import XResNet1d

__all__ = [
    "PAD_LEAD_ID",
    "EcgMAE",
    "EcgTransformer",
    "TokenLayout",
    "XResNet1d",
    "create_model",
    "lead_ids",
    "list_models",
    "model_defaults",
    "model_from_config",
    "register_model",
]
