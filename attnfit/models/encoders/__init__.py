"""Encoders: ``(B, T, D), padding_mask → (B, T, D), attention weights``; built from a :class:`ModelConfig`."""

from __future__ import annotations

from torch import nn

from attnfit.errors import ConfigError
from attnfit.models.attention import SelfAttention, build_attention
from attnfit.models.config import ModelConfig
from attnfit.models.encoders.cnn import CNNEncoder
from attnfit.models.encoders.layers import AttentionStack, FeedForward, TransformerLayer
from attnfit.models.encoders.rnn import RNNEncoder
from attnfit.models.encoders.transformer import TransformerEncoder


def build_attention_stack(config: ModelConfig, num_layers: int) -> AttentionStack:
    """``num_layers`` transformer layers whose attention is the configured type."""
    att, enc = config.attention, config.encoder
    if not enc.bias and att.name != "self":
        raise ConfigError(f"encoder.bias=false needs attention=self, not attention={att.name}")

    def attention() -> nn.Module:
        if not enc.bias:
            return SelfAttention(config.dim, att.num_heads, att.dropout, bias=False)
        return build_attention(att.name, config.dim, att.num_heads, att.score, att.window, att.dropout)

    layers = [
        TransformerLayer(
            attention(), enc.ffn_mult * config.dim, enc.dropout, enc.norm, enc.activation, enc.norm_eps, enc.bias
        )
        for _ in range(num_layers)
    ]
    return AttentionStack(
        layers, config.dim, enc.final_norm, enc.norm_eps, enc.bias, checkpointing=config.activation_checkpointing
    )


def build_encoder(config: ModelConfig) -> nn.Module:
    """The encoder named by ``config.encoder.name``, with attention of type ``config.attention.name``."""
    enc = config.encoder
    if enc.name == "transformer":
        return TransformerEncoder(build_attention_stack(config, enc.num_layers))
    top = build_attention_stack(config, enc.attention_layers)
    if enc.name == "cnn":
        return CNNEncoder(config.dim, enc.num_layers, enc.kernel_size, enc.dropout, config.causal, top)
    return RNNEncoder(enc.name, config.dim, enc.num_layers, config.bidirectional, enc.dropout, top)


__all__ = [
    "AttentionStack",
    "CNNEncoder",
    "FeedForward",
    "RNNEncoder",
    "TransformerEncoder",
    "TransformerLayer",
    "build_attention_stack",
    "build_encoder",
]
