"""The typed record of checkpoints and exports: one writer, one reader, and older formats of this project."""

from __future__ import annotations

import pytest
import torch

from attnfit.errors import CheckpointError
from attnfit.models import ClassifierConfig, ModelConfig, SequenceClassifier
from attnfit.pretrained import FORMAT_VERSION, ModelRecord, build_model, export, load_artifact

MODEL = ModelConfig.from_dict({"vocab_size": 20, "dim": 8, "max_len": 16, "attention": {"num_heads": 2}}).to_dict()
HEAD = ClassifierConfig(num_labels=2, pooling="mean").to_dict()


def _checkpoint(path, meta: dict, state: dict) -> None:
    torch.save({"attnfit": meta, "state_dict": {f"model.{k}": v for k, v in state.items()}}, path)


def test_a_record_round_trips_through_a_checkpoint_and_an_export(tmp_path):
    model = SequenceClassifier(ModelConfig.from_dict(MODEL), ClassifierConfig.from_dict(HEAD))
    record = ModelRecord("classification", MODEL, '{"fake": "tokenizer"}', head_config=HEAD, label_names=["a", "b"])
    _checkpoint(tmp_path / "x.ckpt", record.to_dict(), model.state_dict())
    artifact = load_artifact(tmp_path / "x.ckpt")
    assert artifact.record == record and artifact.record.to_dict()["format_version"] == FORMAT_VERSION
    exported = load_artifact(export(artifact, tmp_path / "export"))
    assert exported.record == record
    for name, tensor in build_model(exported).state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name


def test_format_1_checkpoints_still_load(tmp_path):
    """Format 1 (before the typed record) kept the classifier head under classifier_config."""
    model = SequenceClassifier(ModelConfig.from_dict(MODEL), ClassifierConfig.from_dict(HEAD))
    old = {
        "format_version": 1, "task": "classification", "model_config": MODEL, "tokenizer": "{}",
        "classifier_config": HEAD, "label_names": ["a", "b"], "lora": None, "run_config": None,
    }  # fmt: skip
    _checkpoint(tmp_path / "old.ckpt", old, model.state_dict())
    record = load_artifact(tmp_path / "old.ckpt").record
    assert record.head_config == HEAD and record.label_names == ["a", "b"] and record.tokenizer_json == "{}"
    old_seq2seq = {"format_version": 1, "task": "seq2seq", "model_config": {}, "tokenizer": "{}",
                   "target_tokenizer": "{}", "decode": {"beam_size": 2}, "metric": "bleu"}  # fmt: skip
    _checkpoint(tmp_path / "s.ckpt", old_seq2seq, {})
    record = load_artifact(tmp_path / "s.ckpt").record
    assert record.target_tokenizer_json == "{}" and record.decode == {"beam_size": 2} and record.metric == "bleu"


def test_newer_or_incomplete_records_fail_with_one_clear_line(tmp_path):
    _checkpoint(tmp_path / "new.ckpt", {"format_version": FORMAT_VERSION + 1, "model_config": {}}, {})
    with pytest.raises(CheckpointError, match=r"written by a newer attnfit .*upgrade attnfit"):
        load_artifact(tmp_path / "new.ckpt")
    _checkpoint(tmp_path / "part.ckpt", {"format_version": 2, "model_config": {}, "task": "mlm"}, {})
    with pytest.raises(CheckpointError, match=r"incomplete attnfit record \(no tokenizer_json\)"):
        load_artifact(tmp_path / "part.ckpt")


def test_load_pretrained_needs_neither_lightning_nor_hydra(tmp_path):
    """A saved model loads in any Python program: only torch, tokenizers and attnfit's model library."""
    import subprocess
    import sys

    model = SequenceClassifier(ModelConfig.from_dict(MODEL), ClassifierConfig.from_dict(HEAD))
    from tokenizers import Tokenizer, models

    tokenizer = Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")).to_str()
    record = ModelRecord("classification", MODEL, tokenizer, head_config=HEAD, label_names=["a", "b"])
    _checkpoint(tmp_path / "x.ckpt", record.to_dict(), model.state_dict())
    export(load_artifact(tmp_path / "x.ckpt"), tmp_path / "export")
    code = (
        "import sys, attnfit\n"
        f"model, tokenizer = attnfit.load_pretrained({str(tmp_path / 'export')!r})\n"
        "print(sorted(m for m in ('lightning', 'hydra') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
