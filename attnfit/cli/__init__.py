"""Command-line entry points (Hydra). Thin: each composes a config and hands it to a recipe."""

from __future__ import annotations

import contextlib
import difflib
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")


def run_or_explain(recipe: Callable[[Any], Any], cfg: Any) -> Any:
    """:func:`attnfit.runs.status.run_recorded` with third-party noise turned down first."""
    from attnfit.runs.status import run_recorded

    quiet_third_party_logs()
    return run_recorded(recipe, cfg)


@contextlib.contextmanager
def explain_unknown_keys(config_name: str) -> Iterator[None]:
    """Hydra reports an unknown override key (``trainer.max_step=5``) as "not in struct"; after it exits, say
    which keys exist there and which one was probably meant. Costs nothing unless Hydra failed."""
    check_run_dir_arguments(sys.argv[1:])
    check_not_a_search(sys.argv[1:], config_name)
    check_no_null_group(sys.argv[1:])
    try:
        yield
    except SystemExit as exit_:
        if exit_.code == 1:
            with contextlib.suppress(Exception):
                hint = unknown_key_hint(config_name, [a for a in sys.argv[1:] if "=" in a and not a.startswith("-")])
                if hint:
                    print(hint, file=sys.stderr)
        raise


def check_run_dir_arguments(argv: list[str]) -> None:
    """Hydra creates the run directory before attnfit's code runs and reports one it cannot create with a
    traceback: a literal ``hydra.run.dir=`` or ``search.dir=`` that is a file or cannot be created stops here."""
    from attnfit.errors import ConfigError, disk_is_full
    from attnfit.options import output_dir

    for arg in argv:
        key, eq, value = arg.partition("=")
        if eq and key.lstrip("+") in ("hydra.run.dir", "search.dir") and value and "${" not in value:
            try:
                directory = output_dir(value, key.lstrip("+"))
                if disk_is_full(directory):  # Hydra's own first write would fail
                    raise ConfigError(f"{key.lstrip('+')}={value}: its disk is full (under 1 MiB free); free space")
            except ConfigError as error:
                print(f"error: {error}", file=sys.stderr)
                sys.exit(2)


def check_not_a_search(argv: list[str], config_name: str) -> None:
    """``attnfit-train -m hparams_search=optuna`` (the lightning-hydra-template habit) would run one ordinary job,
    since only ``attnfit-search`` reads the search keys: it stops here with the command that runs the search."""
    for arg in argv:
        key, eq, value = arg.partition("=")
        if eq and key.lstrip("+") == "hparams_search" and value not in ("", "null"):
            rest = [a for a in argv if a not in (arg, "-m", "--multirun")]
            name = [] if config_name == "train" else ["--config-name", config_name]
            command = " ".join(["attnfit-search", *name, f"hparams_search={value}", *rest])
            print(f"error: hparams_search={value} is run by attnfit-search: {command}", file=sys.stderr)
            sys.exit(2)


def check_no_null_group(argv: list[str]) -> None:
    """Hydra fails on ``GROUP=null`` (``callbacks/extra=null``, ``model=null``) with a ValueError traceback that
    names neither the override nor the choices: stop here with both, and for a nested group (an optional section
    such as ``callbacks.extra``) the override that removes the section."""
    for arg in argv:
        key, eq, value = arg.partition("=")
        name = key.lstrip("+")
        group = Path(CONFIG_DIR) / name
        if eq and value == "null" and name and group.is_dir():
            choices = ", ".join(sorted(path.stem for path in group.glob("*.yaml")))
            none = f"; for none: '~{name.replace('/', '.')}'" if "/" in name else ""
            print(f"error: {arg}: a config group takes one of its configs ({choices}){none}", file=sys.stderr)
            sys.exit(2)


def compose_config(config_name: str, overrides: list[str]) -> Any:
    """The config that ``attnfit-<verb> OVERRIDES`` would run (``config_name``: train, finetune, …), composed
    in-process, outside any running Hydra app (scripts, benchmarks)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose(config_name, overrides=overrides)


def unknown_key_hint(config_name: str, overrides: list[str]) -> str | None:
    """``"unknown key trainer.max_step (did you mean trainer.max_steps?) …"`` if an override names a missing key."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    try:
        compose_config(config_name, overrides)
        return None
    except Exception as error:
        cause = error.__cause__
    if not isinstance(cause, (ConfigAttributeError, ConfigKeyError)) or not cause.full_key:
        return None
    full_key = cause.full_key
    parent_key, _, leaf = full_key.rpartition(".")
    rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != full_key]
    root = compose_config(config_name, rest)
    parent = OmegaConf.select(root, parent_key) if parent_key else root
    if not isinstance(parent, DictConfig):
        return None
    keys = sorted(str(k) for k in parent if k != "hydra")
    prefix = f"{parent_key}." if parent_key else ""
    close = difflib.get_close_matches(leaf, keys, n=1)
    hint = f"unknown key {full_key}" + (f" (did you mean {prefix}{close[0]}?)" if close else "")
    hint += f"; keys {'under ' + parent_key if parent_key else 'at the top level'}: {', '.join(keys)}"
    return hint + f". To add a new key on purpose: +{full_key}=..."


def quiet_third_party_logs() -> None:
    """Hide the advice Lightning prints for every run on a CPU-only machine; keep warnings that matter."""
    import warnings

    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "lightning.fabric.utilities.seed",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*`isinstance\\(treespec, LeafSpec\\)`.*")
