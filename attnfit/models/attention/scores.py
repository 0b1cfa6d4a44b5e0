"""Score functions of Luong et al. (2015) and Bahdanau et al. (2015), one set of weights per head.

Every scorer maps queries ``q (B, H, *, Tq, d)`` and keys ``k (B, H, *, Tk, d)`` to scores ``(B, H, *, Tq, Tk)``.
The ``*`` dims let local attention score blocks of a sequence with the same modules as global attention.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _per_head(param: Tensor, ndim: int) -> Tensor:
    """View a per-head parameter ``(H, ...)`` so it broadcasts against a ``(B, H, *, ...)`` tensor of ``ndim`` dims."""
    extra = ndim - 2 - (param.dim() - 1)
    return param.view(1, param.shape[0], *([1] * extra), *param.shape[1:])


class DotScore(nn.Module):
    """``score(q, k) = q·k / √d``: Luong's *dot*, scaled as in Vaswani et al. so deep stacks stay stable."""

    def __init__(self, num_heads: int, head_dim: int) -> None:
        super().__init__()
        self.scale = head_dim**-0.5

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        return (q * self.scale) @ k.transpose(-1, -2)


class GeneralScore(nn.Module):
    """Luong's *general*: ``score(q, k) = qᵀ W k / √d`` with a learned ``W`` per head."""

    def __init__(self, num_heads: int, head_dim: int) -> None:
        super().__init__()
        self.scale = head_dim**-0.5
        # Identity start: the score begins as plain dot-product attention and learns a bilinear form from there.
        self.weight = nn.Parameter(torch.eye(head_dim).repeat(num_heads, 1, 1))  # (H, d, d)

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        q = q @ _per_head(self.weight, q.dim())
        return (q * self.scale) @ k.transpose(-1, -2)


class ConcatScore(nn.Module):
    """Luong's *concat*, i.e. Bahdanau's additive score: ``vᵀ tanh(W_q q + W_k k + b)`` per head.

    It materialises a ``(…, Tq, Tk, d)`` tensor, so it costs ``d`` times the memory of a dot score.
    """

    def __init__(self, num_heads: int, head_dim: int) -> None:
        super().__init__()
        bound = 1 / math.sqrt(head_dim)
        self.w_query = nn.Parameter(torch.empty(num_heads, head_dim, head_dim).uniform_(-bound, bound))
        self.w_key = nn.Parameter(torch.empty(num_heads, head_dim, head_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(num_heads, head_dim))
        self.v = nn.Parameter(torch.empty(num_heads, head_dim).uniform_(-bound, bound))

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        nd = q.dim()
        q = q @ _per_head(self.w_query, nd) + _per_head(self.bias, nd - 1).unsqueeze(-2)  # (B, H, *, Tq, d)
        k = k @ _per_head(self.w_key, nd)  # (B, H, *, Tk, d)
        hidden = torch.tanh(q.unsqueeze(-2) + k.unsqueeze(-3))  # (B, H, *, Tq, Tk, d)
        return (hidden * _per_head(self.v, nd).unsqueeze(-2)).sum(-1)


SCORES: dict[str, type[nn.Module]] = {"dot": DotScore, "general": GeneralScore, "concat": ConcatScore}
