"""A Python that has already imported what every ``python -m attnfit.<verb>`` imports, and forks for each run.

On the test machine importing Lightning, torch and their dependencies costs about ten seconds, most of a tiny CLI
run; the suite starts a few hundred of them. Each request here forks this warm process: the child changes to the
run's directory, takes its environment and arguments, points stdout/stderr at files and runs the verb's module as
``__main__``, exactly as ``python -m`` would, then exits normally (atexit handlers and all). The parent has only
imported modules, never run anything, so every child starts from the same clean state.

Protocol (file descriptors given on the command line): one JSON request per line ``{"module", "args", "cwd",
"env", "stdout", "stderr", "timeout"}``, one JSON reply per line ``{"returncode", "timed_out"}``.
"""

from __future__ import annotations

import faulthandler
import json
import os
import runpy
import signal
import sys
import time


def _child(request: dict) -> None:
    """Runs in the forked child; never returns (raises SystemExit)."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    faulthandler.enable()  # a hang's SIGABRT (see _wait) writes the Python stack to the run's stderr
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.argv = [request["module"], *request["args"]]
    sys.path[0] = request["cwd"]  # as ``python -m``: the working directory first on the path
    runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    raise SystemExit(0)


def _wait(pid: int, timeout: float) -> tuple[int, bool]:
    """The child's exit code, and whether it ran past ``timeout``: then SIGABRT first, for faulthandler to write its
    Python stack to the run's stderr, and SIGKILL if it is still there 10 s later."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), False
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGABRT)
            for _ in range(500):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    return os.waitstatus_to_exitcode(status), True
                time.sleep(0.02)
            os.kill(pid, signal.SIGKILL)
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), True
        time.sleep(0.02)


def serve(requests_fd: int, replies_fd: int) -> None:
    requests, replies = os.fdopen(requests_fd, "r"), os.fdopen(replies_fd, "w")
    for line in requests:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            requests.close()
            replies.close()
            _child(request)
        returncode, timed_out = _wait(pid, float(request["timeout"]))
        replies.write(json.dumps({"returncode": returncode, "timed_out": timed_out}) + "\n")
        replies.flush()


if __name__ == "__main__":
    # What every verb imports; nothing is run, so no Python thread or state exists to fork. attnfit.data brings
    # datasets, pandas and pyarrow (0.65 s of every train and predict, measured). pyarrow's jemalloc starts a native
    # background thread on import, which a forked child lacks; allocation in the child still works (the whole suite).
    import hydra  # noqa: F401
    import rich.progress  # noqa: F401
    import torch.utils.tensorboard  # noqa: F401

    import attnfit.cli
    import attnfit.data
    import attnfit.recipes.run
    import attnfit.tasks  # noqa: F401

    serve(int(sys.argv[1]), int(sys.argv[2]))
