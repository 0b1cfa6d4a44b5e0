"""Decoder cross-attention: Luong local-m/p and global against naive float64 loops, the ``kv=`` cache path, errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from attnfit.errors import ConfigError
from attnfit.models.attention import (
    CROSS_ATTENTION_TYPES,
    LOCAL_MODES,
    GlobalAttention,
    LuongLocalAttention,
    SelfAttention,
    build_cross_attention,
)

DIM, WINDOW = 8, 2
LENGTHS = (9, 5, 2)  # non-padding source lengths S_b; the last is shorter than the target (clamping for local-m)


def _padding(lengths=LENGTHS) -> torch.Tensor:
    pad = torch.ones(len(lengths), max(lengths), dtype=torch.bool)
    for b, n in enumerate(lengths):
        pad[b, :n] = False
    return pad  # (B, S), True at padding


def naive_score(module, name: str, h: int, q: torch.Tensor, k: torch.Tensor) -> float:
    """Score of one query and one key vector in head ``h``, written from the papers' formulas."""
    d = q.shape[0]
    if name == "dot":
        return float(q @ k) / math.sqrt(d)
    if name == "general":
        return float(q @ module.score.weight[h] @ k) / math.sqrt(d)
    s = module.score  # concat / additive: vᵀ tanh(W_q q + b + W_k k)
    return float(s.v[h] @ torch.tanh(q @ s.w_query[h] + s.bias[h] + k @ s.w_key[h]))


@torch.no_grad()
def naive_cross(module, score: str, mode: str | None, x, memory, padding, query_offset: int = 0):
    """Loops over b, h, t, s (float64 module and inputs); ``mode`` None is global attention. Returns (out, weights)."""
    B, Tq, D = x.shape
    S, H = memory.shape[1], module.num_heads
    d = D // H
    padding = torch.zeros(B, S, dtype=torch.bool) if padding is None else padding
    q = module.q_proj(x).view(B, Tq, H, d)
    k = module.k_proj(memory).view(B, S, H, d)
    v = module.v_proj(memory).view(B, S, H, d)
    context = torch.zeros(B, Tq, H, d, dtype=torch.float64)
    weights = torch.zeros(B, H, Tq, S, dtype=torch.float64)
    for b, h, i in itertools.product(range(B), range(H), range(Tq)):
        S_b = sum(not padding[b, s] for s in range(S))
        keys = [s for s in range(S) if not padding[b, s]]
        if mode == "m":
            p = min(query_offset + i, S_b - 1)
        elif mode == "p":
            h_t = q[b, i, h]
            p = S_b * torch.sigmoid(module.v_p[h] @ torch.tanh(module.w_p[h] @ h_t)).item()
        if mode is not None:
            keys = [s for s in keys if abs(s - p) <= module.window]
        align = torch.softmax(
            torch.tensor([naive_score(module, score, h, q[b, i, h], k[b, s, h]) for s in keys], dtype=torch.float64), 0
        )
        for a_s, s in zip(align.tolist(), keys, strict=True):
            if mode == "p":
                sigma = module.window / 2
                a_s *= math.exp(-((s - p) ** 2) / (2 * sigma**2))
            weights[b, h, i, s] = a_s
            context[b, i, h] += a_s * v[b, s, h]
    return module.out_proj(context.reshape(B, Tq, D)), weights


def _module(mode: str, score: str, heads: int, seed: int = 0) -> LuongLocalAttention:
    torch.manual_seed(seed)
    module = LuongLocalAttention(DIM, heads, window=WINDOW, score=score, mode=mode).double().eval()
    if mode == "p":
        with torch.no_grad():
            module.v_p.mul_(6)  # spread p_t over the whole source instead of ≈ S_b / 2
    return module


def _inputs(Tq: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(LENGTHS), Tq, DIM, generator=g, dtype=torch.float64)
    memory = torch.randn(len(LENGTHS), max(LENGTHS), DIM, generator=g, dtype=torch.float64)
    return x, memory


def _assert_matches(module, score, mode, x, memory, pad, query_offset=0):
    out, w = module(x, memory, padding_mask=pad, need_weights=True, query_offset=query_offset)
    ref_out, ref_w = naive_cross(module, score, mode, x, memory, pad, query_offset)
    torch.testing.assert_close(out, ref_out, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(w, ref_w, atol=1e-10, rtol=1e-10)
    fast, none = module(x, memory, padding_mask=pad, query_offset=query_offset)
    assert none is None
    torch.testing.assert_close(fast, out, atol=1e-12, rtol=1e-12)
    return w


@pytest.mark.parametrize("score", ["dot", "general", "concat"])
@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("mode", LOCAL_MODES)
def test_luong_local_matches_reference(mode, score, heads):
    module = _module(mode, score, heads)
    x, memory = _inputs()  # Tq = 6 > S_2 = 2: local-m clamps p_t to the last source word
    w = _assert_matches(module, score, mode, x, memory, _padding())
    assert w[_padding()[:, None, None, :].expand_as(w)].abs().max() == 0  # padding gets exactly nothing
    if mode == "m":
        torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)))
        _assert_matches(module, score, mode, x, memory, _padding(), query_offset=4)
        _assert_matches(module, score, mode, x, memory, None, query_offset=2)
    else:
        assert (w.sum(-1) < 1).all()  # not renormalised after the Gaussian
        _, w4 = module(x, memory, padding_mask=_padding(), need_weights=True, query_offset=4)
        torch.testing.assert_close(w4, w, atol=0, rtol=0)  # local-p ignores the offset


def test_local_m_window_and_clamping():
    module = _module("m", "general", 1)
    x, memory = _inputs(Tq=5)
    pad = _padding()
    _, w = module(x, memory, padding_mask=pad, need_weights=True, query_offset=3)
    for b, t in itertools.product(range(len(LENGTHS)), range(5)):
        p = min(3 + t, LENGTHS[b] - 1)
        support = set(torch.nonzero(w[b, 0, t]).flatten().tolist())
        assert support == {s for s in range(LENGTHS[b]) if abs(s - p) <= WINDOW}, (b, t)


@pytest.mark.parametrize("score", ["dot", "concat"])
def test_local_p_gaussian_explicitly(score):
    module = _module("p", score, 2, seed=3)
    x, memory = _inputs(seed=3)
    pad = _padding()
    _, w = module(x, memory, padding_mask=pad, need_weights=True)
    q, (k, _) = module._split(module.q_proj(x)), module.project_kv(memory)
    p = module.aligned_positions(q, torch.tensor(LENGTHS))  # (B, H, Tq)
    assert ((p >= 0) & (p <= torch.tensor(LENGTHS, dtype=p.dtype)[:, None, None])).all()
    scores = module.score(q, k)  # (B, H, Tq, S)
    sigma = WINDOW / 2
    for b, h, t in itertools.product(range(len(LENGTHS)), range(2), range(x.shape[1])):
        pt = p[b, h, t].item()
        inside = [s for s in range(LENGTHS[b]) if abs(s - pt) <= WINDOW]
        outside = [s for s in range(w.shape[-1]) if s not in inside]
        assert inside and (w[b, h, t, outside] == 0).all()
        align = torch.softmax(scores[b, h, t, inside], 0)
        gauss = torch.exp(-((torch.tensor(inside, dtype=torch.float64) - pt) ** 2) / (2 * sigma**2))
        torch.testing.assert_close(w[b, h, t, inside], align * gauss, atol=1e-12, rtol=1e-12)
        assert 0 < w[b, h, t].sum() < 1


@pytest.mark.parametrize("score", ["dot", "general", "concat"])
def test_global_cross_attention_matches_reference(score):
    torch.manual_seed(1)
    module = build_cross_attention("global", DIM, 2, score=score).double().eval()
    x, memory = _inputs(Tq=4)  # Tq ≠ S
    _assert_matches(module, score, None, x, memory, _padding())


def test_self_cross_attention_matches_reference():
    torch.manual_seed(2)
    module = build_cross_attention("self", DIM, 2, score="dot").double().eval()
    x, memory = _inputs(Tq=4)
    _assert_matches(module, "dot", None, x, memory, _padding())


@pytest.mark.parametrize(
    ("kind", "mode"), [("global", "p"), ("self", "p"), ("luong_local", "p"), ("luong_local", "m")], ids=lambda v: str(v)
)
def test_kv_path_equals_normal_path(kind, mode):
    torch.manual_seed(5)
    score = "dot" if kind == "self" else "general"
    module = build_cross_attention(kind, DIM, 2, score=score, window=WINDOW, local_mode=mode).double().eval()
    x, memory = _inputs()
    pad = _padding()
    out, w = module(x, memory, padding_mask=pad, need_weights=True, query_offset=1)
    kv = module.project_kv(memory)
    cached, cached_w = module(x, padding_mask=pad, need_weights=True, kv=kv, query_offset=1)
    torch.testing.assert_close(cached, out, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(cached_w, w, atol=1e-12, rtol=1e-12)
    # Step-by-step decoding (one query at a time, absolute position as offset) equals the full target at once.
    for t in range(x.shape[1]):
        step, _ = module(x[:, t : t + 1], torch.randn(1), padding_mask=pad, kv=kv, query_offset=1 + t)
        torch.testing.assert_close(step[:, 0], out[:, t], atol=1e-12, rtol=1e-12)


def test_kv_cache_self_attention_grown_step_by_step():
    torch.manual_seed(6)
    module = SelfAttention(DIM, 2).double().eval()
    x, _ = _inputs()
    full, _ = module(x, causal=True)
    k_cache = v_cache = None
    for t in range(x.shape[1]):
        k, v = module.project_kv(x[:, t : t + 1])
        k_cache = k if k_cache is None else torch.cat([k_cache, k], 2)
        v_cache = v if v_cache is None else torch.cat([v_cache, v], 2)
        step, _ = module(x[:, t : t + 1], kv=(k_cache, v_cache), causal=True)
        torch.testing.assert_close(step[:, 0], full[:, t], atol=1e-12, rtol=1e-12)


def test_project_kv_shapes():
    module = GlobalAttention(DIM, num_heads=4)
    key, value = torch.randn(3, 7, DIM), torch.randn(3, 7, DIM)
    k, v = module.project_kv(key, value)
    assert k.shape == v.shape == (3, 4, 7, DIM // 4)
    k2, v2 = module.project_kv(key)  # value defaults to key
    torch.testing.assert_close(k2, k)
    torch.testing.assert_close(v2, module._split(module.v_proj(key)))


@pytest.mark.parametrize("mode", LOCAL_MODES)
def test_luong_local_stays_finite_with_gradients(mode):
    torch.manual_seed(7)
    module = LuongLocalAttention(DIM, 2, window=1, mode=mode)
    x, memory = torch.randn(2, 5, DIM, requires_grad=True), torch.randn(2, 4, DIM, requires_grad=True)
    pad = torch.zeros(2, 4, dtype=torch.bool)
    pad[1] = True  # an all-padding source: every window is empty
    out, w = module(x, memory, padding_mask=pad, need_weights=True)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all() and torch.isfinite(memory.grad).all()
    assert w[1].abs().max() == 0
    if mode == "p":
        assert torch.isfinite(module.w_p.grad).all() and module.v_p.grad.abs().sum() > 0  # p_t is learned


def test_builder_types():
    assert CROSS_ATTENTION_TYPES == ("global", "luong_local", "self") and LOCAL_MODES == ("m", "p")
    assert isinstance(build_cross_attention("global", DIM, score="concat"), GlobalAttention)
    local = build_cross_attention("luong_local", DIM, 2, score="dot", window=3, local_mode="m")
    assert isinstance(local, LuongLocalAttention) and (local.mode, local.window, local.score_name) == ("m", 3, "dot")
    assert isinstance(build_cross_attention("self", DIM, score="dot"), SelfAttention)


def test_bad_cross_attention_arguments_are_named():
    with pytest.raises(ConfigError, match="unknown attention.local_mode 'q'; valid choices: m, p"):
        LuongLocalAttention(DIM, mode="q")
    with pytest.raises(ConfigError, match="unknown attention.local_mode 'mp'"):
        build_cross_attention("luong_local", DIM, local_mode="mp")
    with pytest.raises(ConfigError, match="attention.window=0 must be ≥ 1"):
        build_cross_attention("luong_local", DIM, window=0)
    with pytest.raises(ConfigError, match="unknown attention 'luong_lokal'.*did you mean 'luong_local'"):
        build_cross_attention("luong_lokal", DIM)
    with pytest.raises(ConfigError, match="attention=self always uses scaled dot-product.*'general'"):
        build_cross_attention("self", DIM)  # the default score is general
    with pytest.raises(ConfigError, match="attention.score 'bilinear'"):
        build_cross_attention("global", DIM, score="bilinear")
    module = LuongLocalAttention(DIM)
    with pytest.raises(ValueError, match="cross-attention.*causal=True"):
        module(torch.randn(1, 2, DIM), torch.randn(1, 3, DIM), causal=True)
