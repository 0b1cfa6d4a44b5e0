"""LSTM / GRU encoder with attention layers of the chosen type on top."""

from __future__ import annotations

import re
from typing import Any

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attnfit.models.encoders.layers import AttentionStack, EncoderCache


class RNNEncoder(nn.Module):
    """``(B, T, D) → (B, T, D)``. Bidirectional RNNs use ``D/2`` units per direction so widths line up."""

    def __init__(
        self, cell: str, dim: int, num_layers: int, bidirectional: bool, dropout: float, top: AttentionStack
    ) -> None:
        super().__init__()
        rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        hidden = dim // 2 if bidirectional else dim
        self.rnn = rnn_cls(
            dim,
            hidden,
            num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.top = top

    def forward(
        self, x: Tensor, padding_mask: Tensor | None = None, causal: bool = False, need_weights: bool = False
    ) -> tuple[Tensor, list[Tensor]]:
        return self.top(self._run(x, padding_mask)[0], padding_mask, causal, need_weights)

    def _run(self, x: Tensor, padding_mask: Tensor | None, state: Any = None) -> tuple[Tensor, Any]:
        """The recurrence over real tokens only, wherever the padding is (right, or left as in batched prompts):
        ``(outputs (B, T, D), final state)``; outputs at padding are zeros."""
        if padding_mask is None or not bool(padding_mask.any()):
            return self.rnn(x, state)
        # A stable sort moves each row's real tokens to the front, in order; packing then keeps padding out of the
        # recurrence (and out of the backward direction's state), and the final state is each row's last real one.
        order = padding_mask.long().argsort(dim=1, stable=True)  # (B, T)
        lengths = (~padding_mask).sum(1).cpu()
        packed = pack_padded_sequence(x.gather(1, order[..., None].expand_as(x)), lengths, True, enforce_sorted=False)
        out, state = self.rnn(packed, state)
        out = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]
        return out.new_zeros(out.shape).scatter_(1, order[..., None].expand_as(out), out), state

    def new_cache(self, batch: int, max_len: int, like: Tensor) -> EncoderCache:
        if self.rnn.bidirectional:
            raise ValueError("a bidirectional RNN reads the future and cannot generate; build it causal")
        return EncoderCache(self.top.new_kv(batch, max_len, like))

    def forward_cached(self, x: Tensor, padding_mask: Tensor | None, cache: EncoderCache, start: int) -> Tensor:
        """Incremental: the recurrent state is carried in ``cache.recurrent``; the attention layers on top use
        their key/value cache. ``padding_mask (B, start+t)`` covers every position seen so far."""
        new_mask = None if padding_mask is None else padding_mask[:, start:]
        out, cache.recurrent = self._run(x, new_mask, cache.recurrent)
        return self.top.forward_cached(out, padding_mask, cache.kv, start)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Each recurrent layer ``k`` (both directions), then each attention layer on top."""
        groups = []
        for k in range(self.rnn.num_layers):
            suffix = re.compile(rf"_l{k}(_reverse)?$")
            groups.append([p for name, p in self.rnn.named_parameters() if suffix.search(name)])
        return groups + self.top.layer_groups()

    def describe_layers(self) -> str:
        return f"{self.rnn.num_layers} recurrent + {len(self.top.layers)} attention"
