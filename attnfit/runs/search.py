"""Hyper-parameter search with Optuna: sampled overrides → one in-process training run per trial → pruning → best.

A search lives in one directory: ``study.db`` (the Optuna study, SQLite; ``search.storage`` may name any
SQLAlchemy URL instead), ``trial_<number>/`` (each trial's run directory with its ``status.json``), ``study.json``
(where the study is), ``best.json`` and ``study.lock`` (workers take turns opening the storage). Running the same
search again resumes it: finished trials (completed, pruned or failed) count towards ``search.n_trials``; a trial
whose process stopped is marked failed and its parameters are tried again in a new trial.

Several search processes (workers) may share one study: each trial records its worker (host and PID) and keeps a
heartbeat, so a worker fails and retries only the trials of dead workers (a dead PID on its own host, or a
heartbeat older than :data:`GRACE_PERIOD_S`); Optuna hands each trial to one worker, and a trial whose number
is beyond the budget (two workers asking for the last one at once) does not run.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from attnfit.atomic import process_alive
from attnfit.errors import AttnfitError, ConfigError, check_choice
from attnfit.runs.status import outcome

log = logging.getLogger("attnfit")

STUDY_FILE = "study.db"
BEST_FILE = "best.json"
PARAM_TYPES = ("float", "int", "categorical")
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "percentile", "none")
STUDY_INFO = "study.json"
STORAGE_LOCK = "study.lock"  # held while a worker opens the storage (and, on a new database, makes its tables)
SEARCH_KEYS = {"n_trials", "timeout", "sampler", "pruner", "dir", "params", "storage", "study_name"}
INTERRUPTED = "interrupted_trials"  # study user attr of older searches: numbers of trials cut short
HEARTBEAT_S, GRACE_PERIOD_S = 20, 120  # a worker's trials beat every 20 s; silent for 2 minutes: its worker is dead
ASKED_GRACE_S = 2.0  # a trial just asked for gets this long for its worker to record itself


class TrialFailed(Exception):
    """A trial that ended in an error; recorded as FAIL, and the search goes on."""


class _OverBudget(Exception):
    """A trial asked for when the budget was already taken by other workers' trials: recorded and not run."""


class _KnownFailures(logging.Filter):
    """Drop Optuna's traceback for a failed trial: attnfit has already said why it failed (and logged any bug)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.WARNING and " failed with " in record.getMessage())


@dataclass(frozen=True)
class Param:
    """One search dimension: an override key and the distribution its value is drawn from."""

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    @classmethod
    def from_config(cls, key: str, spec: Any) -> Param:
        where = f"search.params.{key}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where} must be a mapping such as {{type: float, low: 1e-4, high: 1e-2, log: true}}")
        kind = spec.get("type")
        check_choice(f"{where}.type", kind, PARAM_TYPES)
        allowed = {"type", "choices"} if kind == "categorical" else {"type", "low", "high", "log", "step"}
        unknown = sorted(set(spec) - allowed)
        if unknown:
            raise ConfigError(f"{where} has unknown key(s) {', '.join(unknown)}; a {kind} takes {', '.join(allowed)}")
        if kind == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices:
                raise ConfigError(f"{where}.choices must be a non-empty list")
            for choice in choices:
                if choice is not None and not isinstance(choice, (bool, int, float, str)):
                    raise ConfigError(f"{where}.choices: {choice!r} is not a number, string, boolean or null")
            return cls(key, kind, choices=tuple(choices))
        number = int if kind == "int" else (int, float)
        low, high, log_scale, step = spec.get("low"), spec.get("high"), bool(spec.get("log", False)), spec.get("step")
        for name, value in (("low", low), ("high", high)):
            if isinstance(value, bool) or not isinstance(value, number):
                raise ConfigError(f"{where}.{name}={value!r} must be {'an integer' if kind == 'int' else 'a number'}")
        if low > high:
            raise ConfigError(f"{where}: low={low} is above high={high}")
        if log_scale and low <= 0:
            raise ConfigError(f"{where}: log: true needs low > 0 (got {low})")
        if step is not None and (log_scale or isinstance(step, bool) or not isinstance(step, number) or step <= 0):
            raise ConfigError(f"{where}.step={step!r} must be a positive {kind} and cannot be combined with log")
        return cls(key, kind, low=low, high=high, log=log_scale, step=step)

    def suggest(self, trial: Any) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def extremes(self) -> list[Any]:
        """The values that, composed into a config, show whether the key and its values are accepted."""
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]


def format_override(key: str, value: Any) -> str:
    """``key=value`` as Hydra parses it back to ``value`` (strings quoted where they would not)."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, (int, float)):
        text = repr(value)
    else:
        text = str(value)
        if not re.fullmatch(r"[\w./:@+-]+", text) or _parse_value(f"{key}={text}") != value:
            text = "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return f"{key}={text}"


def _parse_value(override: str) -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(override).value()
    except Exception:
        return _Unparsable


class _Unparsable:
    pass


def override_key(override: str) -> str:
    """The config key or group an override sets (``+a.b=1`` → ``a.b``, ``encoder=gru`` → ``encoder``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(override).key_or_group
    except Exception:
        return override.split("=", 1)[0].lstrip("+~")


class PruningCallback(L.Callback):
    """Report ``metric`` to the Optuna trial after every validation; stop training when the pruner says so."""

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial, self.metric = trial, metric
        self.pruned_at: int | None = None
        self.last_value: float | None = None
        self._reported: set[int] = set()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.pruned_at is not None:
            return
        value = trainer.callback_metrics.get(self.metric)
        step = trainer.global_step
        if value is None or step in self._reported:
            return
        value = float(value)
        if math.isnan(value):
            return  # a diverged run ends with a NaN objective and is recorded as failed
        self._reported.add(step)
        self.last_value = value
        self.trial.report(value, step=step)
        if self.trial.should_prune():
            self.pruned_at = step
            trainer.should_stop = True


def run_search(cfg: DictConfig, config_name: str, base_overrides: list[str]) -> dict[str, Any]:
    """Run (or resume) the Optuna study described by ``cfg.search``; returns what ``best.json`` holds.

    Each trial composes ``config_name`` with ``base_overrides`` plus its sampled values and runs the recipe
    (``train`` or ``finetune``) in this process, in ``search.dir/trial_<number>``.
    """
    import optuna

    search = cfg.get("search")
    if not search:
        raise ConfigError("attnfit-search needs a search space: hparams_search=optuna (see configs/hparams_search/)")
    recipe, log_name = _recipe(config_name)
    params = _params(search)
    metric, mode = str(cfg.optimized_metric), str(cfg.optimized_mode)
    check_choice("optimized_mode", mode, ("min", "max"))
    n_trials = search.get("n_trials")
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ConfigError(f"search.n_trials={n_trials} must be an integer ≥ 1")
    timeout = search.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ConfigError(f"search.timeout={timeout} must be a number of seconds > 0 (or null)")
    _check_single_process(cfg)
    unknown = sorted(set(search) - SEARCH_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown search option(s) search.{', search.'.join(unknown)}; valid: {', '.join(sorted(SEARCH_KEYS))} "
            f"(the study is stored in search.dir/{STUDY_FILE}, SQLite)"
        )
    from attnfit.recipes.checks import check_common

    check_common(cfg)  # the trials' shared settings: one line now rather than the same failure in every trial
    if logging.getLogger().handlers:  # under Hydra: Optuna's messages go to the console and the log file like ours
        optuna.logging.disable_default_handler()
        optuna.logging.enable_propagation()
    optimize_log = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _KnownFailures) for f in optimize_log.filters):
        optimize_log.addFilter(_KnownFailures())

    base = [o for o in base_overrides if override_key(o) != "hparams_search" and not _is_search_key(o)]
    sampled_keys = {p.key for p in params}
    shadowed = [o for o in base if override_key(o) in sampled_keys]
    if shadowed:
        keys = ", ".join(sorted({override_key(o) for o in shadowed}))
        log.warning("the search samples %s: ignoring the override(s) %s", keys, " ".join(shadowed))
        base = [o for o in base if o not in shadowed]
    # What attnfit-train/finetune need to repeat a trial: Hydra's own settings (run dir, ...) aside.
    reproducible = [o for o in base if override_key(o) == "hydra.searchpath" or not o.startswith("hydra.")]
    _check_space(config_name, base, params)

    search_dir = Path(str(search.dir)).expanduser().resolve()
    study = _open_study(search_dir, "minimize" if mode == "min" else "maximize", search, metric, config_name)
    if study.user_attrs.get("base_overrides", reproducible) != reproducible:
        log.warning(
            "resuming with other overrides than the search started with: %s (then: %s)",
            " ".join(reproducible) or "none",
            " ".join(study.user_attrs["base_overrides"]) or "none",
        )
    for key, value in (("optimized_metric", metric), ("config_name", config_name), ("base_overrides", reproducible)):
        study.set_user_attr(key, value)

    reclaim = _reclaimer(search_dir, metric, mode)
    reclaim(study)
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.is_finished() and _counts(t, trials)]
    remaining = max(0, n_trials - len(finished))
    if finished or len(trials) > len(finished):
        print(f"resuming: {len(finished)} finished trials in {search_dir}, {remaining} to go")
    study.sampler = _sampler(search.sampler)

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", _WORKER)
        trials = study.get_trials(deepcopy=False)
        if sum(_counts(t, trials) for t in trials if t.number < trial.number) >= n_trials:  # taken meanwhile
            trial.set_user_attr("over_budget", True)
            study.stop()
            raise _OverBudget(f"trial {trial.number}: the budget of {n_trials} trials is taken")
        sampled = {p.key: p.suggest(trial) for p in params}
        sampled_overrides = [format_override(key, value) for key, value in sampled.items()]
        run_dir = search_dir / f"trial_{trial.number}"
        overrides = reproducible + sampled_overrides
        trial.set_user_attr("overrides", overrides)
        trial.set_user_attr("run_dir", str(run_dir))
        print(f"trial {trial.number}: {' '.join(sampled_overrides)}  ({run_dir})")
        fallback = _status_config(run_dir, metric, mode)
        pruning = PruningCallback(trial, metric)
        start = time.perf_counter()
        with _trial_scope(run_dir, overrides, log_name):
            trial_cfg: Any = fallback
            try:
                trial_cfg = _compose(
                    config_name, base + sampled_overrides + [format_override("paths.output_dir", str(run_dir))]
                )
                value = recipe(trial_cfg, callbacks=[pruning])
            except (KeyboardInterrupt, SystemExit):
                _write_status(trial_cfg, "failed", None, "interrupted: the search process stopped", start)
                trial.set_user_attr("interrupted", True)
                if trial.params:  # its values are tried again, queued by this worker (once)
                    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
                raise
            except Exception as error:
                message = str(error) if isinstance(error, AttnfitError) else f"{type(error).__name__}: {error}"
                if not isinstance(error, AttnfitError):
                    log.exception("trial %d failed", trial.number)
                _fail(trial, trial_cfg, message, start)
            if pruning.pruned_at is not None:
                message = f"pruned at step {pruning.pruned_at}: {metric}={pruning.last_value:.4g}"
                _write_status(trial_cfg, "pruned", None, message, start)
                raise optuna.TrialPruned(message)
            _, error = outcome(value, metric)
            if error is not None:
                _fail(trial, trial_cfg, error, start)
            _write_status(trial_cfg, "completed", value, None, start)
            return float(value)

    def budget_met(study: optuna.Study, _: Any) -> None:
        reclaim(study)  # a dead worker's trial: retried here rather than counted
        trials = study.get_trials(deepcopy=False)
        if sum(_counts(t, trials) for t in trials) >= n_trials:  # running and queued trials included
            study.stop()

    if remaining:
        study.optimize(
            objective, timeout=timeout, catch=(TrialFailed, _OverBudget), callbacks=[budget_met], gc_after_trial=True
        )
    return _report(study, search_dir, metric, mode)


_WORKER = {"host": socket.gethostname(), "pid": os.getpid()}


def _interrupted(trials: list[Any]) -> set[int]:
    """Numbers of trials cut short by a stopped worker (and retried)."""
    return {t.number for t in trials if t.user_attrs.get("interrupted")} | {
        t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs
    }  # (searches of older attnfit versions listed them in the study's INTERRUPTED attribute: retried too)


def _counts(trial: Any, trials: list[Any]) -> bool:
    """Whether ``trial`` takes a place of the budget: every trial but an interrupted one (its retry does) and
    one that did not run because the budget was taken."""
    from optuna.trial import TrialState

    if trial.user_attrs.get("over_budget"):
        return False
    return trial.state != TrialState.FAIL or trial.number not in _interrupted(trials)


def _reclaimer(search_dir: Path, metric: str, mode: str) -> Callable[[Any], None]:
    """``reclaim(study)``: fail the running trials of dead workers and queue their parameters again, once."""

    def reclaim(study: Any) -> None:
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        youngest = min((_age_s(t) for t in running if t.user_attrs.get("worker") is None), default=math.inf)
        if youngest < ASKED_GRACE_S:
            # Just asked for: its worker records itself as the trial starts. Skipping it instead would leave a
            # trial of a process that died at once running for good when this search started within seconds.
            time.sleep(ASKED_GRACE_S - youngest)
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        for trial in running:
            worker = trial.user_attrs.get("worker")
            if worker is None and _age_s(trial) < ASKED_GRACE_S:
                continue  # asked for while we waited
            if worker is not None and (worker["host"] != _WORKER["host"] or process_alive(worker["pid"])):
                continue  # alive here, or elsewhere: a dead worker elsewhere is found by its heartbeat
            # no worker recorded for seconds: a trial of an older attnfit's search, whose one process is gone
            try:
                if not study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                    continue
            except UpdateFinishedTrialError:  # another worker reclaimed it first
                continue
            _retry(study, trial, search_dir, metric, mode)

    return reclaim


def _age_s(trial: Any) -> float:
    from datetime import datetime

    started = trial.datetime_start
    return (datetime.now(started.tzinfo) - started).total_seconds() if started else float("inf")


def _retry(study: Any, trial: Any, search_dir: Path, metric: str, mode: str) -> None:
    """A trial failed because its worker died: record it in its run directory and queue its parameters again."""
    run_dir = trial.user_attrs.get("run_dir")
    status = Path(run_dir) / "status.json" if run_dir else None
    if status is not None and status.parent.is_dir() and not status.exists():
        with _trial_scope(status.parent, trial.user_attrs.get("overrides", []), None):
            _write_status(_status_config(status.parent, metric, mode), "failed", None, _STOPPED, None)
    if trial.params:
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    log.warning("trial %d was interrupted: marked failed, its parameters are tried again", trial.number)


def _recipe(config_name: str) -> tuple[Callable[..., Any], str]:
    if config_name in ("train", "finetune"):  # one run sequence serves both entry points
        from attnfit.recipes.run import run

        return run, config_name
    raise ConfigError(f"attnfit-search runs train or finetune configs, not --config-name {config_name}")


def _check_single_process(cfg: DictConfig) -> None:
    """Trials run in this process: Lightning's DDP launcher would re-run the whole search in every rank."""
    trainer = cfg.get("trainer") or {}
    strategy = str(trainer.get("strategy", "auto"))
    if any(name in strategy for name in ("ddp", "fsdp", "deepspeed")) or str(trainer.get("devices", 1)) != "1":
        raise ConfigError(
            f"attnfit-search runs its trials one after another on one device (trainer.strategy={strategy}, "
            f"trainer.devices={trainer.get('devices', 1)}): use trainer=default or trainer=gpu"
        )
    if int(trainer.get("num_nodes", 1)) != 1:
        raise ConfigError(f"attnfit-search runs on one node (trainer.num_nodes={trainer.num_nodes})")


def _params(search: DictConfig) -> list[Param]:
    space = search.get("params")
    if not space:
        raise ConfigError("search.params is empty: give at least one override key with a distribution")
    space = OmegaConf.to_container(space, resolve=True)
    return [Param.from_config(str(key), spec) for key, spec in space.items()]


def _is_search_key(override: str) -> bool:
    key = override_key(override)
    return key == "search" or key.startswith("search.")


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    """Compose inside the running ``attnfit-search`` app, with its config search path (``hydra.searchpath`` too);
    ``attnfit.cli.compose_config`` would start afresh on the package's configs alone."""
    from hydra import compose

    return compose(config_name=config_name, overrides=overrides)


def _check_space(config_name: str, base: list[str], params: list[Param]) -> None:
    """Compose each key at its extremes once, so a misspelled key or group choice stops the search at once."""
    try:
        _compose(config_name, base)
    except Exception as error:
        raise ConfigError(f"the overrides do not compose: {_first_line(error)}") from None
    for param in params:
        for value in param.extremes():
            override = format_override(param.key, value)
            try:
                _compose(config_name, [*base, override])
            except Exception as error:
                raise ConfigError(
                    f"search.params.{param.key}: {override} does not compose: {_first_line(error)}"
                ) from None


def _first_line(error: Exception) -> str:
    """Hydra's composition errors without their indented details (full key, object type)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip() and not line[:1].isspace()]
    return " ".join(lines[:3]) or type(error).__name__


def _open_study(search_dir: Path, direction: str, search: DictConfig, metric: str, config_name: str) -> Any:
    import optuna

    db = search_dir / STUDY_FILE
    if not db.exists():
        stale = sorted(p.name for p in search_dir.glob("trial_*")) if search_dir.is_dir() else []
        if stale:
            raise ConfigError(
                f"{search_dir} holds trial directories ({', '.join(stale[:3])}{', …' if len(stale) > 3 else ''}) "
                f"but no {STUDY_FILE}; remove them or choose another search.dir"
            )
    try:
        search_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"search.dir={search_dir} cannot be created: {error.strerror or error}") from None
    url = search.get("storage") or f"sqlite:///{db}"
    storage = _storage(url, search_dir)
    name = search.get("study_name")
    if not name:
        names = optuna.get_all_study_names(storage) if not search.get("storage") and db.exists() else []
        if len(names) > 1:
            raise ConfigError(f"{db} holds several studies ({', '.join(names)}); one search directory runs one study")
        name = names[0] if names else search_dir.name
    for attempt in range(5):  # workers starting together on a new database: one creates the study, the others load it
        try:
            study = optuna.create_study(
                study_name=name,
                storage=storage,
                load_if_exists=True,
                direction=direction,
                sampler=_sampler(search.sampler),
                pruner=_pruner(search.pruner),
            )
            break
        except Exception as error:
            if attempt == 4 or "DuplicatedStudyError" not in type(error).__name__ + repr(error.__cause__):
                raise
            time.sleep(0.2 * (attempt + 1))
    _write_study_info(search_dir, url, name)
    if study.direction.name.lower() != direction:
        raise ConfigError(
            f"the study in {search_dir} was run to {study.direction.name.lower()}; optimized_mode asks to "
            f"{direction}: choose another search.dir"
        )
    previous = study.user_attrs.get("optimized_metric", metric), study.user_attrs.get("config_name", config_name)
    if previous != (metric, config_name):
        raise ConfigError(
            f"the study in {search_dir} optimised {previous[0]} with --config-name {previous[1]}; this search "
            f"optimises {metric} with --config-name {config_name}: choose another search.dir"
        )
    return study


def _storage(url: str, search_dir: Path) -> Any:
    """An RDB storage with heartbeats (dead workers are found); SQLite waits for a busy database instead of
    failing, since several workers write to it."""
    import optuna
    from filelock import FileLock
    from sqlalchemy.exc import IntegrityError, OperationalError

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    warnings.filterwarnings("ignore", "Argument ``heartbeat", optuna.exceptions.ExperimentalWarning)  # stable here
    # Workers starting together on a new database would each create its tables (and each insert the schema
    # version: an IntegrityError for all but one). Workers sharing this directory take turns; others, on
    # other hosts with a server database, retry once the winner has made the tables.
    with FileLock(search_dir / STORAGE_LOCK):
        for attempt in range(5):
            try:
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_PERIOD_S,
                    heartbeat_stale_trial_callback=_StaleTrialRetry(search_dir),
                )  # fmt: skip
            except (IntegrityError, OperationalError):
                if attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))
            except Exception as error:
                raise ConfigError(f"search.storage={_masked(url)} cannot be opened: {_first_line(error)}") from None
    raise AssertionError("unreachable")


class _StaleTrialRetry:
    """Optuna's callback for a trial whose heartbeat stopped (its worker died on another host): retry it."""

    def __init__(self, search_dir: Path) -> None:
        self.search_dir = search_dir

    def __call__(self, study: Any, trial: Any) -> None:
        metric = study.user_attrs.get("optimized_metric", "val/loss")
        mode = "min" if study.direction.name == "MINIMIZE" else "max"
        _retry(study, trial, self.search_dir, metric, mode)


def _masked(url: str) -> str:
    """The URL without its password, for messages and ``study.json``."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def _write_study_info(search_dir: Path, url: str, name: str) -> None:
    """``study.json``: where the study is (password hidden), for ``attnfit-report`` and later workers."""
    info = {"storage": _masked(url), "study_name": name}
    path = search_dir / STUDY_INFO
    if not path.exists() or json.loads(path.read_text() or "{}") != info:
        from attnfit.atomic import atomic_write

        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(info, indent=2) + "\n"))


_STOPPED = "interrupted: the search process stopped during this trial"


def _sampler(spec: DictConfig) -> Any:
    import optuna

    options = OmegaConf.to_container(spec, resolve=True)
    name = options.pop("name", "tpe")
    check_choice("search.sampler.name", name, SAMPLERS)
    seed = options.pop("seed", None)
    cls = optuna.samplers.TPESampler if name == "tpe" else optuna.samplers.RandomSampler

    def make(trial_seed: int | None) -> Any:
        try:
            return cls(seed=trial_seed, **options)
        except TypeError as error:
            raise ConfigError(f"search.sampler ({name}): {error}") from None

    make(None)  # bad options fail now
    return make(None) if seed is None else _TrialSeeded(make, int(seed))


def _TrialSeeded(make: Callable[[int | None], Any], seed: int) -> Any:
    """A sampler drawing each trial's values with a sampler seeded ``seed + trial number``: what a trial samples
    depends on the study alone, not on which worker runs it, so workers sharing a study (all with the config's
    seed) never draw the same sequence, and a resumed search draws new values."""
    import optuna

    class TrialSeeded(optuna.samplers.BaseSampler):
        def __init__(self) -> None:
            self._number, self._sampler = -1, make(seed)

        def _for(self, trial: Any) -> Any:
            if trial.number != self._number:
                self._number, self._sampler = trial.number, make(seed + trial.number)
            return self._sampler

        def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
            return self._for(trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
            return self._for(trial).sample_relative(study, trial, search_space)

        def sample_independent(self, study: Any, trial: Any, name: str, distribution: Any) -> Any:
            return self._for(trial).sample_independent(study, trial, name, distribution)

        def before_trial(self, study: Any, trial: Any) -> None:
            self._for(trial).before_trial(study, trial)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            self._for(trial).after_trial(study, trial, state, values)

    return TrialSeeded()


def _pruner(spec: DictConfig) -> Any:
    import optuna

    options = OmegaConf.to_container(spec, resolve=True)
    name = options.pop("name", "median")
    check_choice("search.pruner.name", name, PRUNERS)
    if name == "none":
        return optuna.pruners.NopPruner()
    cls = optuna.pruners.MedianPruner if name == "median" else optuna.pruners.PercentilePruner
    try:
        return cls(**options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"search.pruner ({name}): {error}") from None


def _status_config(run_dir: Path, metric: str, mode: str) -> DictConfig:
    """What ``write_status`` reads, for trials whose own config never composed."""
    return OmegaConf.create({"paths": {"output_dir": str(run_dir)}, "optimized_metric": metric, "optimized_mode": mode})


def _write_status(cfg: Any, status: str, objective: Any, error: str | None, start: float | None) -> None:
    from attnfit.runs.status import write_status

    write_status(cfg, status, objective, error, 0.0 if start is None else time.perf_counter() - start)


def _fail(trial: Any, cfg: Any, message: str, start: float) -> None:
    _write_status(cfg, "failed", None, message, start)
    trial.set_user_attr("error", message)
    log.warning("trial %d failed: %s", trial.number, message)
    raise TrialFailed(message) from None


@contextmanager
def _trial_scope(run_dir: Path, overrides: list[str], log_name: str | None) -> Iterator[None]:
    """While a trial runs, Hydra's runtime config shows the trial (its overrides in ``status.json``, its run
    directory for ``${hydra:runtime.output_dir}``) and the trial logs to ``RUN_DIR/<log_name>.log``."""
    from hydra.core.hydra_config import HydraConfig

    instance = HydraConfig.instance()
    saved = instance.cfg
    if saved is not None:
        trial_cfg = copy.deepcopy(saved)
        with read_write(trial_cfg.hydra), open_dict(trial_cfg.hydra):
            trial_cfg.hydra.overrides.task = list(overrides)
            trial_cfg.hydra.runtime.output_dir = str(run_dir)
        instance.cfg = trial_cfg
    handler = None
    if log_name:
        run_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(run_dir / f"{log_name}.log")
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
        instance.cfg = saved


def _report(study: Any, search_dir: Path, metric: str, mode: str) -> dict[str, Any]:
    """Print the trials and the best one; write and return ``best.json``."""
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("over_budget")]
    interrupted = _interrupted(trials) | set(study.user_attrs.get(INTERRUPTED, []))
    print(f"\nsearch {search_dir} ({metric}, {mode}): {len(trials)} trials")
    print(f"{'trial':>5}  {'state':<8}  {metric:>12}  params")
    for trial in trials:
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        params = " ".join(format_override(k, v) for k, v in trial.params.items())
        error = trial.user_attrs.get("error") or ("interrupted" if trial.number in interrupted else None)
        print(f"{trial.number:>5}  {trial.state.name:<8}  {value:>12}  {params}" + (f"  ({error})" if error else ""))
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise AttnfitError(f"no trial of {search_dir} completed; each trial's status.json says why")
    best = study.best_trial
    result = {
        "objective": best.value,
        "params": dict(best.params),
        "overrides": list(best.user_attrs.get("overrides", [])),
        "run_dir": best.user_attrs.get("run_dir"),
        "trial": best.number,
    }
    from attnfit.atomic import atomic_write

    atomic_write(search_dir / BEST_FILE, lambda tmp: tmp.write_text(json.dumps(result, indent=2) + "\n"))
    print(f"best: trial {best.number}, {metric}={best.value:.4f}: {' '.join(result['overrides'])}")
    print(f"best run directory: {result['run_dir']}")
    print(f"written: {search_dir / BEST_FILE}")
    return result
