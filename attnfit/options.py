"""Config helpers every layer uses, free of Lightning (so ``attnfit-predict`` and model loading start fast):
plain copies of config nodes and the type check of options a command-line typo breaks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from attnfit.atomic import atomic_write
from attnfit.errors import AttnfitError, ConfigError


def container(node: Any) -> Any:
    """A resolved plain-Python copy of a config node (what models and checkpoints take)."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved run config without Hydra's own node, as stored in checkpoints (plain data)."""
    resolved = container(cfg)
    resolved.pop("hydra", None)
    return resolved


# Options whose type a typo on the command line breaks (``seed=x``, ``optimizer.lr=1e-3x``): checked first so the
# mistake is named instead of surfacing as a traceback deep inside a library.
OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "seed": (int,),
    "data_seed": (int,),
    "compile": (bool,),
    "flush_denormal": (bool,),
    "data.batch_size": (int,),
    "data.seq_len": (int,),
    "data.num_workers": (int,),
    "optimizer.lr": (int, float),
    "optimizer.weight_decay": (int, float),
    "scheduler.warmup_steps": (int,),
    "trainer.max_steps": (int,),
    "data.shuffle": (bool,),
    "data.packing": (bool,),
    "finetune.from_scratch": (bool,),
    "finetune.freeze_embeddings": (bool,),
    "finetune.lora.enabled": (bool,),
    "finetune.adapt_steps": (int,),
    "task.class_weights": (bool,),
    "task.label_smoothing": (int, float),
    "task.adversarial_eps": (int, float),
    "task.head_bias": (bool,),
    "task.joint_tokenizer": (bool,),
    "task.tie_output": (bool,),
    "heatmap": (bool,),
    "merge_lora": (bool,),
}


def check_option_types(cfg: DictConfig) -> None:
    """ConfigError naming any option of :data:`OPTION_TYPES` present in ``cfg`` with a value of the wrong type."""
    for key, kinds in OPTION_TYPES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            expected = " or ".join(k.__name__ for k in kinds)
            raise ConfigError(f"{key} must be {expected}, got {value!r} ({type(value).__name__})")


def output_dir(path: str | Path, key: str) -> Path:
    """The directory ``key=path`` names, created; ConfigError where it is a file or cannot be created."""
    path = Path(str(path)).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{key}={path} is a file, not a directory; give a directory to write into")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a parent is a file, no permission, a read-only file system
        raise ConfigError(f"{key}={path} cannot be created: {error.strerror or error}") from None
    return path


def output_file(path: str | Path, key: str) -> Path:
    """The file ``key=path`` names, its directory created; ConfigError where it is a directory or cannot be made."""
    path = Path(str(path)).expanduser()
    if path.is_dir():
        raise ConfigError(f"{key}={path} is a directory; give a file name such as {path / 'results.json'}")
    try:
        output_dir(path.parent, key)
    except ConfigError as error:
        raise ConfigError(f"{key}={path}: its directory {str(error).partition('=')[2]}") from None
    return path


def write_text(path: Path, text: str) -> None:
    """Write a result file whole or not at all (a crash never leaves half a file); a full disk or an unwritable
    directory is one line, not a traceback."""
    try:
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    except OSError as error:
        raise AttnfitError(f"cannot write {path}: {error.strerror or error}") from None


@contextmanager
def data_fits(what: str, fix: str) -> Iterator[None]:
    """A ``data=`` group written for another task lacks keys this task reads: name the key (and ``fix``), not a
    traceback from deep inside the data code."""
    try:
        yield
    except (ConfigAttributeError, ConfigKeyError) as error:
        key = error.full_key or error.key
        key = key if str(key).startswith("data.") else f"data.{key}"
        raise ConfigError(f"data= does not fit {what}: it has no {key}; {fix}") from None


def input_length(requested: Any, positions: int) -> int:
    """``max_len=`` of attnfit-predict (inputs are cut to it): the model's ``positions`` when unset; more than the
    model has, or less than one token, is refused rather than failing inside the model."""
    if requested is None:
        return positions
    if isinstance(requested, bool) or not isinstance(requested, int) or not 1 <= requested <= positions:
        raise ConfigError(
            f"max_len={requested!r} must be a whole number from 1 to {positions} (the model's positions); inputs "
            "longer than it are cut to it"
        )
    return requested


def lightning_class(where: str, spec: Any, base: type, example: str) -> type:
    """The class named by ``spec._target_`` at config path ``where``, a subclass of ``base`` (a Lightning callback
    or logger); a missing, unimportable or wrong ``_target_`` is one ConfigError naming ``where``."""
    from hydra.utils import get_class

    kind = f"Lightning {base.__name__.lower()}"
    target = spec.get("_target_") if isinstance(spec, DictConfig) else None
    if not target:
        raise ConfigError(f"{where} has no _target_: give a {kind} class, e.g. {example}")
    try:
        cls = get_class(target)
    except Exception as error:
        raise ConfigError(f"{where}._target_={target} cannot be imported: {error}") from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(f"{where}._target_={target} is not a {kind}")
    return cls
