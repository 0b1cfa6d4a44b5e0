"""Attention types behind one interface (see :mod:`attnfit.models.attention.base`)."""

from __future__ import annotations

from attnfit.errors import ConfigError, check_choice
from attnfit.models.attention.base import MultiHeadAttention
from attnfit.models.attention.global_attention import GlobalAttention
from attnfit.models.attention.local_attention import LocalAttention
from attnfit.models.attention.luong_local import LOCAL_MODES, LuongLocalAttention
from attnfit.models.attention.pooling import AttentionPooling
from attnfit.models.attention.scores import SCORES
from attnfit.models.attention.self_attention import SelfAttention

ATTENTION_TYPES = ("global", "local", "self")
CROSS_ATTENTION_TYPES = ("global", "luong_local", "self")  # luong_local: local-m/p, not the sliding window


def build_attention(
    kind: str, dim: int, num_heads: int = 1, score: str = "dot", window: int = 16, dropout: float = 0.0
) -> MultiHeadAttention:
    """Build an attention layer of type ``kind`` (``global``, ``local`` or ``self``)."""
    check_choice("attention", kind, ATTENTION_TYPES)
    if kind == "global":
        return GlobalAttention(dim, num_heads, score, dropout)
    if kind == "local":
        return LocalAttention(dim, num_heads, window, score, dropout)
    return SelfAttention(dim, num_heads, dropout)


def build_cross_attention(
    kind: str,
    dim: int,
    num_heads: int = 1,
    score: str = "general",
    window: int = 8,
    local_mode: str = "p",
    dropout: float = 0.0,
) -> MultiHeadAttention:
    """Build a decoder-to-source attention: ``global`` (any score), ``luong_local`` (Luong local-m/p) or ``self``."""
    check_choice("attention", kind, CROSS_ATTENTION_TYPES)
    check_choice("attention.score", score, SCORES)
    if kind == "global":
        return GlobalAttention(dim, num_heads, score, dropout)
    if kind == "luong_local":
        return LuongLocalAttention(dim, num_heads, window, score, local_mode, dropout)
    if score != "dot":
        raise ConfigError(
            f"attention=self always uses scaled dot-product scores, not attention.score={score!r}; "
            f"use attention=global or attention=local for '{score}' scores"
        )
    return SelfAttention(dim, num_heads, dropout)


__all__ = [
    "ATTENTION_TYPES",
    "CROSS_ATTENTION_TYPES",
    "LOCAL_MODES",
    "SCORES",
    "AttentionPooling",
    "GlobalAttention",
    "LocalAttention",
    "LuongLocalAttention",
    "MultiHeadAttention",
    "SelfAttention",
    "build_attention",
    "build_cross_attention",
]
