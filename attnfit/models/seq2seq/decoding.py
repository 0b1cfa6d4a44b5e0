"""Greedy decoding and batched beam search over a :class:`Seq2SeqModel`'s incremental decoder state.

Conventions shared by both:

- ``max_len`` caps the generated tokens (EOS included); a hypothesis that reaches it unfinished is returned as is.
- Returned tokens exclude BOS and EOS and are padded with the model's ``pad_id``; ``lengths`` counts them.
- ``scores`` is the hypothesis' log-probability under the model, EOS included when it was generated.
- Both run in the model's current mode: call ``model.eval()`` first (dropout would make decoding random).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from attnfit.errors import ConfigError, check_choice
from attnfit.models.seq2seq.decoders import RNNState, TransformerState, reorder_state
from attnfit.models.seq2seq.model import Seq2SeqModel


@dataclass
class DecodeOutput:
    tokens: Tensor  # (B, L) generated ids, no BOS/EOS, padded with pad_id
    lengths: Tensor  # (B,) tokens before EOS
    scores: Tensor  # (B,) log-probability of the hypothesis (EOS included when generated), float64
    alignments: Tensor | None  # (B, L, S) cross-attention weights averaged over heads; zeros past each length


def _finish(tokens: Tensor, scores: Tensor, alignments: Tensor | None, eos_id: int, pad_id: int) -> DecodeOutput:
    """Cut every row at its first EOS (``tokens (B, L)`` as generated) and pad the rest."""
    ended = (tokens == eos_id).cumsum(1) > 0  # (B, L) True from the first EOS on
    lengths = (~ended).sum(1)
    width = int(lengths.max()) if tokens.shape[0] else 0
    tokens = tokens.masked_fill(ended, pad_id)[:, :width]
    if alignments is not None:
        alignments = alignments.masked_fill(ended[:, :, None], 0.0)[:, :width]
    return DecodeOutput(tokens, lengths, scores, alignments)


def _start(
    model: Seq2SeqModel, src_ids: Tensor, source_padding_mask: Tensor | None, bos_id: int, max_len: int
) -> tuple[Tensor, RNNState | TransformerState, Tensor]:
    """Memory ``(B, S, D)``, the initial decoder state and the BOS column ``(B, 1)``."""
    limit = model.config.max_target_len
    if max_len > limit:
        raise ValueError(f"max_len={max_len} exceeds the model's max_target_len={limit}")
    memory = model.encode(src_ids, source_padding_mask)  # (B, S, D)
    return memory, model.init_state(memory, source_padding_mask), src_ids.new_full((src_ids.shape[0], 1), bos_id)


@torch.no_grad()
def greedy_decode(
    model: Seq2SeqModel,
    src_ids: Tensor,
    source_padding_mask: Tensor | None,
    bos_id: int,
    eos_id: int,
    max_len: int,
    need_alignments: bool = False,
) -> DecodeOutput:
    """Most likely next token at every step, all sentences at once; stops when every sentence has emitted EOS."""
    pad_id = model.config.pad_id
    memory, state, prev = _start(model, src_ids, source_padding_mask, bos_id, max_len)
    B = src_ids.shape[0]
    finished = torch.zeros(B, dtype=torch.bool, device=src_ids.device)
    scores = torch.zeros(B, dtype=torch.float64, device=src_ids.device)
    tokens, maps = [], []
    for _ in range(max_len):
        logits, weights, state = model.decode_step(prev, memory, source_padding_mask, state, need_alignments)
        logp = torch.log_softmax(logits[:, -1].float(), -1)  # (B, V)
        next_id = logp.argmax(-1)  # (B,)
        scores += logp.gather(1, next_id[:, None])[:, 0].double().masked_fill(finished, 0.0)
        next_id = next_id.masked_fill(finished, pad_id)
        tokens.append(next_id)
        if need_alignments:
            maps.append(weights.float().mean(1))  # (B, 1, S)
        finished |= next_id == eos_id
        prev = next_id[:, None]
        if bool(finished.all()):
            break
    tokens = torch.stack(tokens, 1) if tokens else src_ids.new_zeros(B, 0)
    alignments = torch.cat(maps, 1) if need_alignments and maps else None
    return _finish(tokens, scores, alignments, eos_id, pad_id)


LENGTH_NORMS = ("gnmt", "average", "none")


def length_normalised(scores: Tensor, lengths: Tensor, norm: str, alpha: float) -> Tensor:
    """Rank scores of hypotheses: ``gnmt`` divides the log-probability by ``((5 + len) / 6) ** alpha`` (Wu et al.
    2016), ``average`` by ``len ** alpha`` (alpha 1: the mean log-probability per token), ``none`` keeps it."""
    check_choice("length_norm", norm, LENGTH_NORMS)
    lengths = lengths.to(scores.dtype)
    if norm == "gnmt":
        return scores / ((5.0 + lengths) / 6.0) ** alpha
    if norm == "average":
        return scores / lengths.clamp(min=1) ** alpha
    return scores


def repeated_ngram_bans(tokens: Tensor, n: int, vocab_size: int) -> Tensor:
    """``(N, V)`` bool: tokens that would complete an ``n``-gram already in each row of ``tokens (N, t)``."""
    banned = torch.zeros(tokens.shape[0], vocab_size, dtype=torch.bool, device=tokens.device)
    if n < 1 or tokens.shape[1] < n:
        return banned
    grams = tokens.unfold(1, n, 1)  # (N, t - n + 1, n)
    prefix = tokens[:, tokens.shape[1] - n + 1 :]  # (N, n - 1): what the next token would extend
    match = (grams[:, :, : n - 1] == prefix[:, None, :]).all(-1)  # (N, t - n + 1)
    hits = torch.zeros(banned.shape, device=tokens.device).scatter_add_(1, grams[:, :, -1], match.float())
    return hits > 0


@torch.no_grad()
def beam_search(
    model: Seq2SeqModel,
    src_ids: Tensor,
    source_padding_mask: Tensor | None,
    bos_id: int,
    eos_id: int,
    max_len: int,
    beam_size: int = 4,
    length_penalty: float = 1.0,
    need_alignments: bool = False,
    n_best: int = 1,
    min_len: int = 0,
    no_repeat_ngram: int = 0,
    length_norm: str = "gnmt",
) -> DecodeOutput:
    """Beam search over all ``B`` sentences × ``K`` beams as one batch of ``B·K`` rows.

    Beams are ranked by raw log-probability while searching. A beam that emits EOS stays in the beam with a frozen
    score (it can only be extended by padding, at no cost), so search stops once all ``K`` beams of every sentence
    are finished: nothing unfinished can overtake them, since log-probabilities only fall. Finished beams are then
    ranked by :func:`length_normalised` (``length_norm``, with ``length_penalty`` as its exponent; ``len`` counts
    EOS; ``length_penalty=0`` keeps raw log-probabilities). Scores add up in float64 so that ``K = 1`` picks
    exactly the greedy tokens.

    ``n_best``: the ``n`` best hypotheses of each sentence, as ``B·n`` rows (sentence ``b``'s at rows
    ``b·n … b·n + n - 1``, best first); 1 returns one row per sentence. ``min_len``: EOS is forbidden before that
    many tokens. ``no_repeat_ngram``: no n-gram of that size appears twice in a hypothesis (0: no constraint).
    """
    if beam_size < 1:
        raise ValueError(f"beam_size={beam_size} must be ≥ 1")
    if not 1 <= n_best <= beam_size:
        raise ConfigError(f"n_best={n_best} must be between 1 and beam_size={beam_size}")
    check_choice("length_norm", length_norm, LENGTH_NORMS)
    pad_id, K = model.config.pad_id, beam_size
    memory, state, _ = _start(model, src_ids, source_padding_mask, bos_id, max_len)
    B, device = src_ids.shape[0], src_ids.device
    expand = torch.arange(B, device=device).repeat_interleave(K)  # row b·K + k is beam k of sentence b
    memory = memory.index_select(0, expand)
    mask = None if source_padding_mask is None else source_padding_mask.index_select(0, expand)
    state = reorder_state(state, expand)

    scores = torch.full((B, K), float("-inf"), dtype=torch.float64, device=device)
    scores[:, 0] = 0.0  # one live beam at the start, so the first step does not pick K copies of one token
    finished = torch.zeros(B * K, dtype=torch.bool, device=device)
    lengths = torch.zeros(B * K, dtype=torch.long, device=device)  # generated tokens, EOS included
    tokens = src_ids.new_zeros(B * K, 0)
    alignments = memory.new_zeros(B * K, 0, memory.shape[1], dtype=torch.float32) if need_alignments else None
    prev = src_ids.new_full((B * K, 1), bos_id)
    first_row = torch.arange(B, device=device)[:, None] * K  # (B, 1)
    for step in range(max_len):
        logits, weights, state = model.decode_step(prev, memory, mask, state, need_alignments)
        logp = torch.log_softmax(logits[:, -1].float(), -1).double()  # (B·K, V)
        V = logp.shape[-1]
        if step < min_len:
            logp[:, eos_id] = float("-inf")
        if no_repeat_ngram:
            logp = logp.masked_fill(repeated_ngram_bans(tokens, no_repeat_ngram, V), float("-inf"))
        frozen = torch.full_like(logp, float("-inf"))
        frozen[:, pad_id] = 0.0  # a finished beam continues with padding only, score unchanged
        logp = torch.where(finished[:, None], frozen, logp)
        candidates = (scores[:, :, None] + logp.view(B, K, V)).view(B, K * V)
        scores, best = candidates.topk(K, dim=-1)  # (B, K)
        parent = (first_row + best // V).view(-1)  # (B·K,) row each survivor extends
        next_id = (best % V).view(-1)
        lengths = lengths[parent] + (~finished[parent]).long()
        finished = finished[parent] | (next_id == eos_id) | torch.isinf(scores.view(-1))
        tokens = torch.cat([tokens[parent], next_id[:, None]], 1)
        if need_alignments:
            alignments = torch.cat([alignments[parent], weights.float().mean(1)[parent]], 1)  # (B·K, t, S)
        state = reorder_state(state, parent)
        prev = next_id[:, None]
        if bool(finished.all()):
            break

    ranked = length_normalised(scores, lengths.view(B, K), length_norm, length_penalty)
    ranked = ranked.masked_fill(torch.isinf(scores), float("-inf"))  # impossible hypotheses rank last
    order = ranked.argsort(dim=-1, descending=True, stable=True)[:, :n_best]  # (B, n)
    rows = (first_row + order).view(-1)  # (B·n,)
    picked = scores.view(-1)[rows]
    return _finish(tokens[rows], picked, None if alignments is None else alignments[rows], eos_id, pad_id)
