"""The model library: plain PyTorch, no Lightning or Hydra."""

from attnfit.models.attention import AttentionPooling, build_attention
from attnfit.models.config import AttentionConfig, EncoderConfig, ModelConfig
from attnfit.models.encoders import build_encoder
from attnfit.models.language_model import Backbone, LanguageModel, LMHead

__all__ = [
    "AttentionConfig",
    "AttentionPooling",
    "Backbone",
    "EncoderConfig",
    "LMHead",
    "LanguageModel",
    "ModelConfig",
    "build_attention",
    "build_encoder",
]
