"""Every attention type against a naive float64 loop, with padding and causal masks."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from attnfit.errors import ConfigError
from attnfit.models.attention import AttentionPooling, LocalAttention, build_attention


def naive_score(module, name: str, h: int, q: torch.Tensor, k: torch.Tensor) -> float:
    """Score of one query and one key vector (float64) in head ``h``, written from the papers' formulas."""
    d = q.shape[0]
    if name == "dot":
        return float(q @ k) / math.sqrt(d)
    if name == "general":
        return float(q @ module.score.weight[h] @ k) / math.sqrt(d)
    s = module.score  # concat / additive: vᵀ tanh(W_q q + b + W_k k)
    return float(s.v[h] @ torch.tanh(q @ s.w_query[h] + s.bias[h] + k @ s.w_key[h]))


@torch.no_grad()
def naive_attention(module, score: str, x, memory, padding, causal: bool, window: int | None):
    """Loop over batch, heads, queries and keys in float64; returns (output, weights) for valid queries."""
    m = copy.deepcopy(module).double()
    x, memory = x.double(), memory.double()
    B, Tq, D = x.shape
    Tk, H = memory.shape[1], m.num_heads
    d = D // H
    q = m.q_proj(x).view(B, Tq, H, d)
    k = m.k_proj(memory).view(B, Tk, H, d)
    v = m.v_proj(memory).view(B, Tk, H, d)
    context = torch.zeros(B, Tq, H, d, dtype=torch.float64)
    weights = torch.zeros(B, H, Tq, Tk, dtype=torch.float64)
    for b, h, i in itertools.product(range(B), range(H), range(Tq)):
        keys = [j for j in range(Tk) if not padding[b, j]]
        if causal:
            keys = [j for j in keys if j <= i + Tk - Tq]
        if window is not None:
            keys = [j for j in keys if (i - window <= j <= i if causal else abs(i - j) <= window)]
        s = torch.tensor([naive_score(m, score, h, q[b, i, h], k[b, j, h]) for j in keys], dtype=torch.float64)
        a = torch.softmax(s, 0)
        for a_j, j in zip(a, keys, strict=True):
            weights[b, h, i, j] = a_j
            context[b, i, h] += a_j * v[b, j, h]
    return m.out_proj(context.reshape(B, Tq, D)), weights


def _padding(B: int, T: int) -> torch.Tensor:
    pad = torch.zeros(B, T, dtype=torch.bool)
    pad[1, T - 3 :] = True  # second sequence is 3 shorter
    return pad


def _check(module, score, x, memory, pad, causal, window):
    out, w = module(x, memory, padding_mask=pad, causal=causal, need_weights=True)
    ref_out, ref_w = naive_attention(module, score, x, memory, pad, causal, window)
    valid = ~pad if x.shape[1] == memory.shape[1] else torch.ones(x.shape[:2], dtype=torch.bool)
    torch.testing.assert_close(out[valid].double(), ref_out[valid], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        w.permute(0, 2, 1, 3)[valid].double(), ref_w.permute(0, 2, 1, 3)[valid], atol=1e-5, rtol=1e-4
    )
    # The fused path (no weights requested) must give the same outputs.
    fast, none = module(x, memory, padding_mask=pad, causal=causal)
    assert none is None
    torch.testing.assert_close(fast[valid], out[valid], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("score", ["dot", "general", "concat"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("heads", [1, 2])
def test_global_attention_matches_reference(score, causal, heads):
    torch.manual_seed(0)
    module = build_attention("global", 8, heads, score=score).eval()
    x = torch.randn(2, 7, 8)
    _check(module, score, x, x, _padding(2, 7), causal, None)


@pytest.mark.parametrize("score", ["dot", "general", "concat"])
def test_global_cross_attention_matches_reference(score):
    torch.manual_seed(1)
    module = build_attention("global", 8, 2, score=score).eval()
    x, memory = torch.randn(2, 4, 8), torch.randn(2, 9, 8)
    _check(module, score, x, memory, _padding(2, 9), False, None)


@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_matches_reference(causal):
    torch.manual_seed(2)
    module = build_attention("self", 8, 2).eval()
    x = torch.randn(2, 7, 8)
    _check(module, "dot", x, x, _padding(2, 7), causal, None)
    _check(module, "dot", x, x, torch.zeros(2, 7, dtype=torch.bool), causal, None)  # fused is_causal path


def test_self_attention_incremental_query_sees_all_past_keys():
    torch.manual_seed(3)
    module = build_attention("self", 8, 2).eval()
    x = torch.randn(2, 6, 8)
    full, _ = module(x, causal=True)
    last, _ = module(x[:, -1:], x, causal=True)  # one decoding step against all keys
    torch.testing.assert_close(last[:, 0], full[:, -1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("T", "window"), [(12, 3), (11, 3), (7, 4), (5, 1), (3, 8)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("score", ["dot", "general", "concat"])
def test_local_attention_matches_reference(T, window, causal, score):
    """Lengths that are and are not multiples of the window, windows wider than the sequence, padding."""
    torch.manual_seed(T * 10 + window)
    module = build_attention("local", 8, 2, score=score, window=window).eval()
    x = torch.randn(2, T, 8)
    _check(module, score, x, x, _padding(2, T), causal, window)


def test_local_attention_equals_global_when_window_covers_everything():
    torch.manual_seed(4)
    local = build_attention("local", 16, 4, window=20).eval()
    dense = build_attention("global", 16, 4, score="dot").eval()
    dense.load_state_dict(local.state_dict())
    x = torch.randn(3, 17, 16)
    torch.testing.assert_close(local(x)[0], dense(x)[0], atol=1e-5, rtol=1e-4)


class _MaxNumel(TorchDispatchMode):
    """Records the largest tensor any op produces (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("causal", [False, True])
def test_local_attention_never_allocates_n_by_n(causal):
    n, window = 4096, 16
    module = LocalAttention(16, num_heads=1, window=window)
    x = torch.randn(1, n, 16, requires_grad=True)
    pad = torch.zeros(1, n, dtype=torch.bool)
    pad[0, -5:] = True
    with _MaxNumel() as probe:
        out, _ = module(x, padding_mask=pad, causal=causal)
        out.sum().backward()
    assert probe.largest < n * n / 20, f"largest tensor has {probe.largest} elements; n² = {n * n}"
    assert probe.largest <= n * 3 * window * 16  # the blocked (n, 3w, d) key windows


def test_attention_pooling_matches_formula():
    torch.manual_seed(5)
    pool = AttentionPooling(6)
    h = torch.randn(2, 5, 6)
    pad = _padding(2, 5)
    pooled, weights = pool(h, pad)
    for b in range(2):
        valid = h[b][~pad[b]].double()
        f = valid @ pool.score.weight.double()[0] + pool.score.bias.double()  # F = W·h + b
        a = torch.softmax(f, 0)
        torch.testing.assert_close(pooled[b].double(), a @ valid, atol=1e-6, rtol=1e-5)
    assert weights[1, 2:].abs().max() < 1e-6  # padding gets no weight


def test_padding_queries_stay_finite():
    module = build_attention("local", 8, 2, window=2)
    x = torch.randn(1, 10, 8, requires_grad=True)
    pad = torch.zeros(1, 10, dtype=torch.bool)
    pad[0, 3:] = True  # queries 6..9 see only padding inside their window
    out, _ = module(x, padding_mask=pad)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()


def test_bad_attention_arguments_are_named():
    with pytest.raises(ConfigError, match="unknown attention 'glob'.*global"):
        build_attention("glob", 8)
    with pytest.raises(ConfigError, match="attention.score 'bilinear'.*concat, dot, general"):
        build_attention("global", 8, score="bilinear")
    with pytest.raises(ConfigError, match="attention.window=0"):
        build_attention("local", 8, window=0)
    with pytest.raises(ConfigError, match="num_heads=3 must be ≥ 1 and divide model.dim=8"):
        build_attention("self", 8, num_heads=3)
