"""The pre-norm transformer layer, shared by the transformer encoder and the attention layers on RNN/CNN encoders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from attnfit.models.attention import MultiHeadAttention


@dataclass
class EncoderCache:
    """What an encoder keeps between generation steps so that a new token costs one position, not the prefix."""

    kv: list[tuple[Tensor, Tensor]]  # per attention layer: key and value buffers (B, H, max_len, d)
    recurrent: Any = None  # RNN: its (h, c) or h; CNN: per conv block the last kernel_size - 1 inputs (B, k-1, D)


class FeedForward(nn.Sequential):
    """Position-wise ``Linear → GELU → Dropout → Linear``."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))


class TransformerLayer(nn.Module):
    """``x + Attn(LN(x))`` then ``x + FFN(LN(x))``; the attention is whichever type was configured."""

    def __init__(self, attention: MultiHeadAttention, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        dim = attention.dim
        self.attn_norm, self.attention = nn.LayerNorm(dim), attention
        self.ffn_norm, self.ffn = nn.LayerNorm(dim), FeedForward(dim, ffn_dim, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, padding_mask: Tensor | None, causal: bool, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        h = self.attn_norm(x)
        context, weights = self.attention(h, padding_mask=padding_mask, causal=causal, need_weights=need_weights)
        x = x + self.dropout(context)
        x = x + self.dropout(self.ffn(self.ffn_norm(x)))
        return x, weights

    def forward_cached(self, x: Tensor, padding_mask: Tensor | None, kv: tuple[Tensor, Tensor], start: int) -> Tensor:
        """Causal, incremental: ``x (B, t, D)`` are positions ``start … start+t-1``; their keys/values are written
        into the ``kv`` buffers, and they attend to every cached position. ``padding_mask (B, start+t)`` or None."""
        x = x + self.dropout(self.attention.forward_cached(self.attn_norm(x), padding_mask, kv, start))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class AttentionStack(nn.Module):
    """Transformer layers applied in turn, with a final LayerNorm (pre-norm stacks need one).

    ``checkpointing``: while training, each layer keeps only its input and recomputes its activations in the
    backward pass (``torch.utils.checkpoint``), trading about a third more compute for the memory of one layer."""

    def __init__(self, layers: list[TransformerLayer], dim: int, checkpointing: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(dim)
        self.checkpointing = checkpointing

    def forward(
        self, x: Tensor, padding_mask: Tensor | None, causal: bool, need_weights: bool = False
    ) -> tuple[Tensor, list[Tensor]]:
        attentions = []
        recompute = self.checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            if recompute:  # non-reentrant: the recomputation replays dropout's RNG state and needs no input grads
                x, weights = checkpoint(layer, x, padding_mask, causal, need_weights, use_reentrant=False)
            else:
                x, weights = layer(x, padding_mask, causal, need_weights)
            if weights is not None:
                attentions.append(weights)
        return self.norm(x), attentions

    def new_kv(self, batch: int, max_len: int, like: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Empty key/value buffers ``(B, H, max_len, d)`` per layer, in ``like``'s dtype and device."""
        buffers = []
        for layer in self.layers:
            att = layer.attention
            shape = (batch, att.num_heads, max_len, att.head_dim)
            buffers.append((like.new_zeros(shape), like.new_zeros(shape)))
        return buffers

    def forward_cached(
        self, x: Tensor, padding_mask: Tensor | None, kv: list[tuple[Tensor, Tensor]], start: int
    ) -> Tensor:
        for layer, buffers in zip(self.layers, kv, strict=True):
            x = layer.forward_cached(x, padding_mask, buffers, start)
        return self.norm(x)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """One parameter group per layer, bottom to top; the final LayerNorm joins the top layer."""
        groups = [list(layer.parameters()) for layer in self.layers] or [[]]
        groups[-1] += list(self.norm.parameters())
        return groups
