"""Train, cache and load Hugging Face ``tokenizers`` tokenizers.

Every tokenizer trained here has the same special tokens at the same ids (``SPECIAL_TOKENS``, ids 0..6) and
no post-processor: the LM pipeline adds ``<bos>``/``<eos>`` itself, so encoding never adds tokens silently.
Everything that matters is in the tokenizer.json, so ``Tokenizer.from_str``/``from_file`` behave identically
(as in Hugging Face, a literal "<eos>" in raw text encodes to the special token).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from attnfit.atomic import atomic_write
from attnfit.errors import ConfigError, DataError, check_choice

SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>", "<eos>", "<mask>", "<sep>", "<cls>"]
PAD_ID, UNK_ID, BOS_ID, EOS_ID, MASK_ID, SEP_ID, CLS_ID = range(len(SPECIAL_TOKENS))
TOKENIZER_KINDS = ("bpe", "wordpiece", "word", "char")
TOKENIZER_VERSION = 1  # bump when training changes, so cached tokenizers are retrained

# Role -> token strings tried in order; the later ones cover common pretrained tokenizers (GPT-2, BERT, T5).
_ROLE_ALIASES = {
    "pad": ("<pad>", "[PAD]", "<|endoftext|>"),  # GPT-2 has no padding token: its end of text pads
    "unk": ("<unk>", "[UNK]", "<|endoftext|>"),
    "bos": ("<bos>", "<s>", "[CLS]", "<|endoftext|>"),
    "eos": ("<eos>", "</s>", "[SEP]", "<|endoftext|>"),
    "mask": ("<mask>", "[MASK]"),
    "sep": ("<sep>", "[SEP]", "</s>", "<|endoftext|>"),
    "cls": ("<cls>", "[CLS]", "<s>", "<|endoftext|>"),
}


def _bpe(texts: Iterable[str], vocab_size: int, min_frequency: int, lowercase: bool) -> Tokenizer:
    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise ConfigError(
            f"byte-level bpe needs vocab_size >= {len(SPECIAL_TOKENS) + 256} (256 bytes + {len(SPECIAL_TOKENS)} "
            f"special tokens), got {vocab_size}; raise vocab_size or use tokenizer kind 'char'"
        )
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def _split_words_as_bert(tok: Tokenizer, lowercase: bool) -> Tokenizer:
    """BERT's normalizer, word splitting (spaces and punctuation) and decoder, shared by wordpiece and word."""
    # handle_chinese_chars puts spaces around CJK characters, so each becomes its own (known) word
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=False, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def _wordpiece(texts: Iterable[str], vocab_size: int, min_frequency: int, lowercase: bool) -> Tokenizer:
    tok = _split_words_as_bert(
        Tokenizer(models.WordPiece(unk_token="<unk>", continuing_subword_prefix="##")), lowercase
    )
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def _word(texts: Iterable[str], vocab_size: int, min_frequency: int, lowercase: bool) -> Tokenizer:
    # BERT's word splitting with no subwords: the classic word vocabulary (Kim 2014, OpenNMT-py); the wordpiece
    # decoder just joins words with spaces here, as no word starts "##" (# is split off)
    tok = _split_words_as_bert(Tokenizer(models.WordLevel(unk_token="<unk>")), lowercase)
    trainer = trainers.WordLevelTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS, show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def _char(texts: Iterable[str], vocab_size: int, lowercase: bool) -> Tokenizer:
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(text.lower() if lowercase else text)
    for special in SPECIAL_TOKENS:
        counts.pop(special, None)
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for char, _ in counts.most_common(vocab_size - len(SPECIAL_TOKENS)):
        vocab[char] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    # Oniguruma has no (?s); [\s\S] matches any single code point including newlines
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIAL_TOKENS)
    return tok


def train_tokenizer(
    kind: str, texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2, lowercase: bool = False
) -> Tokenizer:
    """Train a tokenizer of ``kind`` on ``texts``; special tokens get ids 0..6.

    * ``bpe``: byte-level BPE; any text round-trips exactly through encode/decode (CJK, emoji, newlines).
    * ``wordpiece``: BERT-style; splits on whitespace and punctuation and puts every CJK character in its own
      word, so ``decode`` re-joins words with single spaces ("我 爱" for "我爱") and drops control characters.
      Characters never seen in training become ``<unk>``.
    * ``word``: wordpiece's splitting without subwords: the ``vocab_size - 7`` most frequent words seen at least
      ``min_frequency`` times; any other word becomes ``<unk>``, and ``decode`` re-joins words as wordpiece does.
    * ``char``: one token per code point, the ``vocab_size - 7`` most frequent characters seen in training
      (``min_frequency`` is ignored: rare characters are still worth a token); text made of seen characters
      round-trips exactly, including spaces and newlines, others become ``<unk>``.

    The vocabulary can end up smaller than ``vocab_size`` on small corpora; size models with
    ``tokenizer.get_vocab_size()``.
    """
    check_choice("tokenizer kind", kind, TOKENIZER_KINDS)
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ConfigError(f"vocab_size must be > {len(SPECIAL_TOKENS)} (the special tokens), got {vocab_size}")
    if kind == "bpe":
        tok = _bpe(texts, vocab_size, min_frequency, lowercase)
    elif kind == "wordpiece":
        tok = _wordpiece(texts, vocab_size, min_frequency, lowercase)
    elif kind == "word":
        tok = _word(texts, vocab_size, min_frequency, lowercase)
    else:
        tok = _char(texts, vocab_size, lowercase)
    ids = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    assert ids == list(range(len(SPECIAL_TOKENS))), f"special token ids moved: {ids}"
    return tok


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a ``tokenizer.json`` file (ours or any Hugging Face one)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"tokenizer file {str(path)!r} does not exist")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception for malformed JSON
        raise DataError(f"tokenizer file {str(path)!r} is not a valid tokenizer.json: {e}") from e


def _atomic_save(tok: Tokenizer, path: Path) -> None:
    atomic_write(path, lambda tmp: tok.save(str(tmp)))


def get_tokenizer(
    kind: str,
    texts_fn: Callable[[], Iterable[str]],
    vocab_size: int,
    cache_key: str,
    cache_dir: Path | None,
    path: str | None = None,
    min_frequency: int = 2,
    lowercase: bool = False,
) -> Tokenizer:
    """Load ``path`` if given, else reuse the tokenizer cached for (kind, vocab_size, cache_key), else train one.

    ``texts_fn`` is only called when training is needed, so a second run skips reading the corpus.
    ``cache_key`` should identify the training texts (e.g. the train split's datasets fingerprint).
    """
    if path is not None:
        return load_tokenizer(path)
    if kind == "pretrained":
        raise ConfigError("tokenizer kind 'pretrained' needs a tokenizer path (a tokenizer.json file)")
    check_choice("tokenizer kind", kind, (*TOKENIZER_KINDS, "pretrained"))
    if cache_dir is None:
        return train_tokenizer(kind, texts_fn(), vocab_size, min_frequency, lowercase)
    cased = "|lower" if lowercase else ""  # keeps the keys of existing cached tokenizers
    key = f"v{TOKENIZER_VERSION}|{kind}|{vocab_size}|{min_frequency}{cased}|{cache_key}"
    cache_path = Path(cache_dir) / "tokenizers" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"
    if cache_path.is_file():
        try:
            return Tokenizer.from_file(str(cache_path))
        except Exception:  # a corrupt cache entry is retrained, not fatal
            pass
    tok = train_tokenizer(kind, texts_fn(), vocab_size, min_frequency, lowercase)
    _atomic_save(tok, cache_path)
    return tok


def tokenizer_from_config(
    tok: Any, texts_fn: Callable[[], Iterable[str]], cache_key: str, cache_dir: Path | None
) -> Tokenizer:
    """:func:`get_tokenizer` with the keys of a ``tokenizer`` config group (configs/tokenizer/*.yaml)."""
    return get_tokenizer(
        tok.kind, texts_fn, int(tok.get("vocab_size", 8000)), cache_key=cache_key, cache_dir=cache_dir,
        path=tok.get("path"), lowercase=bool(tok.get("lowercase", False)),
    )  # fmt: skip


def tokenizer_fingerprint(tok: Tokenizer) -> str:
    """Short content hash of a tokenizer; part of the cache key of tokenized datasets."""
    return hashlib.sha256(tok.to_str().encode()).hexdigest()[:16]


def special_token_ids(tok: Tokenizer) -> dict[str, int | None]:
    """Ids of the roles pad/unk/bos/eos/mask/sep/cls, also for common pretrained names; None when absent."""
    ids: dict[str, int | None] = {}
    for role, names in _ROLE_ALIASES.items():
        ids[role] = next((i for i in map(tok.token_to_id, names) if i is not None), None)
    return ids


def special_token_id(tok: Tokenizer, role: str) -> int:
    """The id of special token ``role`` (e.g. "eos"); DataError if the tokenizer has none."""
    check_choice("special token role", role, _ROLE_ALIASES)
    token_id = special_token_ids(tok)[role]
    if token_id is None:
        raise DataError(
            f"tokenizer has no {role} token (looked for {', '.join(_ROLE_ALIASES[role])}); "
            f"train one with attnfit or use a tokenizer that defines it"
        )
    return token_id
