"""Whole-word and span masking for bpe, wordpiece, word and char tokenizers."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from attnfit.data.lm import IGNORE_INDEX
from attnfit.data.masking import SpanMLMCollator, WholeWordMLMCollator, WordTable, word_starts
from attnfit.data.tokenizer import BOS_ID, EOS_ID, SPECIAL_TOKENS, UNK_ID, train_tokenizer

WORDS = ["the", "cat", "sat", "on", "a", "mat", "unbelievably", "happily", "while", "dogs", "were", "barking"]


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) + rng.choice(["", "", ",", "."]) for _ in range(rng.randint(20, 40)))
        for _ in range(n)
    ]


@pytest.fixture(scope="module", params=["bpe", "wordpiece", "word", "char"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def tokenizer(kind: str) -> Tokenizer:
    # A small vocabulary, so long words split into several pieces (and whole-word masking has work to do).
    return train_tokenizer(kind, corpus(200), vocab_size=300 if kind == "bpe" else 60)


def examples(tokenizer: Tokenizer, n: int = 16, seed: int = 1) -> list[dict]:
    rows = [[BOS_ID, *e.ids, EOS_ID] for e in tokenizer.encode_batch(corpus(n, seed), add_special_tokens=False)]
    return [{"input_ids": row, "sample_key": 10 * seed + k} for k, row in enumerate(rows)]


def collate(cls: type, tokenizer: Tokenizer, exs: list[dict], **kwargs) -> dict:
    return cls.from_tokenizer(tokenizer, seed=7, **kwargs)(exs)


def test_word_starts_follow_each_tokenizers_convention(kind: str, tokenizer: Tokenizer) -> None:
    enc = tokenizer.encode("the cat sat, unbelievably  happily", add_special_tokens=False)
    ids, tokens = [BOS_ID, *enc.ids], ["<bos>", *enc.tokens]
    starts = word_starts(tokenizer, ids)
    assert starts[0]  # a special token is its own word
    for i, (token, start) in enumerate(zip(tokens[1:], starts[1:], strict=True), 1):
        if kind == "bpe":
            expected = token != "Ġ" and (token.startswith("Ġ") or tokens[i - 1] in ("<bos>", "Ġ"))
        elif kind == "wordpiece":
            expected = not token.startswith("##")
        elif kind == "word":
            expected = True
        else:
            expected = token != " " and tokens[i - 1] in ("<bos>", " ")
        assert start == expected, (i, token, tokens)
    assert sum(starts) == 1 + 5 + (kind in ("wordpiece", "word"))  # <bos> + five words (and "," for these two)


def word_positions(tokenizer: Tokenizer, ids: torch.Tensor) -> list[np.ndarray]:
    words = WordTable.from_tokenizer(tokenizer).word_ids(ids.numpy())
    return [np.flatnonzero(words == w) for w in range(words.max() + 1)]


@pytest.mark.parametrize("cls", [WholeWordMLMCollator, SpanMLMCollator])
def test_masks_whole_words_only_never_specials_or_padding(tokenizer: Tokenizer, cls: type) -> None:
    exs = examples(tokenizer)
    batch = collate(cls, tokenizer, exs)
    chosen = batch["labels"] != IGNORE_INDEX
    original = torch.where(chosen, batch["labels"], batch["input_ids"])
    assert batch["padding_mask"].any()  # rows of different lengths: some padding
    assert not (chosen & batch["padding_mask"]).any()
    assert not (chosen & torch.isin(original, torch.arange(len(SPECIAL_TOKENS)))).any()
    for row in range(len(exs)):
        for positions in word_positions(tokenizer, original[row]):
            assert chosen[row, positions].all() or not chosen[row, positions].any(), "part of a word was masked"
    assert (batch["input_ids"][chosen] == tokenizer.token_to_id("<mask>")).float().mean() > 0.6  # 80/10/10


@pytest.mark.parametrize("cls", [WholeWordMLMCollator, SpanMLMCollator])
def test_masks_about_mask_prob_of_the_tokens(tokenizer: Tokenizer, cls: type) -> None:
    batch = collate(cls, tokenizer, examples(tokenizer, n=48), mask_prob=0.15)
    chosen = batch["labels"] != IGNORE_INDEX
    eligible = ~batch["padding_mask"] & ~torch.isin(batch["input_ids"], torch.tensor([BOS_ID, EOS_ID]))
    share = float(chosen.sum() / eligible.sum())
    assert 0.12 < share <= 0.16, share


@pytest.mark.parametrize("cls", [WholeWordMLMCollator, SpanMLMCollator])
def test_masks_are_a_function_of_the_sample_key_and_repeat_after_reset(tokenizer: Tokenizer, cls: type) -> None:
    exs = examples(tokenizer, n=8)
    a = collate(cls, tokenizer, exs)
    b = collate(cls, tokenizer, exs)  # a fresh collator, the same keys
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    moved = collate(cls, tokenizer, [{**ex, "sample_key": ex["sample_key"] + 100} for ex in exs])
    assert not torch.equal(a["labels"], moved["labels"])

    keyless = [{"input_ids": ex["input_ids"]} for ex in exs]  # validation: repeatable via reset()
    collator = cls.from_tokenizer(tokenizer, seed=3, repeat_masks=True)
    first, second = collator(keyless), collator(keyless)
    collator.reset()
    again = collator(keyless)
    assert torch.equal(first["labels"], again["labels"]) and not torch.equal(first["labels"], second["labels"])


def test_spans_are_contiguous_runs_of_whole_words(tokenizer: Tokenizer) -> None:
    batch = collate(SpanMLMCollator, tokenizer, examples(tokenizer, n=32), mask_prob=0.3)
    chosen = (batch["labels"] != IGNORE_INDEX).numpy()
    original = torch.where(batch["labels"] != IGNORE_INDEX, batch["labels"], batch["input_ids"])
    table = WordTable.from_tokenizer(tokenizer)
    words_per_run = []
    for row in range(len(chosen)):
        words = table.word_ids(original[row].numpy())
        edges = np.flatnonzero(np.diff(np.concatenate([[0], chosen[row].astype(int), [0]])))
        for start, stop in zip(edges[::2], edges[1::2], strict=True):  # each maximal masked run [start, stop)
            run = words[start:stop]
            assert run[0] >= 0 and run[-1] >= 0, "a span starts or ends on whitespace"
            assert (start == 0 or words[start - 1] != run[0]) and (stop == len(words) or words[stop] != run[-1])
            inside = run[run >= 0]
            assert (np.diff(inside) >= 0).all() and (np.diff(inside) <= 1).all()  # consecutive words only
            assert table.space[original[row, start:stop].numpy()][run < 0].all()  # gaps are whitespace only
            words_per_run.append(inside[-1] - inside[0] + 1)
    assert max(words_per_run) > 2  # real multi-word spans, not single words


def test_span_lengths_follow_the_clipped_geometric_distribution(tokenizer: Tokenizer) -> None:
    collator = SpanMLMCollator.from_tokenizer(tokenizer, seed=0)
    gen = torch.Generator().manual_seed(0)
    lengths = np.array([collator.span_length(gen) for _ in range(4000)])
    assert lengths.min() == 1 and lengths.max() == 10
    assert abs(lengths.mean() - 3.8) < 0.15  # SpanBERT's mean for p=0.2 clipped at 10
    assert abs((lengths == 1).mean() - 0.2 / (1 - 0.8**10)) < 0.03


def test_a_word_longer_than_the_budget_is_masked_whole(kind: str, tokenizer: Tokenizer) -> None:
    word = tokenizer.encode("hate", add_special_tokens=False).ids  # unseen: several pieces
    if kind == "word":
        assert word == [UNK_ID]
        pytest.skip("a word vocabulary has no word of several tokens (an unseen word is one <unk>)")
    assert len(word) > 1  # the budget is round(0.15 · len) = 1 token: every word overshoots it
    exs = [{"input_ids": [BOS_ID, *word, EOS_ID], "sample_key": 0}, {"input_ids": [BOS_ID, EOS_ID], "sample_key": 1}]
    for cls in (WholeWordMLMCollator, SpanMLMCollator):
        labels = cls.from_tokenizer(tokenizer, seed=0)(exs)["labels"]
        assert labels[0].tolist() == [IGNORE_INDEX, *word, IGNORE_INDEX]
        assert (labels[1] == IGNORE_INDEX).all()  # nothing eligible: nothing masked, padding included
