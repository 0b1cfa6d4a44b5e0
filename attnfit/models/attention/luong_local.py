"""Luong local attention for decoders (Luong, Pham & Manning, 2015, §3.2): cross-attention to a source window.

For target position ``t`` (``query_offset`` + query index, 0-based) and a source of ``S_b`` non-padding words:

- *local-m* (monotonic): ``p_t = min(t, S_b - 1)``. The clamp (not in the paper, which assumes targets no
  longer than sources) lets targets longer than their source keep attending to the last source words.
- *local-p* (predictive): ``p_t = S_b · sigmoid(v_pᵀ tanh(W_p h_t))`` per head, ``h_t`` the head's projected
  query; ``p_t ∈ [0, S_b]`` is used as is.
- The window is the non-padding source positions ``s`` with ``|s - p_t| ≤ D`` (``D = window``); ``align`` is the
  softmax of the scores (``dot``/``general``/``concat``) over the window only.
- ``a_t(s) = align(s)`` for local-m; ``a_t(s) = align(s) · exp(-(s - p_t)² / (2σ²))``, ``σ = D / 2``, for
  local-p, *not* renormalised (as in the paper), so local-p weights sum to less than 1.

Scores are computed densely over ``(Tq, S)`` and masked to the window: O(Tq·S), fine for sentences.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnfit.errors import ConfigError, check_choice
from attnfit.models.attention.base import MultiHeadAttention, masked_softmax
from attnfit.models.attention.scores import SCORES

LOCAL_MODES = ("m", "p")


class LuongLocalAttention(MultiHeadAttention):
    """Decoder-to-source attention restricted to ``[p_t - D, p_t + D]``, monotonic (``m``) or predictive (``p``)."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 1,
        window: int = 8,
        score: str = "general",
        mode: str = "p",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(dim, num_heads, dropout)
        if window < 1:
            raise ConfigError(f"attention.window={window} must be ≥ 1")
        check_choice("attention.local_mode", mode, LOCAL_MODES)
        check_choice("attention.score", score, SCORES)
        self.window, self.score_name, self.mode = window, score, mode
        self.score = SCORES[score](num_heads, self.head_dim)
        if mode == "p":
            bound = 1 / math.sqrt(self.head_dim)
            self.w_p = nn.Parameter(torch.empty(num_heads, self.head_dim, self.head_dim).uniform_(-bound, bound))
            self.v_p = nn.Parameter(torch.empty(num_heads, self.head_dim).uniform_(-bound, bound))

    def aligned_positions(self, q: Tensor, source_lengths: Tensor, query_offset: int = 0) -> Tensor:
        """``p_t`` of queries ``q (B, H, Tq, d)`` and ``source_lengths (B,)``: ``(B, H, Tq)``, or ``(B, 1, Tq)`` for m.

        Positions are at least float32: half precision cannot represent integers above 256 (bfloat16) exactly.
        """
        dtype = torch.promote_types(q.dtype, torch.float32)
        lengths = source_lengths.to(dtype)[:, None, None]  # (B, 1, 1)
        if self.mode == "m":
            t = torch.arange(q.shape[2], device=q.device, dtype=dtype) + query_offset  # (Tq,)
            return torch.minimum(t[None, None, :], lengths - 1).clamp(min=0)  # (B, 1, Tq)
        hidden = torch.tanh(torch.einsum("bhtd,hed->bhte", q, self.w_p))  # tanh(W_p h_t), (B, H, Tq, d)
        return lengths * torch.sigmoid((hidden * self.v_p[None, :, None, :]).sum(-1).to(dtype))  # (B, H, Tq)

    def attend(self, q, k, v, padding_mask, causal, need_weights, query_offset=0) -> tuple[Tensor, Tensor | None]:
        if causal:
            raise ValueError("Luong local attention is cross-attention to the source: causal=True is not supported")
        B, S = k.shape[0], k.shape[2]
        valid = torch.ones(B, S, dtype=torch.bool, device=q.device)
        if padding_mask is not None:
            valid = ~padding_mask
        p = self.aligned_positions(q, valid.sum(-1), query_offset)  # (B, H | 1, Tq)
        distance = torch.arange(S, device=q.device, dtype=p.dtype) - p[..., None]  # s - p_t, (B, H | 1, Tq, S)
        blocked = (distance.abs() > self.window) | ~valid[:, None, None, :]
        weights = masked_softmax(self.score(q, k), blocked)  # align, (B, H, Tq, S)
        if self.mode == "p":
            sigma = self.window / 2
            weights = weights * torch.exp(-(distance**2) / (2 * sigma**2)).to(weights.dtype)
        weights = weights.masked_fill(blocked, 0.0)  # exact zeros outside the window; empty windows give 0
        context = F.dropout(weights, self.dropout, self.training) @ v  # (B, H, Tq, d)
        return context, weights if need_weights else None
