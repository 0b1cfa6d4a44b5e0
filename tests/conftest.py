"""Shared fixtures: a session-wide cache (generated data, tokenizers) and a CLI runner."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
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


class WarmPython:
    """``tests/warm_python.py`` in a subprocess: ``python -m attnfit.<verb>`` without the import time (see there)."""

    def __init__(self, env: dict[str, str], scratch: Path) -> None:
        self.env, self.scratch, self.calls, self.lock = env, scratch, 0, threading.Lock()
        requests_read, self._requests = os.pipe()
        self._replies, replies_write = os.pipe()
        script = Path(__file__).with_name("warm_python.py")
        self.process = subprocess.Popen(
            [sys.executable, str(script), str(requests_read), str(replies_write)],
            env=env,
            pass_fds=(requests_read, replies_write),
            stdin=subprocess.DEVNULL,
        )
        os.close(requests_read)
        os.close(replies_write)
        self.requests, self.replies = os.fdopen(self._requests, "w"), os.fdopen(self._replies, "r")

    def run(self, module: str, args: list[str], cwd: Path, env: dict[str, str], timeout: float):
        with self.lock:
            self.calls += 1
            out, err = self.scratch / f"{self.calls}.out", self.scratch / f"{self.calls}.err"
            request = {"module": module, "args": args, "cwd": str(cwd), "env": env, "timeout": timeout}
            self.requests.write(json.dumps({**request, "stdout": str(out), "stderr": str(err)}) + "\n")
            self.requests.flush()
            reply = json.loads(self.replies.readline())
        stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
        returncode = reply["returncode"]
        if reply["timed_out"]:
            raise HungProcess([module, *args], timeout, stdout, stderr)
        return subprocess.CompletedProcess([sys.executable, "-m", module, *args], returncode, stdout, stderr)

    def same_env(self, env: dict[str, str]) -> bool:
        def settled(e: dict[str, str]) -> dict[str, str]:  # pytest names the current test in PYTEST_CURRENT_TEST
            return {k: v for k, v in e.items() if not k.startswith("PYTEST_")}

        return settled(env) == settled(self.env)

    def close(self) -> None:
        self.requests.close()
        self.process.wait(timeout=30)


def cli_env(cache_dir: Path) -> dict[str, str]:
    """The environment of every CLI run: the session's cache, and no network (the Hub and datasets offline)."""
    offline = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    return {**os.environ, "ATTNFIT_CACHE_DIR": str(cache_dir), **offline, "PYTHONUNBUFFERED": "1"}


# The longest test files first (by their summed test times, measured 2026-12-03): each worker runs one file at a time
# (--dist loadfile), and a long file started last keeps one worker busy while the other idles.
LONGEST_FIRST = [
    "tests/cli/test_qa.py",
    "tests/cli/test_reliability.py",
    "tests/cli/test_finetune.py",
    "tests/cli/test_tasks.py",
    "tests/cli/test_scale.py",
    "tests/cli/test_train.py",
    "tests/cli/test_search.py",
    "tests/cli/test_seq2seq.py",
    "tests/test_transfer_benchmark.py",
    "tests/cli/test_run_directory.py",
    "tests/cli/test_integrations.py",
    "tests/cli/test_errors.py",
    "tests/cli/test_distributed_metrics.py",
    "tests/models/test_qa.py",
    "tests/serve/test_live.py",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: file order kept


_warm: WarmPython | None = None


@pytest.fixture(scope="session", autouse=True)
def warm_python(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One per test worker; ``ATTNFIT_TEST_SUBPROCESS=1`` turns it off (every CLI run a fresh interpreter)."""
    global _warm
    if os.environ.get("ATTNFIT_TEST_SUBPROCESS") == "1":
        yield None
        return
    _warm = WarmPython(cli_env(cache_dir), tmp_path_factory.mktemp("warm-python"))
    yield _warm
    _warm.close()
    _warm = None


DENORMAL_PROBE = """
from pathlib import Path

import lightning as L
import torch


class DenormalProbe(L.Callback):  # records whether the training loop's arithmetic flushes subnormal floats
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            flushed = bool(torch.tensor([1e-39]) * 1.0 == 0)
            Path(f"flushed-rank{trainer.global_rank}.txt").write_text(str(flushed))
"""


def denormal_probe(run_cwd: Path) -> str:
    """Writes a probe callback module into ``run_cwd`` (the CLI's working directory) and returns the override that
    adds it: each process then writes ``flushed-rankR.txt``, whether its training loop flushes subnormal floats."""
    (run_cwd / "denormal_probe.py").write_text(DENORMAL_PROBE)
    return "+callbacks.extra.probe._target_=denormal_probe.DenormalProbe"


def flushed(run_cwd: Path) -> dict[int, bool]:
    """What each process's probe recorded, by rank."""
    files = run_cwd.glob("flushed-rank*.txt")
    return {int(path.stem.removeprefix("flushed-rank")): path.read_text() == "True" for path in files}


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """A run's TensorBoard scalars: tag -> [(step, value), …]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


FRESH_PROCESS_ARGS = ("trainer=ddp", "trainer=fsdp")  # launchers that re-execute the command line: the real thing


def python_m(module: str, args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300):
    """``python -m MODULE ARGS`` in ``cwd``: forked from the warm interpreter when ``env`` is the one it started
    with (a module may have read an environment variable when it was imported) and no DDP/FSDP launcher has to
    re-execute the command line; otherwise a fresh interpreter."""
    launcher = any(a.startswith(FRESH_PROCESS_ARGS) for a in args)
    if _warm is None or launcher or not _warm.same_env(env):
        return run_fresh([sys.executable, "-m", module, *args], cwd, env, timeout)
    return _warm.run(module, list(args), cwd, env, timeout)


class HungProcess(subprocess.TimeoutExpired):
    """A run past its time limit; the message ends with its stderr, where every process wrote its Python stack."""

    def __str__(self) -> str:
        return f"{super().__str__()}; the end of stderr, stacks included:\n{(self.stderr or '')[-12000:]}"


def run_fresh(command: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """``subprocess.run`` in a process group of its own. Past ``timeout`` every process in the group (DDP's spawned
    workers, a grandchild holding the output pipes) gets SIGABRT, one after the other, before SIGKILL, and
    faulthandler writes its Python stack to stderr: a hang says where it hung."""
    env = {**env, "PYTHONFAULTHANDLER": "1"}
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
    with subprocess.Popen(command, cwd=cwd, env=env, start_new_session=True, **pipes) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _abort_one_by_one(proc.pid)
            try:
                stdout, stderr = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                stdout, stderr = proc.communicate()
            raise HungProcess(command, timeout, stdout, stderr) from None
        except BaseException:  # Ctrl-C: its own session would keep the run going
            _signal_group(proc.pid, signal.SIGKILL)
            raise
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def _abort_one_by_one(group: int) -> None:
    """SIGABRT to each process of ``group`` in turn: their stacks share one stderr, and dumps made at once interleave
    mid-line."""
    for pid in _group_members(group):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGABRT)
        time.sleep(0.3)


def _group_members(group: int) -> list[int]:
    """The processes in process group ``group`` (from Linux's /proc), by pid."""
    members = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):  # a process may exit while it is read
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) == group:
                members.append(int(entry.name))
    return sorted(members)


def _signal_group(group: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # every process of the group has exited
        os.killpg(group, sig)


@pytest.fixture
def run_cli(cache_dir: Path, tmp_path: Path):
    """Run ``python -m attnfit.<verb> ARGS`` in ``tmp_path`` (see :func:`python_m`); returns the CompletedProcess."""

    def run(verb: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = python_m(f"attnfit.{verb}", list(args), tmp_path, cli_env(cache_dir))
        if check and proc.returncode != 0:
            raise AssertionError(
                f"attnfit.{verb} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    return run
