"""A multirun killed mid-way and run again with the same command and sweep directory: completed runs are
skipped, the stopped one resumes from its newest checkpoint, the rest run; attnfit-report counts them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from attnfit.runs.report import collect_runs, summary
from tests.conftest import TINY


def test_a_killed_grid_rerun_redoes_nothing_completed_and_resumes_the_stopped_run(cache_dir, tmp_path):
    sweep = tmp_path / "sweep"
    tiny = [o for o in TINY if not o.startswith(("trainer.max_steps", "trainer.val_check_interval", "trainer.limit"))]
    command = [
        sys.executable, "-m", "attnfit.train", "-m", *tiny, "trainer.val_check_interval=6",
        "trainer.limit_val_batches=1", "callbacks.checkpoint.every_n_steps=5", "trainer.max_steps=6,30,7",
        f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    env = {**os.environ, "ATTNFIT_CACHE_DIR": str(cache_dir), "HF_DATASETS_OFFLINE": "1"}
    first = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 240
    while not list((sweep / "1" / "checkpoints").glob("step*.ckpt")):  # job 1 is under way: kill the sweep
        assert first.poll() is None and time.monotonic() < deadline, "the sweep ended before it could be killed"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert not (sweep / "1" / "status.json").exists() and not (sweep / "2").exists()
    done = json.loads((sweep / "0" / "status.json").read_text())
    assert done["status"] == "completed"
    kept = {p.name: p.stat().st_mtime_ns for p in (sweep / "0" / "checkpoints").iterdir()}

    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"skipped: {sweep / '0'} completed earlier" in again.stdout
    skipped = json.loads((sweep / "0" / "status.json").read_text())
    assert skipped["skipped"] == 1 and skipped["objective"] == done["objective"]
    assert {p.name: p.stat().st_mtime_ns for p in (sweep / "0" / "checkpoints").iterdir()} == kept  # not redone
    resumed = json.loads((sweep / "1" / "status.json").read_text())
    assert resumed["status"] == "completed" and resumed["resumed"] == 1
    assert "resuming from" in (sweep / "1" / "train.log").read_text()
    assert json.loads((sweep / "1" / "metrics.json").read_text())["step"] == 30
    fresh = json.loads((sweep / "2" / "status.json").read_text())
    assert fresh["status"] == "completed" and "resumed" not in fresh and "skipped" not in fresh
    assert "re-running the sweep skipped 1 completed and resumed 1 stopped" in summary(collect_runs(sweep))
