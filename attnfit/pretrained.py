"""Saved models in any of their three forms — run directory, Lightning ``.ckpt``, exported directory —
read into one typed :class:`ModelRecord`, rebuilt as plain PyTorch modules, and exported as safetensors.

Nothing here imports Lightning or Hydra, so ``attnfit.load_pretrained`` works in any Python program.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attnfit.errors import AttnfitError, CheckpointError, ConfigError, check_choice

FORMAT_VERSION = 2  # 2: head_config (was classifier_config); every task's fields are named, none free-form
CHECKPOINT_KEY = "attnfit"  # where a Lightning checkpoint keeps the record
EXPORT_WEIGHTS, EXPORT_CONFIG, EXPORT_TOKENIZER = "model.safetensors", "config.json", "tokenizer.json"
EXPORT_TARGET_TOKENIZER = "target_tokenizer.json"  # seq2seq with a separate target vocabulary only
# A run that kept a weight average (callbacks/extra=ema or swa) holds two models: the average, which is the run's
# model (its validation, export and serving), and the optimiser's own weights (Lightning's current_model_state).
WEIGHTS = ("average", "trained")


_ON_DISK = {"tokenizer_json": "tokenizer", "target_tokenizer_json": "target_tokenizer"}
_FROM_DISK = {disk: name for name, disk in _ON_DISK.items()}


@dataclass
class ModelRecord:
    """What a checkpoint or export says about its model (no weights): written by :meth:`to_dict` in one place,
    read back by :meth:`from_dict`. Fields a task does not use stay ``None``."""

    task: str  # a name of the task table (attnfit.tasks)
    model_config: dict[str, Any]  # ModelConfig, or Seq2SeqConfig for seq2seq
    tokenizer_json: str
    head_config: dict[str, Any] | None = None  # classification: ClassifierConfig; qa: QAConfig
    label_names: list[str] | None = None  # classification
    lora: dict[str, Any] | None = None  # LoRA settings when the weights hold unmerged adapters
    target_tokenizer_json: str | None = None  # seq2seq with its own target vocabulary
    decode: dict[str, Any] | None = None  # seq2seq / qa decoding settings of the training run
    metric: str | None = None  # seq2seq: bleu | rouge
    run_config: dict[str, Any] | None = None  # the training run's resolved config
    hf: dict[str, Any] | None = None  # imported from Hugging Face: model_type, source, architecture

    def to_dict(self) -> dict[str, Any]:
        """Plain data (loads with ``weights_only=True``); tokenizers under their on-disk names."""
        fields = dataclasses.asdict(self)
        return {"format_version": FORMAT_VERSION, **{_ON_DISK.get(k, k): v for k, v in fields.items()}}

    @classmethod
    def from_dict(cls, meta: dict[str, Any], source: Path) -> ModelRecord:
        """Reads this format and format 1 (``tokenizer``, ``classifier_config``, ``target_tokenizer`` keys)."""
        version = meta.get("format_version", 0)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise CheckpointError(
                f"{source} was written by a newer attnfit (format {version}, this version reads ≤ {FORMAT_VERSION}); "
                "upgrade attnfit"
            )
        meta = {_FROM_DISK.get(k, k): v for k, v in meta.items()}
        if version < 2:
            meta["head_config"] = meta.get("classifier_config")
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [key for key in ("task", "model_config", "tokenizer_json") if meta.get(key) is None]
        if missing:
            raise CheckpointError(f"{source} has an incomplete attnfit record (no {', '.join(missing)})")
        return cls(**{key: value for key, value in meta.items() if key in names})

    def tokenizers(self) -> tuple[Any, Any]:
        """``(tokenizer, target tokenizer)``; the same ``tokenizers.Tokenizer`` twice for a joint vocabulary."""
        source = _tokenizer(self.tokenizer_json, "tokenizer")
        return source, _tokenizer(
            self.target_tokenizer_json, "target tokenizer"
        ) if self.target_tokenizer_json else source


def _tokenizer(text: str, what: str) -> Any:
    """A ``tokenizers.Tokenizer`` from its JSON; CheckpointError for an edited or foreign file."""
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_str(text)
    except Exception as error:  # the Rust side's parse error
        raise CheckpointError(f"the saved {what} is not a readable tokenizers JSON: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@dataclass
class Artifact:
    """A record with its weights (model keys, no prefix) and where it was read from."""

    record: ModelRecord
    state_dict: dict[str, Tensor]
    source: Path
    # Tensors of an imported checkpoint that its task's model has no place for (BERT's pooler), kept for a
    # fine-tuned head that has: ``pooler.dense.weight`` …
    extra: dict[str, Tensor] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.record.task

    @property
    def model_config(self) -> dict[str, Any]:
        return self.record.model_config

    @property
    def tokenizer_json(self) -> str:
        return self.record.tokenizer_json

    @property
    def label_names(self) -> list[str] | None:
        return self.record.label_names

    @property
    def lora(self) -> dict[str, Any] | None:
        return self.record.lora

    @property
    def run_config(self) -> dict[str, Any] | None:
        return self.record.run_config

    def run_dir(self) -> Path:
        """The run directory a checkpoint belongs to (an export directory is its own)."""
        source = self.source
        if source.suffix == ".ckpt" and source.parent.name == "checkpoints":
            return source.parent.parent
        return source if source.is_dir() else source.parent


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory means its best checkpoint as the run itself recorded it (else ``last.ckpt``); a file or
    export directory is itself."""
    path = Path(str(path)).expanduser()  # a config may hand over a number or other scalar
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir() and not (path / EXPORT_CONFIG).exists() and not (path / "meta.pt").is_file():
        checkpoints = path / "checkpoints"
        best = recorded_best(checkpoints)
        if best is not None:
            return best
        if (checkpoints / "last.ckpt").exists():
            return checkpoints / "last.ckpt"
        best_files = sorted(checkpoints.glob("best-*.ckpt"))  # no last.ckpt to ask: only one best is kept
        if best_files:
            return best_files[-1]
        raise CheckpointError(
            f"{path} is neither a run directory (no checkpoints/*.ckpt) nor an exported model (no {EXPORT_CONFIG})"
        )
    return path


def recorded_best(checkpoints: Path) -> Path | None:
    """The best checkpoint that the run's ``last.ckpt`` names (Lightning's ModelCheckpoint state), if it exists:
    the run's own record, not file-name order (a stray ``best-*.ckpt`` of another run is never picked)."""
    last = checkpoints / "last.ckpt"
    if (last / "meta.pt").is_file():  # sharded (trainer=fsdp): the callbacks' state is in its metadata file
        last = last / "meta.pt"
    try:
        state = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # missing or unreadable: no record
        return None
    for key, value in (state.get("callbacks") or {}).items():
        if key.startswith("ModelCheckpoint") and isinstance(value, dict) and value.get("best_model_path"):
            best = checkpoints / Path(str(value["best_model_path"])).name  # the run directory may have moved
            return best if best.is_file() or (best / "meta.pt").is_file() else None
    return None


def newest_valid_checkpoint(run_dir: str | Path) -> tuple[Path, list[str]]:
    """The most recent checkpoint of a run directory that loads, and a note for each broken one skipped.

    Files written within one tick of the file system's clock (a few milliseconds: a step's checkpoint and the
    ``last.ckpt`` saved after it on SIGTERM) share a modification time; ``last.ckpt`` then comes first, and
    other ties go by name, so the choice never depends on the order the directory lists them in."""
    directory = Path(run_dir) / "checkpoints"

    def recency(path: Path) -> tuple[int, bool, str]:
        return path.stat().st_mtime_ns, path.name == "last.ckpt", path.name

    candidates = sorted(directory.glob("*.ckpt"), key=recency, reverse=True)
    skipped = []
    for path in candidates:
        try:
            load_artifact(path)
        except CheckpointError as error:
            skipped.append(f"skipped {path.name}: {error}")
            continue
        return path, skipped
    found = f"; {'; '.join(skipped)}" if skipped else ""
    raise CheckpointError(f"no loadable checkpoint in {directory}{found}")


def load_artifact(path: str | Path, weights: str | None = "average", key: str = "weights") -> Artifact:
    """Read a run directory, ``.ckpt`` file or exported directory; never unpickles arbitrary objects.

    ``hf:NAME`` or a directory in Hugging Face's format is imported (BERT, GPT-2; see :mod:`attnfit.hf`).
    ``weights="trained"`` takes the optimiser's own weights from a checkpoint of a run that kept a weight average
    (``"average"``, the default, or None takes the run's model); in any other checkpoint the two are the same
    weights. ``key`` is the option's name in errors."""
    from attnfit.hf import import_hf, is_hf_source
    from attnfit.training.sharding import consolidate, is_sharded_checkpoint

    weights = weights or "average"  # an option left null
    check_choice(key, weights, WEIGHTS)
    hf = is_hf_source(path)
    path = path if hf else resolve_checkpoint(path)
    exported = hf or (path.is_dir() and not is_sharded_checkpoint(path))
    if exported and weights == "trained":
        raise ConfigError(
            f"{key}=trained needs a checkpoint (a run directory or .ckpt); {path} is an exported or "
            "Hugging Face model, with one set of weights"
        )
    if hf:
        return import_hf(path)
    if exported:
        return _load_export(path)
    try:
        if path.is_dir():  # trainer=fsdp's sharded checkpoint: a file per rank, read back as one
            checkpoint = consolidate(path)
        else:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # truncated, not a zip, or holds objects that are not plain data
        raise CheckpointError(f"{path} is not a readable checkpoint: {_first_line(error)}") from None
    meta = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(meta, dict) or "model_config" not in meta:
        raise CheckpointError(f"{path} is not an attnfit checkpoint (it has no '{CHECKPOINT_KEY}' metadata)")
    held = "current_model_state" if weights == "trained" and "current_model_state" in checkpoint else "state_dict"
    state = {k.removeprefix("model."): v for k, v in checkpoint[held].items() if k.startswith("model.")}
    return Artifact(ModelRecord.from_dict(meta, path), state, path)


def _load_export(directory: Path) -> Artifact:
    from safetensors.torch import load_file

    for name in (EXPORT_CONFIG, EXPORT_WEIGHTS, EXPORT_TOKENIZER):
        if not (directory / name).exists():
            raise CheckpointError(f"exported model {directory} is missing {name}")
    try:
        meta = json.loads((directory / EXPORT_CONFIG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{directory / EXPORT_CONFIG} is not valid JSON: {error}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{directory / EXPORT_CONFIG} is not an attnfit model config (not a JSON object)")
    # The tokenizers live beside config.json, not inside it.
    meta["tokenizer"] = (directory / EXPORT_TOKENIZER).read_text()
    target = directory / EXPORT_TARGET_TOKENIZER
    meta["target_tokenizer"] = target.read_text() if target.exists() else None
    record = ModelRecord.from_dict(meta, directory)
    try:
        weights = load_file(directory / EXPORT_WEIGHTS)
    except Exception as error:  # truncated or not safetensors at all
        raise CheckpointError(
            f"{directory / EXPORT_WEIGHTS} is not a readable safetensors file ({_first_line(error)}); export the "
            "model again"
        ) from None
    return Artifact(record, weights, directory)


def build_model(artifact: Artifact, load_weights: bool = True) -> nn.Module:
    """The plain PyTorch model an artifact describes (LoRA adapters re-applied when its weights hold them)."""
    from attnfit.tasks import get_task

    try:
        model = get_task(artifact.task).build_model(artifact.record)
        if artifact.record.lora:
            from attnfit.models.lora import apply_lora

            apply_lora(model.backbone, **artifact.record.lora)
    except AttnfitError as error:
        raise CheckpointError(f"{artifact.source}: {error}") from None
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError, AssertionError) as error:
        raise CheckpointError(
            f"{artifact.source} holds a model config that cannot be built: {_first_line(error)}"
        ) from None
    if load_weights:
        check_shapes(artifact, model)
        missing, unexpected = model.load_state_dict(artifact.state_dict, strict=False)
        absent = set(missing) - _tied(model) - _stored_under_another_name(model, artifact.state_dict)
        if absent or unexpected:
            first = sorted(absent)[:1] or sorted(unexpected)[:1]
            raise CheckpointError(
                f"{artifact.source}: the weights do not fit their config ({EXPORT_CONFIG} edited, or weights of "
                f"another model): {len(absent)} tensors missing, {len(unexpected)} unexpected (first: {first[0]}); "
                "export the model again"
            )
    return model


def check_shapes(artifact: Artifact, model: nn.Module) -> None:
    """CheckpointError naming the first tensor whose saved shape differs from the one its config builds."""
    expected = model.state_dict()
    wrong = [
        f"{name} is {tuple(tensor.shape)} in the weights but {tuple(expected[name].shape)} by the config"
        for name, tensor in artifact.state_dict.items()
        if name in expected and tuple(expected[name].shape) != tuple(tensor.shape)
    ]
    if wrong:
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        raise CheckpointError(
            f"{artifact.source}: the weights do not fit their config ({EXPORT_CONFIG} edited, or weights of another "
            f"model): {wrong[0]}{more}; export the model again"
        )


def _tied(model: nn.Module) -> set[str]:
    """An LM's output layer tied to its input embeddings may be absent from a state dict."""
    config = getattr(model, "config", None)
    return {"head.decoder.weight"} if getattr(config, "tie_embeddings", False) else set()


def _stored_under_another_name(model: nn.Module, state: dict[str, Tensor]) -> set[str]:
    """Names of shared tensors (tied output layer, shared embeddings) whose value ``state`` holds under another
    of their names: safetensors stores a shared tensor once, so an export lacks the other names."""
    groups: dict[int, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append(name)
    return {name for names in groups.values() if len(names) > 1 and any(n in state for n in names) for name in names}


def merged_state_dict(artifact: Artifact) -> dict[str, Tensor]:
    """The artifact's weights with any LoRA adapters folded in: what a further fine-tuning starts from."""
    if not artifact.record.lora:
        return artifact.state_dict
    from attnfit.models.lora import merge_lora

    model = build_model(artifact)
    merge_lora(model)
    return model.state_dict()


@dataclass
class Pretrained:
    """What :func:`load_pretrained` returns; unpacks as ``model, tokenizer``.

    ``record`` is the typed metadata (``record.label_names`` for classifiers, ``record.decode`` for seq2seq);
    ``target_tokenizer`` is the seq2seq target side (the same object as ``tokenizer`` for a joint vocabulary)."""

    model: nn.Module
    tokenizer: Any
    target_tokenizer: Any
    record: ModelRecord

    def __iter__(self) -> Iterator[Any]:  # unpacks as ``model, tokenizer``
        return iter((self.model, self.tokenizer))


def load_pretrained(path: str | Path) -> Pretrained:
    """``model, tokenizer = attnfit.load_pretrained(path)`` for an exported directory, run directory or ``.ckpt``,
    or a Hugging Face BERT / GPT-2 checkpoint (``hf:bert-base-uncased`` or its local directory).

    The model is in eval mode; the tokenizer is a ``tokenizers.Tokenizer``. Keep the whole result to reach the
    record and, for seq2seq, the target tokenizer."""
    artifact = load_artifact(path)
    tokenizer, target = artifact.record.tokenizers()
    return Pretrained(build_model(artifact).eval(), tokenizer, target, artifact.record)


def export(artifact: Artifact, out: str | Path, merge_lora: bool = True) -> Path:
    """Write ``model.safetensors``, ``config.json`` and ``tokenizer.json`` to ``out``; LoRA is merged by default.

    A seq2seq model with its own target vocabulary adds ``target_tokenizer.json``."""
    from safetensors.torch import save_model

    model = build_model(artifact)
    record = artifact.record
    if record.lora and merge_lora:
        from attnfit.models.lora import merge_lora as merge

        merge(model)
        record = dataclasses.replace(record, lora=None)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"out={out} is a file; give a directory to export into")
    out.mkdir(parents=True, exist_ok=True)
    save_model(model, str(out / EXPORT_WEIGHTS))  # shared (tied) tensors are stored once
    meta = record.to_dict()
    tokenizer, target = meta.pop("tokenizer"), meta.pop("target_tokenizer")
    (out / EXPORT_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
    (out / EXPORT_TOKENIZER).write_text(tokenizer)
    target_path = out / EXPORT_TARGET_TOKENIZER
    if target:
        target_path.write_text(target)
    elif target_path.exists():  # left over from an earlier export to the same directory
        target_path.unlink()
    return out
