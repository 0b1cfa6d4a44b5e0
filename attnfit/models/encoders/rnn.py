"""LSTM / GRU encoder with attention layers of the chosen type on top."""

from __future__ import annotations

import re

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attnfit.models.encoders.layers import AttentionStack


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
        if padding_mask is not None and bool(padding_mask.any()):
            # Packing keeps padding out of the recurrence (and out of the backward direction's state).
            lengths = (~padding_mask).sum(1).cpu()
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            x, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=x.shape[1])
        else:
            x = self.rnn(x)[0]
        return self.top(x, padding_mask, causal, need_weights)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Each recurrent layer ``k`` (both directions), then each attention layer on top."""
        groups = []
        for k in range(self.rnn.num_layers):
            suffix = re.compile(rf"_l{k}(_reverse)?$")
            groups.append([p for name, p in self.rnn.named_parameters() if suffix.search(name)])
        return groups + self.top.layer_groups()

    def describe_layers(self) -> str:
        return f"{self.rnn.num_layers} recurrent + {len(self.top.layers)} attention"
