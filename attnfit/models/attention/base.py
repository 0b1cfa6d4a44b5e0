"""The one attention interface every attention type implements.

``forward(query, key=None, value=None, padding_mask=None, causal=False, need_weights=False, kv=None,
query_offset=0)``

- ``query (B, Tq, D)``; ``key``/``value (B, Tk, D)`` default to ``query`` (self-attention).
- ``padding_mask (B, Tk)`` bool, True at padding (PyTorch's convention).
- ``causal``: query ``i`` sees keys up to its own position. With ``Tq < Tk`` (incremental decoding) queries
  are aligned to the *last* ``Tq`` keys.
- ``kv``: keys and values already projected and split into heads, each ``(B, H, Tk, d)`` (from
  :meth:`MultiHeadAttention.project_kv`); ``key``/``value`` are then ignored. For decoder caches: a
  cross-attention memory projected once, or a self-attention KV cache grown step by step.
- ``query_offset``: absolute position of the first query (incremental decoding). Only position-aware attention
  (Luong local-m) uses it; ``causal`` keeps aligning queries to the last ``Tq`` keys.
- Returns ``(context (B, Tq, D), weights (B, H, Tq, Tk) or None)``; weights only when ``need_weights``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnfit.errors import ConfigError


class MultiHeadAttention(nn.Module):
    """Query/key/value/output projections and head splitting; subclasses implement :meth:`attend`."""

    def __init__(self, dim: int, num_heads: int = 1, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ConfigError(f"attention.num_heads={num_heads} must be ≥ 1 and divide model.dim={dim}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(dim, dim, bias=bias)
        self.v_proj = nn.Linear(dim, dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self._fused: tuple[tuple, Tensor, Tensor | None] | None = None  # (weights' identity, W_qkv, b_qkv)

    def _split(self, x: Tensor) -> Tensor:  # (B, T, D) -> (B, H, T, d)
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def project_kv(self, key: Tensor, value: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Project and split keys/values ``(B, Tk, D)`` -> ``(B, H, Tk, d)`` each, for ``forward(kv=...)``."""
        value = key if value is None else value
        return self._split(self.k_proj(key)), self._split(self.v_proj(value))

    def _project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Self-attention's ``q, k, v (B, H, T, d)``. Plain projections are fused into one matmul (what makes a
        one-token decoding step cheap); the fused copy is rebuilt whenever a weight changes (in-place updates
        bump ``_version``). Wrapped projections (LoRA) go one by one."""
        projections = (self.q_proj, self.k_proj, self.v_proj)
        if not all(type(p) is nn.Linear for p in projections):
            k, v = self.project_kv(x)
            return self._split(self.q_proj(x)), k, v
        params = [p.weight for p in projections] + [p.bias for p in projections if p.bias is not None]
        identity = tuple((t.data_ptr(), t._version, t.dtype) for t in params)
        if self._fused is None or self._fused[0] != identity:
            bias = torch.cat(params[3:]) if len(params) == 6 else None
            self._fused = (identity, torch.cat(params[:3]), bias)
        qkv = F.linear(x, self._fused[1], self._fused[2])  # (B, T, 3D)
        q, k, v = qkv.split(self.dim, dim=-1)
        return self._split(q), self._split(k), self._split(v)

    def forward_cached(self, x: Tensor, padding_mask: Tensor | None, kv: tuple[Tensor, Tensor], start: int) -> Tensor:
        """Causal self-attention, incremental: ``x (B, t, D)`` are positions ``start …``; their keys/values go into
        the ``kv`` buffers ``(B, H, max_len, d)`` and they attend to every cached position."""
        q, k, v = self._project_qkv(x)
        end = start + x.shape[1]
        kv[0][:, :, start:end], kv[1][:, :, start:end] = k, v
        context, _ = self.attend(q, kv[0][:, :, :end], kv[1][:, :, :end], padding_mask, True, False, start)
        return self.out_proj(context.transpose(1, 2).reshape(x.shape[0], x.shape[1], self.dim))

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        padding_mask: Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
        kv: tuple[Tensor, Tensor] | None = None,
        query_offset: int = 0,
    ) -> tuple[Tensor, Tensor | None]:
        q = self._split(self.q_proj(query))  # (B, H, Tq, d)
        if kv is None:
            key = query if key is None else key
            k, v = self.project_kv(key, value)  # (B, H, Tk, d)
        else:
            k, v = kv
        context, weights = self.attend(q, k, v, padding_mask, causal, need_weights, query_offset)  # (B, H, Tq, d)
        context = context.transpose(1, 2).reshape(query.shape[0], query.shape[1], self.dim)
        return self.out_proj(context), weights

    def attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        padding_mask: Tensor | None,
        causal: bool,
        need_weights: bool,
        query_offset: int = 0,
    ) -> tuple[Tensor, Tensor | None]:
        """``q (B, H, Tq, d)``, ``k``/``v (B, H, Tk, d)`` -> ``(context (B, H, Tq, d), weights or None)``."""
        raise NotImplementedError


def blocked_positions(
    padding_mask: Tensor | None, causal: bool, tq: int, tk: int, device: torch.device
) -> Tensor | None:
    """Bool mask broadcastable to ``(B, H, Tq, Tk)``: True where a query must not look."""
    mask = None
    if causal:
        offset = tk - tq  # queries are the last tq positions
        q_pos = torch.arange(tq, device=device)[:, None] + offset
        mask = torch.arange(tk, device=device)[None, :] > q_pos  # (Tq, Tk)
    if padding_mask is not None:
        pad = padding_mask[:, None, None, :]  # (B, 1, 1, Tk)
        mask = pad if mask is None else (mask | pad)
    return mask


def masked_softmax(scores: Tensor, blocked: Tensor | None) -> Tensor:
    """Softmax over the last dim ignoring ``blocked`` entries.

    A finite fill (not -inf) keeps fully blocked rows (queries at padding) finite: they get uniform weights,
    and their outputs are ignored downstream, instead of NaNs that would poison the gradients.
    """
    if blocked is not None:
        scores = scores.masked_fill(blocked, torch.finfo(scores.dtype).min)
    if scores.dtype in (torch.float16, torch.bfloat16):  # half precision: normalise in float32
        return torch.softmax(scores.float(), dim=-1).to(scores.dtype)
    return torch.softmax(scores, dim=-1)
