import logging
import math

import pytest
import torch
from datasets import Dataset

from attnfit.data import lm
from attnfit.data.lm import CLMCollator, MLMCollator, id_share_below, tokenize_for_lm, unigram_cross_entropy
from attnfit.data.sources import load_text_splits
from attnfit.data.synthetic import generate_lm_corpus
from attnfit.data.tokenizer import BOS_ID, CLS_ID, EOS_ID, MASK_ID, PAD_ID, train_tokenizer
from attnfit.errors import ConfigError, DataError

DOCS = generate_lm_corpus(120, seed=4)


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer("char", DOCS, vocab_size=200)


@pytest.fixture()
def splits(tmp_path):
    (tmp_path / "train.txt").write_text("\n".join(DOCS[:100]) + "\n", encoding="utf-8")
    (tmp_path / "val.txt").write_text("\n".join(DOCS[100:]) + "\n", encoding="utf-8")
    files = {"train": str(tmp_path / "train.txt"), "validation": str(tmp_path / "val.txt")}
    return load_text_splits("files", files=files, cache_dir=tmp_path / "cache")


def test_packing_rows_are_full_and_eos_separated(splits, tok):
    out = tokenize_for_lm(splits["train"], tok, seq_len=64)
    assert out.column_names == ["input_ids"]
    rows = out["input_ids"]
    assert len(rows) > 10 and all(len(r) == 64 for r in rows)
    stream = []
    for text in DOCS[:100]:  # one map batch: the rows are the first len(rows)*64 tokens of the stream
        stream += [*tok.encode(text, add_special_tokens=False).ids, EOS_ID]
    assert [t for r in rows for t in r] == stream[: len(rows) * 64]
    assert len(stream) - len(rows) * 64 < 64


def test_no_packing_truncates_with_warning(splits, tok, caplog):
    with caplog.at_level(logging.WARNING, logger="attnfit"):
        out = tokenize_for_lm(splits["validation"], tok, seq_len=100, packing=False)
    rows = list(out["input_ids"])
    assert len(rows) == 20 and out.column_names == ["input_ids"]
    lengths = [len(tok.encode(d).ids) for d in DOCS[100:]]
    for row, n in zip(rows, lengths, strict=True):
        assert row[0] == BOS_ID and row[-1] == EOS_ID and len(row) == min(n, 98) + 2
    n_cut = sum(n > 98 for n in lengths)
    assert n_cut > 0
    assert f"{n_cut} of 20 texts longer than seq_len=100 were truncated" in caplog.text


def test_second_run_loads_from_cache(splits, tok, monkeypatch):
    first = tokenize_for_lm(splits["train"], tok, seq_len=32)

    def boom(*args, **kwargs):
        raise AssertionError("tokenized again instead of loading the cache")

    monkeypatch.setattr(lm, "_pack_batch", boom)
    second = tokenize_for_lm(splits["train"], tok, seq_len=32)
    assert second.cache_files == first.cache_files
    assert second["input_ids"][:] == first["input_ids"][:]
    with pytest.raises(AssertionError, match="tokenized again"):  # other settings are not taken from the cache
        tokenize_for_lm(splits["train"], tok, seq_len=48)


def test_reloaded_splits_hit_the_cache(splits, tok, tmp_path, monkeypatch):
    first = tokenize_for_lm(splits["validation"], tok, seq_len=16)
    files = {"train": str(tmp_path / "train.txt"), "validation": str(tmp_path / "val.txt")}
    again = load_text_splits("files", files=files, cache_dir=tmp_path / "cache")  # as a second run would
    monkeypatch.setattr(lm, "_pack_batch", lambda *a, **k: pytest.fail("not cached"))
    assert tokenize_for_lm(again["validation"], tok, seq_len=16).cache_files == first.cache_files


def test_num_proc(splits, tok):
    out = tokenize_for_lm(splits["train"], tok, seq_len=64, num_proc=2)
    assert len(out) > 10 and all(len(r) == 64 for r in out["input_ids"])


def test_empty_result_raises(splits, tok):
    with pytest.raises(DataError, match="seq_len=100000"):
        tokenize_for_lm(splits["validation"], tok, seq_len=100_000)


def test_in_memory_dataset(tok):
    out = tokenize_for_lm(Dataset.from_dict({"text": ["ab", "c"]}), tok, seq_len=2)
    assert list(out["input_ids"]) == [[tok.token_to_id("a"), tok.token_to_id("b")], [EOS_ID, tok.token_to_id("c")]]


def test_embedded_end_to_end(tmp_path):
    splits = load_text_splits("embedded", cache_dir=tmp_path)
    assert len(splits["train"]) == 20000 and len(splits["validation"]) == 1000
    tok = train_tokenizer("bpe", splits["train"]["text"][:2000], vocab_size=1000)
    train = tokenize_for_lm(splits["train"], tok, seq_len=128)
    val = tokenize_for_lm(splits["validation"], tok, seq_len=128)
    assert len(train) > 5000 and len(val) > 200
    baseline = unigram_cross_entropy(train["input_ids"], val["input_ids"], tok.get_vocab_size())
    assert 3.0 < baseline < math.log(tok.get_vocab_size())


# --- collators -------------------------------------------------------------------------------------------


def test_clm_collator_pads_and_masks_labels():
    batch = CLMCollator(pad_id=PAD_ID)([{"input_ids": [2, 10, 11, 3]}, {"input_ids": torch.tensor([2, 12])}])
    assert batch["input_ids"].tolist() == [[2, 10, 11, 3], [2, 12, 0, 0]]
    assert batch["labels"].tolist() == [[2, 10, 11, 3], [2, 12, -100, -100]]
    assert batch["padding_mask"].tolist() == [[False] * 4, [False, False, True, True]]
    assert batch["num_tokens"] == 6
    assert batch["input_ids"].dtype == torch.long and batch["padding_mask"].dtype == torch.bool


def _mlm(**kwargs):
    return MLMCollator(pad_id=PAD_ID, mask_id=MASK_ID, vocab_size=100, special_ids=tuple(range(7)), **kwargs)


def test_mlm_collator_statistics():
    gen = torch.Generator().manual_seed(0)
    examples = []
    for _i in range(64):
        body = torch.randint(7, 100, (int(torch.randint(100, 256, (1,), generator=gen)),), generator=gen)
        examples.append({"input_ids": [BOS_ID, *body.tolist(), EOS_ID]})
    original = CLMCollator(PAD_ID)(examples)["input_ids"]
    batch = _mlm(seed=0)(examples)
    ids, labels, padding = batch["input_ids"], batch["labels"], batch["padding_mask"]
    assert ids.shape == labels.shape == padding.shape == original.shape
    chosen = labels != -100
    special = original < 7
    assert not (chosen & (special | padding)).any()  # specials and padding never chosen
    assert (ids[special | padding] == original[special | padding]).all()
    assert (labels[chosen] == original[chosen]).all()
    assert (ids[~chosen] == original[~chosen]).all()  # only chosen positions change
    eligible = int((~special & ~padding).sum())
    assert abs(int(chosen.sum()) / eligible - 0.15) < 0.02
    n = int(chosen.sum())
    as_mask = int((ids[chosen] == MASK_ID).sum())
    kept = int((ids[chosen] == original[chosen]).sum())
    assert abs(as_mask / n - 0.8) < 0.04 and abs(kept / n - 0.1) < 0.04  # rest: random, ~10%
    assert (ids[chosen & (ids != MASK_ID)] >= 7).all()  # random replacements are never special
    assert batch["num_tokens"] == int((~padding).sum())


def test_mlm_collator_at_least_one_and_reproducible():
    examples = [{"input_ids": [2, 50, 3]}, {"input_ids": torch.tensor([2, 51, 52, 53, 3])}]
    batch = _mlm(mask_prob=1e-6, seed=1)(examples)
    assert int((batch["labels"] != -100).sum()) == 1
    assert batch["padding_mask"].tolist() == [[False] * 3 + [True] * 2, [False] * 5]
    a, b = _mlm(seed=7), _mlm(seed=7)
    for _ in range(3):
        x, y = a(examples), b(examples)
        assert all(torch.equal(x[k], y[k]) for k in ("input_ids", "labels"))
    only_specials = _mlm(seed=0)([{"input_ids": [2, 3]}])
    assert (only_specials["labels"] == -100).all()  # nothing eligible: nothing masked, no crash


def test_framed_rows_look_like_the_classifiers():
    """cls_id frames every row as the classifier's ``[cls] … [eos]``: the first token is <cls>, and about
    short_row_prob of the rows are cut to 3..T tokens ending in <eos>, padded; the rest keep their text."""
    cls_id = CLS_ID
    examples = [{"input_ids": list(range(10, 74)), "sample_key": i} for i in range(400)]
    framed = _mlm(seed=0, cls_id=cls_id, eos_id=EOS_ID, short_row_prob=0.25, mask_prob=1e-6)
    batch = framed(examples)
    ids, labels, padding = batch["input_ids"], batch["labels"], batch["padding_mask"]
    original = torch.where(labels != -100, labels, ids)  # undo the one masked token
    assert (original[:, 0] == cls_id).all() and (labels[:, 0] == -100).all()  # <cls> is never masked
    lengths = (~padding).sum(1)
    short = original[torch.arange(len(ids)), lengths - 1] == EOS_ID  # a cut row can keep all 64 tokens
    assert 0.18 < short.float().mean() < 0.32
    assert int(lengths.min()) >= 3 and len(set(lengths[short].tolist())) > 20  # lengths spread over 3..64
    for row, n in zip(original[short], lengths[short].tolist(), strict=True):
        assert row[n - 1] == EOS_ID and row[1 : n - 1].tolist() == list(range(11, 10 + n - 1))
        assert (row[n:] == PAD_ID).all()
    assert (original[~short, 1:] == torch.arange(11, 74)).all()  # full rows: only the first token replaced
    again = framed(examples)
    assert torch.equal(again["input_ids"], ids) and torch.equal(again["padding_mask"], padding)  # keyed by sample
    plain = _mlm(seed=0, mask_prob=1e-6)(examples)
    assert (plain["input_ids"][:, 0] != cls_id).all() and not plain["padding_mask"].any()  # off by default


@pytest.mark.parametrize("masking", ["token", "whole_word"])
def test_task_settings_frame_the_training_rows_only(tok, masking):
    from omegaconf import OmegaConf

    from attnfit.tasks.language_modeling import masking_collators

    task = {"mask_prob": 0.15, "masking": masking, "short_row_prob": 0.3}
    train, val = masking_collators(OmegaConf.create({"seed": 0, "task": task}), tok)
    assert (train.cls_id, train.eos_id, train.short_row_prob) == (CLS_ID, EOS_ID, 0.3)
    assert val.cls_id is None and val.short_row_prob == 0.0  # validation loss stays comparable across runs
    train, _ = masking_collators(OmegaConf.create({"seed": 0, "task": {**task, "short_row_prob": 0.0}}), tok)
    assert train.cls_id is None
    task.update(short_row_prob=0.0, cls_rows=True)
    train, _ = masking_collators(OmegaConf.create({"seed": 0, "task": task}), tok)
    assert train.cls_id == CLS_ID and train.short_row_prob == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"short_row_prob": 1.5, "cls_id": 6, "eos_id": EOS_ID}, "short_row_prob must be between 0 and 1, got 1.5"),
        ({"short_row_prob": 0.1}, "short_row_prob needs cls_id and eos_id"),
    ],
)
def test_framing_settings_are_checked(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        _mlm(**kwargs)


# --- unigram baseline ------------------------------------------------------------------------------------


def test_unigram_cross_entropy_by_hand():
    # train counts [1, 2, 0] + 1 -> p = [2, 3, 1] / 6
    expected = -(math.log(3 / 6) + math.log(1 / 6)) / 2
    assert unigram_cross_entropy([[0, 1], [1]], [[1, 2]], vocab_size=3) == pytest.approx(expected)
    ds = Dataset.from_dict({"input_ids": [[0, 1], [1]]})
    assert unigram_cross_entropy(ds["input_ids"], [torch.tensor([1, 2])], 3) == pytest.approx(expected)
    arrow = ds.shuffle(seed=0).with_format("arrow")["input_ids"]  # the fast path; an index mapping too
    assert unigram_cross_entropy(arrow, [[1, 2]], 3) == pytest.approx(expected)
    with pytest.raises(DataError, match=r"\[0, 3\)"):
        unigram_cross_entropy([[0]], [[3]], vocab_size=3)
    with pytest.raises(DataError, match="no evaluation tokens"):
        unigram_cross_entropy([[0]], [], vocab_size=3)


def test_id_share_below_by_hand():
    ds = Dataset.from_dict({"input_ids": [[0, 5, 1], [9, 2]]})
    for ids in ([[0, 5, 1], [9, 2]], ds["input_ids"], ds.with_format("arrow")["input_ids"]):
        assert id_share_below(ids, 3) == pytest.approx(3 / 5)
    assert id_share_below([[0, 1]], 0) == 0.0
    with pytest.raises(DataError, match="no tokens"):
        id_share_below([], 3)


def _epoch_labels(collator, num_workers):
    examples = [{"input_ids": list(range(7, 57))} for _ in range(8)]
    loader = torch.utils.data.DataLoader(examples, batch_size=2, num_workers=num_workers, collate_fn=collator)
    return torch.cat([batch["labels"] for batch in loader])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_mlm_masks_vary_per_epoch_and_reproduce_under_a_seed(num_workers):
    def run():
        torch.manual_seed(123)  # what seed_everything does; DataLoader derives worker seeds from it
        collator = _mlm(seed=0)
        return [_epoch_labels(collator, num_workers) for _ in range(2)]

    first, second = run(), run()
    assert not torch.equal(first[0], first[1])  # a new mask every epoch
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))  # but reproducible
    batches = first[0].view(4, 2, -1)
    assert not torch.equal(batches[0], batches[1])  # batches from different workers differ
