"""Models: a lead-agnostic ECG transformer, a tubelet video transformer (each with a masked
autoencoder), a lead-agnostic convolutional ECG encoder, a (2+1)-D convolutional echo encoder, labs
and note encoders, the multimodal fusion model and teacher of stages 2-3, the mobile-ECG student,
the PTB-XL benchmark's supervised baselines (xresnet1d, resnet1d_wang, inception1d) and an attention
multiple-instance head for multi-view studies.

Build by name through the registry (every name builds from its defaults alone); every model
carries ``.model_config`` for its checkpoint::

    from cardiodistill.models import create_model, model_from_config
    encoder = create_model("ecg_vit_tiny")
    embedding = encoder.forward_features(x, leads=("I", "II"))   # x: [B, 2, 2500] z-scored, 250 Hz

Models never read files; checkpoints are the trainer's business.
"""

from .baselines import Inception1d, ResNet1dWang
from .ecg_cnn import EcgConvEncoder
from .ecg_transformer import PAD_LEAD_ID, EcgMAE, EcgTransformer, TokenLayout, lead_ids
from .fusion import CardioFusion, CardioTeacher
from .labs import LabNormaliser, LabsEncoder
from .mil import AttentionMIL, MultiViewEncoder
from .registry import (
    ModelTest,
    create_model,
    ecg_input_config,
    list_models,
    model_defaults,
    model_from_config,
    model_test,
    register_model,
    register_test,
    resolve_config,
)
from .resnet1d import XResNet1d
from .student import EncoderBackbone, StudentCNN, StudentEnsemble, StudentModel
from .text import HashingTokenizer, HuggingFaceNoteEncoder, NoteEncoder
from .trees import FeatureTrees
from .video_cnn import VideoConvEncoder
from .video_transformer import VideoLayout, VideoMAE, VideoTransformer

__all__ = [
    "PAD_LEAD_ID",
    "EncoderBackbone",
    "AttentionMIL",
    "CardioFusion",
    "CardioTeacher",
    "EcgConvEncoder",
    "EcgMAE",
    "EcgTransformer",
    "FeatureTrees",
    "HashingTokenizer",
    "HuggingFaceNoteEncoder",
    "Inception1d",
    "LabNormaliser",
    "LabsEncoder",
    "ModelTest",
    "MultiViewEncoder",
    "NoteEncoder",
    "ResNet1dWang",
    "StudentCNN",
    "StudentEnsemble",
    "StudentModel",
    "TokenLayout",
    "VideoConvEncoder",
    "VideoLayout",
    "VideoMAE",
    "VideoTransformer",
    "XResNet1d",
    "create_model",
    "ecg_input_config",
    "lead_ids",
    "list_models",
    "model_defaults",
    "model_from_config",
    "model_test",
    "register_model",
    "register_test",
    "resolve_config",
]
