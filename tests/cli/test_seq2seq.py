"""Seq2seq through the CLI: train a small translator on the embedded toy task (it must learn it), then evaluate it
with beam search, translate with alignment heat maps, export and reload it; and the mistakes it must explain."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import attnfit
from tests.conftest import cli_env, python_m

# The cheapest setting found that learns the toy translation reliably: val BLEU 93.6 / 94.0 / 94.2 with seeds
# 42 / 1 / 7 after 300 steps (about 25 s on one loaded core). A bidirectional GRU encoder learns the reorderings
# much faster than a transformer encoder of the same size (BLEU 24 after 400 steps at dim 128).
SEQ2SEQ = [
    "task=seq2seq",
    "data.num_train=5000",
    "data.num_val=64",
    "data.num_test=64",
    "data.max_source_len=32",
    "data.max_target_len=40",
    "data.batch_size=32",
    "tokenizer.vocab_size=600",  # about one token per word of the toy languages: short sequences
    "model.dim=128",
    "encoder=gru",
    "encoder.num_layers=1",
    "encoder.attention_layers=0",
    "attention.num_heads=4",
    "decoder=transformer",
    "decoder.num_layers=1",
    "decoder.dropout=0.0",
    "optimizer.lr=3e-3",
    "scheduler.warmup_steps=30",
    "trainer.max_steps=300",
    "trainer.val_check_interval=150",
    "trainer.log_every_n_steps=10",
    "callbacks.progress_bar=none",
]
# On shared cores PyTorch's multi-threaded kernels mostly wait for each other: one thread is ~10x faster here.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ONE_THREAD.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="module")
def translation_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """One trained seq2seq run shared by the tests of this module."""
    run_dir = tmp_path_factory.mktemp("seq2seq") / "run"
    proc = python_m("attnfit.train", [*SEQ2SEQ, f"hydra.run.dir={run_dir}"], run_dir.parent, cli_env(cache_dir))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir


def _metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


def test_training_writes_checkpoints_metrics_and_tensorboard(translation_run):
    for name in ("config.yaml", "tokenizer.json", "metrics.json", "checkpoints/last.ckpt"):
        assert (translation_run / name).exists(), name
    assert not (translation_run / "target_tokenizer.json").exists()  # one joint vocabulary by default
    metrics = _metrics(translation_run)
    assert {"val/loss", "val/ppl", "val/bleu", "best/val/bleu", "test/loss", "test/ppl", "test/bleu"} <= set(metrics)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(translation_run / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("val/bleu")] == [149, 299]
    assert "alignment/pair_0" in events.Tags()["images"]
    samples = events.Tensors("samples/text_summary")
    text = samples[-1].tensor_proto.string_val[0].decode()
    assert text.count("**hyp:**") == 4 and text.count("**ref:**") == 4, text


def test_a_small_transformer_decoder_learns_the_toy_translation(translation_run):
    metrics = _metrics(translation_run)
    assert metrics["best/val/bleu"] > 85, metrics  # greedy
    assert metrics["test/bleu"] > 85, metrics  # beam search, width 4
    assert metrics["val/ppl"] < 1.5, metrics
    assert metrics["test/exact_match"] > 0.5, metrics  # whole sentences right (0.69 measured, beam 4)


def test_eval_reports_bleu_with_beam_search(run_cli, translation_run, tmp_path):
    proc = run_cli("eval", f"checkpoint={translation_run}")
    record = json.loads((translation_run / "eval" / "test.json").read_text())
    assert record["split"] == "test" and record["rows"] == 64
    assert record["decode"]["beam_size"] == 4  # the checkpoint's task.decode.beam_size
    assert {"loss", "ppl", "bleu"} <= set(record["metrics"])
    assert "bleu" in proc.stdout
    assert record["metrics"]["bleu"] == pytest.approx(_metrics(translation_run)["test/bleu"], abs=1.0)

    # Greedy on validation with training's batch size reproduces the training run's own validation BLEU.
    out = tmp_path / "greedy.json"
    run_cli("eval", f"checkpoint={translation_run}", "split=validation", "beam_size=1", "batch_size=32", f"out={out}")
    greedy = json.loads(out.read_text())
    assert greedy["decode"]["beam_size"] == 1
    assert greedy["metrics"]["bleu"] == pytest.approx(_metrics(translation_run)["best/val/bleu"], rel=1e-6)


def test_predict_translates_and_draws_the_alignment(run_cli, translation_run, tmp_path):
    out = tmp_path / "pred"
    proc = run_cli(
        "predict", f"checkpoint={translation_run}", "text=the dog sees the cat .", "heatmap=true", f"out={out}"
    )
    prediction = json.loads((out / "predictions.jsonl").read_text().splitlines()[0])
    assert prediction["source"] == "the dog sees the cat ." and prediction["beam_size"] == 4
    translation = prediction["translation"]
    assert "hund" in translation.split() and "katze" in translation.split(), translation
    assert translation in proc.stdout

    alignment = prediction["alignment"]
    source, target = alignment["source_tokens"], alignment["target_tokens"]
    weights = np.array(alignment["weights"])
    assert source[:2] == ["the", "dog"] and source[-1] == "<eos>"
    assert weights.shape == (len(target), len(source))
    np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-4)  # each target token's attention over the source
    assert source[weights[target.index("hund")].argmax()] == "dog"
    assert source[weights[target.index("katze")].argmax()] == "cat"
    png = Path(alignment["heatmap"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000


def test_predict_lists_the_n_best_under_constraints(run_cli, translation_run, tmp_path):
    out = tmp_path / "pred"
    args = ["text=the dog sees the cat .", f"out={out}", "nbest=3", "no_repeat_ngram=1", "length_norm=average"]
    proc = run_cli("predict", f"checkpoint={translation_run}", *args)
    prediction = json.loads((out / "predictions.jsonl").read_text().splitlines()[0])
    nbest = prediction["nbest"]
    assert len(nbest) == 3 and nbest[0]["translation"] == prediction["translation"]
    assert len({h["translation"] for h in nbest}) == 3  # three different hypotheses
    target_tokenizer = attnfit.load_pretrained(translation_run).target_tokenizer
    for hyp in nbest:
        ids = target_tokenizer.encode(hyp["translation"], add_special_tokens=False).ids
        assert len(ids) == len(set(ids)), hyp  # no token twice: no_repeat_ngram=1 (byte-level BPE: "der" ≠ " der")
    assert "  2. " in proc.stdout and "  3. " in proc.stdout
    bad = run_cli("predict", f"checkpoint={translation_run}", "text=x", "length_norm=mean", check=False)
    assert bad.returncode == 2 and "length_norm" in bad.stderr and "gnmt" in bad.stderr


def test_export_loads_and_decodes_like_the_checkpoint(run_cli, translation_run, tmp_path):
    from attnfit.models.seq2seq import greedy_decode

    export_dir = tmp_path / "export"
    run_cli("export", f"checkpoint={translation_run}", f"out={export_dir}")
    assert {p.name for p in export_dir.iterdir()} == {"model.safetensors", "config.json", "tokenizer.json", "README.md"}
    config = json.loads((export_dir / "config.json").read_text())
    assert config["task"] == "seq2seq" and config["metric"] == "bleu" and config["decode"]["beam_size"] == 4

    loaded = attnfit.load_pretrained(export_dir)
    exported, tokenizer = loaded
    original, _ = attnfit.load_pretrained(translation_run)
    assert loaded.target_tokenizer is tokenizer and loaded.record.decode["beam_size"] == 4
    for key, value in original.state_dict().items():
        assert torch.equal(exported.state_dict()[key], value), key

    bos, eos, pad = (tokenizer.token_to_id(f"<{name}>") for name in ("bos", "eos", "pad"))
    sentences = ["the dog sees the cat .", "yesterday my two happy birds slept in the garden ."]
    rows = [[*tokenizer.encode(s, add_special_tokens=False).ids, eos] for s in sentences]
    width = max(map(len, rows))
    source = torch.tensor([row + [pad] * (width - len(row)) for row in rows])
    mask = torch.tensor([[False] * len(row) + [True] * (width - len(row)) for row in rows])
    ours, theirs = (greedy_decode(m, source, mask, bos, eos, max_len=40) for m in (exported, original))
    assert torch.equal(ours.tokens, theirs.tokens) and torch.equal(ours.lengths, theirs.lengths)
    assert all(n > 0 for n in ours.lengths.tolist())


def test_bad_seq2seq_setting_is_a_one_line_error(run_cli):
    proc = run_cli("train", "task=seq2seq", "data.max_target_len=0", check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "data.max_target_len=0" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_bad_beam_size_is_explained(run_cli, translation_run):
    proc = run_cli("eval", f"checkpoint={translation_run}", "beam_size=0", check=False)  # checked before any data
    assert proc.returncode == 2 and "beam_size=0 must be an integer ≥ 1" in proc.stderr, proc.stderr[-2000:]


def test_finetune_starts_the_encoder_from_a_pretrained_language_model(run_cli, tmp_path):
    from tests.conftest import TINY

    pretrained, run_dir = tmp_path / "lm", tmp_path / "s2s"
    run_cli("train", *TINY, f"hydra.run.dir={pretrained}")
    proc = run_cli(
        "finetune",
        f"pretrained={pretrained}",
        "task=seq2seq",
        "data.num_train=500",
        "data.num_val=16",
        "data.num_test=16",
        "data.max_source_len=32",
        "data.max_target_len=32",
        "trainer.max_steps=6",
        "trainer.val_check_interval=6",
        "callbacks.progress_bar=none",
        f"hydra.run.dir={run_dir}",
    )
    assert "encoder initialised from" in proc.stdout + proc.stderr
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    lm = torch.load(pretrained / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["attnfit"]["task"] == "seq2seq"
    assert checkpoint["attnfit"]["tokenizer"] == lm["attnfit"]["tokenizer"]  # the LM's vocabulary, both sides
    assert checkpoint["attnfit"]["model_config"]["encoder"]["dim"] == lm["attnfit"]["model_config"]["dim"]
    assert "test/bleu" in _metrics(run_dir)
    # The fine-tuning plan's options (freezing, LoRA, …) are classification's and QA's: refused, not ignored.
    proc = run_cli("finetune", f"pretrained={pretrained}", "task=seq2seq", "finetune.freeze_layers=1", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().endswith(
        "finetune.freeze_layers=1 is not applied by task=seq2seq, which fine-tunes its whole pretrained encoder; "
        "remove it (finetune.freeze_layers=0)"
    ), proc.stderr[-2000:]
