"""Transformer encoder: pre-norm layers whose attention sublayer is the configured attention type."""

from __future__ import annotations

from torch import Tensor, nn

from attnfit.models.encoders.layers import AttentionStack, EncoderCache


class TransformerEncoder(nn.Module):
    """``(B, T, D) → (B, T, D)``; positions come from the embeddings."""

    def __init__(self, stack: AttentionStack) -> None:
        super().__init__()
        self.stack = stack

    def forward(
        self, x: Tensor, padding_mask: Tensor | None = None, causal: bool = False, need_weights: bool = False
    ) -> tuple[Tensor, list[Tensor]]:
        return self.stack(x, padding_mask, causal, need_weights)

    def new_cache(self, batch: int, max_len: int, like: Tensor) -> EncoderCache:
        return EncoderCache(self.stack.new_kv(batch, max_len, like))

    def forward_cached(self, x: Tensor, padding_mask: Tensor | None, cache: EncoderCache, start: int) -> Tensor:
        """Causal and incremental (see :meth:`TransformerLayer.forward_cached`)."""
        return self.stack.forward_cached(x, padding_mask, cache.kv, start)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameters bottom to top, one group per layer (for freezing and layer-wise learning rates)."""
        return self.stack.layer_groups()

    def describe_layers(self) -> str:
        return f"{len(self.stack.layers)} transformer"
