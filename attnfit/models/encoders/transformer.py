"""Transformer encoder: pre-norm layers whose attention sublayer is the configured attention type."""

from __future__ import annotations

from torch import Tensor, nn

from attnfit.models.encoders.layers import AttentionStack


class TransformerEncoder(nn.Module):
    """``(B, T, D) → (B, T, D)``; positions come from the embeddings."""

    def __init__(self, stack: AttentionStack) -> None:
        super().__init__()
        self.stack = stack

    def forward(
        self, x: Tensor, padding_mask: Tensor | None = None, causal: bool = False, need_weights: bool = False
    ) -> tuple[Tensor, list[Tensor]]:
        return self.stack(x, padding_mask, causal, need_weights)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameters bottom to top, one group per layer (for freezing and layer-wise learning rates)."""
        return self.stack.layer_groups()

    def describe_layers(self) -> str:
        return f"{len(self.stack.layers)} transformer"
