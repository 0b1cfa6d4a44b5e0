"""The transformer layer (pre-norm by default, post-norm for BERT), shared by the transformer encoder and the
attention layers on RNN/CNN encoders."""

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


def activation(name: str) -> nn.Module:
    """``gelu`` (exact, erf) or ``gelu_tanh`` (the tanh approximation GPT-2 was trained with)."""
    return nn.GELU(approximate="tanh") if name == "gelu_tanh" else nn.GELU()


class FeedForward(nn.Sequential):
    """Position-wise ``Linear → GELU → Dropout → Linear``."""

    def __init__(self, dim: int, hidden: int, dropout: float, act: str = "gelu", bias: bool = True) -> None:
        super().__init__(
            nn.Linear(dim, hidden, bias=bias), activation(act), nn.Dropout(dropout), nn.Linear(hidden, dim, bias=bias)
        )


class TransformerLayer(nn.Module):
    """Pre-norm ``x + Attn(LN(x))`` then ``x + FFN(LN(x))``, or post-norm (BERT) ``LN(x + Attn(x))`` then
    ``LN(x + FFN(x))``; the attention is whichever type was configured."""

    def __init__(
        self,
        attention: MultiHeadAttention,
        ffn_dim: int,
        dropout: float,
        norm: str = "pre",
        act: str = "gelu",
        eps: float = 1e-5,
        bias: bool = True,
    ) -> None:
        super().__init__()
        dim = attention.dim
        self.post_norm = norm == "post"
        self.attn_norm, self.attention = nn.LayerNorm(dim, eps=eps, bias=bias), attention
        self.ffn_norm = nn.LayerNorm(dim, eps=eps, bias=bias)
        self.ffn = FeedForward(dim, ffn_dim, dropout, act, bias)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, padding_mask: Tensor | None, causal: bool, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        h = x if self.post_norm else self.attn_norm(x)
        context, weights = self.attention(h, padding_mask=padding_mask, causal=causal, need_weights=need_weights)
        return self._rest(x, context), weights

    def _rest(self, x: Tensor, context: Tensor) -> Tensor:
        """The residual around the attention output ``context``, then the feed-forward sublayer."""
        if self.post_norm:
            x = self.attn_norm(x + self.dropout(context))
            return self.ffn_norm(x + self.dropout(self.ffn(x)))
        x = x + self.dropout(context)
        return x + self.dropout(self.ffn(self.ffn_norm(x)))

    def forward_cached(self, x: Tensor, padding_mask: Tensor | None, kv: tuple[Tensor, Tensor], start: int) -> Tensor:
        """Causal, incremental: ``x (B, t, D)`` are positions ``start … start+t-1``; their keys/values are written
        into the ``kv`` buffers, and they attend to every cached position. ``padding_mask (B, start+t)`` or None."""
        h = x if self.post_norm else self.attn_norm(x)
        return self._rest(x, self.attention.forward_cached(h, padding_mask, kv, start))


class AttentionStack(nn.Module):
    """Transformer layers applied in turn, with a final LayerNorm (pre-norm stacks need one; BERT has none).

    ``checkpointing``: while training, each layer keeps only its input and recomputes its activations in the
    backward pass (``torch.utils.checkpoint``), trading about a third more compute for the memory of one layer."""

    def __init__(
        self,
        layers: list[TransformerLayer],
        dim: int,
        final_norm: bool = True,
        eps: float = 1e-5,
        bias: bool = True,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(dim, eps=eps, bias=bias) if final_norm else nn.Identity()
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
