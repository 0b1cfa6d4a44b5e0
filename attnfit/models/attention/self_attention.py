"""Multi-head scaled dot-product attention through ``F.scaled_dot_product_attention``.

SDPA picks flash / memory-efficient kernels on GPUs. The explicit path runs only when weights are asked for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from attnfit.models.attention.base import MultiHeadAttention, blocked_positions, masked_softmax


class SelfAttention(MultiHeadAttention):
    """Scaled dot-product attention, self or cross, with the fused kernel whenever weights are not needed."""

    def attend(self, q, k, v, padding_mask, causal, need_weights, query_offset=0) -> tuple[Tensor, Tensor | None]:
        tq, tk = q.shape[2], k.shape[2]
        if need_weights:
            scores = (q * self.head_dim**-0.5) @ k.transpose(-1, -2)
            weights = masked_softmax(scores, blocked_positions(padding_mask, causal, tq, tk, q.device))
            return F.dropout(weights, self.dropout, self.training) @ v, weights
        dropout = self.dropout if self.training else 0.0
        if padding_mask is None and (not causal or tq == tk or tq == 1):
            # SDPA's is_causal aligns top-left, which is right for tq == tk; one decoding query sees every key.
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal and tq == tk), None
        blocked = blocked_positions(padding_mask, causal, tq, tk, q.device)
        # An additive finite mask keeps rows of padding queries finite (see masked_softmax).
        bias = torch.zeros(blocked.shape, dtype=q.dtype, device=q.device).masked_fill(blocked, torch.finfo(q.dtype).min)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout), None
