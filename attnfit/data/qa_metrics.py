"""Extractive QA scoring (SQuAD exact match / F1, CMRC-style for Chinese) and span decoding from logits.

Scores compare ``answer_tokens``: SQuAD v1.1's normalisation, then CJK characters as single tokens (as CMRC
2018's evaluation segments them), so English gets SQuAD's word-level F1 and Chinese character-level F1 from the
same code, and a mixed answer like "2008年北京奥运会" is scored sensibly.
"""

from __future__ import annotations

import logging
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from attnfit.errors import DataError

logger = logging.getLogger("attnfit")

_ASCII_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# BERT's "Chinese character" ranges (CJK Unified Ideographs and extensions, compatibility ideographs)
_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)  # fmt: skip


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return any(lo <= code <= hi for lo, hi in _CJK_RANGES)


def _is_wide_punctuation(char: str) -> bool:
    """Non-ASCII punctuation: full-width and CJK marks (，。！？、；：（）《》「」), curly quotes, "…", "·"."""
    return ord(char) > 0x7F and unicodedata.category(char).startswith("P")


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's normalisation: lowercase, drop ASCII punctuation, drop the articles a/an/the, single spaces."""
    text = "".join(c for c in text.lower() if c not in _ASCII_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def answer_tokens(text: str) -> list[str]:
    """Tokens that EM/F1 compare: ``normalize_answer`` without non-ASCII punctuation, then every CJK character
    a token of its own and the runs between them split on whitespace (CMRC 2018's mixed segmentation)."""
    text = "".join(c for c in normalize_answer(text) if not _is_wide_punctuation(c))
    tokens: list[str] = []
    run: list[str] = []
    for char in text:
        if _is_cjk(char):
            tokens.extend("".join(run).split())
            run = []
            tokens.append(char)
        else:
            run.append(char)
    tokens.extend("".join(run).split())
    return tokens


def _check_references(references: Sequence[str]) -> None:
    if isinstance(references, str) or not references:
        raise DataError(f"QA scoring needs a non-empty list of reference answers, got {references!r}")


def exact_match(prediction: str, references: Sequence[str]) -> float:
    """1.0 if the prediction's ``answer_tokens`` equal those of any reference, else 0.0 (SQuAD's EM, and CMRC's
    for Chinese: "北京。" matches "北 京")."""
    _check_references(references)
    predicted = answer_tokens(prediction)
    return float(any(predicted == answer_tokens(ref) for ref in references))


def _f1(predicted: list[str], reference: list[str]) -> float:
    if not predicted or not reference:
        return float(predicted == reference)  # both empty (e.g. "the" vs "a") agree; one empty cannot overlap
    same = sum((Counter(predicted) & Counter(reference)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(reference)
    return 2 * precision * recall / (precision + recall)


def f1(prediction: str, references: Sequence[str]) -> float:
    """Token-overlap F1 over ``answer_tokens``, the best over ``references`` (character-level for Chinese)."""
    _check_references(references)
    predicted = answer_tokens(prediction)
    return max(_f1(predicted, answer_tokens(ref)) for ref in references)


def squad_scores(predictions: dict[str, str], references: dict[str, Sequence[str]]) -> dict[str, float]:
    """{"exact_match", "f1"} in percent over every question in ``references`` and their "count".

    A question without a prediction scores 0 (as in SQuAD's script; a warning counts them); predictions for
    unknown ids are ignored.
    """
    if not references:
        raise DataError("QA scoring needs at least one question with reference answers")
    missing = [qid for qid in references if qid not in predictions]
    if missing:
        logger.warning("%d of %d questions have no prediction and score 0", len(missing), len(references))
    em = sum(exact_match(predictions[qid], refs) for qid, refs in references.items() if qid in predictions)
    f = sum(f1(predictions[qid], refs) for qid, refs in references.items() if qid in predictions)
    n = len(references)
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f / n, "count": n}


# --- span decoding --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """A candidate answer: ``context[char_start:char_end]`` from tokens ``token_start..token_end`` (inclusive) of
    window ``window`` (its position in the list given to ``best_spans``); ``probability`` is a softmax over the
    returned candidates' scores."""

    text: str
    score: float
    probability: float
    char_start: int
    char_end: int
    window: int
    token_start: int
    token_end: int


def _window_candidates(
    start_logits: torch.Tensor, end_logits: torch.Tensor, offsets: torch.Tensor, max_answer_len: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(scores, starts, ends) of every allowed span of one window, vectorised: outer sum + band mask."""
    length = offsets.shape[0]  # logits may be longer (padding): only the window's own tokens count
    start_logits, end_logits = start_logits[:length].float(), end_logits[:length].float()
    scores = start_logits[:, None] + end_logits[None, :]  # (T, T): [i, j] = span from token i to token j
    ones = torch.ones(length, length, dtype=torch.bool)
    band = torch.triu(ones) & torch.tril(ones, diagonal=max_answer_len - 1)  # i <= j <= i + max_answer_len - 1
    usable = (offsets[:, 0] >= 0) & (offsets[:, 1] > offsets[:, 0])  # (T,) context tokens with visible text
    allowed = band & usable[:, None] & usable[None, :]
    starts, ends = allowed.nonzero(as_tuple=True)
    return scores[starts, ends], starts, ends


def best_spans(
    start_logits: Sequence[torch.Tensor],
    end_logits: Sequence[torch.Tensor],
    windows: Sequence[Sequence[Sequence[int]] | torch.Tensor],
    context: str,
    max_answer_len: int = 30,
    n_best: int = 20,
) -> list[Span]:
    """The ``n_best`` highest-scoring answer spans of ONE example over all its windows, best first.

    ``start_logits[w]``/``end_logits[w]`` are 1-D tensors for window ``w`` and ``windows[w]`` its per-token
    ``offsets`` (from ``tokenize_for_qa``). A span starts and ends on context tokens with visible text,
    ``start <= end`` and at most ``max_answer_len`` tokens; its score is start logit + end logit. Spans with the
    same characters (from overlapping windows, or byte tokens of one character) are kept once, at their best.
    """
    if not len(start_logits) == len(end_logits) == len(windows):
        raise DataError(
            f"best_spans: {len(start_logits)} start, {len(end_logits)} end logit vectors and {len(windows)} "
            f"windows; give one of each per window"
        )
    if max_answer_len < 1 or n_best < 1:
        raise DataError(f"best_spans needs max_answer_len >= 1 and n_best >= 1, got {max_answer_len}, {n_best}")
    parts = []
    for w, (s, e, offsets) in enumerate(zip(start_logits, end_logits, windows, strict=True)):
        offsets = torch.as_tensor(offsets, dtype=torch.long).reshape(-1, 2)
        scores, starts, ends = _window_candidates(s.detach().cpu(), e.detach().cpu(), offsets, max_answer_len)
        chars = torch.stack([offsets[starts, 0], offsets[ends, 1]], dim=1)  # (N, 2) character span
        parts.append((scores, torch.full_like(starts, w), starts, ends, chars))
    if not parts or sum(len(p[0]) for p in parts) == 0:
        return []
    scores, window, starts, ends, chars = (torch.cat(column) for column in zip(*parts, strict=True))
    order = torch.sort(scores, descending=True, stable=True).indices  # ties: earlier window, earlier start
    picked: list[tuple] = []
    seen: set[tuple[int, int]] = set()
    for chunk in order.split(max(64, 4 * n_best)):  # usually the first chunk has n_best distinct spans
        for i in chunk.tolist():
            key = (int(chars[i, 0]), int(chars[i, 1]))
            if key in seen:
                continue
            seen.add(key)
            picked.append((float(scores[i]), *key, int(window[i]), int(starts[i]), int(ends[i])))
            if len(picked) == n_best:
                break
        if len(picked) == n_best:
            break
    probabilities = torch.softmax(torch.tensor([p[0] for p in picked], dtype=torch.float64), dim=0).tolist()
    return [
        Span(context[cs:ce], score, prob, cs, ce, w, ts, te)
        for (score, cs, ce, w, ts, te), prob in zip(picked, probabilities, strict=True)
    ]


def _sentences(context: str) -> list[tuple[int, int]]:
    """``[start, end)`` character spans of the sentences of ``context`` (split after . ! ? and 。！？)."""
    spans, start = [], 0
    for match in re.finditer(r"[.!?。！？]+\s*", context):
        spans.append((start, match.end()))
        start = match.end()
    if start < len(context):
        spans.append((start, len(context)))
    return [(s, e) for s, e in spans if context[s:e].strip()]


def overlap_baseline(question: str, context: str) -> str:
    """The trivial answer: the context sentence sharing most answer tokens (words; characters for Chinese) with
    the question. What a QA model must beat to show it reads more than word overlap."""
    asked = set(answer_tokens(question))
    sentences = _sentences(context) or [(0, len(context))]
    best = max(sentences, key=lambda span: len(asked & set(answer_tokens(context[span[0] : span[1]]))))
    return context[best[0] : best[1]].strip()
