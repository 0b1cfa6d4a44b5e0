"""Faults that must not lose work: NaN/Inf, a truncated checkpoint, a crash while saving."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attnfit.training.checkpoint_io import AtomicCheckpointIO
from tests.conftest import TINY

DIVERGE = ["optimizer.lr=1e30", "trainer.gradient_clip_val=null", "scheduler.warmup_steps=0"]


def test_non_finite_training_stops_within_one_step_and_keeps_the_last_checkpoint(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("train", *TINY, *DIVERGE, f"hydra.run.dir={run_dir}", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "non-finite loss or gradient at step 1 " in proc.stderr  # the first update blew up; step 1 is caught
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()  # nothing written after the fault


def test_skip_policy_drops_bad_batches_up_to_a_limit(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("train", *TINY, *DIVERGE, "callbacks.nonfinite.policy=skip", "callbacks.nonfinite.max_skips=2",
                   f"hydra.run.dir={run_dir}", check=False)
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
        f.write(b"partial bytes")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"step": 2, "weights": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in Path(tmp_path).iterdir()] == ["last.ckpt"]  # no temporary file left behind
