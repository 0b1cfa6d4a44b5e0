"""Data layer: raw text sources, tokenizers, LM tokenization/packing and batch collators."""

from attnfit.data.lm import (
    IGNORE_INDEX,
    CLMCollator,
    MLMCollator,
    tokenize_for_lm,
    unigram_cross_entropy,
)
from attnfit.data.sources import FILE_FORMATS, SOURCE_KINDS, default_embedded_dir, infer_file_format, load_text_splits
from attnfit.data.synthetic import generate_lm_corpus, write_embedded_corpus
from attnfit.data.tokenizer import (
    BOS_ID,
    CLS_ID,
    EOS_ID,
    MASK_ID,
    PAD_ID,
    SEP_ID,
    SPECIAL_TOKENS,
    TOKENIZER_KINDS,
    UNK_ID,
    get_tokenizer,
    load_tokenizer,
    special_token_id,
    special_token_ids,
    tokenizer_fingerprint,
    train_tokenizer,
)

__all__ = [
    "BOS_ID",
    "CLS_ID",
    "EOS_ID",
    "FILE_FORMATS",
    "IGNORE_INDEX",
    "MASK_ID",
    "PAD_ID",
    "SEP_ID",
    "SOURCE_KINDS",
    "SPECIAL_TOKENS",
    "TOKENIZER_KINDS",
    "UNK_ID",
    "CLMCollator",
    "MLMCollator",
    "default_embedded_dir",
    "generate_lm_corpus",
    "get_tokenizer",
    "infer_file_format",
    "load_text_splits",
    "load_tokenizer",
    "special_token_id",
    "special_token_ids",
    "tokenize_for_lm",
    "tokenizer_fingerprint",
    "train_tokenizer",
    "unigram_cross_entropy",
    "write_embedded_corpus",
]
