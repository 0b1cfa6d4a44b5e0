"""``attnfit-train`` end to end: run directory, checkpoints, TensorBoard, resume, and clear errors."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import TINY, denormal_probe, flushed, scalars


def test_flush_denormal_zeroes_subnormal_floats_in_every_thread_from_setup_to_teardown():
    from attnfit.cli import CONFIG_DIR
    from attnfit.training.callbacks import FlushDenormals

    assert all(OmegaConf.load(Path(CONFIG_DIR) / f"{name}.yaml").flush_denormal for name in ("train", "finetune"))
    # Below float32's smallest normal (1.2e-38); big enough that two threads each take a half.
    subnormal = torch.full((1 << 22,), 1e-39)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    flush = FlushDenormals()
    try:
        assert torch.equal(subnormal * 1.0, subnormal)  # OpenMP's workers now exist, with PyTorch's default mode
        flush.setup(None, None, "fit")
        inside = subnormal * 1.0
    finally:
        flush.teardown(None, None, "fit")
        after = subnormal * 1.0
        torch.set_num_threads(threads)
    assert torch.equal(inside, torch.zeros_like(subnormal))
    assert torch.equal(after, subnormal)  # PyTorch's default is back, in the workers too, for whatever runs next


@pytest.mark.parametrize("flush", [True, False])
def test_the_run_wires_flush_denormal_into_training(run_cli, tmp_path, flush):
    args = [*TINY, "trainer.max_steps=1", denormal_probe(tmp_path)]
    run_cli("train", *args, f"flush_denormal={flush}", f"hydra.run.dir={tmp_path / 'run'}")
    assert flushed(tmp_path) == {0: flush}


def test_flush_denormal_reaches_ddp_spawn_workers(run_cli, tmp_path):
    # Spawned processes start with PyTorch's default mode: the run must set it inside each worker.
    args = [*TINY, "trainer=ddp_cpu", "trainer.strategy=ddp_spawn", "trainer.max_steps=1", denormal_probe(tmp_path)]
    run_cli("train", *args, f"hydra.run.dir={tmp_path / 'run'}")
    assert flushed(tmp_path) == {0: True, 1: True}  # both workers


@pytest.mark.parametrize("task", ["mlm", "clm"])
def test_train_writes_a_complete_run_directory(run_cli, tmp_path, task):
    run_dir = tmp_path / "[b]run"  # printed as it is, not read as rich markup
    proc = run_cli("train", *TINY, f"task={task}", f"hydra.run.dir='{run_dir}'")
    assert f"run directory: {run_dir}" in proc.stdout
    assert f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}" in proc.stdout.replace("'", "")  # continue command
    assert "unigram baseline" in proc.stdout

    config = (run_dir / "config.yaml").read_text()
    assert OmegaConf.create(config).task.name == task and "${" not in config  # resolved config
    assert (run_dir / "tokenizer.json").exists()
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert list((run_dir / "checkpoints").glob("best-step*.ckpt"))
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    tags = scalars(run_dir)
    for tag in ("train/loss", "train/ppl", "train/tokens_per_s", "val/loss", "val/ppl", "val/acc"):
        assert tag in tags, sorted(tags)
    assert any(tag.startswith("lr") for tag in tags)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["step"] == 6 and metrics["val/loss"] > 0

    # The checkpoint carries the model config and tokenizer as plain data: it loads with weights_only=True.
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["attnfit"]["task"] == task
    assert checkpoint["attnfit"]["tokenizer"] == (run_dir / "tokenizer.json").read_text()
    assert checkpoint["attnfit"]["model_config"]["causal"] is (task == "clm")


def test_a_time_budgeted_schedule_decays_to_its_floor_within_the_time_limit(run_cli, tmp_path):
    """Far more steps planned than 5 seconds allow: the cosine still reaches min_lr_ratio as the limit stops it.
    (5 s, not less: the last logged rate must fall in the final ~10% of the clock on a slow machine too.)"""
    run_cli(
        "train", *TINY, "trainer.max_steps=100000", "+trainer.max_time=00:00:00:05", "trainer.val_check_interval=50",
        "scheduler.budget=time", "scheduler.min_lr_ratio=0.1", "optimizer.lr=1e-3", f"hydra.run.dir={tmp_path}/run",
    )  # fmt: skip
    lrs = next(values for tag, values in scalars(tmp_path / "run").items() if tag.startswith("lr"))
    steps = json.loads((tmp_path / "run" / "metrics.json").read_text())["step"]
    assert 10 < steps < 100000 and len(lrs) >= 10  # stopped by the clock
    after_warmup = [lr for _, lr in lrs[2:]]
    assert all(a >= b for a, b in itertools.pairwise(after_warmup))  # a decay …
    assert after_warmup[0] > 9e-4 and after_warmup[-1] < 1.2e-4  # … from the peak to near the floor (1e-4)


def test_resume_continues_from_the_saved_step(run_cli, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    run_cli(
        "train",
        *TINY,
        "callbacks.checkpoint.every_n_steps=2",
        "callbacks.checkpoint.keep_last_k=2",
        f"hydra.run.dir={first}",
    )
    step_files = sorted(p.name for p in (first / "checkpoints").glob("step*.ckpt"))
    assert step_files == ["step000004.ckpt", "step000006.ckpt"], step_files  # every 2 steps, last 2 kept
    last = first / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] == 6

    run_cli("train", *TINY, "trainer.max_steps=10", f"ckpt_path={last}", f"hydra.run.dir={second}")
    resumed = torch.load(second / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 10
    # The optimizer continued rather than restarting: Adam's step counter went on from 6.
    assert next(iter(resumed["optimizer_states"][0]["state"].values()))["step"] == 10
    steps = [step for step, _ in scalars(second)["train/loss"]]
    assert steps == [6, 7, 8, 9], steps  # TensorBoard counts from 0: the first run logged 0..5, none is redone


@pytest.mark.parametrize(("encoder", "attention", "task"), [("lstm", "local", "clm"), ("cnn", "global", "mlm")])
def test_training_on_a_local_text_file(run_cli, tmp_path, encoder, attention, task):
    """The issue's own example: attnfit-train encoder=lstm attention=local data=files data.train=corpus.txt task=clm."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"the cat number {i} sat on the mat and looked at dog {i % 7} ." for i in range(400)))
    run_dir = tmp_path / "run"
    run_cli(
        "train",
        *TINY,
        f"encoder={encoder}",
        f"attention={attention}",
        "data=files",
        f"data.train={corpus}",
        f"task={task}",
        f"hydra.run.dir={run_dir}",
    )
    assert (run_dir / "checkpoints" / "last.ckpt").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["encoder=rnn"], "Available options in 'encoder'"),
        (["attention=sparse"], "Available options in 'attention'"),
        (["task=translate"], "Available options in 'task'"),
        (["attention=local", "attention.window=64"], "attention.window=64 is not smaller than data.seq_len=32"),
        (["attention=self", "+attention.score=concat"], "attention=self always uses scaled dot-product"),
        (["encoder=lstm", "encoder.bidirectional=true", "task=clm"], "cannot be causal"),
        (["attention.num_heads=3"], "attention.num_heads=3 does not divide model.dim=32"),
        (["encoder.num_layers=0"], "encoder.num_layers=0 must be ≥ 1"),
        (["model.adaptive_cutoffs=[50,20]"], "model.adaptive_cutoffs=[50, 20] must be increasing ids ≥ 1"),
        (["optimizer.lr=-1"], "optimizer.lr=-1 must be > 0"),
        (["data=files", "data.train=/no/such/corpus.txt"], "/no/such/corpus.txt"),
        (["+trainer.max_step=3"], "unknown trainer option trainer.max_step (did you mean trainer.max_steps?)"),
        (["scheduler.warmup_steps=-5"], "scheduler.warmup_steps=-5 must be ≥ 0"),
        (["scheduler.budget=time"], "scheduler.budget=time needs trainer.max_time"),
        (["ckpt_path=/no/such.ckpt"], "checkpoint /no/such.ckpt does not exist"),
    ],
)
def test_bad_input_stops_with_one_clear_message(run_cli, args, expected):
    proc = run_cli("train", *TINY, *args, check=False)
    assert proc.returncode != 0
    assert expected in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "Epoch" not in proc.stdout  # stopped before any training


def test_bad_data_files_are_explained(run_cli, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \n")
    proc = run_cli("train", *TINY, "data=files", f"data.train={empty}", check=False)
    assert proc.returncode == 2 and "empty" in proc.stderr.lower() and "Traceback" not in proc.stderr

    table = tmp_path / "table.csv"
    table.write_text("body,label\nhello there,1\nbye now,0\n")
    proc = run_cli("train", *TINY, "data=files", f"data.train={table}", check=False)
    assert proc.returncode == 2 and "'text'" in proc.stderr and "body" in proc.stderr, proc.stderr


@pytest.mark.parametrize("preset", ["fast_dev_run", "limit", "overfit"])
def test_debug_presets_and_csv_logger_run(run_cli, tmp_path, preset):
    run_dir = tmp_path / "run"
    run_cli("train", *TINY, f"debug={preset}", "trainer.max_steps=4", "logger=csv", f"hydra.run.dir={run_dir}")
    assert (run_dir / "csv" / "metrics.csv").read_text().startswith(("epoch", "lr", "step", "train", "val"))
    assert (run_dir / "checkpoints" / "last.ckpt").exists()


def test_eval_scores_a_language_model_on_a_given_test_file(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    run_cli("train", *TINY, "task=mlm", f"hydra.run.dir={run_dir}")
    corpus = tmp_path / "held_out.txt"
    corpus.write_text("\n".join(f"the cat {i} sees the dog ." for i in range(40)) + "\n")
    out = tmp_path / "eval.json"
    run_cli("eval", f"checkpoint={run_dir}", "data=files", f"data.train={corpus}", f"data.test={corpus}", f"out={out}")
    record = json.loads(out.read_text())
    assert record["split"] == "test" and record["metrics"]["loss"] > 0  # data.test= is the split scored
    long = " ".join(["the <mask> sleeps ."] * 40)
    proc = run_cli("predict", f"checkpoint={run_dir}", f"text={long}", check=False)
    assert proc.returncode == 2 and "longer than this model's 32 positions" in proc.stderr
    proc = run_cli("predict", f"checkpoint={run_dir}", "text=  ", check=False)
    assert proc.returncode == 2 and "text= is empty" in proc.stderr
