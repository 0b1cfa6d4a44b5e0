"""Extractive question answering: start/end logits over the context tokens of a ``question + context`` window.

Input (fixed by the data pipeline): ``[<cls>] question [<sep>] context [<eos>]``, right-padded, with
``segment_ids`` 0 for ``<cls>``/question/``<sep>``, 1 for context and 2 for ``<eos>``/padding. Position 0
(``<cls>``) is the *null position*: a window that does not contain the answer is trained with start = end = 0.

Two ways for the question and the context to interact:

- ``concat``: the pair goes through the backbone once; its own attention (or recurrence) mixes the two.
- ``bidaf``: question and context are encoded separately by the same backbone and then meet in the
  Bidirectional Attention Flow layer (Seo et al. 2017), followed by BiDAF's modeling and output layers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attnfit.errors import check_choice, check_fraction
from attnfit.models.attention.base import masked_softmax
from attnfit.models.config import ModelConfig, _at_least, from_dict
from attnfit.models.language_model import Backbone, init_weights

INTERACTIONS = ("concat", "bidaf")
QUESTION, CONTEXT, OTHER = 0, 1, 2  # segment ids
MASKED_LOGIT = -1e4  # finite (not -inf): cross-entropy and its gradient stay finite, also in fp16


@dataclass
class QAConfig:
    interaction: str = "concat"  # concat | bidaf
    dropout: float = 0.1  # before the output layer (bidaf: also before each modeling BiLSTM)
    modeling_layers: int = 1  # bidaf: layers of the modeling BiLSTM

    def __post_init__(self) -> None:
        check_choice("task.interaction", self.interaction, INTERACTIONS)
        check_fraction("task.dropout", self.dropout)
        _at_least("task.modeling_layers", self.modeling_layers, 1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QAConfig:
        return from_dict(cls, data, "task")


class QAOutput(NamedTuple):
    start_logits: Tensor  # (B, T); MASKED_LOGIT wherever a span cannot start (not context, not the null position)
    end_logits: Tensor  # (B, T); likewise
    attentions: list[Tensor]  # one (B, H, T, T) backbone map per attention layer when need_weights, else []
    # (B, T, T) context-to-question weights: context rows, question (segment 0) columns, each context row sums to 1
    # (concat with local attention: 0 for rows whose window misses the question); None unless need_weights.
    question_attention: Tensor | None


# ---------------------------------------------------------------------------------------------------------------
# Segments: pair positions ↔ a right-padded batch of one segment's tokens


def split_segments(x: Tensor, segment_ids: Tensor, segment: int) -> tuple[Tensor, Tensor, Tensor]:
    """Gather each row's ``segment`` tokens, in order, to the front of a right-padded batch.

    ``x (B, T, ...)``, ``segment_ids (B, T)`` → ``(gathered (B, L, ...), index (B, L), pad (B, L))`` with
    ``L = max(1, longest segment)``. ``index[b, l]`` is the pair position of slot ``l``; padding slots (``pad``
    True) point at distinct positions outside the segment, so every row of ``index`` is duplicate-free and
    :func:`scatter_back` can scatter without collisions. Gathered values at padding slots are arbitrary.
    """
    B = segment_ids.shape[0]
    inside = segment_ids == segment  # (B, T)
    lengths = inside.sum(1)  # (B,)
    L = max(1, int(lengths.max()) if B else 0)
    # A stable sort of "outside" puts the segment's positions first, in their original order.
    index = torch.sort((~inside).to(torch.uint8), dim=1, stable=True).indices[:, :L]  # (B, L)
    pad = torch.arange(L, device=x.device)[None, :] >= lengths[:, None]  # (B, L)
    gather_index = index.view(B, L, *([1] * (x.dim() - 2))).expand(B, L, *x.shape[2:])
    return x.gather(1, gather_index), index, pad


def scatter_back(values: Tensor, index: Tensor, pad: Tensor, length: int, fill: float = 0.0) -> Tensor:
    """Inverse of :func:`split_segments`: ``values (B, L, ...) → (B, length, ...)``, ``fill`` elsewhere."""
    B, L = index.shape
    pad = pad.view(B, L, *([1] * (values.dim() - 2)))
    values = values.masked_fill(pad, fill)  # padding slots land outside the segment: make them write `fill`
    out = values.new_full((B, length, *values.shape[2:]), fill)
    return out.scatter(1, index.view(pad.shape).expand_as(values), values)


def scatter_grid(
    weights: Tensor, row_index: Tensor, row_pad: Tensor, col_index: Tensor, col_pad: Tensor, length: int
) -> Tensor:
    """Place segment-by-segment weights into the pair grid: ``(B, ..., R, C) → (B, ..., T, T)``, zero elsewhere.

    Rows are indexed by ``row_index (B, R)``, columns by ``col_index (B, C)`` (both from :func:`split_segments`);
    padding rows and columns are zeroed so they give and receive nothing.
    """
    B, R, C = weights.shape[0], weights.shape[-2], weights.shape[-1]
    lead = weights.shape[1:-2]
    w = weights.reshape(B, -1, R, C)  # (B, N, R, C)
    N = w.shape[1]
    w = w.masked_fill(row_pad[:, None, :, None] | col_pad[:, None, None, :], 0.0)
    cols = w.new_zeros(B, N, R, length).scatter(3, col_index[:, None, None, :].expand(B, N, R, C), w)
    grid = w.new_zeros(B, N, length, length).scatter(2, row_index[:, None, :, None].expand(B, N, R, length), cols)
    return grid.view(B, *lead, length, length)


# ---------------------------------------------------------------------------------------------------------------
# BiDAF attention flow


class BiDAFAttention(nn.Module):
    """Bidirectional attention flow (Seo et al. 2017): context ``H`` attends to query ``U`` and back.

    ``S_tj = wᵀ[h_t; u_j; h_t∘u_j]``; context-to-query ``a_t = softmax_j S_tj``, ``Ũ_t = Σ_j a_tj u_j``;
    query-to-context ``b = softmax_t(max_j S_tj)``, ``h̃ = Σ_t b_t h_t`` (tiled over t);
    ``G = [H; Ũ; H∘Ũ; H∘H̃]``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.similarity = nn.Linear(3 * dim, 1, bias=False)  # w; a bias would cancel in both softmaxes

    def scores(self, h: Tensor, u: Tensor) -> Tensor:
        """``h (B, T, D)``, ``u (B, J, D)`` → ``S (B, T, J)`` without building the (B, T, J, 3D) concatenation."""
        w_h, w_u, w_hu = self.similarity.weight[0].split(self.dim)  # (D,) each
        return (h @ w_h)[:, :, None] + (u @ w_u)[:, None, :] + (h * w_hu) @ u.transpose(1, 2)

    def forward(
        self, h: Tensor, u: Tensor, h_pad: Tensor | None = None, u_pad: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``h (B, T, D)``, ``u (B, J, D)``, pads True at padding → ``(G (B, T, 4D), c2q (B, T, J), q2c (B, T))``.

        Padding context rows get zero weights and a zero ``G`` row; padding query positions get zero weight.
        """
        B, T, _ = h.shape
        J = u.shape[1]
        h_pad = h.new_zeros(B, T, dtype=torch.bool) if h_pad is None else h_pad
        u_pad = u.new_zeros(B, J, dtype=torch.bool) if u_pad is None else u_pad
        real = (~h_pad)[:, :, None].to(h.dtype)  # (B, T, 1)
        s = self.scores(h, u)  # (B, T, J)

        c2q = masked_softmax(s, u_pad[:, None, :]) * real  # (B, T, J)
        u_tilde = c2q @ u  # (B, T, D)

        # Each context position's best match in the question decides how much the question needs it.
        best = s.masked_fill(u_pad[:, None, :], torch.finfo(s.dtype).min).amax(-1)  # (B, T)
        q2c = masked_softmax(best, h_pad)  # (B, T); zero at padding (unless all of a row is padding)
        h_tilde = (q2c[:, None, :] @ h).expand(B, T, -1)  # (B, 1, D) tiled → (B, T, D)

        g = torch.cat([h, u_tilde, h * u_tilde, h * h_tilde], -1) * real  # (B, T, 4D)
        return g, c2q, q2c * real[..., 0]


class _BiLSTM(nn.Module):
    """Bidirectional LSTM over a right-padded batch; packing keeps padding out of both directions."""

    def __init__(self, input_dim: int, hidden: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            input_dim,
            hidden,
            num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if num_layers > 1 else 0,
        )

    def forward(self, x: Tensor, pad: Tensor) -> Tensor:  # (B, T, in) → (B, T, 2·hidden)
        lengths = (~pad).sum(1).clamp(min=1).cpu()  # an empty row still runs one (ignored) step
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        return pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=x.shape[1])[0]


# ---------------------------------------------------------------------------------------------------------------
# The span extractor


class SpanExtractor(nn.Module):
    """``(input_ids, padding_mask, segment_ids) → start/end logits (B, T)``; the backbone can be pretrained."""

    def __init__(self, backbone_config: ModelConfig, config: QAConfig) -> None:
        super().__init__()
        self.backbone_config, self.config = backbone_config, config
        dim = backbone_config.dim
        self.backbone = Backbone(backbone_config)
        self.dropout = nn.Dropout(config.dropout)
        if config.interaction == "concat":
            self.head = nn.Linear(dim, 2)  # start, end
            heads: list[nn.Module] = [self.head]
        else:
            self.flow = BiDAFAttention(dim)
            self.modeling = _BiLSTM(4 * dim, dim, config.modeling_layers, config.dropout)  # M (B, Tc, 2D)
            self.end_lstm = _BiLSTM(2 * dim, dim, 1, 0.0)  # M2 (B, Tc, 2D)
            self.start_head = nn.Linear(6 * dim, 1)  # p1 = w1ᵀ[G; M]
            self.end_head = nn.Linear(6 * dim, 1)  # p2 = w2ᵀ[G; M2]
            # "No answer here": a learned bias plus evidence pooled over the whole context.
            self.null_head = nn.Linear(4 * dim, 2)  # [max_t M; max_t M2] → (null start, null end)
            heads = [self.flow, self.start_head, self.end_head, self.null_head]
        # The backbone is initialised as the LM does; the rest separately, so load_pretrained_backbone()
        # replaces only the backbone. The BiLSTMs keep PyTorch's uniform initialisation.
        self.backbone.apply(init_weights)
        for module in heads:
            module.apply(init_weights)

    def forward(
        self, input_ids: Tensor, padding_mask: Tensor, segment_ids: Tensor, need_weights: bool = False
    ) -> QAOutput:
        """``input_ids``/``padding_mask``/``segment_ids (B, T)`` → :class:`QAOutput`.

        bidaf builds its question and context batches from ``segment_ids`` alone (padding is segment 2), so it
        needs no ``padding_mask``; concat passes it to the backbone.
        """
        if self.config.interaction == "concat":
            return self._concat(input_ids, padding_mask, segment_ids, need_weights)
        return self._bidaf(input_ids, segment_ids, need_weights)

    def _concat(self, input_ids: Tensor, padding_mask: Tensor, segment_ids: Tensor, need_weights: bool) -> QAOutput:
        hidden, attentions = self.backbone(input_ids, padding_mask, need_weights)  # (B, T, D)
        logits = self.head(self.dropout(hidden)).masked_fill(~_answerable(segment_ids)[..., None], MASKED_LOGIT)
        question_attention = None
        if need_weights and attentions:
            # The last layer's heads averaged, context rows only, renormalised over the question columns. A row
            # with no weight there (a local window that misses the question) stays 0 rather than made up.
            last = attentions[-1].mean(1)  # (B, T, T)
            keep = (segment_ids == CONTEXT)[:, :, None] & (segment_ids == QUESTION)[:, None, :]  # (B, T, T)
            last = last * keep
            question_attention = last / last.sum(-1, keepdim=True).clamp(min=torch.finfo(last.dtype).tiny)
        return QAOutput(logits[..., 0], logits[..., 1], attentions, question_attention)

    def _bidaf(self, input_ids: Tensor, segment_ids: Tensor, need_weights: bool) -> QAOutput:
        T, pad_id = input_ids.shape[1], self.backbone_config.pad_id
        q_ids, q_index, q_pad = split_segments(input_ids, segment_ids, QUESTION)  # (B, Lq) each
        c_ids, c_index, c_pad = split_segments(input_ids, segment_ids, CONTEXT)  # (B, Lc) each
        q_ids, c_ids = q_ids.masked_fill(q_pad, pad_id), c_ids.masked_fill(c_pad, pad_id)
        # Every row keeps ≥ 1 visible token for the backbone (packed RNNs reject empty rows); the flow and the
        # output layer still treat it as padding.
        u, q_maps = self.backbone(q_ids, _nonempty(q_pad), need_weights)  # (B, Lq, D)
        h, c_maps = self.backbone(c_ids, _nonempty(c_pad), need_weights)  # (B, Lc, D)

        g, c2q, _ = self.flow(h, u, c_pad, q_pad)  # (B, Lc, 4D), (B, Lc, Lq)
        m = self.modeling(self.dropout(g), c_pad)  # (B, Lc, 2D)
        m2 = self.end_lstm(self.dropout(m), c_pad)  # (B, Lc, 2D)
        p1 = self.start_head(self.dropout(torch.cat([g, m], -1)))[..., 0]  # (B, Lc)
        p2 = self.end_head(self.dropout(torch.cat([g, m2], -1)))[..., 0]  # (B, Lc)

        pooled = torch.cat([m, m2], -1).masked_fill(c_pad[..., None], torch.finfo(m.dtype).min).amax(1)  # (B, 4D)
        pooled = pooled.masked_fill(c_pad.all(1, keepdim=True), 0.0)  # no context: the bias alone decides
        null = self.null_head(self.dropout(pooled))  # (B, 2)

        start, end = (scatter_back(p, c_index, c_pad, T, MASKED_LOGIT) for p in (p1, p2))  # (B, T)
        start = torch.cat([null[:, :1], start[:, 1:]], 1)  # position 0 is <cls>, never context
        end = torch.cat([null[:, 1:], end[:, 1:]], 1)

        attentions: list[Tensor] = []
        question_attention = None
        if need_weights:
            attentions = [
                scatter_grid(qm, q_index, q_pad, q_index, q_pad, T)
                + scatter_grid(cm, c_index, c_pad, c_index, c_pad, T)
                for qm, cm in zip(q_maps, c_maps, strict=True)
            ]
            question_attention = scatter_grid(c2q, c_index, c_pad, q_index, q_pad, T)  # (B, T, T)
        return QAOutput(start, end, attentions, question_attention)


def _answerable(segment_ids: Tensor) -> Tensor:
    """``(B, T)`` True where a span may start or end: context tokens and the null position 0."""
    allowed = segment_ids == CONTEXT
    allowed[:, 0] = True
    return allowed


def _nonempty(pad: Tensor) -> Tensor:
    """A copy of ``pad (B, L)`` whose all-padding rows show their first slot to the backbone."""
    empty = pad.all(1)
    if not bool(empty.any()):
        return pad
    pad = pad.clone()
    pad[empty, 0] = False
    return pad
