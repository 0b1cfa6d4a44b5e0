"""Every task of the table (attnfit.tasks.TASKS) goes the whole way through the CLI: train → eval → predict →
export → load, with nothing task-specific outside its module but the inputs below."""

from __future__ import annotations

import json

import pytest
import torch

import attnfit
from attnfit.tasks import TASKS
from tests.conftest import TINY

# What each task trains on and is asked, at toy size. A new task adds one line here (and its module and YAML).
RUNS = {
    "mlm": ([], ["text=the <mask> sleeps"]),
    "clm": ([], ["text=the cat", "max_new_tokens=4"]),
    "electra": (["task.masking=whole_word"], ["text=the cat sleeps"]),
    "classification": (["data=embedded_classification"], ["text=the old dog sleeps"]),
    "seq2seq": (["data.num_train=400", "data.num_val=16", "data.num_test=16"], ["text=der hund schläft"]),
    "qa": (["data.seq_len=64", "data.doc_stride=24", "data.max_question_len=16"], [
        "question=Where does Marel live?", "context=Marel lives in Torford. Tovik lives in Brastad.",
    ]),
}  # fmt: skip


def test_every_registered_task_has_a_lifecycle_here():
    assert sorted(RUNS) == sorted(TASKS)


@pytest.mark.parametrize("task", sorted(RUNS))
def test_train_eval_predict_export_load(run_cli, tmp_path, task):
    data, inputs = RUNS[task]
    run_dir = tmp_path / "run"
    tiny = [o for o in TINY if not o.startswith("trainer.max_steps")] + ["trainer.max_steps=3"]
    run_cli("train", *tiny, f"task={task}", *data, "trainer.val_check_interval=3", f"hydra.run.dir={run_dir}")
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"

    out = tmp_path / "eval.json"
    run_cli("eval", f"checkpoint={run_dir}", "split=validation", "batch_size=8", f"out={out}")
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics and all(isinstance(v, float) for v in metrics.values())

    run_cli("predict", f"checkpoint={run_dir}", *inputs, "heatmap=false")
    prediction = json.loads((tmp_path / "predictions" / "predictions.jsonl").read_text().splitlines()[0])
    assert prediction  # each task's own record (label, fills, generated text, translation, answer)

    export_dir = tmp_path / "export"
    run_cli("export", f"checkpoint={run_dir}", f"out={export_dir}")
    exported, original = attnfit.load_pretrained(export_dir), attnfit.load_pretrained(run_dir)
    assert exported.record.task == original.record.task == task
    for (name, a), (_, b) in zip(
        sorted(exported.model.state_dict().items()), sorted(original.model.state_dict().items()), strict=True
    ):
        assert torch.equal(a, b), name
