"""Token embeddings plus learned or sinusoidal absolute positions (and, for BERT, token types and a LayerNorm)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_table(max_len: int, dim: int) -> Tensor:
    """The fixed ``(max_len, dim)`` sine/cosine table of Vaswani et al."""
    position = torch.arange(max_len, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(max_len, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table


class Embeddings(nn.Module):
    """``ids (B, T) → (B, T, D)``."""

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        max_len: int,
        position: str,
        pad_id: int,
        dropout: float,
        scale: float = 1.0,
        type_vocab_size: int = 0,
        norm_eps: float | None = None,
    ) -> None:
        super().__init__()
        self.max_len, self.scale = max_len, scale
        self.token = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        self.position = nn.Embedding(max_len, dim) if position == "learned" else None
        # BERT adds a segment embedding (type 0 unless told otherwise) and normalises the sum.
        self.token_type = nn.Embedding(type_vocab_size, dim) if type_vocab_size else None
        self.norm = nn.LayerNorm(dim, eps=norm_eps) if norm_eps is not None else None
        if position == "sinusoidal":
            self.register_buffer("sinusoid", sinusoidal_table(max_len, dim), persistent=False)
        else:
            self.sinusoid = None
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        input_ids: Tensor,
        offset: int = 0,
        positions: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        """``positions (B, T)``, when given, replaces ``offset + arange(T)``: left-padded prompts start at 0 per row.
        ``token_type_ids (B, T)``: segment ids for a model with token types (default: all 0)."""
        T = input_ids.shape[1]
        if positions is None and offset + T > self.max_len:
            raise ValueError(f"sequence of {offset + T} tokens exceeds the model's max_len={self.max_len}")
        x = self.token(input_ids) * self.scale if self.scale != 1.0 else self.token(input_ids)
        if positions is None:
            positions = torch.arange(offset, offset + T, device=input_ids.device)
        elif positions.numel() and int(positions.max()) >= self.max_len:
            raise ValueError(f"position {int(positions.max())} exceeds the model's max_len={self.max_len}")
        if self.position is not None:
            x = x + self.position(positions)
        elif self.sinusoid is not None:
            x = x + self.sinusoid[positions]
        if self.token_type is not None:
            x = x + (self.token_type.weight[0] if token_type_ids is None else self.token_type(token_type_ids))
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(x)
