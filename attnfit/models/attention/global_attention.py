"""Global (Luong/Bahdanau) attention: every query scores every key with ``dot``, ``general`` or ``concat``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from attnfit.errors import check_choice
from attnfit.models.attention.base import MultiHeadAttention, blocked_positions, masked_softmax
from attnfit.models.attention.scores import SCORES


class GlobalAttention(MultiHeadAttention):
    """Scores all ``Tq × Tk`` pairs explicitly, so any score function works; O(n²) memory."""

    def __init__(self, dim: int, num_heads: int = 1, score: str = "general", dropout: float = 0.0) -> None:
        super().__init__(dim, num_heads, dropout)
        check_choice("attention.score", score, SCORES)
        self.score_name = score
        self.score = SCORES[score](num_heads, self.head_dim)

    def attend(self, q, k, v, padding_mask, causal, need_weights, query_offset=0) -> tuple[Tensor, Tensor | None]:
        scores = self.score(q, k)  # (B, H, Tq, Tk)
        weights = masked_softmax(scores, blocked_positions(padding_mask, causal, q.shape[2], k.shape[2], q.device))
        context = F.dropout(weights, self.dropout, self.training) @ v  # (B, H, Tq, d)
        return context, weights if need_weights else None
