"""One owner per run directory: a live run's directory refuses a second run (two real processes), a stale lock of a
dead process is named and taken over, runs starting at once never share it, and a finished run's directory refuses
a new run unless it continues it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from tests.conftest import TINY


def _env(cache_dir) -> dict:
    return {**os.environ, "ATTNFIT_CACHE_DIR": str(cache_dir), "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_a_second_run_into_a_live_run_directory_stops_naming_the_owner(run_cli, tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    slow = [o for o in TINY if not o.startswith("trainer.max_steps")] + ["trainer.max_steps=400"]
    first = subprocess.Popen(
        [sys.executable, "-m", "attnfit.train", *slow, f"hydra.run.dir={run_dir}"],
        env=_env(cache_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "run.lock").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        owner = json.loads((run_dir / "run.lock").read_text())
        assert owner["pid"] == first.pid
        second = run_cli("train", *TINY, f"hydra.run.dir={run_dir}", check=False)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"is in use by another run (PID {first.pid}" in second.stderr
        log = run_dir / "train.log"
        while "first step done" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        first.terminate()  # SIGTERM while training: the run saves its last step and exits cleanly
        first.wait(timeout=120)
    assert first.returncode == 143
    assert not (run_dir / "run.lock").exists()  # released by its owner on the way out


def test_a_stale_lock_of_a_dead_process_is_taken_over(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run_dir / "run.lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "started": 0}))
    proc = run_cli("train", *TINY, f"hydra.run.dir={run_dir}")
    assert f"took over the stale lock of PID {dead.pid}" in proc.stdout + proc.stderr
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
    assert not (run_dir / "run.lock").exists()


def test_a_finished_run_directory_refuses_a_new_run_but_continues_with_ckpt_path_auto(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    run_cli("train", *TINY, f"hydra.run.dir={run_dir}")
    again = run_cli("train", *TINY, "seed=7", f"hydra.run.dir={run_dir}", check=False)
    assert again.returncode == 2 and "already holds a run" in again.stderr and "ckpt_path=auto" in again.stderr
    run_cli("train", *TINY, "ckpt_path=auto", "trainer.max_steps=8", f"hydra.run.dir={run_dir}")
    assert json.loads((run_dir / "metrics.json").read_text())["step"] == 8

    from attnfit.pretrained import resolve_checkpoint

    recorded = resolve_checkpoint(run_dir)  # the best checkpoint as the run's own last.ckpt names it
    assert recorded.name.startswith("best-step")
    stray = run_dir / "checkpoints" / "best-step999999.ckpt"  # a higher step in its name, from elsewhere
    shutil.copy(run_dir / "checkpoints" / "last.ckpt", stray)
    assert resolve_checkpoint(run_dir) == recorded


def test_resume_refuses_overrides_it_cannot_honour(run_cli, tmp_path):
    """The checkpoint has the architecture, vocabulary and optimizer state baked in: changing them on resume is
    refused in one line instead of being silently dropped (while config.yaml would claim them)."""
    run_dir = tmp_path / "run"
    run_cli("train", *TINY, f"hydra.run.dir={run_dir}")
    for override, named in (
        ("optimizer.lr=0.5", "optimizer"),
        ("tokenizer=char", "tokenizer"),
        ("seed=3", "seed"),
        ("data_seed=3", "data_seed"),
    ):
        proc = run_cli("train", *TINY, "ckpt_path=auto", override, f"hydra.run.dir={run_dir}", check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-1500:]
        assert f"cannot change {named} (" in proc.stderr and "in the checkpoint" in proc.stderr
    run_cli("train", *TINY, "ckpt_path=auto", "trainer.max_steps=8", f"hydra.run.dir={run_dir}")  # limits may change


def test_a_live_run_keeps_its_lock_however_stale_its_file_looks_and_one_of_many_starters_wins(tmp_path):
    """The kernel's lock decides, not the file's record: a live holder whose file names a dead process is not
    removed, and of runs starting at once into a directory with a stale lock exactly one holds it at a time."""
    import threading

    from attnfit.errors import ConfigError
    from attnfit.runs import lock

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = json.dumps({"pid": dead.pid, "host": os.uname().nodename, "started": 0})
    path = tmp_path / lock.LOCK_FILE
    with lock.run_directory_lock(tmp_path):
        path.write_text(stale)  # a live lock whose record looks stale
        try:
            with lock.run_directory_lock(tmp_path):
                raise AssertionError("a held lock was taken over")
        except ConfigError as error:
            assert "is in use by another run" in str(error)
    assert not path.exists()

    path.write_text(stale)
    start, holders, peak, outcomes = threading.Barrier(6), [0], [0], []
    guard = threading.Lock()

    def starter() -> None:
        start.wait()
        try:
            with lock.run_directory_lock(tmp_path):
                with guard:
                    holders[0] += 1
                    peak[0] = max(peak[0], holders[0])
                time.sleep(0.3)
                with guard:
                    holders[0] -= 1
            outcomes.append("ran")
        except ConfigError:
            outcomes.append("refused")

    threads = [threading.Thread(target=starter) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == [1] and outcomes.count("ran") >= 1 and len(outcomes) == 6, outcomes
    assert not path.exists()


def test_without_flock_the_lock_names_its_owner_from_the_instant_it_exists(tmp_path, monkeypatch):
    """Where the filesystem has no flock the file's existence is the lock, and a second run that finds it empty
    takes it for a stale one, so it must never be seen empty: what another process reads the moment each call
    creates the lock file is recorded."""
    from attnfit.runs import lock

    monkeypatch.setattr(lock, "fcntl", None)
    seen: list[str] = []

    def observed(call):
        def wrapper(*args, **kwargs):
            result = call(*args, **kwargs)
            path = tmp_path / lock.LOCK_FILE
            seen.append(path.read_text() if path.exists() else "<none>")
            return result

        return wrapper

    monkeypatch.setattr(lock.os, "link", observed(os.link))
    monkeypatch.setattr(lock.os, "open", observed(os.open))
    with lock.run_directory_lock(tmp_path):
        pass
    created = [text for text in seen if text != "<none>"]  # os.open may also open other files first
    assert created and all(json.loads(text)["pid"] == os.getpid() for text in created), seen
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # released, no temporary left behind

    def no_hard_links(*args, **kwargs):
        raise PermissionError("this filesystem has no hard links")

    monkeypatch.setattr(lock.os, "link", no_hard_links)
    with lock.run_directory_lock(tmp_path):
        assert json.loads((tmp_path / lock.LOCK_FILE).read_text())["pid"] == os.getpid()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_filesystem_without_flock_falls_back_to_the_file_lock_quietly(tmp_path, monkeypatch, caplog):
    """flock refused (as some network filesystems do): the empty file its attempt created is not then taken for a
    stale lock, and the fallback lock still holds and is released."""
    from attnfit.runs import lock

    def refused(fd, operation):
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(lock.fcntl, "flock", refused)
    with caplog.at_level("WARNING", logger="attnfit"), lock.run_directory_lock(tmp_path):
        assert json.loads((tmp_path / lock.LOCK_FILE).read_text())["pid"] == os.getpid()
    assert "stale" not in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == []
