"""The test harness itself: a CLI run that hangs must say where."""

import os
import sys
import time

import pytest

from tests.conftest import HungProcess, cli_env, run_fresh

HANGS = """
import multiprocessing
import time


def wait_in_worker():
    time.sleep(120)


if __name__ == "__main__":  # a spawned worker that never ends, as a stuck DDP worker would
    worker = multiprocessing.get_context("spawn").Process(target=wait_in_worker)
    worker.start()
    worker.join()
"""


def test_a_hung_run_ends_with_the_python_stack_of_every_process(tmp_path):
    (tmp_path / "hangs.py").write_text(HANGS)
    started = time.monotonic()
    with pytest.raises(HungProcess) as caught:
        run_fresh([sys.executable, "hangs.py"], tmp_path, dict(os.environ), timeout=10)  # the worker has long started
    assert time.monotonic() - started < 40  # SIGABRT ended both processes; nothing waited for the worker's sleep
    message = str(caught.value)
    assert "timed out after 10 seconds" in message
    assert "in wait_in_worker" in message  # the spawned worker's stack
    assert "in join" in message and 'File "' in message  # the parent's, waiting for it


def test_a_run_that_ends_returns_its_output(tmp_path):
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    done = run_fresh([sys.executable, "-c", code], tmp_path, dict(os.environ), timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")


def test_a_hung_run_forked_from_the_warm_interpreter_ends_with_its_stack(warm_python, cache_dir, tmp_path):
    if warm_python is None:
        pytest.skip("ATTNFIT_TEST_SUBPROCESS=1 turns the warm interpreter off")
    (tmp_path / "sleeps_forever.py").write_text("import time\n\n\ndef wait():\n    time.sleep(120)\n\n\nwait()\n")
    with pytest.raises(HungProcess) as caught:
        warm_python.run("sleeps_forever", [], tmp_path, cli_env(cache_dir), timeout=3)
    assert "line 5 in wait" in str(caught.value)
