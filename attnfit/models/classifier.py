"""Sequence classification: a pretrained-able :class:`Backbone`, one pooled vector per sequence, a linear head.

Every pooling also returns per-position weights (B, T), so a plot can show which tokens a prediction rests on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from attnfit.errors import check_choice, check_fraction
from attnfit.models.attention import AttentionPooling
from attnfit.models.config import ModelConfig, _at_least, from_dict
from attnfit.models.language_model import Backbone, init_weights

POOLINGS = ("attention", "cls", "mean", "max", "last", "pooler")


@dataclass
class ClassifierConfig:
    num_labels: int
    pooling: str = "attention"  # attention | cls | mean | max | last (causal) | pooler (BERT's dense+tanh on cls)
    dropout: float = 0.1  # on the pooled vector, before the head
    bias: bool = True  # the head's; GPT-2's classifier (GPT2ForSequenceClassification's score) has none

    def __post_init__(self) -> None:
        _at_least("classifier.num_labels", self.num_labels, 2)
        check_choice("classifier.pooling", self.pooling, POOLINGS)
        check_fraction("classifier.dropout", self.dropout)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassifierConfig:
        return from_dict(cls, data, "classifier")


class ClassifierOutput(NamedTuple):
    logits: Tensor  # (B, C)
    pooling_weights: Tensor  # (B, T): each position's share of the pooled vector; sums to 1 over non-padding
    attentions: list[Tensor]  # one (B, H, T, T) map per attention layer when need_weights, else []


def _one_hot_at(index: Tensor, length: int, dtype: torch.dtype) -> Tensor:
    """``index (B,) → (B, T)`` weights with 1 at ``index``."""
    return nn.functional.one_hot(index, length).to(dtype)


class DensePooler(nn.Module):
    """BERT's pooler: ``tanh(W·h_cls + b)``, the first real position's hidden state through a dense layer."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)

    def forward(self, hidden: Tensor, padding_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        cls, weights = pool(hidden, padding_mask, "cls")
        return torch.tanh(self.dense(cls)), weights


def pool(
    hidden: Tensor, padding_mask: Tensor | None, pooling: str, pooler: nn.Module | None = None
) -> tuple[Tensor, Tensor]:
    """``hidden (B, T, D)`` → ``(pooled (B, D), weights (B, T))``; padding (True in the mask) never contributes.

    Every pooling but ``max`` is written as ``pooled = Σ weights·hidden`` so the weights are exactly what was used;
    ``max`` (Kim's max-over-time) takes each feature from the position where it peaks, and its weights are each
    position's share of the features.
    """
    B, T, _ = hidden.shape
    real = torch.ones(B, T, dtype=torch.bool, device=hidden.device) if padding_mask is None else ~padding_mask
    if pooling in ("attention", "pooler"):
        assert pooler is not None, f"{pooling} pooling needs its pooling module"
        return pooler(hidden, padding_mask)
    if pooling == "mean":
        weights = real.to(hidden.dtype) / real.sum(1, keepdim=True).clamp(min=1).to(hidden.dtype)
    elif pooling == "max":
        peaks, argmax = hidden.masked_fill(~real.unsqueeze(-1), float("-inf")).max(1)  # (B, D), (B, D)
        pooled = peaks.masked_fill(~real.any(1, keepdim=True), 0.0)  # a row of only padding pools to zeros
        weights = nn.functional.one_hot(argmax, T).to(hidden.dtype).mean(1) * real  # share of features, (B, T)
        return pooled, weights
    elif pooling == "cls":
        # The first real position: position 0 with right padding, the usual [CLS]/<s> slot.
        weights = _one_hot_at(real.to(torch.long).argmax(1), T, hidden.dtype)
    elif pooling == "last":
        # The last real position: the only one that has seen the whole sequence in a causal backbone.
        positions = torch.arange(T, device=hidden.device).expand(B, T)
        weights = _one_hot_at(positions.masked_fill(~real, -1).argmax(1), T, hidden.dtype)
    else:
        check_choice("classifier.pooling", pooling, POOLINGS)
        raise AssertionError(pooling)  # unreachable: check_choice raised
    return (weights.unsqueeze(1) @ hidden).squeeze(1), weights  # (B, D), (B, T)


class SequenceClassifier(nn.Module):
    """``ids (B, T) → logits (B, C)`` over any encoder × attention; the backbone can come from a pretrained LM."""

    def __init__(self, backbone_config: ModelConfig, config: ClassifierConfig) -> None:
        super().__init__()
        self.backbone_config, self.config = backbone_config, config
        dim = backbone_config.dim
        self.backbone = Backbone(backbone_config)
        poolers = {"attention": AttentionPooling, "pooler": DensePooler}
        self.pooler = poolers[config.pooling](dim) if config.pooling in poolers else None
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(dim, config.num_labels, bias=config.bias)
        # Initialise the backbone as the LM does; pooler and head separately, so a later
        # load_pretrained_backbone() replaces the backbone without touching them.
        self.backbone.apply(init_weights)
        for module in (self.pooler, self.head):
            if module is not None:
                module.apply(init_weights)

    def forward(
        self, input_ids: Tensor, padding_mask: Tensor | None = None, need_weights: bool = False
    ) -> ClassifierOutput:
        hidden, attentions = self.backbone(input_ids, padding_mask, need_weights)  # (B, T, D)
        pooled, weights = pool(hidden, padding_mask, self.config.pooling, self.pooler)  # (B, D), (B, T)
        logits = self.head(self.dropout(pooled))  # (B, C)
        return ClassifierOutput(logits, weights, attentions)
