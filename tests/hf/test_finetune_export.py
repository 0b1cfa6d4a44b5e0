"""Fine-tuning an imported BERT, and exporting attnfit models in the format ``transformers`` loads."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
import torch
import yaml

import attnfit
from attnfit.data.classification import encode_for_classification
from attnfit.errors import ConfigError
from attnfit.hf import export_transformers, transformers_target
from attnfit.models import ClassifierConfig, ModelConfig, SequenceClassifier, layer_groups, prepare_for_finetuning
from attnfit.pretrained import ModelRecord, build_model, load_artifact
from tests.hf.conftest import TEXTS

transformers = pytest.importorskip("transformers")
TOL = 1e-5


def _padded(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    return ids, mask


def test_finetune_from_import_uses_berts_pooler_and_head(bert_finetuned):
    run_dir, log = bert_finetuned
    tuned = load_artifact(run_dir)
    assert tuned.task == "classification" and tuned.record.head_config["pooling"] == "pooler"
    assert tuned.record.hf["model_type"] == "bert"
    # BERT's pretrained pooler was loaded with the backbone; only the classification head starts fresh.
    assert "newly initialised: head.weight, head.bias" in log


def test_lora_and_freezing_work_on_an_imported_bert(bert_dir):
    config = ModelConfig.from_dict(load_artifact(bert_dir).model_config)
    model = SequenceClassifier(config, ClassifierConfig(num_labels=2, pooling="pooler"))
    assert len(layer_groups(model.backbone)) == 1 + config.encoder.num_layers
    plan = prepare_for_finetuning(model, {"lora": {"enabled": True, "r": 2}, "freeze_layers": 1})
    assert plan.lora is not None
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert any("lora" in name for name in trainable) and "pooler.dense.weight" in trainable
    assert not any(name.startswith("backbone.encoder.stack.layers.0.") and "lora" not in name for name in trainable)


def test_finetuned_classifier_exports_to_auto_model_for_sequence_classification(bert_finetuned, run_cli, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run_dir, _ = bert_finetuned
    out = tmp_path / "hf-export"
    run_cli("export", f"checkpoint={run_dir}", "format=transformers", f"out={out}")
    artifact = load_artifact(run_dir)
    ours = build_model(artifact).eval()
    theirs = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    attnfit_tokenizer = artifact.record.tokenizers()[0]
    rows = [encode_for_classification(text, attnfit_tokenizer, 32) for text in TEXTS]
    assert rows == tokenizer(TEXTS, truncation=True, max_length=32)["input_ids"]  # the same [CLS] … [SEP] ids
    ids, mask = _padded(rows, tokenizer.pad_token_id)
    with torch.no_grad():
        expected = ours(ids, mask == 0).logits
        got = theirs(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, expected, atol=TOL, rtol=TOL)
    assert theirs.config.id2label == dict(enumerate(artifact.label_names))
    # …and the exported BertForSequenceClassification imports back into attnfit as the same classifier.
    back = attnfit.load_pretrained(out)
    assert back.record.task == "classification" and back.record.label_names == artifact.label_names
    with torch.no_grad():
        torch.testing.assert_close(back.model(ids, mask == 0).logits, expected, atol=TOL, rtol=TOL)

    # The model card carries the run's real metrics, in its text and in the Hub's model-index block.
    metrics = json.loads((run_dir / "metrics.json").read_text())
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    results = meta["model-index"][0]["results"][0]
    assert results["task"]["type"] == "text-classification" and meta["library_name"] == "transformers"
    assert {m["name"]: m["value"] for m in results["metrics"]}["test f1"] == pytest.approx(metrics["test/f1"], abs=1e-6)
    assert f"| test/f1 | {metrics['test/f1']:.4g} |" in card
    assert f"attnfit-finetune pretrained={bert_finetuned_source(run_dir)}" in card  # the reproducing command
    for section in ("## Training data", "## Intended use and limits", "## Resolved config", "## Reproduce"):
        assert section in card
    assert "base_model" not in meta  # a local directory, not a Hub repository
    assert f"Base model: `{bert_finetuned_source(run_dir)}`" in card


def test_finetuned_gpt2_classifier_exports_to_gpt2_for_sequence_classification(gpt2_finetuned, run_cli, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, GPT2ForSequenceClassification

    run_dir, log = gpt2_finetuned
    artifact = load_artifact(run_dir)
    assert artifact.record.head_config["pooling"] == "last" and artifact.record.head_config["bias"] is False
    assert "newly initialised: head.weight" in log
    out = tmp_path / "hf-export"
    run_cli("export", f"checkpoint={run_dir}", "format=transformers", f"out={out}")
    ours = build_model(artifact).eval()
    theirs = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    assert isinstance(theirs, GPT2ForSequenceClassification)
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    attnfit_tokenizer = artifact.record.tokenizers()[0]
    eos = attnfit_tokenizer.token_to_id("<|endoftext|>")
    rows = [encode_for_classification(text, attnfit_tokenizer, 32) for text in TEXTS]
    assert all(row[0] == row[-1] == eos for row in rows)  # attnfit pools that last <|endoftext|>
    assert rows == tokenizer(TEXTS, truncation=True, max_length=32)["input_ids"]
    pair = encode_for_classification(TEXTS[0], attnfit_tokenizer, 32, TEXTS[1])
    assert pair == tokenizer(TEXTS[0], TEXTS[1], truncation=True, max_length=32)["input_ids"]
    # transformers pools the last token that is not its pad token: padding has its own, not <|endoftext|>.
    assert theirs.config.pad_token_id == tokenizer.pad_token_id != eos
    encoded = tokenizer(TEXTS, padding=True, return_tensors="pt")
    ids, mask = _padded(rows, artifact.model_config["pad_id"])  # attnfit pads with <|endoftext|>
    assert (mask == 0).any() and torch.equal(encoded["attention_mask"], mask)
    with torch.no_grad():
        expected = ours(ids, mask == 0).logits
        got = theirs(**encoded).logits
    torch.testing.assert_close(got, expected, atol=TOL, rtol=TOL)
    assert theirs.config.id2label == dict(enumerate(artifact.label_names))
    # …and the exported GPT2ForSequenceClassification imports back as the same classifier.
    back = attnfit.load_pretrained(out)
    assert back.record.head_config["pooling"] == "last"
    with torch.no_grad():
        torch.testing.assert_close(back.model(encoded["input_ids"], mask == 0).logits, expected, atol=TOL, rtol=TOL)


def test_a_gpt2_classifier_with_another_pooling_or_a_head_bias_names_the_option(gpt2_finetuned):
    record = load_artifact(gpt2_finetuned[0]).record
    for head, named in (
        ({"pooling": "attention"}, "task.pooling=attention (GPT2ForSequenceClassification uses task.pooling=last)"),
        ({"bias": True}, "task.head_bias=true (GPT2ForSequenceClassification's score has no bias"),
    ):
        changed = dataclasses.replace(record, head_config={**record.head_config, **head})
        with pytest.raises(ConfigError) as error:
            transformers_target(changed)
        message = str(error.value)
        assert message.startswith(f"format=transformers: cannot export this model: {named}") and "\n" not in message


def bert_finetuned_source(run_dir):
    return json.loads((run_dir / "status.json").read_text())["overrides"][0].split("=", 1)[1]


def test_push_to_hub_without_network_fails_fast_in_one_line(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from attnfit.hf import push_to_hub

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    start = time.monotonic()
    with pytest.raises(ConfigError) as error:
        push_to_hub(tmp_path, "someone/tiny")
    assert time.monotonic() - start < 10
    message = str(error.value)
    assert message.startswith("push_to_hub=someone/tiny: cannot reach http://127.0.0.1:9") and "\n" not in message


def test_push_to_hub_offline_mode_and_bad_repo_ids_are_one_line(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from attnfit.hf import push_to_hub

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match="push_to_hub=someone/tiny: HF_HUB_OFFLINE is set"):
        push_to_hub(tmp_path, "someone/tiny")
    with pytest.raises(ConfigError, match="must be USER/REPO"):
        push_to_hub(tmp_path, "no-owner")


@pytest.mark.parametrize(
    ("which", "auto"),
    [
        ("bert_dir", "AutoModelForMaskedLM"),
        ("roberta_dir", "AutoModelForMaskedLM"),
        ("gpt2_dir", "AutoModelForCausalLM"),
    ],
)
def test_language_models_export_with_the_same_logits(which, auto, request, tmp_path):
    directory = request.getfixturevalue(which)
    artifact = load_artifact(directory)
    export_transformers(artifact, tmp_path)
    theirs = getattr(transformers, auto).from_pretrained(str(tmp_path)).eval()
    ours = build_model(artifact).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert tokenizer(TEXTS)["input_ids"] == [e.ids for e in artifact.record.tokenizers()[0].encode_batch(TEXTS)]
    rows = tokenizer(TEXTS)["input_ids"]
    ids, mask = _padded(rows, artifact.model_config["pad_id"])
    with torch.no_grad():
        expected, got = ours(ids, mask == 0), theirs(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=TOL, rtol=TOL)


def _record(task: str = "mlm", **changes) -> ModelRecord:
    config = {"vocab_size": 50, "dim": 16, "max_len": 32, "causal": task == "clm"}
    for key, value in changes.items():
        group, _, leaf = key.partition(".")
        if leaf:
            config.setdefault(group, {})[leaf] = value
        else:
            config[key] = value
    return ModelRecord(task, config, "{}")


@pytest.mark.parametrize(
    ("record", "named"),
    [
        (_record(**{"encoder.name": "lstm"}), "encoder=lstm"),
        (_record("clm", **{"attention.name": "local"}), "attention=local"),
        (_record(), "encoder.norm=pre"),  # attnfit's own pre-norm MLM is not a BERT
        (_record("clm"), "model.head_bias=true"),
        (_record("qa"), "task=qa"),
    ],
)
def test_unmappable_architectures_name_the_option(record, named):
    with pytest.raises(ConfigError, match=f"format=transformers: .*{named}"):
        transformers_target(record)
