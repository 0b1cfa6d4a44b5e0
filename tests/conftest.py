"""Shared fixtures: a session-wide cache (generated data, tokenizers) and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Two test workers share the two cores (pyproject's addopts): one thread each, in-process and in every CLI run the
# tests start, since a second thread per process only waits for a busy core.
os.environ["OMP_NUM_THREADS"] = "1"
import torch  # after the thread setting, which torch reads when imported

torch.set_num_threads(1)

# A tiny, fast configuration for CLI runs: every knob that costs time is turned down.
TINY = [
    "data.seq_len=32",
    "data.batch_size=8",
    "model.dim=32",
    "encoder.num_layers=1",
    "attention.num_heads=2",
    "tokenizer.vocab_size=300",
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "scheduler.warmup_steps=2",
    "callbacks.progress_bar=none",
]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("attnfit-cache")


@pytest.fixture
def run_cli(cache_dir: Path, tmp_path: Path):
    """Run ``python -m attnfit.<verb> ARGS`` in ``tmp_path``; returns the CompletedProcess."""

    def run(verb: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "ATTNFIT_CACHE_DIR": str(cache_dir), "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        proc = subprocess.run(
            [sys.executable, "-m", f"attnfit.{verb}", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"attnfit.{verb} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    return run
