"""Masking strategies beyond BERT's per-token choice: whole words (BERT-wwm) and whole-word spans (SpanBERT).

Both are :class:`MLMCollator`s that only choose the positions differently: padding, the 80/10/10 rule, the
``sample_key`` seeding and ``reset()`` are the parent's, so a resumed run sees the same masks.

Where words start depends on the tokenizer: byte-level BPE marks a word start with a leading space (``Ġ``),
wordpiece marks a continuation with ``##``, and a char tokenizer's words are runs of non-space characters.
Whitespace-only tokens (a char tokenizer's spaces, BPE's ``Ċ``) belong to no word and are never masked alone;
special tokens are words of their own and never masked.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np
import torch
from tokenizers import Tokenizer, decoders

from attnfit.data.lm import MLMCollator
from attnfit.data.tokenizer import special_token_id
from attnfit.errors import ConfigError

MAX_SPAN_WORDS = 10  # SpanBERT clips span lengths at 10 words
SPAN_P = 0.2  # SpanBERT's geometric p: mean span 3.8 words after clipping


@dataclass
class WordTable:
    """Per-vocabulary-id facts that decide word boundaries; built once per tokenizer, cheap to pickle."""

    lead: np.ndarray  # (V,) bool: the token starts a word by itself (Ġx, a non-## piece)
    space: np.ndarray  # (V,) bool: the token is whitespace only (belongs to no word)
    trail: np.ndarray  # (V,) bool: the token ends in whitespace, so the next one starts a word
    special: np.ndarray  # (V,) bool

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer) -> WordTable:
        V = tokenizer.get_vocab_size(with_added_tokens=True)
        tokens = [tokenizer.id_to_token(i) or "" for i in range(V)]
        model = json.loads(tokenizer.to_str())["model"]
        special = np.zeros(V, dtype=bool)
        special[[i for i in _special_ids(tokenizer) if i < V]] = True
        if model["type"] == "WordPiece":
            prefix = model.get("continuing_subword_prefix") or "##"
            surface = [t.removeprefix(prefix) for t in tokens]
            lead = [not t.startswith(prefix) for t in tokens]
        else:
            if isinstance(tokenizer.decoder, decoders.ByteLevel):  # Ġ/Ċ… back to the spaces/newlines they stand for
                surface = tokenizer.decode_batch([[i] for i in range(V)], skip_special_tokens=False)
            else:
                surface = [t.replace("▁", " ") for t in tokens]  # sentencepiece's word-start mark
            char = model["type"] == "WordLevel" and all(
                len(s) == 1 for s, sp in zip(surface, special, strict=True) if not sp
            )
            # A char's word starts after a space; any other word-level token is a word; BPE: a leading space.
            lead = [False if char else model["type"] == "WordLevel" or s[:1].isspace() for s in surface]
        space = np.array([s != "" and s.isspace() for s in surface]) & ~special
        trail = np.array([s[-1:].isspace() for s in surface])
        return cls(np.array(lead, dtype=bool), space, trail, special)

    def word_ids(self, ids: np.ndarray) -> np.ndarray:
        """``ids (T,)`` → ``(T,)`` int: the word each token belongs to (0, 1, …), -1 for specials and whitespace."""
        ids = np.asarray(ids, dtype=np.int64)
        special, space = self.special[ids], self.space[ids]
        boundary_before = np.ones(len(ids), dtype=bool)  # sequence start, or after a special / trailing space
        boundary_before[1:] = special[:-1] | self.trail[ids[:-1]]
        in_word = ~special & ~space
        starts = in_word & (self.lead[ids] | boundary_before)
        return np.where(in_word, np.cumsum(starts) - 1, -1)


def _special_ids(tokenizer: Tokenizer) -> list[int]:
    return [i for i, token in tokenizer.get_added_tokens_decoder().items() if token.special]


def word_starts(tokenizer: Tokenizer, ids: list[int] | np.ndarray | torch.Tensor) -> list[bool]:
    """Per token: does a word start here? Specials are words of their own (True), whitespace tokens are not."""
    ids = np.asarray(ids, dtype=np.int64)
    table = WordTable.from_tokenizer(tokenizer)
    words = table.word_ids(ids)
    first = words >= 0
    first[1:] &= words[1:] != words[:-1]
    return (first | table.special[ids]).tolist()


def _word_groups(words: np.ndarray, eligible: np.ndarray) -> list[np.ndarray]:
    """Positions of each word, ``[positions of word 0, word 1, …]``; words with an ineligible token are left out."""
    positions = np.flatnonzero(words >= 0)
    groups = np.split(positions, np.flatnonzero(np.diff(words[positions])) + 1) if len(positions) else []
    return [g for g in groups if eligible[g].all()]


@dataclass
class WholeWordMLMCollator(MLMCollator):
    """MLM batches whose chosen positions are whole words: shuffled words are taken until ≈ ``mask_prob`` of each
    sequence's eligible tokens are covered (a word that would overshoot the budget is skipped, as in BERT-wwm).

    Build with :meth:`from_tokenizer`, or pass ``tokenizer=`` next to the :class:`MLMCollator` arguments.
    """

    tokenizer: Tokenizer | None = field(default=None, kw_only=True, repr=False, compare=False)
    _table: WordTable | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tokenizer is None:
            raise ConfigError(f"{type(self).__name__} needs tokenizer= to find word boundaries")
        self._table = WordTable.from_tokenizer(self.tokenizer)
        if len(self._table.lead) < self.vocab_size:
            raise ConfigError(f"vocab_size={self.vocab_size} exceeds the tokenizer's {len(self._table.lead)} ids")

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer, **kwargs: Any) -> Self:
        """Pad/mask ids, vocabulary size and special ids from ``tokenizer``; ``kwargs``: mask_prob, seed, …"""
        return cls(
            pad_id=special_token_id(tokenizer, "pad"),
            mask_id=special_token_id(tokenizer, "mask"),
            vocab_size=tokenizer.get_vocab_size(),
            special_ids=tuple(_special_ids(tokenizer)),
            tokenizer=tokenizer,
            **kwargs,
        )

    def _choose(self, input_ids: torch.Tensor, eligible: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        chosen = torch.zeros_like(eligible)  # (B, T)
        for row, (ids, ok) in enumerate(zip(input_ids.numpy(), eligible.numpy(), strict=True)):
            groups = _word_groups(self._table.word_ids(ids), ok)
            if groups:  # the budget counts every eligible token, as MLMCollator's mask_prob does
                budget = max(1, round(self.mask_prob * int(ok.sum())))
                picked = self._pick(groups, budget, gen, self._table.space[ids] & ok)
                chosen[row, torch.from_numpy(np.concatenate(picked))] = True
        return chosen

    def _pick(
        self, groups: list[np.ndarray], budget: int, gen: torch.Generator | None, space: np.ndarray
    ) -> list[np.ndarray]:
        """Positions to mask (a list of arrays) from the words' positions ``groups``; ≤ ``budget`` unless one word
        alone exceeds it."""
        picked, covered = [], 0
        for w in torch.randperm(len(groups), generator=gen).tolist():
            if covered + len(groups[w]) <= budget:
                picked.append(groups[w])
                covered += len(groups[w])
            if covered == budget:
                break
        return picked or [groups[int(torch.randint(len(groups), (1,), generator=gen))]]  # every word overshoots


@dataclass
class SpanMLMCollator(WholeWordMLMCollator):
    """SpanBERT masking: spans of ``ℓ ~ Geometric(0.2)`` whole words (clipped at 10), each starting at a random
    word, until ≈ ``mask_prob`` of each sequence's tokens are covered (a span that would overshoot is redrawn).
    A span never crosses a special token (packed documents stay apart); whitespace between its words is masked
    with them, so a span is contiguous. The 80/10/10 rule stays per token (SpanBERT applies it per span).
    """

    span_p: float = field(default=SPAN_P, kw_only=True)
    max_span: int = field(default=MAX_SPAN_WORDS, kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.span_p <= 1.0:
            raise ConfigError(f"span_p must be in (0, 1], got {self.span_p}")
        if self.max_span < 1:
            raise ConfigError(f"max_span must be ≥ 1, got {self.max_span}")

    def span_length(self, gen: torch.Generator | None = None) -> int:
        """One span length in words: ``ℓ ~ Geometric(span_p)`` on 1, 2, … conditioned on ``ℓ ≤ max_span``.

        By the inverse CDF with ``u`` uniform below ``F(max_span)``, so no draw is wasted (mean 3.8 for SpanBERT's
        p=0.2, max 10).
        """
        if self.span_p >= 1.0:
            return 1
        below = 1.0 - (1.0 - self.span_p) ** self.max_span  # F(max_span)
        u = float(torch.rand((), generator=gen)) * below
        return min(1 + int(math.log1p(-u) / math.log1p(-self.span_p)), self.max_span)  # min: float round-off

    def _pick(
        self, groups: list[np.ndarray], budget: int, gen: torch.Generator | None, space: np.ndarray
    ) -> list[np.ndarray]:
        # Words w-1 and w are neighbours when only (eligible) whitespace lies between them.
        adjacent = [space[groups[w - 1][-1] + 1 : groups[w][0]].all() for w in range(1, len(groups))]
        taken = np.zeros(len(groups), dtype=bool)
        picked, covered = [], 0
        for _ in range(4 * len(groups) + 20):  # overlapping or overshooting spans are redrawn, a bounded number
            if covered >= budget:
                break
            length, first = self.span_length(gen), int(torch.randint(len(groups), (1,), generator=gen))
            last = first
            while last + 1 < min(first + length, len(groups)) and adjacent[last]:
                last += 1
            positions = np.arange(groups[first][0], groups[last][-1] + 1)  # the words and the spaces between
            if taken[first : last + 1].any() or covered + len(positions) > budget:
                continue
            taken[first : last + 1] = True
            picked.append(positions)
            covered += len(positions)
        return picked or [groups[int(torch.randint(len(groups), (1,), generator=gen))]]
