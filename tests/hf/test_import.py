"""Importing Hugging Face BERT and GPT-2 checkpoints: the same logits, hidden states and token ids."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import attnfit
from attnfit.errors import ConfigError
from attnfit.pretrained import load_artifact
from tests.hf.conftest import TEXTS

transformers = pytest.importorskip("transformers")
TOL = 1e-5


def _batch(directory):
    """Right-padded ids of TEXTS with the Hugging Face tokenizer, and its attention mask (1 = real)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    encoded = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert (encoded["attention_mask"] == 0).any(), "the batch must hold padding"
    return encoded["input_ids"], encoded["attention_mask"]


def _close_where_real(ours: torch.Tensor, theirs: torch.Tensor, mask: torch.Tensor) -> None:
    real = mask.bool()
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours[real], theirs[real], atol=TOL, rtol=TOL)


@pytest.mark.parametrize("which", ["bert_dir", "roberta_dir", "distilbert_dir"])
def test_bert_mlm_logits_and_hidden_states_equal_transformers(which, request):
    from transformers import AutoModelForMaskedLM

    directory = request.getfixturevalue(which)
    hf = AutoModelForMaskedLM.from_pretrained(str(directory)).eval()
    model, _ = attnfit.load_pretrained(directory)
    ids, mask = _batch(directory)
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        hidden, _ = model.backbone(ids, mask == 0)
        logits = model(ids, mask == 0)
    _close_where_real(hidden, theirs.hidden_states[-1], mask)
    _close_where_real(logits, theirs.logits, mask)


def test_bert_sentence_pairs_get_their_token_types(bert_dir):
    from transformers import AutoTokenizer, BertForMaskedLM

    hf = BertForMaskedLM.from_pretrained(str(bert_dir)).eval()
    model, _ = attnfit.load_pretrained(bert_dir)
    encoded = AutoTokenizer.from_pretrained(str(bert_dir))(TEXTS[:3], TEXTS[2:], padding=True, return_tensors="pt")
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    assert encoded["token_type_ids"].any()
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, token_type_ids=encoded["token_type_ids"]).logits
        ours = model(ids, mask == 0)  # token types derived from the [SEP] positions
    _close_where_real(ours, theirs, mask)


def test_gpt2_clm_logits_and_hidden_states_equal_transformers(gpt2_dir):
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(str(gpt2_dir)).eval()
    pretrained = attnfit.load_pretrained(f"hf:{gpt2_dir}")
    model = pretrained.model
    assert pretrained.record.task == "clm" and pretrained.record.hf["model_type"] == "gpt2"
    ids, mask = _batch(gpt2_dir)
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        hidden, _ = model.backbone(ids, mask == 0)
        logits = model(ids, mask == 0)
    _close_where_real(hidden, theirs.hidden_states[-1], mask)
    _close_where_real(logits, theirs.logits, mask)


@pytest.mark.parametrize("which", ["bert_dir", "roberta_dir", "gpt2_dir"])
def test_tokenizer_ids_equal_transformers(which, request):
    from transformers import AutoTokenizer

    directory = request.getfixturevalue(which)
    theirs = AutoTokenizer.from_pretrained(str(directory))
    _, ours = attnfit.load_pretrained(directory)
    expected = theirs(TEXTS)["input_ids"]
    assert [e.ids for e in ours.encode_batch(TEXTS)] == expected
    assert any(len(row) > 3 for row in expected)  # the CJK and accented texts were not all unknown tokens


def test_bert_pooler_travels_with_the_import(bert_dir):
    artifact = load_artifact(bert_dir)
    assert set(artifact.extra) == {"pooler.dense.weight", "pooler.dense.bias"}
    assert artifact.record.model_config["encoder"]["norm"] == "post"


def test_unsupported_model_type_is_one_line(tmp_path, bert_dir):
    config = json.loads((bert_dir / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(
        ConfigError,
        match=r"model_type='llama' cannot be imported; supported model types: bert, roberta, distilbert, gpt2",
    ):
        load_artifact(tmp_path)


def test_import_attnfit_does_not_import_transformers():
    code = "import sys, attnfit, attnfit.hf; print('transformers' in sys.modules, 'huggingface_hub' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_a_hub_name_offline_and_uncached_is_one_line(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from attnfit.errors import CheckpointError

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(CheckpointError, match=r"cannot download someone/tiny-bert from the Hugging Face Hub") as error:
        load_artifact("hf:someone/tiny-bert")
    assert "\n" not in str(error.value)


def test_classifier_defaults_follow_the_imported_architectures_classifier(bert_dir, gpt2_dir):
    from attnfit.tasks.classification import default_head_bias, default_pooling

    assert default_pooling(load_artifact(bert_dir)) == "pooler" and default_head_bias(load_artifact(bert_dir))
    assert default_pooling(load_artifact(gpt2_dir)) == "last" and not default_head_bias(load_artifact(gpt2_dir))
    assert default_pooling(None) == "attention" and default_head_bias(None)


def _roberta_classifier(directory):
    """A tiny random RobertaForSequenceClassification with three labels, saved to ``directory``."""
    from transformers import RobertaConfig, RobertaForSequenceClassification

    from tests.hf.conftest import _roberta_bpe, _saved

    tokenizer = _roberta_bpe()
    config = RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=66, type_vocab_size=1, pad_token_id=tokenizer.pad_token_id, num_labels=3,
        id2label={0: "neg", 1: "neutral", 2: "pos"}, label2id={"neg": 0, "neutral": 1, "pos": 2},
    )  # fmt: skip
    _saved(RobertaForSequenceClassification, config, tokenizer, directory)
    return RobertaForSequenceClassification.from_pretrained(str(directory)).eval()


def test_a_roberta_sequence_classifier_imports_with_the_same_logits(tmp_path):
    hf = _roberta_classifier(tmp_path)
    loaded = attnfit.load_pretrained(tmp_path)
    assert loaded.record.task == "classification" and loaded.record.label_names == ["neg", "neutral", "pos"]
    ids, mask = _batch(tmp_path)
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).logits
        got = loaded.model(ids, mask == 0).logits
    torch.testing.assert_close(got, expected, atol=TOL, rtol=TOL)


PAIRS = [(TEXTS[0], TEXTS[1]), (TEXTS[2], TEXTS[3]), (TEXTS[4], TEXTS[0]), ("a", "b")]


@pytest.mark.parametrize("which", ["bert_dir", "roberta_dir"])
def test_pair_ids_equal_transformers(which, request):
    from transformers import AutoTokenizer

    from attnfit.data.classification import encode_for_classification

    directory = request.getfixturevalue(which)
    theirs = AutoTokenizer.from_pretrained(str(directory))
    _, ours = attnfit.load_pretrained(directory)
    expected = [theirs(a, b)["input_ids"] for a, b in PAIRS]
    assert [encode_for_classification(a, ours, 64, b) for a, b in PAIRS] == expected
    if which == "roberta_dir":  # <s> A </s></s> B </s>
        assert all(row.count(theirs.sep_token_id) == 3 for row in expected)


def test_roberta_pair_classification_equals_transformers(tmp_path):
    from transformers import AutoTokenizer

    from attnfit.data.classification import encode_for_classification

    hf = _roberta_classifier(tmp_path)
    loaded = attnfit.load_pretrained(tmp_path)
    # RoBERTa has no token types: the doubled </s> must not turn into segment ids.
    assert loaded.record.model_config.get("segment_sep_id") is None
    encoded = AutoTokenizer.from_pretrained(str(tmp_path))(
        [a for a, _ in PAIRS], [b for _, b in PAIRS], padding=True, return_tensors="pt"
    )
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    assert (mask == 0).any(), "the batch must hold padding"
    rows = [encode_for_classification(a, loaded.tokenizer, 64, b) for a, b in PAIRS]
    assert rows == [row[: int(n)].tolist() for row, n in zip(ids, mask.sum(1), strict=True)]
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).logits
        got = loaded.model(ids, mask == 0).logits
    torch.testing.assert_close(got, expected, atol=TOL, rtol=TOL)


def test_a_gpt2_sequence_classifier_imports_with_the_same_logits(tmp_path):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from tests.hf.conftest import _byte_bpe, _saved

    tokenizer = _byte_bpe()
    eos = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=eos, eos_token_id=eos,
        pad_token_id=eos, num_labels=3, id2label={0: "neg", 1: "neutral", 2: "pos"},
        label2id={"neg": 0, "neutral": 1, "pos": 2},
    )  # fmt: skip
    _saved(GPT2ForSequenceClassification, config, tokenizer, tmp_path)
    hf = GPT2ForSequenceClassification.from_pretrained(str(tmp_path)).eval()
    loaded = attnfit.load_pretrained(tmp_path)
    assert loaded.record.task == "classification" and loaded.record.label_names == ["neg", "neutral", "pos"]
    assert loaded.record.head_config["pooling"] == "last" and loaded.record.head_config["bias"] is False
    ids, mask = _batch(tmp_path)  # padded with <|endoftext|>, the pad token transformers skips
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).logits
        got = loaded.model(ids, mask == 0).logits
    torch.testing.assert_close(got, expected, atol=TOL, rtol=TOL)
