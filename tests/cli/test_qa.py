"""Extractive QA through the CLI: train from scratch and fine-tune → eval → predict → export → load; a tiny model
learns the embedded task; bad QA input gives one clear line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import attnfit
from tests.conftest import TINY, cli_env, python_m

QA = [
    *(o for o in TINY if not o.startswith(("data.seq_len", "data.batch_size"))),
    "task=qa",
    "data.seq_len=64",
    "data.doc_stride=24",
    "data.max_question_len=16",
    "data.batch_size=16",
]


# Enough model and steps to learn the embedded task (the test below checks that it does); still small enough for
# eval, predict and export to stay quick.
LEARNS = {
    "model.dim": 64, "attention.num_heads": 4, "encoder.num_layers": 2, "tokenizer.vocab_size": 400,
    "trainer.max_steps": 1000, "trainer.val_check_interval": 500, "trainer.limit_val_batches": 1.0,
    "trainer.log_every_n_steps": 50, "optimizer.lr": 3e-3, "data.batch_size": 32,
}  # fmt: skip
QA_LEARNS = [*(a for a in QA if a.split("=")[0] not in LEARNS), *(f"{k}={v}" for k, v in LEARNS.items())]


@pytest.fixture(scope="module")
def qa_run(tmp_path_factory, cache_dir) -> Path:
    """One small QA run (concat interaction, from scratch) that learns the task, shared by this module's tests."""
    run_dir = tmp_path_factory.mktemp("qa") / "run"
    proc = python_m("attnfit.train", [*QA_LEARNS, f"hydra.run.dir={run_dir}"], run_dir.parent, cli_env(cache_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_qa_run_scores_em_and_f1_on_validation_and_test(qa_run):
    metrics = json.loads((qa_run / "metrics.json").read_text())
    for key in ("val/exact_match", "val/f1", "test/exact_match", "test/f1", "best/val/f1"):
        assert key in metrics, sorted(metrics)
    assert 0.0 <= metrics["test/exact_match"] <= metrics["test/f1"] <= 100.0
    checkpoint = torch.load(qa_run / "checkpoints" / "last.ckpt", weights_only=True)
    record = checkpoint["attnfit"]
    assert record["task"] == "qa" and record["head_config"]["interaction"] == "concat"
    assert record["decode"] == {"seq_len": 64, "doc_stride": 24, "max_question_len": 16, "max_answer_len": 30}


def test_qa_eval_predict_export_load(run_cli, qa_run, tmp_path):
    proc = run_cli("eval", f"checkpoint={qa_run}", "split=validation", f"out={tmp_path / 'eval.json'}")
    record = json.loads((tmp_path / "eval.json").read_text())
    assert {"exact_match", "f1", "loss"} <= set(record["metrics"]) and "f1" in proc.stdout

    question, context = "Where does Marel live?", "Marel lives in Torford, while Tovik lives in Brastad."
    run_cli("predict", f"checkpoint={qa_run}", f"question='{question}'", f"context='{context}'", "heatmap=true")
    result = json.loads((tmp_path / "predictions" / "predictions.jsonl").read_text().splitlines()[0])
    start, end = result["span"]
    assert result["answer"] == context[start:end] and result["answer"]  # a span of the context, in characters
    assert 1 <= len(result["nbest"]) <= 5 and result["nbest"][0]["text"] == result["answer"]
    assert (tmp_path / result["heatmap"]).stat().st_size > 0  # relative to where the command ran

    export_dir = tmp_path / "export"
    run_cli("export", f"checkpoint={qa_run}", f"out={export_dir}")
    loaded = attnfit.load_pretrained(export_dir)
    original, _ = attnfit.load_pretrained(qa_run)
    assert loaded.record.task == "qa" and loaded.record.decode["doc_stride"] == 24
    ids = torch.tensor([[6, 9, 10, 5, 11, 12, 13, 3]])
    segments = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 2]])
    mask = torch.zeros_like(ids, dtype=torch.bool)
    expected = original(ids, mask, segments).start_logits
    torch.testing.assert_close(loaded.model(ids, mask, segments).start_logits, expected)


def test_bidaf_fine_tunes_from_a_pretrained_lm(run_cli, tmp_path, cache_dir):
    lm = tmp_path / "lm"
    run_cli("train", *TINY, "task=mlm", "data.seq_len=64", "model.max_len=64", f"hydra.run.dir={lm}")
    tuned = tmp_path / "bidaf"
    finetune = [o for o in QA if o.split("=")[0] not in ("model.dim", "encoder.num_layers", "attention.num_heads")]
    finetune = [o for o in finetune if not o.startswith("tokenizer.")]
    proc = run_cli("finetune", f"pretrained={lm}", *finetune, "task.interaction=bidaf", f"hydra.run.dir={tuned}")
    assert "loaded" in proc.stdout + proc.stderr  # the backbone came from the LM
    record = torch.load(tuned / "checkpoints" / "last.ckpt", weights_only=True)["attnfit"]
    assert record["head_config"]["interaction"] == "bidaf"
    assert record["tokenizer"] == (lm / "tokenizer.json").read_text()  # the LM's vocabulary is kept


def test_a_small_qa_model_learns_the_embedded_task(qa_run, cache_dir):
    """Answering needs the context: every attribute is stated for several people in a paragraph, so the trivial
    baseline (the sentence sharing most words with the question) scores EM 0 and a low F1; the model must beat it
    by far."""
    from attnfit.data.qa import load_qa_splits
    from attnfit.data.qa_metrics import overlap_baseline, squad_scores

    metrics = json.loads((qa_run / "metrics.json").read_text())

    test = load_qa_splits("embedded", embedded_dir=cache_dir / "embedded-qa", cache_dir=cache_dir / "datasets")["test"]
    baseline = squad_scores(
        {r["id"]: overlap_baseline(r["question"], r["context"]) for r in test},
        {r["id"]: r["answer_texts"] for r in test},
    )
    assert baseline["exact_match"] == 0.0 and baseline["f1"] < 20.0
    assert metrics["test/f1"] > 2 * baseline["f1"] and metrics["test/exact_match"] > 15.0, (metrics, baseline)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data.doc_stride=100"], "data.doc_stride must be >= 1 and < the context budget"),
        (["task.interaction=coattention"], "task.interaction"),
        (["data.malformed=fix"], "data.malformed"),
        (["data=squad", "data.train=/nonexistent/train.json"], "/nonexistent/train.json"),
    ],
)
def test_bad_qa_input_gives_one_clear_line(run_cli, args, message):
    proc = run_cli("train", *QA, *args, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_predict_without_a_context_says_what_qa_needs(run_cli, qa_run):
    proc = run_cli("predict", f"checkpoint={qa_run}", "text=Where does Marel live?", check=False)
    assert proc.returncode == 2 and "question=... context=..." in proc.stderr


@pytest.mark.parametrize(
    "context",
    ["我爱北京天安门。Marel lives in Torford.", "a, b = [c] {d} 'e' \"f\" (g) ${h} $HOME", "key=value, more=less"],
)
def test_any_text_reaches_the_model(run_cli, qa_run, tmp_path, context):
    """Free text is taken off the command line before Hydra's grammar sees it: CJK, commas, quotes, brackets, =."""
    question = "Where's Marel's home, (really)?"
    run_cli("predict", f"checkpoint={qa_run}", f"question={question}", f"context={context}")
    result = json.loads((tmp_path / "predictions" / "predictions.jsonl").read_text().splitlines()[0])
    assert result["question"] == question and result["context"] == context


def test_inputs_from_standard_input(cache_dir, qa_run, tmp_path):
    lines = "Where does Marel live?\tMarel lives in Torford.\n\nWho keeps a dog?\t小明 keeps a dog, 小红 a cat.\n"
    env = {**os.environ, "ATTNFIT_CACHE_DIR": str(cache_dir), "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "attnfit.predict", f"checkpoint={qa_run}", "-"],
        input=lines, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = [json.loads(line) for line in (tmp_path / "predictions" / "predictions.jsonl").read_text().splitlines()]
    assert [r["context"] for r in results] == ["Marel lives in Torford.", "小明 keeps a dog, 小红 a cat."]
