"""Sequence-to-sequence configuration: a source encoder (any :class:`ModelConfig`), a decoder and its cross-attention.

Plain dataclasses validated on construction, like :mod:`attnfit.models.config`; ``to_dict``/``from_dict`` round-trip
through checkpoints and reject unknown keys with the closest valid one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from attnfit.errors import ConfigError, check_choice, check_fraction
from attnfit.models.attention import CROSS_ATTENTION_TYPES, LOCAL_MODES, SCORES
from attnfit.models.config import ModelConfig, _at_least, from_dict

DECODERS = ("lstm", "gru", "transformer")


@dataclass
class DecoderConfig:
    name: str = "gru"  # lstm | gru | transformer
    num_layers: int = 1
    input_feeding: bool = True  # RNN only: feed h̃_{t-1} back as input (Luong 2015 §3.3)
    num_heads: int = 4  # transformer only: heads of the causal self-attention
    ffn_mult: int = 4  # transformer only: feed-forward width = ffn_mult · dim
    dropout: float = 0.1

    def __post_init__(self) -> None:
        check_choice("decoder", self.name, DECODERS)
        _at_least("decoder.num_layers", self.num_layers, 1)
        _at_least("decoder.num_heads", self.num_heads, 1)
        _at_least("decoder.ffn_mult", self.ffn_mult, 1)
        check_fraction("decoder.dropout", self.dropout)


@dataclass
class CrossAttentionConfig:
    name: str = "global"  # global (Luong/Bahdanau) | luong_local (Luong local-m/p) | self (scaled dot-product)
    score: str = "general"  # global/local: dot | general | concat; self is always dot (the default is replaced)
    window: int = 8  # local: D, the window is [p_t - D, p_t + D]
    local_mode: str = "p"  # local: m (monotonic, p_t = t) | p (predictive)
    num_heads: int = 1

    def __post_init__(self) -> None:
        if self.name == "local":  # renamed: "local" is the encoders' sliding window (attention=local)
            raise ConfigError(
                "task.cross_attention.name=local is now luong_local (Luong's local-m/p attention, with "
                "task.cross_attention.local_mode=m|p); attention=local is the encoders' sliding window"
            )
        check_choice("cross_attention", self.name, CROSS_ATTENTION_TYPES)
        check_choice("cross_attention.score", self.score, SCORES)
        check_choice("cross_attention.local_mode", self.local_mode, LOCAL_MODES)
        if self.name == "self" and self.score == "general":
            self.score = "dot"  # the Luong default means nothing for scaled dot-product attention
        if self.name == "self" and self.score != "dot":
            raise ConfigError(
                f"cross_attention=self always uses scaled dot-product scores, not cross_attention.score="
                f"{self.score!r}; use cross_attention=global or cross_attention=luong_local for '{self.score}' scores"
            )
        _at_least("cross_attention.window", self.window, 1)
        _at_least("cross_attention.num_heads", self.num_heads, 1)


@dataclass
class Seq2SeqConfig:
    encoder: ModelConfig  # source embeddings + encoder (a pretrained LM backbone's config); must not be causal
    target_vocab_size: int
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    cross_attention: CrossAttentionConfig = field(default_factory=CrossAttentionConfig)
    tie_output: bool = True  # output layer shares the target embedding matrix
    share_embeddings: bool = False  # source and target use one embedding matrix (needs equal vocab sizes)
    max_target_len: int = 256  # longest target (teacher forcing or decoding); transformer decoders learn positions

    def __post_init__(self) -> None:
        if self.encoder.causal:
            raise ConfigError(
                "seq2seq encoder config has causal=true; the source encoder reads the whole source, set causal=false "
                "(a causal LM backbone cannot be used as a seq2seq encoder)"
            )
        _at_least("seq2seq.target_vocab_size", self.target_vocab_size, 1)
        _at_least("seq2seq.max_target_len", self.max_target_len, 1)
        if self.share_embeddings and self.encoder.vocab_size != self.target_vocab_size:
            raise ConfigError(
                f"share_embeddings=true needs one vocabulary, but model.vocab_size={self.encoder.vocab_size} and "
                f"target_vocab_size={self.target_vocab_size}; set share_embeddings=false or use a joint vocabulary"
            )
        heads = [("cross_attention.num_heads", self.cross_attention.num_heads)]
        if self.decoder.name == "transformer":
            heads.append(("decoder.num_heads", self.decoder.num_heads))
        for name, value in heads:
            if self.dim % value:
                divisors = ", ".join(str(h) for h in range(1, min(self.dim, 64) + 1) if self.dim % h == 0)
                raise ConfigError(f"{name}={value} does not divide model.dim={self.dim}; valid choices: {divisors}")

    @property
    def dim(self) -> int:
        """Decoder width: always the encoder's, so cross-attention needs no extra projection."""
        return self.encoder.dim

    @property
    def pad_id(self) -> int:
        """Source and target share the padding id of the encoder config."""
        return self.encoder.pad_id

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Seq2SeqConfig:
        return from_dict(cls, data, "seq2seq")
