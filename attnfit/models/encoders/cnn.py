"""Stack of residual 1-D convolutions with attention layers of the chosen type on top."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from attnfit.models.encoders.layers import AttentionStack


class ConvBlock(nn.Module):
    """``x + Dropout(GELU(Conv(LN(x))))`` with padding zeroed first so it never leaks into real positions."""

    def __init__(self, dim: int, kernel_size: int, dropout: float, causal: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv1d(dim, dim, kernel_size)
        # Causal: all padding on the left, so output t sees inputs t-k+1 … t only.
        self.pad = (kernel_size - 1, 0) if causal else ((kernel_size - 1) // 2, kernel_size // 2)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, padding_mask: Tensor | None) -> Tensor:
        h = self.norm(x)
        if padding_mask is not None:
            h = h.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        h = self.conv(F.pad(h.transpose(1, 2), self.pad)).transpose(1, 2)  # (B, T, D)
        return x + self.dropout(F.gelu(h))


class CNNEncoder(nn.Module):
    """``(B, T, D) → (B, T, D)``; causality is fixed at build time because it decides the conv padding."""

    def __init__(
        self, dim: int, num_layers: int, kernel_size: int, dropout: float, causal: bool, top: AttentionStack
    ) -> None:
        super().__init__()
        self.causal = causal
        self.blocks = nn.ModuleList(ConvBlock(dim, kernel_size, dropout, causal) for _ in range(num_layers))
        self.top = top

    def forward(
        self, x: Tensor, padding_mask: Tensor | None = None, causal: bool = False, need_weights: bool = False
    ) -> tuple[Tensor, list[Tensor]]:
        if causal and not self.causal:
            raise ValueError("this CNN encoder was built non-causal; build it with causal=True for causal use")
        for block in self.blocks:
            x = block(x, padding_mask)
        return self.top(x, padding_mask, causal, need_weights)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Each conv block, then each attention layer on top (for freezing and layer-wise learning rates)."""
        return [list(block.parameters()) for block in self.blocks] + self.top.layer_groups()

    def describe_layers(self) -> str:
        return f"{len(self.blocks)} convolutional + {len(self.top.layers)} attention"
