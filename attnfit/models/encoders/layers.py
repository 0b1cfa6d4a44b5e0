"""The pre-norm transformer layer, shared by the transformer encoder and the attention layers on RNN/CNN encoders."""

from __future__ import annotations

from torch import Tensor, nn

from attnfit.models.attention import MultiHeadAttention


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


class AttentionStack(nn.Module):
    """Transformer layers applied in turn, with a final LayerNorm (pre-norm stacks need one)."""

    def __init__(self, layers: list[TransformerLayer], dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, x: Tensor, padding_mask: Tensor | None, causal: bool, need_weights: bool = False
    ) -> tuple[Tensor, list[Tensor]]:
        attentions = []
        for layer in self.layers:
            x, weights = layer(x, padding_mask, causal, need_weights)
            if weights is not None:
                attentions.append(weights)
        return self.norm(x), attentions

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """One parameter group per layer, bottom to top; the final LayerNorm joins the top layer."""
        groups = [list(layer.parameters()) for layer in self.layers] or [[]]
        groups[-1] += list(self.norm.parameters())
        return groups
