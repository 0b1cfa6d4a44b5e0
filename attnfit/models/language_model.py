"""Backbone (embeddings + encoder) and the masked / causal language model on top of it."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnfit.errors import ConfigError
from attnfit.models.config import ModelConfig
from attnfit.models.embeddings import Embeddings
from attnfit.models.encoders import build_encoder
from attnfit.models.encoders.layers import activation
from attnfit.models.sampling import Sampling, next_token


def init_weights(module: nn.Module) -> None:
    """BERT/GPT-style N(0, 0.02) for linear and embedding weights: small logits at the start, even when tied."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            nn.init.zeros_(module.weight[module.padding_idx])


class Backbone(nn.Module):
    """``ids (B, T) → hidden (B, T, D)``; the part that pretraining learns and fine-tuning reuses."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        # RNN inputs are scaled by √dim (as Vaswani et al. scale transformer embeddings): with N(0, 0.02) tokens an
        # LSTM/GRU barely sees its input at first, which stalls seq2seq encoders; LayerNorm spares transformers this.
        rnn = config.encoder.name in ("lstm", "gru")
        self.embeddings = Embeddings(
            config.vocab_size,
            config.dim,
            config.max_len,
            config.position_kind,
            config.pad_id,
            config.encoder.dropout,
            scale=config.dim**0.5 if rnn else 1.0,
            type_vocab_size=config.type_vocab_size,
            norm_eps=config.encoder.norm_eps if config.embed_norm else None,
        )
        self.encoder = build_encoder(config)

    def forward(
        self,
        input_ids: Tensor,
        padding_mask: Tensor | None = None,
        need_weights: bool = False,
        positions: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> tuple[Tensor, list[Tensor]]:
        """Returns hidden states and, when ``need_weights``, one ``(B, H, T, T)`` map per attention layer.
        ``positions (B, T)``: per-row position ids (left-padded prompts); default ``0 … T-1``.
        ``token_type_ids (B, T)``: segment ids of a model with token types (BERT); default all 0."""
        sep = self.config.segment_sep_id
        if token_type_ids is None and sep is not None:  # BERT's sentence pairs: [CLS] a [SEP] (type 0) b [SEP] (1)
            token_type_ids = segments(input_ids, sep, self.config.pad_id)
        # Only pass what is given: ELECTRA's generator swaps in embeddings that take ids alone.
        extra = {k: v for k, v in (("positions", positions), ("token_type_ids", token_type_ids)) if v is not None}
        x = self.embeddings(input_ids, **extra)
        return self.encoder(x, padding_mask, self.config.causal, need_weights)


class LMHead(nn.Module):
    """Vocabulary logits. The MLM head adds BERT's ``Linear → GELU → LayerNorm`` transform first.

    With ``cutoffs`` (e.g. ``[2000, 8000]``) it is an adaptive softmax (Grave et al. 2017) over a vocabulary whose ids
    are in frequency order, as ``tokenizer=word``'s are: one softmax over the ids below ``cutoffs[0]`` plus one logit
    per tail cluster (``[2000, 8000)``, ``[8000, V)``), and a softmax inside each tail. Training (:meth:`loss`) pays
    for the head softmax at every position and for a tail's only where the label lies in it: with a 30k-word
    vocabulary most positions never touch the rare 90%. The output weights stay one ``(V, D)`` matrix, tied or not.
    """

    def __init__(
        self,
        dim: int,
        vocab_size: int,
        transform: bool,
        act: str = "gelu",
        eps: float = 1e-5,
        bias: bool = True,
        cutoffs: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.transform = (
            nn.Sequential(nn.Linear(dim, dim), activation(act), nn.LayerNorm(dim, eps=eps)) if transform else None
        )
        if cutoffs and cutoffs[-1] >= vocab_size:
            raise ConfigError(
                f"model.adaptive_cutoffs={list(cutoffs)} must lie inside the vocabulary of {vocab_size} ids "
                f"(each below {vocab_size})"
            )
        self.decoder = nn.Linear(dim, vocab_size, bias=bias)
        self.cutoffs = None if not cutoffs else [*cutoffs, vocab_size]  # cluster i holds ids [cutoffs[i], cutoffs[i+1])
        self.cluster = nn.Linear(dim, len(cutoffs)) if cutoffs else None  # the head softmax's logit for each tail

    def forward(self, hidden: Tensor) -> Tensor:
        """``(…, D) → (…, V)`` logits; an adaptive head gives log-probabilities, which softmax reads as logits."""
        if self.transform is not None:
            hidden = self.transform(hidden)
        logits = self.decoder(hidden)
        if self.cutoffs is None:
            return logits
        c0 = self.cutoffs[0]
        head = self._head_log_probs(logits[..., :c0], hidden)  # (…, c0 + tails)
        tails = [
            head[..., c0 + i, None] + logits[..., lo:hi].float().log_softmax(-1)  # log p(cluster) + log p(id | cluster)
            for i, (lo, hi) in enumerate(itertools.pairwise(self.cutoffs))
        ]
        return torch.cat([head[..., :c0], *tails], -1)

    def _head_log_probs(self, frequent_logits: Tensor, hidden: Tensor) -> Tensor:
        """The head softmax: the frequent ids' logits and one per tail cluster, ``(…, c0 + tails)``, as log-probs."""
        return torch.cat([frequent_logits, self.cluster(hidden)], -1).float().log_softmax(-1)

    def loss(self, hidden: Tensor, labels: Tensor) -> Tensor:
        """Mean cross-entropy of ``labels (N,)`` (no -100) from ``hidden (N, D)``; adaptive: the tails where needed."""
        if self.cutoffs is None:
            return F.cross_entropy(self(hidden).float(), labels)
        if self.transform is not None:
            hidden = self.transform(hidden)
        weight, bias = self.decoder.weight, self.decoder.bias
        c0 = self.cutoffs[0]

        def project(rows: Tensor, lo: int, hi: int) -> Tensor:  # logits of ids [lo, hi) only
            return F.linear(rows, weight[lo:hi], None if bias is None else bias[lo:hi])

        head = self._head_log_probs(project(hidden, 0, c0), hidden)  # (N, c0 + tails)
        cluster = torch.bucketize(labels, labels.new_tensor(self.cutoffs[:-1]), right=True)  # (N,): 0 head, i tail i
        log_prob = head.gather(1, torch.where(cluster == 0, labels, c0 + cluster - 1)[:, None])[:, 0]  # (N,)
        for i, (lo, hi) in enumerate(itertools.pairwise(self.cutoffs)):
            rows = (cluster == i + 1).nonzero()[:, 0]
            if rows.numel():
                tail = project(hidden[rows], lo, hi).float().log_softmax(-1)  # (n_i, hi - lo)
                log_prob = log_prob.index_add(0, rows, tail.gather(1, (labels[rows] - lo)[:, None])[:, 0])
        return -log_prob.mean()


class LanguageModel(nn.Module):
    """Masked LM (``config.causal=False``) or causal LM (``config.causal=True``) over any encoder × attention."""

    def __init__(self, config: ModelConfig, backbone: Backbone | None = None) -> None:
        """``backbone``: share another model's (a classifier's auxiliary MLM while fine-tuning), not a new one."""
        super().__init__()
        self.config = config
        self.backbone = Backbone(config) if backbone is None else backbone
        enc = config.encoder
        self.head = LMHead(
            config.dim,
            config.vocab_size,
            not config.causal,
            enc.activation,
            enc.norm_eps,
            config.head_bias,
            config.adaptive_cutoffs,
        )
        (self if backbone is None else self.head).apply(init_weights)
        if config.tie_embeddings:
            self.head.decoder.weight = self.backbone.embeddings.token.weight

    def forward(self, input_ids: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """``(B, T) → logits (B, T, V)``; for a causal model position ``t`` predicts token ``t + 1``."""
        return self.head(self.backbone(input_ids, padding_mask)[0])

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Mean cross-entropy over labelled positions (label -100 is ignored); shifted for causal models."""
        if self.config.causal:
            logits, labels = logits[:, :-1], labels[:, 1:]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)

    def labelled_loss(
        self, input_ids: Tensor, padding_mask: Tensor | None, labels: Tensor
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """``(loss, logits (N, V), labels (N,))`` over the labelled positions only.

        The vocabulary projection, the costliest layer, runs only where a label is: every position but the last
        for a causal LM, the masked ~15% for a masked LM. An adaptive head in training returns no logits: not
        projecting onto the whole vocabulary is what it is for."""
        hidden = self.backbone(input_ids, padding_mask)[0]  # (B, T, D)
        if self.config.causal:
            hidden, labels = hidden[:, :-1], labels[:, 1:]  # position t predicts token t + 1
        if not self.config.causal or self.head.cutoffs is not None:
            selected = labels != -100
            hidden, labels = hidden[selected], labels[selected]
        if self.head.cutoffs is not None and self.training:
            return self.head.loss(hidden, labels), None, labels
        logits = self.head(hidden)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)
        return loss, logits, labels

    @torch.no_grad()
    def stream(
        self,
        input_ids: Tensor,
        max_new_tokens: int,
        sampling: Sampling | None = None,
        padding_mask: Tensor | None = None,
        eos_id: int | None = None,
        finished: Tensor | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> Iterator[Tensor]:
        """Yield the next token of every prompt, ``(B,)`` per step, as it is chosen.

        ``input_ids (B, T)`` are prompts, left-padded when their lengths differ (``padding_mask (B, T)`` True at
        padding); each row then generates exactly as it would alone. A row that produced ``eos_id``, or that the
        caller marked in ``finished (B,)`` between steps (a stop string, a closed connection), gets ``pad_id``
        from then on; the stream ends when every row has finished or after ``max_new_tokens`` steps.

        With ``use_cache`` the prompt is encoded once and each new token costs one position (key/value cache for
        attention layers, carried state for LSTM/GRU, the last ``kernel_size - 1`` inputs for CNN blocks). Past
        ``max_len`` tokens, both paths re-encode the last ``max_len`` tokens every step, as positions shift.
        """
        if not self.config.causal:
            raise ValueError("generate() needs a causal LM (task=clm); this model is a masked LM")
        sampling = sampling or Sampling()
        B, device, max_len = input_ids.shape[0], input_ids.device, self.config.max_len
        mask = torch.zeros_like(input_ids, dtype=torch.bool) if padding_mask is None else padding_mask.bool()
        finished = torch.zeros(B, dtype=torch.bool, device=device) if finished is None else finished
        seen = None
        if sampling.repetition_penalty != 1.0:  # counts of each vocabulary id among the real tokens
            seen = torch.zeros(B, self.config.vocab_size, device=device).scatter_add_(1, input_ids, (~mask).float())
        ids, cache, cached = input_ids, None, 0  # ``cached``: positions of ``ids`` held in the cache
        padded = bool(mask.any())  # generated tokens are never padding, so this holds for the whole cache
        pos = None
        for _ in range(max_new_tokens):
            if use_cache and cache is None and ids.shape[1] <= max_len:
                cache = self.backbone.encoder.new_cache(B, max_len, self.backbone.embeddings.token.weight)
            if cache is not None and ids.shape[1] <= max_len:
                pos = positions(mask) if cached == 0 else pos[:, -1:] + 1  # (B, t): per-row positions of new ids
                x = self.backbone.embeddings(ids[:, cached:], positions=pos)
                # No mask at all when nothing is padding: the fused attention kernels then take their fastest path.
                hidden = self.backbone.encoder.forward_cached(x, mask if padded else None, cache, cached)  # (B, t, D)
                cached = ids.shape[1]
            else:  # past max_len: recompute over the last max_len tokens (left padding keeps them right-aligned)
                window = mask[:, -max_len:]
                window_mask = window if bool(window.any()) else None
                hidden = self.backbone(ids[:, -max_len:], window_mask, positions=positions(window))[0]
            logits = self.head(hidden[:, -1]).float()  # (B, V)
            next_id = next_token(logits, sampling, None if seen is None else seen > 0, generator)  # (B, 1)
            next_id = next_id.masked_fill(finished[:, None], self.config.pad_id)
            if eos_id is not None:
                finished |= next_id[:, 0] == eos_id
            if seen is not None:
                seen.scatter_add_(1, next_id, torch.ones_like(next_id, dtype=seen.dtype))
            yield next_id[:, 0]
            ids = torch.cat([ids, next_id], dim=1)
            mask = torch.cat([mask, mask.new_zeros(B, 1)], dim=1)
            if bool(finished.all()):
                return

    @torch.no_grad()
    def generate(
        self,
        input_ids: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        eos_id: int | None = None,
        generator: torch.Generator | None = None,
        top_p: float | None = None,
        repetition_penalty: float = 1.0,
        padding_mask: Tensor | None = None,
        use_cache: bool = True,
    ) -> Tensor:
        """``input_ids (B, T)`` followed by up to ``max_new_tokens`` generated tokens (see :meth:`stream`);
        temperature 0 means greedy."""
        sampling = Sampling(temperature, top_k, top_p, repetition_penalty)
        steps = self.stream(input_ids, max_new_tokens, sampling, padding_mask, eos_id, None, generator, use_cache)
        new = [token[:, None] for token in steps]
        return torch.cat([input_ids, *new], dim=1)


def segments(input_ids: Tensor, sep_id: int, pad_id: int) -> Tensor:
    """Token types ``(B, T)``: 1 after the first ``sep_id`` of a row (padding: 0), as BERT's tokenizer sets them
    for ``[CLS] a [SEP] b [SEP]``, so a pair task needs no separate token-type input."""
    is_sep = (input_ids == sep_id).long()
    return ((is_sep.cumsum(1) - is_sep).clamp(max=1) * (input_ids != pad_id)).long()


def positions(padding_mask: Tensor) -> Tensor:
    """Position ids ``(B, T)`` of a left-padded batch: each row's first real token is at 0 (padding: 0 too)."""
    return ((~padding_mask).long().cumsum(1) - 1).clamp_(min=0)
