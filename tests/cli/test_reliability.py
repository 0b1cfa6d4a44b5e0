"""Faults that must not lose work: NaN/Inf, a truncated checkpoint, a crash while saving, kill -9, SIGTERM, Ctrl-C."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from attnfit.errors import AttnfitError
from attnfit.options import write_text
from attnfit.training.checkpoint_io import AtomicCheckpointIO
from tests.conftest import TINY, cli_env, python_m

DIVERGE = ["optimizer.lr=1e30", "trainer.gradient_clip_val=null", "scheduler.warmup_steps=0"]


def test_non_finite_training_stops_within_one_step_and_keeps_the_last_checkpoint(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("train", *TINY, *DIVERGE, f"hydra.run.dir={run_dir}", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "non-finite loss or gradient at step 1 " in proc.stderr  # the first update blew up; step 1 is caught
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()  # nothing written after the fault


def test_skip_policy_drops_bad_batches_up_to_a_limit(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(
        "train",
        *TINY,
        *DIVERGE,
        "callbacks.nonfinite.policy=skip",
        "callbacks.nonfinite.max_skips=2",
        f"hydra.run.dir={run_dir}",
        check=False,
    )
    assert (proc.stdout + proc.stderr).count("batch skipped") == 2, proc.stdout[-2000:]
    assert proc.returncode == 2 and "after 2 skipped batches" in proc.stderr
    assert "policy=skip" not in proc.stderr  # no advice to do what it already does
    last = run_dir / "checkpoints" / "last.ckpt"
    assert f"Last good checkpoint: {last}" in proc.stderr
    torch.load(last, weights_only=True)  # intact


def test_resume_from_a_run_directory_skips_a_truncated_checkpoint(run_cli, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    run_cli("train", *TINY, "callbacks.checkpoint.every_n_steps=2", f"hydra.run.dir={first}")
    last = first / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # as if the machine died mid-write
    proc = run_cli("train", *TINY, "trainer.max_steps=8", f"ckpt_path={first}", f"hydra.run.dir={second}")
    assert "skipped last.ckpt" in proc.stdout + proc.stderr and "not a readable checkpoint" in proc.stdout + proc.stderr
    resumed = torch.load(second / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 8


def test_ckpt_path_auto_starts_fresh_then_resumes_in_place(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    run_cli("train", *TINY, "ckpt_path=auto", f"hydra.run.dir={run_dir}")
    run_cli("train", *TINY, "ckpt_path=auto", "trainer.max_steps=9", f"hydra.run.dir={run_dir}")
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 9


def test_a_crash_while_saving_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "weights": torch.ones(3)}, path)

    def dies_halfway(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"partial bytes")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"step": 2, "weights": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in Path(tmp_path).iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_temporaries_of_dead_writers_are_removed_by_the_next_write(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f".last.ckpt.tmp-{int(dead.stdout)}-0a1b2c3d"  # a writer killed mid-write
    orphan.write_bytes(b"half a checkpoint")
    orphan_dir = tmp_path / f".rows.tmp-{int(dead.stdout)}-0a1b2c3e"
    orphan_dir.mkdir()
    live = tmp_path / f".best.ckpt.tmp-{os.getpid()}-0a1b2c3f"  # a writer still at work: left alone
    live.write_bytes(b"in progress")
    AtomicCheckpointIO().save_checkpoint({"step": 1}, tmp_path / "last.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "last.ckpt"])


def test_result_files_are_written_whole_or_not_at_all(tmp_path):
    result = tmp_path / "metrics.json"
    write_text(result, '{"f1": 0.5}\n')
    with pytest.raises(UnicodeEncodeError):  # the writer fails half-way through the new text
        write_text(result, '{"f1": 0.9, "note": "\udc80"}\n')
    assert result.read_text() == '{"f1": 0.5}\n' and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    with pytest.raises(AttnfitError, match=r"^cannot write .*metrics.json/out.json: "):  # a file where a folder goes
        write_text(result / "out.json", "{}")


# --- Exact resume: kill -9, SIGTERM and Ctrl-C at random steps end where an uninterrupted run ends ---------------

# MLM (random masks), dropout on, an epoch of 8 batches (so resumes land mid-epoch and on epoch boundaries),
# a checkpoint after every step.
EXACT = [
    *TINY,
    "task=mlm",
    "data.num_train_docs=12",
    "data.num_val_docs=5",
    "trainer.max_steps=20",
    "trainer.val_check_interval=5",
    "trainer.deterministic=true",
    "callbacks.checkpoint.every_n_steps=1",
]


def _train(cache_dir: Path, run_dir: Path, *args: str) -> subprocess.Popen:
    """A training run in its own fresh process, to be signalled or killed."""
    env = {**os.environ, "ATTNFIT_CACHE_DIR": str(cache_dir), "HF_DATASETS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "attnfit.train", *EXACT, f"hydra.run.dir={run_dir}", *args]
    return subprocess.Popen(cmd, cwd=run_dir.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _train_to_end(cache_dir: Path, run_dir: Path, *args: str) -> str:
    """A training run nobody interrupts (forked from the warm interpreter, see tests/warm_python.py); its stderr."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    proc = python_m("attnfit.train", [*EXACT, f"hydra.run.dir={run_dir}", *args], run_dir.parent, cli_env(cache_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


def _interrupt_at(proc: subprocess.Popen, run_dir: Path, step: int, signum: int) -> tuple[int, str]:
    """Send ``signum`` as soon as the checkpoint of ``step`` appears; returns (exit code, stderr)."""
    marker = run_dir / "checkpoints" / f"step{step:06d}.ckpt"
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    return proc.returncode, stderr


def _trail(run_dir: Path) -> str:
    """The interrupts and resumes of a run, from its log: what a failure of an exact-resume test needs to be
    reproduced (the steps are drawn at random and the stops land where the signal's timing puts them)."""
    lines = (run_dir / "train.log").read_text().splitlines()
    events = [line for line in lines if any(k in line for k in ("received", "resuming from", "stopped after"))]
    names = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
    return "\n".join([*events, f"checkpoints: {names}"])


def _assert_same_state(resumed: Path, reference: Path) -> None:
    a = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(reference / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 20, _trail(resumed)
    assert a["lr_schedulers"] == b["lr_schedulers"], _trail(resumed)  # the same schedule position
    a_loop, b_loop = a["loops"]["fit_loop"], b["loops"]["fit_loop"]
    assert a_loop["state_dict"] == b_loop["state_dict"], _trail(resumed)  # the same data position
    # The counters behind it, but "completed": a final checkpoint written after the last batch's hooks and one
    # written in them (by a validation at that step) are both exact states to continue from.
    for key in ("epoch_progress", "epoch_loop.batch_progress"):
        for scope in ("total", "current"):
            a_count, b_count = a_loop[key][scope], b_loop[key][scope]
            assert {**a_count, "completed": 0} == {**b_count, "completed": 0}, f"{key}\n{_trail(resumed)}"
    for name, tensor in b["state_dict"].items():
        assert torch.equal(a["state_dict"][name], tensor), f"{name}\n{_trail(resumed)}"  # bit-identical weights
    for key, state in b["optimizer_states"][0]["state"].items():
        assert torch.equal(a["optimizer_states"][0]["state"][key]["exp_avg"], state["exp_avg"])


@pytest.fixture(scope="module")
def uninterrupted(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    _train_to_end(cache_dir, run_dir)
    return run_dir


def test_kill_9_at_random_steps_then_resume_gives_the_same_final_weights(cache_dir, tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    first, second = sorted(random.Random().sample(range(2, 16), 2))
    for step in (first, second):
        code, stderr = _interrupt_at(_train(cache_dir, run_dir, "ckpt_path=auto"), run_dir, step, signal.SIGKILL)
        assert code == -signal.SIGKILL, f"not killed at step {step}: {stderr[-2000:]}"
    _train_to_end(cache_dir, run_dir, "ckpt_path=auto")
    _assert_same_state(run_dir, uninterrupted)


def test_sigterm_and_ctrl_c_save_a_checkpoint_exit_cleanly_and_resume_exactly(cache_dir, tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    rng = random.Random()
    step = rng.randint(2, 9)
    for signum, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        proc = _train(cache_dir, run_dir, "ckpt_path=auto")
        returncode, stderr = _interrupt_at(proc, run_dir, step, signum)
        assert returncode == code, stderr[-3000:]
        assert f"stopped: {signum.name} received: training stopped after step" in stderr
        assert "Traceback" not in stderr
        saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
        assert step <= saved < 20
        assert json.loads((run_dir / "status.json").read_text())["status"] == "interrupted"
        # The stop can land a step or two after the signal: the next one is drawn past the step the resumed run
        # starts from, so that its checkpoint is one the resumed run writes (not one it never reaches).
        step = rng.randint(saved + 1, max(saved + 1, 17))
    _train_to_end(cache_dir, run_dir, "ckpt_path=auto")
    _assert_same_state(run_dir, uninterrupted)


# --- Exact continuation: a finished (or stopped) run continued with a larger max_steps equals one long run ---------

SPAN = "scheduler.decay_steps=20"  # the uninterrupted run's schedule span, kept fixed while max_steps grows


@pytest.fixture(scope="module")
def stopped_at_13(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run that ended on max_steps=13: mid-epoch (epochs are 8 batches), between two validations."""
    run_dir = tmp_path_factory.mktemp("stopped") / "run"
    _train_to_end(cache_dir, run_dir, "trainer.max_steps=13", SPAN)
    return run_dir


@pytest.mark.parametrize("checkpoint", ["last.ckpt", "step000011.ckpt", "best"])
def test_continuing_a_finished_run_from_any_of_its_checkpoints_is_exact(
    cache_dir, tmp_path, uninterrupted, stopped_at_13, checkpoint
):
    directory = stopped_at_13 / "checkpoints"
    path = next(directory.glob("best-*.ckpt")) if checkpoint == "best" else directory / checkpoint
    run_dir = tmp_path / "continued"
    _train_to_end(cache_dir, run_dir, "trainer.max_steps=20", SPAN, f"ckpt_path={path}")
    _assert_same_state(run_dir, uninterrupted)


def test_continuing_from_an_epoch_boundary_and_after_sigterm_is_exact(cache_dir, tmp_path, uninterrupted):
    boundary = tmp_path / "boundary"  # 16 steps = exactly two epochs
    _train_to_end(cache_dir, boundary, "trainer.max_steps=16", SPAN)
    continued = tmp_path / "continued-boundary"
    _train_to_end(cache_dir, continued, SPAN, f"ckpt_path={boundary / 'checkpoints' / 'last.ckpt'}")
    _assert_same_state(continued, uninterrupted)

    stopped = tmp_path / "sigterm"  # SIGTERM, resumed to its own end (13), then continued to 20
    code, stderr = _interrupt_at(_train(cache_dir, stopped, "trainer.max_steps=13", SPAN), stopped, 4, signal.SIGTERM)
    assert code == 143, stderr[-3000:]
    assert f"continue it exactly with the same command and ckpt_path={stopped}" in stderr
    _train_to_end(cache_dir, stopped, "trainer.max_steps=13", SPAN, "ckpt_path=auto")
    continued = tmp_path / "continued-sigterm"
    _train_to_end(cache_dir, continued, SPAN, f"ckpt_path={stopped / 'checkpoints' / 'last.ckpt'}")
    _assert_same_state(continued, uninterrupted)


def test_resuming_a_run_directory_takes_its_newest_checkpoint_and_last_ckpt_on_a_clock_tie(stopped_at_13, tmp_path):
    from attnfit.pretrained import newest_valid_checkpoint

    run_dir = tmp_path / "run"
    shutil.copytree(stopped_at_13 / "checkpoints", run_dir / "checkpoints")
    files = sorted((run_dir / "checkpoints").glob("*.ckpt"))
    assert {"last.ckpt", "step000013.ckpt"} <= {f.name for f in files}
    tick = time.time_ns()
    for path in files:  # all written within one tick of the file system's clock
        os.utime(path, ns=(tick, tick))
    assert newest_valid_checkpoint(run_dir)[0].name == "last.ckpt"
    os.utime(run_dir / "checkpoints" / "step000012.ckpt", ns=(tick + 1, tick + 1))
    assert newest_valid_checkpoint(run_dir)[0].name == "step000012.ckpt"


def test_the_suggested_continue_command_keeps_the_schedule(stopped_at_13):
    from omegaconf import OmegaConf

    from attnfit.recipes.run import continue_overrides

    cfg = OmegaConf.create({"scheduler": {"name": "cosine", "decay_steps": None}, "trainer": {"max_steps": 13}})
    last = stopped_at_13 / "checkpoints" / "last.ckpt"
    assert continue_overrides(cfg, last, 13) == f"ckpt_path={last} trainer.max_steps=26 scheduler.decay_steps=13"
    # Cut short by its time limit at step 13 of 30: the cosine still spans 30, and the limit must go.
    cfg.trainer.update(max_steps=30, max_time="00:00:10:00")
    expected = f"ckpt_path={last} trainer.max_steps=30 scheduler.decay_steps=30 trainer.max_time=null"
    assert continue_overrides(cfg, last, 13) == expected
    cfg.scheduler.name = "constant"
    assert continue_overrides(cfg, last, 13) == f"ckpt_path={last} trainer.max_steps=30 trainer.max_time=null"
    cfg.trainer.update(max_steps=-1, max_time=None)  # by epochs: twice the steps, over the span it ran
    assert continue_overrides(cfg, last, 13) == f"ckpt_path={last} trainer.max_steps=26"
    # The run's own command line comes along, less what the continuation replaces; a time limit given there is
    # dropped rather than nulled (the key exists only through that "+").
    cfg.trainer.update(max_steps=30, max_time="00:00:10:00")
    command = ["experiment=x", "data.seq_len=64", "trainer.max_steps=30", "+trainer.max_time=00:00:10:00", "a=b c"]
    expected = f"experiment=x data.seq_len=64 'a=b c' ckpt_path={last} trainer.max_steps=30"
    assert continue_overrides(cfg, last, 13, command) == expected
    # A decay that ended with the time limit (scheduler.budget=time): as many steps again, at the schedule's end.
    cfg.scheduler.update(name="cosine", budget="time")
    expected = (
        f"ckpt_path={last} trainer.max_steps=26 scheduler.budget=steps scheduler.decay_steps=13 trainer.max_time=null"
    )
    assert continue_overrides(cfg, last, 13) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["trainer.max_step=3"], "unknown key trainer.max_step (did you mean trainer.max_steps?)"),
        (["encoder=lstm", "encoder.num_layer=3"], "unknown key encoder.num_layer (did you mean encoder.num_layers?)"),
        (["sed=3"], "unknown key sed (did you mean seed?); keys at the top level:"),
        (["seed=x"], "error: seed must be int, got 'x' (str)"),
        (["data_seed=-1"], "error: data_seed=-1 must be from 0 to 4294967295"),
        (["optimizer.lr=fast"], "error: optimizer.lr must be int or float, got 'fast' (str)"),
        (["flush_denormal=maybe"], "error: flush_denormal must be bool, got 'maybe' (str)"),
        (["callbacks/extra=null"], "a config group takes one of its configs (ema, swa); for none: '~callbacks.extra'"),
    ],
)
def test_unknown_keys_and_wrong_types_are_named_with_the_closest_valid_key(run_cli, args, expected):
    proc = run_cli("train", *args, check=False)
    assert proc.returncode in (1, 2) and expected in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_weights_with_nan_or_inf_are_never_written_as_a_checkpoint(tmp_path):
    """Every checkpoint on disk is a good one: a save with non-finite weights keeps the previous file, and the stop
    message names the newest checkpoint whose weights are verified finite (or says there is none)."""
    from types import SimpleNamespace

    from attnfit.training.callbacks import _last_good_checkpoint

    io, directory = AtomicCheckpointIO(), tmp_path / "checkpoints"
    good = {"state_dict": {"model.w": torch.ones(3)}, "global_step": 1}
    io.save_checkpoint(good, directory / "last.ckpt")
    for bad_value in (float("nan"), float("inf")):
        io.save_checkpoint({"state_dict": {"model.w": torch.tensor([1.0, bad_value])}}, directory / "last.ckpt")
        io.save_checkpoint({"state_dict": {"model.w": torch.tensor([bad_value])}}, directory / "best.ckpt")
    assert torch.load(directory / "last.ckpt", weights_only=True)["global_step"] == 1
    assert not (directory / "best.ckpt").exists()
    trainer = SimpleNamespace(default_root_dir=str(tmp_path))
    assert _last_good_checkpoint(trainer) == f"{directory / 'last.ckpt'} (weights verified finite)"
    assert _last_good_checkpoint(SimpleNamespace(default_root_dir=str(tmp_path / "empty"))).startswith("none")


def test_saving_last_at_the_end_follows_rank_zeros_decision(tmp_path):
    """Saving is collective: every rank must save or none. A rank that reads ``last.ckpt`` just after rank 0 wrote
    the final step would skip it and hang DDP (seen once in a fresh clone's ``trainer.strategy=ddp_spawn`` run), so
    the decision is rank 0's, broadcast, and the file a rank sees itself does not count."""
    from types import SimpleNamespace

    from attnfit.training.callbacks import SaveLastOnTrainEnd

    path = tmp_path / "last.ckpt"
    torch.save({"global_step": 5}, path)  # this rank sees the final step saved already
    saved: list[str] = []
    for rank_zero_holds_it, saves in ((False, 1), (True, 0)):
        saved.clear()
        trainer = SimpleNamespace(
            global_step=5,
            strategy=SimpleNamespace(broadcast=lambda local, held=rank_zero_holds_it: held),
            save_checkpoint=lambda checkpoint_path, **options: saved.append(checkpoint_path),
        )
        SaveLastOnTrainEnd(str(path)).on_train_end(trainer, None)
        assert len(saved) == saves
