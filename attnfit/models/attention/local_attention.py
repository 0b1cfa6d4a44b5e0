"""Sliding-window attention: query ``i`` sees keys ``i-w … i+w`` (``i-w … i`` when causal).

Blocked computation keeps time and memory O(n·w): the sequence is cut into blocks of ``w`` positions and each
query block scores only its own block and its neighbours (3w keys, 2w when causal). No n×n tensor is ever
built, except the dense weights returned on request for inspection.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from attnfit.errors import ConfigError, check_choice
from attnfit.models.attention.base import MultiHeadAttention, masked_softmax
from attnfit.models.attention.scores import SCORES


def _windows(x: Tensor, causal: bool) -> Tensor:
    """``(B, *, nb + 2, b, …)`` blocks with one pad block each side -> ``(B, *, nb, 3b | 2b, …)`` neighbourhoods."""
    parts = [x[:, :, :-2], x[:, :, 1:-1]] if causal else [x[:, :, :-2], x[:, :, 1:-1], x[:, :, 2:]]
    return torch.cat(parts, dim=3)


class LocalAttention(MultiHeadAttention):
    """Self-attention restricted to a window of ±``window`` positions, with any score function."""

    def __init__(
        self, dim: int, num_heads: int = 1, window: int = 16, score: str = "dot", dropout: float = 0.0
    ) -> None:
        super().__init__(dim, num_heads, dropout)
        if window < 1:
            raise ConfigError(f"attention.window={window} must be ≥ 1")
        check_choice("attention.score", score, SCORES)
        self.window, self.score_name = window, score
        self.score = SCORES[score](num_heads, self.head_dim)

    def attend(self, q, k, v, padding_mask, causal, need_weights, query_offset=0) -> tuple[Tensor, Tensor | None]:
        B, H, T, d = q.shape
        if k.shape[2] != T:
            if not causal or k.shape[2] < T:
                raise ValueError("local attention needs queries and keys of the same length (self-attention)")
            return self._attend_last(q, k, v, padding_mask, need_weights)
        b = self.window  # block size = window, so a block's neighbourhood is the blocks before and after it
        nb = math.ceil(T / b)
        extra = nb * b - T
        qb = F.pad(q, (0, 0, 0, extra)).view(B, H, nb, b, d)
        kw = _windows(F.pad(k, (0, 0, b, extra + b)).view(B, H, nb + 2, b, d), causal)  # (B, H, nb, 3b, d)
        vw = _windows(F.pad(v, (0, 0, b, extra + b)).view(B, H, nb + 2, b, d), causal)

        # Key c of a query block starts at absolute position j·b - b; query r sits at j·b + r.
        rel = torch.arange(kw.shape[3], device=q.device)[None, :] - b - torch.arange(b, device=q.device)[:, None]
        band = (rel <= 0) & (rel >= -b) if causal else rel.abs() <= b  # (b, 3b)
        valid = torch.ones(B, T, dtype=torch.bool, device=q.device)
        if padding_mask is not None:
            valid = ~padding_mask
        valid = _windows(F.pad(valid, (b, extra + b)).view(B, 1, nb + 2, b), causal)  # (B, 1, nb, 3b)
        blocked = ~(band & valid[:, :, :, None, :])  # (B, 1, nb, b, 3b)

        weights = masked_softmax(self.score(qb, kw), blocked)  # (B, H, nb, b, 3b)
        context = (F.dropout(weights, self.dropout, self.training) @ vw).view(B, H, nb * b, d)[:, :, :T]
        return context, self._dense(weights, T) if need_weights else None

    def _attend_last(
        self, q: Tensor, k: Tensor, v: Tensor, padding_mask: Tensor | None, need_weights: bool
    ) -> tuple[Tensor, Tensor | None]:
        """Incremental causal decoding: ``q (B, H, Tq, d)`` are the last ``Tq`` of ``Tk`` positions, so only the
        last ``Tq + window`` keys can be in any query's window; scored directly, O(Tq·w)."""
        tq, start = q.shape[2], max(0, k.shape[2] - q.shape[2] - self.window)
        k, v = k[:, :, start:], v[:, :, start:]
        n = k.shape[2]
        rel = torch.arange(n, device=q.device)[None, :] - (torch.arange(tq, device=q.device)[:, None] + n - tq)
        blocked = (rel > 0) | (rel < -self.window)  # (Tq, n)
        if padding_mask is not None:
            blocked = blocked | padding_mask[:, None, None, start:]  # (B, 1, Tq, n)
        weights = masked_softmax(self.score(q, k), blocked)  # (B, H, Tq, n)
        return F.dropout(weights, self.dropout, self.training) @ v, weights if need_weights else None

    def _dense(self, weights: Tensor, T: int) -> Tensor:
        """Scatter banded weights into ``(B, H, T, T)`` for plots; never used for the computation itself."""
        B, H, nb, b, width = weights.shape
        start = torch.arange(nb, device=weights.device)[:, None, None] * b  # padded key index of window start
        index = (start + torch.arange(width, device=weights.device)).expand(nb, b, width)
        dense = weights.new_zeros(B, H, nb, b, (nb + 2) * b)
        dense.scatter_(-1, index.expand(B, H, nb, b, width), weights)
        return dense.view(B, H, nb * b, -1)[:, :, :T, b : b + T]
