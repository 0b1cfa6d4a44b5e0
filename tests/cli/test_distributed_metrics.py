"""Corpus-level metrics under DDP: two gloo processes report the BLEU of the whole validation set, the same as one
process computes with the same weights (each rank decodes its shard; the hypotheses are gathered before sacreBLEU
runs)."""

from __future__ import annotations

import json

import pytest

# A tiny translator trained for 100 steps: val BLEU ~0.4, low but not zero, so it depends on which sentences were
# scored. An odd validation set (13 rows) gives the ranks shards of different sizes (7 and 6).
SEQ2SEQ = [
    "task=seq2seq",
    "data.num_train=1600",
    "data.num_val=13",
    "data.num_test=2",
    "data.max_source_len=24",
    "data.max_target_len=24",
    "data.shuffle=false",
    "tokenizer.vocab_size=300",
    "model.dim=64",
    "encoder=gru",
    "encoder.num_layers=1",
    "encoder.attention_layers=0",
    "attention.num_heads=2",
    "decoder=transformer",
    "decoder.num_layers=1",
    "decoder.dropout=0.0",
    "optimizer.lr=3e-3",
    "scheduler.warmup_steps=10",
    "trainer.max_steps=100",
    "trainer.val_check_interval=100",
    "trainer.log_every_n_steps=1",
    "callbacks.progress_bar=none",
    "logger=csv",
]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_ddp_bleu_is_the_whole_validation_sets(run_cli, tmp_path):
    """The BLEU a 2-process run logs at validation is what one process computes over the whole validation set
    with the same weights. (Its weights are not those of a 1-process run: each rank averages the loss over its own
    target tokens, and targets differ in length.)"""
    ddp = tmp_path / "ddp"
    proc = run_cli("train", *SEQ2SEQ, "trainer=ddp_cpu", "data.batch_size=8", f"hydra.run.dir={ddp}")
    # The line before training: parameters and memory per process, once (rank zero), for the strategy in use.
    lines = [line for line in proc.stdout.splitlines() if "memory: " in line and "per device" in line]
    assert len(lines) == 1 and "DDPStrategy on 2 × CPU" in lines[0] and "batch 8 × 24 tokens" in lines[0], lines
    logged = json.loads((ddp / "metrics.json").read_text())
    assert logged["val/bleu"] > 0, logged
    (best,) = (ddp / "checkpoints").glob("best-step*.ckpt")  # the only validation: step 100, as last.ckpt
    out = tmp_path / "val.json"
    run_cli("eval", f"checkpoint={best}", "split=validation", "beam_size=1", "batch_size=8", f"out={out}")
    one = json.loads(out.read_text())
    assert one["rows"] == 13
    assert one["metrics"]["bleu"] == pytest.approx(logged["val/bleu"], rel=1e-6), (one, logged)
    assert one["metrics"]["exact_match"] == pytest.approx(logged["val/exact_match"])
    assert one["metrics"]["loss"] == pytest.approx(logged["val/loss"], rel=1e-5)
