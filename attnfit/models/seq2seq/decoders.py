"""Attentional decoders behind one interface, with incremental states for step-by-step decoding.

``init_state(memory, source_padding_mask) -> state`` and
``forward(tgt_emb (B, T, D), memory (B, S, D), source_padding_mask (B, S) True=pad, state=None, need_weights=False)
-> (out (B, T, D), cross_weights (B, H, T, S) of the last layer or None, new_state)``.

Without a state ``forward`` starts from :meth:`init_state` (teacher forcing). With one it consumes only the new
tokens and continues where the state left off, so decoding one token at a time gives the same outputs as one
full pass. Every tensor in a state is batch-first, so :func:`reorder_state` (beam search) is one ``index_select``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from attnfit.models.attention import MultiHeadAttention, SelfAttention, build_cross_attention
from attnfit.models.encoders.layers import FeedForward
from attnfit.models.seq2seq.config import Seq2SeqConfig

S = TypeVar("S")


@dataclass
class RNNState:
    hidden: Tensor  # (B, L, D) recurrent state of every layer (batch-first; nn.RNN wants (L, B, D))
    cell: Tensor | None  # (B, L, D) LSTM cell state; None for GRU
    feed: Tensor  # (B, D) previous attentional output h̃_{t-1}, zeros before the first step
    memory_kv: tuple[Tensor, Tensor]  # cross-attention keys/values (B, H, S, d), projected once
    step: int  # target tokens consumed so far (position of the next one)


@dataclass
class TransformerState:
    self_kv: list[tuple[Tensor, Tensor]]  # per layer: self-attention keys/values so far, (B, H, step, d)
    memory_kv: list[tuple[Tensor, Tensor]]  # per layer: cross-attention keys/values (B, H, S, d), projected once
    step: int  # target tokens consumed so far (position of the next one)


def _select(x, index: Tensor):
    if isinstance(x, Tensor):
        return x.index_select(0, index)
    if isinstance(x, (list, tuple)):
        return type(x)(_select(item, index) for item in x)
    return x


def reorder_state(state: S, index: Tensor) -> S:
    """Rows ``index (B',)`` of every tensor in a decoder state: expand to beams, or follow the surviving ones."""
    return dataclasses.replace(
        state, **{f.name: _select(getattr(state, f.name), index) for f in dataclasses.fields(state)}
    )


def _masked_mean(memory: Tensor, source_padding_mask: Tensor | None) -> Tensor:
    """Mean over non-padding source positions: ``(B, S, D) -> (B, D)``."""
    if source_padding_mask is None:
        return memory.mean(1)
    keep = (~source_padding_mask).unsqueeze(-1).to(memory.dtype)  # (B, S, 1)
    return (memory * keep).sum(1) / keep.sum(1).clamp(min=1)


class RNNDecoder(nn.Module):
    """Luong et al. (2015) attentional LSTM/GRU decoder, with input feeding (§3.3) when ``input_feeding``.

    ``h_t = RNN([y_{t-1}; h̃_{t-1}], h_{t-1})``, ``c_t = Attn(h_t, memory)``, ``h̃_t = tanh(W_c [c_t; h_t])``; the
    outputs are the ``h̃_t``. Input feeding makes training sequential (one RNN step per token); without it the RNN
    runs over the whole target at once and attention is one call.

    Initial state: every layer starts from ``tanh(W_b · mean of the non-padding encoder outputs)`` (LSTM cells
    from zeros): the source summary a bidirectional or attention encoder has no single "last state" for.
    """

    def __init__(
        self, cell: str, dim: int, num_layers: int, input_feeding: bool, dropout: float, attention: MultiHeadAttention
    ) -> None:
        super().__init__()
        self.input_feeding, self.num_layers = input_feeding, num_layers
        rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        in_dim = 2 * dim if input_feeding else dim
        self.rnn = rnn_cls(in_dim, dim, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0)
        self.bridge = nn.Linear(dim, dim)  # W_b: source summary -> initial state
        self.attention = attention
        self.combine = nn.Linear(2 * dim, dim, bias=False)  # W_c
        self.dropout = nn.Dropout(dropout)

    def init_state(self, memory: Tensor, source_padding_mask: Tensor | None) -> RNNState:
        start = torch.tanh(self.bridge(_masked_mean(memory, source_padding_mask)))  # (B, D)
        hidden = start[:, None].expand(-1, self.num_layers, -1).contiguous()  # (B, L, D)
        cell = torch.zeros_like(hidden) if isinstance(self.rnn, nn.LSTM) else None
        return RNNState(hidden, cell, torch.zeros_like(start), self.attention.project_kv(memory), 0)

    def _attend(self, h: Tensor, source_padding_mask: Tensor | None, state: RNNState, offset: int, need_weights: bool):
        """``h (B, T, D) -> h̃ (B, T, D)``, cross weights ``(B, H, T, S)`` or None."""
        context, weights = self.attention(
            h, padding_mask=source_padding_mask, kv=state.memory_kv, query_offset=offset, need_weights=need_weights
        )
        return self.dropout(torch.tanh(self.combine(torch.cat([context, h], -1)))), weights

    def forward(
        self,
        tgt_emb: Tensor,
        memory: Tensor,
        source_padding_mask: Tensor | None,
        state: RNNState | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None, RNNState]:
        if state is None:
            state = self.init_state(memory, source_padding_mask)
        hx = state.hidden.transpose(0, 1).contiguous()  # (L, B, D)
        if state.cell is not None:
            hx = (hx, state.cell.transpose(0, 1).contiguous())
        if not self.input_feeding:
            h, hx = self.rnn(tgt_emb, hx)  # (B, T, D)
            out, weights = self._attend(h, source_padding_mask, state, state.step, need_weights)
        else:
            feed, outs, maps = state.feed, [], []
            for t in range(tgt_emb.shape[1]):
                h, hx = self.rnn(torch.cat([tgt_emb[:, t : t + 1], feed[:, None]], -1), hx)  # (B, 1, D)
                out_t, weights_t = self._attend(h, source_padding_mask, state, state.step + t, need_weights)
                feed = out_t[:, 0]
                outs.append(out_t)
                maps.append(weights_t)
            out = torch.cat(outs, 1)
            weights = torch.cat(maps, 2) if need_weights else None
        hidden, cell = (hx[0], hx[1]) if isinstance(hx, tuple) else (hx, None)
        new_state = RNNState(
            hidden.transpose(0, 1),
            None if cell is None else cell.transpose(0, 1),
            out[:, -1],
            state.memory_kv,
            state.step + tgt_emb.shape[1],
        )
        return out, weights, new_state


class DecoderLayer(nn.Module):
    """Pre-norm ``x + SelfAttn(LN(x))`` (causal), ``x + CrossAttn(LN(x), memory)``, ``x + FFN(LN(x))``."""

    def __init__(self, dim: int, num_heads: int, cross_attention: MultiHeadAttention, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_norm, self.self_attention = nn.LayerNorm(dim), SelfAttention(dim, num_heads)
        self.cross_norm, self.cross_attention = nn.LayerNorm(dim), cross_attention
        self.ffn_norm, self.ffn = nn.LayerNorm(dim), FeedForward(dim, ffn_dim, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        source_padding_mask: Tensor | None,
        self_kv: tuple[Tensor, Tensor],
        memory_kv: tuple[Tensor, Tensor],
        offset: int,
        need_weights: bool,
    ) -> tuple[Tensor, Tensor | None, tuple[Tensor, Tensor]]:
        h = self.self_norm(x)  # (B, T, D)
        k, v = self.self_attention.project_kv(h)  # new tokens only, (B, H, T, d)
        k, v = torch.cat([self_kv[0], k], 2), torch.cat([self_kv[1], v], 2)  # prefix + new, (B, H, step + T, d)
        x = x + self.dropout(self.self_attention(h, causal=True, kv=(k, v))[0])
        context, weights = self.cross_attention(
            self.cross_norm(x),
            padding_mask=source_padding_mask,
            kv=memory_kv,
            query_offset=offset,
            need_weights=need_weights,
        )
        x = x + self.dropout(context)
        x = x + self.dropout(self.ffn(self.ffn_norm(x)))
        return x, weights, (k, v)


class TransformerDecoder(nn.Module):
    """Pre-norm transformer decoder; cross-attention is whichever type was configured, final LayerNorm on top."""

    def __init__(self, layers: list[DecoderLayer], dim: int, checkpointing: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(dim)
        self.checkpointing = checkpointing  # as AttentionStack: recompute each layer in backward while training

    def init_state(self, memory: Tensor, source_padding_mask: Tensor | None) -> TransformerState:
        empty = []
        for layer in self.layers:
            attn = layer.self_attention
            e = memory.new_zeros(memory.shape[0], attn.num_heads, 0, attn.head_dim)  # (B, H, 0, d)
            empty.append((e, e))
        memory_kv = [layer.cross_attention.project_kv(memory) for layer in self.layers]
        return TransformerState(empty, memory_kv, 0)

    def forward(
        self,
        tgt_emb: Tensor,
        memory: Tensor,
        source_padding_mask: Tensor | None,
        state: TransformerState | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None, TransformerState]:
        if state is None:
            state = self.init_state(memory, source_padding_mask)
        x, self_kv, weights = tgt_emb, [], None
        last = len(self.layers) - 1
        recompute = self.checkpointing and self.training and torch.is_grad_enabled()
        for i, layer in enumerate(self.layers):
            weighted = need_weights and i == last
            args = (x, source_padding_mask, state.self_kv[i], state.memory_kv[i], state.step, weighted)
            x, weights, kv = checkpoint(layer, *args, use_reentrant=False) if recompute else layer(*args)
            self_kv.append(kv)
        new_state = TransformerState(self_kv, state.memory_kv, state.step + tgt_emb.shape[1])
        return self.norm(x), weights, new_state


def build_decoder(config: Seq2SeqConfig) -> RNNDecoder | TransformerDecoder:
    """The decoder named by ``config.decoder.name`` with cross-attention ``config.cross_attention`` in every layer."""
    dec, att, dim = config.decoder, config.cross_attention, config.dim

    def cross() -> MultiHeadAttention:
        return build_cross_attention(att.name, dim, att.num_heads, att.score, att.window, att.local_mode)

    if dec.name == "transformer":
        layers = [
            DecoderLayer(dim, dec.num_heads, cross(), dec.ffn_mult * dim, dec.dropout) for _ in range(dec.num_layers)
        ]
        return TransformerDecoder(layers, dim, checkpointing=config.encoder.activation_checkpointing)
    return RNNDecoder(dec.name, dim, dec.num_layers, dec.input_feeding, dec.dropout, cross())
