"""``attnfit-search`` end to end: Optuna trials in-process, pruning, resume, interrupted trials, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import TINY

BASE = [*TINY, "trainer.max_steps=6", "trainer.val_check_interval=2"]  # validations at steps 2, 4 and 6
BAD_LR, GOOD_LR = 1e-05, 0.003

# A search space with a terrible choice (lr 1e-5 learns nothing in 6 steps) and a pruner that stops any trial
# worse than the median of the completed ones; written under the test's tmp dir and found via hydra.searchpath.
TINY_SEARCH = f"""\
# @package _global_
search:
  n_trials: 4
  timeout: null
  sampler: {{name: tpe, seed: 42}}
  pruner: {{name: median, n_startup_trials: 1, n_warmup_steps: 0}}
  dir: searches/${{run_name}}
  params:
    optimizer.lr: {{type: categorical, choices: [{BAD_LR}, {GOOD_LR}]}}
    attention.num_heads: {{type: categorical, choices: [2, 3]}}
hydra:
  run:
    dir: ${{search.dir}}
"""


@pytest.fixture
def search(run_cli, tmp_path):
    """Run ``attnfit.cli.search`` on the tiny search space in ``tmp_path/search``; returns (run, search_dir)."""
    config_dir = tmp_path / "configs"
    (config_dir / "hparams_search").mkdir(parents=True)
    (config_dir / "hparams_search" / "tiny.yaml").write_text(TINY_SEARCH)
    search_dir = tmp_path / "search"

    def run(*args: str, check: bool = True):
        space = ["hparams_search=tiny", f"hydra.searchpath=[file://{config_dir}]", f"search.dir={search_dir}"]
        return run_cli("cli.search", *BASE, *space, *args, check=check)

    return run, search_dir


def load(search_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name=None, storage=f"sqlite:///{search_dir / 'study.db'}")


def status(search_dir: Path, number: int) -> dict:
    return json.loads((search_dir / f"trial_{number}" / "status.json").read_text())


def new_study(search_dir: Path) -> optuna.Study:
    search_dir.mkdir(parents=True)
    return optuna.create_study(study_name="tiny", storage=f"sqlite:///{search_dir / 'study.db'}")


def test_search_prunes_bad_trials_records_failures_and_reports_the_best(search):
    run, search_dir = search
    # The first three trials are fixed so that the outcome does not depend on the sampler's draws: a good run
    # completes, a bad learning rate is pruned at its first validation, 3 heads for dim 32 fail; the fourth is drawn.
    study = new_study(search_dir)
    for lr, heads in ((GOOD_LR, 2), (BAD_LR, 2), (GOOD_LR, 3)):
        study.enqueue_trial({"optimizer.lr": lr, "attention.num_heads": heads})
    proc = run()

    trials = load(search_dir).trials
    assert len(trials) == 4 and [t.state for t in trials[:3]] == [
        TrialState.COMPLETE,
        TrialState.PRUNED,
        TrialState.FAIL,
    ], [(t.number, t.state, t.params) for t in trials]
    assert list(trials[1].intermediate_values) == [2]  # stopped at its first validation
    pruned = status(search_dir, 1)
    assert pruned["status"] == "pruned" and "pruned at step 2" in pruned["error"]
    assert "optimizer.lr=1e-05" in pruned["overrides"]
    failed = status(search_dir, 2)
    assert failed["status"] == "failed" and "does not divide" in failed["error"]
    assert not (search_dir / "trial_2" / "checkpoints").exists()  # stopped before training
    for trial in trials:
        assert trial.user_attrs["run_dir"] == str(search_dir / f"trial_{trial.number}")
        assert status(search_dir, trial.number)["status"] in ("completed", "pruned", "failed")

    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = min(complete, key=lambda t: t.value)
    assert status(search_dir, best.number)["objective"] == best.value
    report = json.loads((search_dir / "best.json").read_text())
    assert report["objective"] == best.value and report["params"] == best.params
    assert report["run_dir"] == str(search_dir / f"trial_{best.number}")
    unsampled = [o for o in BASE if not o.startswith("attention.num_heads=")]  # the search sets it
    searchpath = f"hydra.searchpath=[file://{search_dir.parent / 'configs'}]"  # kept: trials may need its configs
    assert report["overrides"] == [*unsampled, searchpath, *(f"{k}={v}" for k, v in best.params.items())]
    assert (Path(report["run_dir"]) / "checkpoints" / "last.ckpt").exists()
    assert f"best: trial {best.number}" in proc.stdout and "PRUNED" in proc.stdout
    assert (search_dir / "search.log").exists() and (search_dir / "trial_0" / "train.log").exists()


def test_rerunning_a_search_resumes_it(search):
    run, search_dir = search
    run("search.n_trials=2")
    first = {n: (search_dir / f"trial_{n}" / "status.json") for n in (0, 1)}
    before = {n: (path.read_text(), path.stat().st_mtime_ns) for n, path in first.items()}

    proc = run("search.n_trials=3")
    assert f"resuming: 2 finished trials in {search_dir}, 1 to go" in proc.stdout
    trials = load(search_dir).trials
    assert len(trials) == 3 and all(t.state.is_finished() for t in trials)
    assert sorted(p.name for p in search_dir.glob("trial_*")) == ["trial_0", "trial_1", "trial_2"]
    assert {n: (path.read_text(), path.stat().st_mtime_ns) for n, path in first.items()} == before


def test_a_trial_left_running_is_failed_and_tried_again(search):
    run, search_dir = search
    study = new_study(search_dir)  # a search process that died during its first trial
    study.enqueue_trial({"optimizer.lr": GOOD_LR, "attention.num_heads": 2})
    trial = study.ask()
    trial.suggest_categorical("optimizer.lr", [BAD_LR, GOOD_LR])
    trial.suggest_categorical("attention.num_heads", [2, 3])
    trial.set_user_attr("run_dir", str(search_dir / "trial_0"))
    (search_dir / "trial_0").mkdir()
    params = trial.params

    proc = run("search.n_trials=1")
    assert f"resuming: 0 finished trials in {search_dir}, 1 to go" in proc.stdout
    trials = load(search_dir).trials
    assert trials[0].state == TrialState.FAIL
    assert "interrupted" in status(search_dir, 0)["error"]
    retry = trials[1]
    assert retry.params == params and retry.user_attrs["retry_of"] == 0  # the same values, tried again
    assert len(trials) == 2 and retry.state == TrialState.COMPLETE  # 1 finished trial besides the interrupted one
    assert json.loads((search_dir / "best.json").read_text())["run_dir"] == str(search_dir / "trial_1")


def test_a_trial_of_a_process_that_died_at_once_is_reclaimed_however_soon_the_search_starts(tmp_path):
    """A search started within ASKED_GRACE_S of a trial asked for without a worker waits, then retries it."""
    from attnfit.runs.search import _reclaimer

    study = new_study(tmp_path / "search")
    study.ask().suggest_categorical("optimizer.lr", [BAD_LR, GOOD_LR])  # asked for now; its process died
    _reclaimer(tmp_path / "search", "val/loss", "min")(study)
    first, retry = study.get_trials(deepcopy=False)
    assert first.state == TrialState.FAIL
    assert (
        retry.state == TrialState.WAITING
        and retry.user_attrs["retry_of"] == 0
        and retry.system_attrs["fixed_params"] == first.params
    )


def _open_storage_at(barrier, search_dir: Path, errors) -> None:
    from attnfit.runs.search import _storage

    barrier.wait()
    try:
        _storage(f"sqlite:///{search_dir / 'study.db'}", search_dir)
    except Exception as error:
        errors.put(f"{type(error).__name__}: {error}"[:300])


def test_workers_opening_a_new_study_database_at_once_all_open_it(tmp_path):
    """Each worker of a new search makes the database's tables; unserialized, all but one hit a UNIQUE constraint
    on the schema version (a CI run failed so)."""
    import multiprocessing

    import attnfit.runs.search  # noqa: F401  (imported once, before the forks; Optuna's RDB modules are not)

    context = multiprocessing.get_context("fork")  # starts in milliseconds, so the workers really race
    errors = context.Queue()
    for attempt in range(5):  # unserialized, 4 workers collided in 9 of 20 such starts
        search_dir = tmp_path / f"search_{attempt}"
        search_dir.mkdir()
        barrier = context.Barrier(4)
        workers = [context.Process(target=_open_storage_at, args=(barrier, search_dir, errors)) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
        assert [worker.exitcode for worker in workers] == [0] * 4
        assert errors.empty(), errors.get()
    assert optuna.create_study(study_name="new", storage=f"sqlite:///{search_dir / 'study.db'}").trials == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "attnfit-search needs a search space: hparams_search=optuna (see configs/hparams_search/)"),
        (["hparams_search=optuna", "search.params.encoder.choices=[transformer,rnn]"], "encoder=rnn does not compose"),
        (["hparams_search=optuna", "search.pruner.name=hyperband"], "unknown search.pruner.name 'hyperband'"),
        (["hparams_search=optuna", "trainer=ddp_cpu"], "runs its trials one after another on one device"),
    ],
)
def test_a_missing_or_bad_search_space_is_explained(run_cli, args, expected):
    proc = run_cli("cli.search", *BASE, *args, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert expected in proc.stderr and "Traceback" not in proc.stderr
    assert "trial 0" not in proc.stdout


def test_two_workers_share_one_study_and_its_budget(search, cache_dir, tmp_path):
    import os
    import subprocess
    import sys

    _, search_dir = search
    config_dir = tmp_path / "configs"
    space = ["hparams_search=tiny", f"hydra.searchpath=[file://{config_dir}]", f"search.dir={search_dir}"]
    budget = ["search.n_trials=4", "search.pruner.name=none"]
    command = [sys.executable, "-m", "attnfit.cli.search", *BASE, *space, *budget]
    env = {**os.environ, "ATTNFIT_CACHE_DIR": str(cache_dir), "HF_DATASETS_OFFLINE": "1"}
    workers = [
        subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], [err[-2000:] for _, err in outputs]

    trials = [t for t in load(search_dir).trials if not t.user_attrs.get("over_budget")]
    assert len(trials) == 4 and all(t.state.is_finished() for t in trials)  # the budget, counted across workers
    assert not any("retry_of" in t.user_attrs or t.user_attrs.get("interrupted") for t in trials)  # none reclaimed
    assert {t.user_attrs["worker"]["pid"] for t in trials} == {w.pid for w in workers}  # both worked on it
    for trial in trials:  # each trial ran once, in its own directory; only 3 heads for dim 32 fail, by themselves
        record = status(search_dir, trial.number)
        assert record["status"] == ("completed" if trial.state == TrialState.COMPLETE else "failed")
        assert trial.state == TrialState.COMPLETE or "does not divide" in record["error"]
    assert sorted(p.name for p in search_dir.glob("trial_*")) == sorted(f"trial_{t.number}" for t in trials)
    assert json.loads((search_dir / "study.json").read_text())["study_name"] == "search"
