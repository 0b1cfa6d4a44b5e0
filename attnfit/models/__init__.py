"""The model library: plain PyTorch, no Lightning or Hydra."""

from attnfit.models.attention import AttentionPooling, build_attention
from attnfit.models.classifier import POOLINGS, ClassifierConfig, ClassifierOutput, SequenceClassifier
from attnfit.models.config import AttentionConfig, EncoderConfig, ModelConfig
from attnfit.models.encoders import build_encoder
from attnfit.models.finetuning import (
    FinetunePlan,
    LoadSummary,
    auxiliary_mlm,
    freeze_bottom,
    layer_groups,
    load_pretrained_backbone,
    prepare_for_finetuning,
)
from attnfit.models.language_model import Backbone, LanguageModel, LMHead
from attnfit.models.lora import LORA_TARGETS, LoRALinear, apply_lora, lora_parameters, merge_lora

__all__ = [
    "LORA_TARGETS",
    "POOLINGS",
    "AttentionConfig",
    "AttentionPooling",
    "Backbone",
    "ClassifierConfig",
    "ClassifierOutput",
    "EncoderConfig",
    "FinetunePlan",
    "LMHead",
    "LanguageModel",
    "LoRALinear",
    "LoadSummary",
    "ModelConfig",
    "SequenceClassifier",
    "apply_lora",
    "auxiliary_mlm",
    "build_attention",
    "build_encoder",
    "freeze_bottom",
    "layer_groups",
    "load_pretrained_backbone",
    "lora_parameters",
    "merge_lora",
    "prepare_for_finetuning",
]
