"""Model configuration as plain dataclasses: validated on construction, saved in checkpoints as plain dicts.

The model code takes these, never a Hydra/OmegaConf object, so it can be used from any Python program.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from attnfit.errors import ConfigError, check_choice, check_fraction
from attnfit.models.attention import ATTENTION_TYPES, SCORES

ENCODERS = ("lstm", "gru", "cnn", "transformer")
ATTENTIONS = ATTENTION_TYPES  # one registry: attnfit.models.attention
POSITIONS = ("auto", "learned", "sinusoidal", "none")
NORMS = ("pre", "post")  # pre: x + f(LN(x)) (stable from scratch); post: LN(x + f(x)) (BERT)
ACTIVATIONS = ("gelu", "gelu_tanh")  # exact erf GELU; GPT-2's tanh approximation

T = TypeVar("T")


@dataclass
class AttentionConfig:
    name: str = "self"  # global | local | self
    num_heads: int = 4
    score: str = "dot"  # global/local: dot | general | concat; self is always scaled dot-product
    window: int = 16  # local: each query sees ±window positions
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_choice("attention", self.name, ATTENTIONS)
        check_choice("attention.score", self.score, SCORES)
        if self.name == "self" and self.score != "dot":
            raise ConfigError(
                f"attention=self always uses scaled dot-product scores, not attention.score={self.score!r}; "
                f"use attention=global or attention=local for '{self.score}' scores"
            )
        _at_least("attention.num_heads", self.num_heads, 1)
        _at_least("attention.window", self.window, 1)
        check_fraction("attention.dropout", self.dropout)


@dataclass
class EncoderConfig:
    name: str = "transformer"  # lstm | gru | cnn | transformer
    num_layers: int = 2
    bidirectional: bool | None = None  # RNNs: None = bidirectional unless the model is causal
    kernel_size: int = 5  # cnn
    attention_layers: int = 1  # rnn/cnn: attention layers of the chosen type on top (0: none)
    ffn_mult: int = 4  # feed-forward width = ffn_mult · dim
    dropout: float = 0.0  # as configs/encoder/*.yaml: raise for small data or long training
    # Transformer layer options; the defaults are attnfit's own layer, other values reproduce imported
    # checkpoints exactly (BERT: norm=post, final_norm=false, norm_eps=1e-12; GPT-2: activation=gelu_tanh).
    norm: str = "pre"  # pre | post layer norm
    activation: str = "gelu"  # gelu | gelu_tanh (feed-forward and the MLM head transform)
    norm_eps: float = 1e-5  # every LayerNorm of the backbone and the LM head
    final_norm: bool = True  # a LayerNorm after the last layer (pre-norm stacks need one)
    bias: bool = True  # biases in the attention projections, feed-forward and layer norms

    def __post_init__(self) -> None:
        check_choice("encoder", self.name, ENCODERS)
        check_choice("encoder.norm", self.norm, NORMS)
        check_choice("encoder.activation", self.activation, ACTIVATIONS)
        if not 0.0 < self.norm_eps < 1.0:
            raise ConfigError(f"encoder.norm_eps={self.norm_eps} must be in (0, 1)")
        _at_least("encoder.num_layers", self.num_layers, 1)
        _at_least("encoder.kernel_size", self.kernel_size, 1)
        _at_least("encoder.attention_layers", self.attention_layers, 0)
        _at_least("encoder.ffn_mult", self.ffn_mult, 1)
        check_fraction("encoder.dropout", self.dropout)


@dataclass
class ModelConfig:
    vocab_size: int
    dim: int = 128
    max_len: int = 512
    position: str = "auto"  # auto (learned, none for RNNs) | learned | sinusoidal | none
    causal: bool = False  # causal LM and decoders: no position sees a later one
    tie_embeddings: bool = True
    pad_id: int = 0
    type_vocab_size: int = 0  # BERT's token-type (segment) embeddings; 0: none
    segment_sep_id: int | None = None  # token types from the ids: type 1 after the first of these separators
    embed_norm: bool = False  # a LayerNorm (and dropout) on the summed embeddings, as BERT has
    head_bias: bool = True  # the LM head's output bias (GPT-2 has none)
    # An adaptive-softmax LM head (LMHead): the ids where its tail clusters start, for a vocabulary in frequency
    # order (tokenizer=word). null: a plain softmax over the whole vocabulary.
    adaptive_cutoffs: list[int] | None = None
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    # Training memory, not architecture: keep each transformer block's input only and recompute its inside during
    # the backward pass (about a third more compute; activations of one block instead of all of them).
    activation_checkpointing: bool = False

    def __post_init__(self) -> None:
        _at_least("model.vocab_size", self.vocab_size, 1)
        _at_least("model.dim", self.dim, 1)
        _at_least("model.max_len", self.max_len, 1)
        check_choice("model.position", self.position, POSITIONS)
        _at_least("model.type_vocab_size", self.type_vocab_size, 0)
        cutoffs = self.adaptive_cutoffs or []
        if any(c < 1 for c in cutoffs) or any(a >= b for a, b in itertools.pairwise(cutoffs)):
            raise ConfigError(
                f"model.adaptive_cutoffs={cutoffs} must be increasing ids ≥ 1, e.g. [2000, 8000] (null: no adaptive "
                "softmax)"
            )
        if self.dim % self.attention.num_heads:
            raise ConfigError(
                f"attention.num_heads={self.attention.num_heads} does not divide model.dim={self.dim}; "
                f"valid choices: {', '.join(str(h) for h in range(1, self.dim + 1) if self.dim % h == 0 and h <= 64)}"
            )
        if self.encoder.name in ("lstm", "gru"):
            if self.causal and self.encoder.bidirectional:
                raise ConfigError(
                    f"encoder={self.encoder.name} with encoder.bidirectional=true cannot be causal (task=clm or a "
                    "decoder): the backward direction reads the future; set encoder.bidirectional=false"
                )
            if self.bidirectional and self.dim % 2:
                raise ConfigError(f"a bidirectional {self.encoder.name} needs an even model.dim, got {self.dim}")

    @property
    def bidirectional(self) -> bool:
        """Whether an RNN encoder runs both directions (resolves ``encoder.bidirectional: null``)."""
        if self.encoder.bidirectional is None:
            return not self.causal
        return self.encoder.bidirectional

    @property
    def position_kind(self) -> str:
        """The positional encoding actually used (resolves ``position: auto``)."""
        if self.position == "auto":
            return "none" if self.encoder.name in ("lstm", "gru") else "learned"
        return self.position

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return from_dict(cls, data, "model")


def from_dict(cls: type[T], data: dict[str, Any], prefix: str) -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys (closest key suggested) and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {prefix}.{close[0]}?)" if close else ""
            raise ConfigError(f"unknown key {prefix}.{key}{hint}; valid keys: {', '.join(names)}")
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            kwargs[key] = value if isinstance(value, kind) else from_dict(kind, value, f"{prefix}.{key}")
        else:
            kwargs[key] = _check_type(f"{prefix}.{key}", value, kind)
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing key(s) {', '.join(f'{prefix}.{m}' for m in missing)}")
    return cls(**kwargs)


def _check_type(name: str, value: Any, kind: Any) -> Any:
    allowed = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    for option in allowed:
        if option is type(None) and value is None:
            return value
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, str):
            return value
        if typing.get_origin(option) is list and isinstance(value, (list, tuple)):
            return [_check_type(f"{name}[{i}]", item, typing.get_args(option)[0]) for i, item in enumerate(value)]
    expected = " or ".join(
        "null" if a is type(None) else "a list" if typing.get_origin(a) is list else a.__name__ for a in allowed
    )
    raise ConfigError(f"{name} must be {expected}, got {value!r} ({type(value).__name__})")


def _at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"{name}={value} must be ≥ {low}")
