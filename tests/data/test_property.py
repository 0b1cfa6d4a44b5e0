"""Property: arbitrary unicode text either loads + tokenizes, or fails with a DataError (never anything else)."""

import json
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from attnfit.data.lm import tokenize_for_lm
from attnfit.data.sources import load_text_splits
from attnfit.data.tokenizer import train_tokenizer
from attnfit.errors import DataError

# every code point except surrogates, which cannot be written as UTF-8
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
SPACE = st.text(st.sampled_from(" \t\n\r\x0b\x0c\x00\x1c\x85\u2028\u3000"), max_size=4)
WORDS = st.text(st.sampled_from("abc 我爱"), min_size=4, max_size=40)
DOCS = st.lists(st.one_of(TEXT, WORDS, WORDS, SPACE, st.just("")), max_size=10)


@pytest.fixture(scope="module")
def toks():
    corpus = ["the dog runs .", "我爱北京天安门。", "mixed ÅßÇ 123 \t tabs"]
    return {kind: train_tokenizer(kind, corpus, vocab_size=300) for kind in ("bpe", "char")}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    docs=DOCS,
    val_docs=st.one_of(st.none(), DOCS),
    fmt=st.sampled_from(["txt", "jsonl", "csv"]),
    kind=st.sampled_from(["bpe", "char"]),
    packing=st.booleans(),
    seq_len=st.integers(2, 12),
)
def test_arbitrary_text_succeeds_or_raises_data_error(toks, docs, val_docs, fmt, kind, packing, seq_len):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = {}
        for split, rows in (("train", docs), ("validation", val_docs)):
            if rows is None:
                continue
            path = root / f"{split}.{fmt}"
            if fmt == "txt":
                path.write_text("\n".join(rows), encoding="utf-8", newline="")
            elif fmt == "csv":
                pd.DataFrame({"id": range(len(rows)), "text": rows}).to_csv(path, index=False)
            else:
                path.write_text("\n".join(json.dumps({"text": r}) for r in rows), encoding="utf-8")
            files[split] = str(path)
        try:
            splits = load_text_splits("files", files=files, cache_dir=root / "cache")
            for ds in splits.values():
                assert ds.column_names == ["text"] and len(ds) > 0
                assert all(t.strip() for t in ds["text"])
                out = tokenize_for_lm(ds, toks[kind], seq_len=seq_len, packing=packing)
                assert len(out) > 0
                assert all(2 <= len(r) <= seq_len for r in out["input_ids"])
                if packing:
                    assert all(len(r) == seq_len for r in out["input_ids"])
            event("loaded and tokenized")
        except DataError as e:
            event(f"DataError: {str(e).split(' ')[-1]}")
