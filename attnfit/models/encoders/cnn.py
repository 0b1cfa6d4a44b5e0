"""Stack of residual 1-D convolutions with attention layers of the chosen type on top."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnfit.models.encoders.layers import AttentionStack, EncoderCache


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

    def forward_cached(self, x: Tensor, padding_mask: Tensor | None, past: Tensor) -> tuple[Tensor, Tensor]:
        """Causal and incremental: ``past (B, k-1, D)`` holds the last ``k-1`` normalised inputs (zeros at the
        start, which is exactly the causal left padding), so a new position costs one kernel application.
        Returns the output ``(B, t, D)`` and the new ``past``."""
        h = self.norm(x)
        if padding_mask is not None:
            h = h.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        window = torch.cat([past, h], dim=1)  # (B, k-1+t, D)
        out = self.conv(window.transpose(1, 2)).transpose(1, 2)  # (B, t, D)
        return x + self.dropout(F.gelu(out)), window[:, window.shape[1] - past.shape[1] :]


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

    def new_cache(self, batch: int, max_len: int, like: Tensor) -> EncoderCache:
        if not self.causal:
            raise ValueError("this CNN encoder was built non-causal and cannot generate; build it with causal=True")
        past = [like.new_zeros(batch, block.conv.kernel_size[0] - 1, like.shape[-1]) for block in self.blocks]
        return EncoderCache(self.top.new_kv(batch, max_len, like), past)

    def forward_cached(self, x: Tensor, padding_mask: Tensor | None, cache: EncoderCache, start: int) -> Tensor:
        """Incremental: each conv block keeps its last ``kernel_size - 1`` inputs; the attention layers on top use
        their key/value cache. ``padding_mask (B, start+t)`` covers every position seen so far."""
        new_mask = None if padding_mask is None else padding_mask[:, start:]
        for i, block in enumerate(self.blocks):
            x, cache.recurrent[i] = block.forward_cached(x, new_mask, cache.recurrent[i])
        return self.top.forward_cached(x, padding_mask, cache.kv, start)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Each conv block, then each attention layer on top (for freezing and layer-wise learning rates)."""
        return [list(block.parameters()) for block in self.blocks] + self.top.layer_groups()

    def describe_layers(self) -> str:
        return f"{len(self.blocks)} convolutional + {len(self.top.layers)} attention"
