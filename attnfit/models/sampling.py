"""Choosing the next token from logits: greedy, temperature, top-k, top-p (nucleus) and repetition penalty.

Pure functions on ``logits (B, V)``, so a causal LM, a server and a test share exactly one implementation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from attnfit.errors import ConfigError


@dataclass(frozen=True)
class Sampling:
    """How the next token is picked; ``temperature=0`` is greedy (top-k/top-p are then moot)."""

    temperature: float = 1.0
    top_k: int | None = None  # keep the k likeliest tokens
    top_p: float | None = None  # keep the smallest set of likeliest tokens whose probability reaches p
    repetition_penalty: float = 1.0  # CTRL's: logits of tokens already in the text divided by it (× when < 0)

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, (int, float)) and 0 <= self.temperature < math.inf):
            raise ConfigError(f"temperature={self.temperature!r} must be a number ≥ 0 (0 = greedy)")
        k = self.top_k
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ConfigError(f"top_k={self.top_k!r} must be an integer ≥ 1, or null for no limit")
        if self.top_p is not None and not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise ConfigError(f"top_p={self.top_p!r} must be in (0, 1], or null for no limit")
        if not (isinstance(self.repetition_penalty, (int, float)) and self.repetition_penalty > 0):
            raise ConfigError(f"repetition_penalty={self.repetition_penalty!r} must be > 0 (1 = none)")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


def penalise_repeats(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """``logits (B, V)``; ``seen (B, V)`` bool: tokens already in each row. Positive logits are divided by the
    penalty and negative ones multiplied, so a seen token always becomes less likely for a penalty > 1."""
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def keep_top_k(logits: Tensor, k: int) -> Tensor:
    """-inf everywhere but the ``k`` largest logits of each row (ties at the k-th value are kept)."""
    kth = torch.topk(logits, min(k, logits.shape[-1])).values[:, -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def keep_top_p(logits: Tensor, p: float) -> Tensor:
    """-inf outside the nucleus: the likeliest tokens whose cumulative probability first reaches ``p``
    (the likeliest token is always kept)."""
    sorted_logits, order = torch.sort(logits, descending=True)
    cumulative = sorted_logits.softmax(-1).cumsum(-1)
    drop = cumulative - sorted_logits.softmax(-1) >= p  # the mass before a token already reaches p
    drop[:, 0] = False
    return logits.masked_fill(torch.zeros_like(drop).scatter(1, order, drop), float("-inf"))  # back to vocab order


def next_token(
    logits: Tensor, sampling: Sampling, seen: Tensor | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """``logits (B, V)`` float -> token ids ``(B, 1)``."""
    if seen is not None and sampling.repetition_penalty != 1.0:
        logits = penalise_repeats(logits, seen, sampling.repetition_penalty)
    if sampling.greedy:
        return logits.argmax(-1, keepdim=True)
    logits = logits / sampling.temperature
    if sampling.top_k is not None:
        logits = keep_top_k(logits, sampling.top_k)
    if sampling.top_p is not None and sampling.top_p < 1:
        logits = keep_top_p(logits, sampling.top_p)
    return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
