"""Sequence-to-sequence models: any source encoder, an attentional RNN or transformer decoder, greedy/beam decoding."""

from attnfit.models.seq2seq.config import DECODERS, CrossAttentionConfig, DecoderConfig, Seq2SeqConfig
from attnfit.models.seq2seq.decoders import (
    DecoderLayer,
    RNNDecoder,
    RNNState,
    TransformerDecoder,
    TransformerState,
    build_decoder,
    reorder_state,
)
from attnfit.models.seq2seq.decoding import DecodeOutput, beam_search, greedy_decode
from attnfit.models.seq2seq.model import Seq2SeqModel

__all__ = [
    "DECODERS",
    "CrossAttentionConfig",
    "DecodeOutput",
    "DecoderConfig",
    "DecoderLayer",
    "RNNDecoder",
    "RNNState",
    "Seq2SeqConfig",
    "Seq2SeqModel",
    "TransformerDecoder",
    "TransformerState",
    "beam_search",
    "build_decoder",
    "greedy_decode",
    "reorder_state",
]
