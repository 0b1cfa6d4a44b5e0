"""Attention pooling for sequence-level outputs: ``F = W·h + b → softmax over positions → Σ A·h``."""

from __future__ import annotations

from torch import Tensor, nn

from attnfit.models.attention.base import masked_softmax


class AttentionPooling(nn.Module):
    """One learned score per position, normalised over the non-padding positions, weights the hidden states."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1)  # F = W·h + b

    def forward(self, hidden: Tensor, padding_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``hidden (B, T, D)`` -> ``(pooled (B, D), weights (B, T))``."""
        weights = masked_softmax(self.score(hidden).squeeze(-1), padding_mask)  # A = softmax(F)
        return (weights.unsqueeze(1) @ hidden).squeeze(1), weights  # Σ A·h
