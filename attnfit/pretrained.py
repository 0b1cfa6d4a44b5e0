"""Saved models in any of their three forms — run directory, Lightning ``.ckpt``, exported directory —
read as plain data, rebuilt as plain PyTorch modules, and exported as safetensors.

Nothing here imports Lightning or Hydra, so ``attnfit.load_pretrained`` works in any Python program.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attnfit.errors import CheckpointError

FORMAT_VERSION = 1
CHECKPOINT_KEY = "attnfit"  # where a Lightning checkpoint keeps attnfit's plain-data metadata
EXPORT_WEIGHTS, EXPORT_CONFIG, EXPORT_TOKENIZER = "model.safetensors", "config.json", "tokenizer.json"
EXPORT_TARGET_TOKENIZER = "target_tokenizer.json"  # seq2seq with a separate target vocabulary only


@dataclass
class Artifact:
    """Everything needed to rebuild a trained model: configs, tokenizer and weights (model keys, no prefix)."""

    task: str  # mlm | clm | classification | seq2seq
    model_config: dict[str, Any]
    tokenizer_json: str
    state_dict: dict[str, Tensor]
    source: Path
    classifier_config: dict[str, Any] | None = None
    label_names: list[str] | None = None
    lora: dict[str, Any] | None = None  # LoRA settings when the weights hold unmerged adapters
    run_config: dict[str, Any] | None = None  # the training run's resolved config, when known
    extra: dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        """Plain-data description (no weights): what checkpoints and ``config.json`` store."""
        return {
            "format_version": FORMAT_VERSION,
            "task": self.task,
            "model_config": self.model_config,
            "classifier_config": self.classifier_config,
            "label_names": self.label_names,
            "lora": self.lora,
        }


def checkpoint_metadata(
    task: str,
    model_config: dict,
    tokenizer_json: str,
    *,
    classifier_config: dict | None = None,
    label_names: list[str] | None = None,
    lora: dict | None = None,
    run_config: dict | None = None,
) -> dict[str, Any]:
    """The ``checkpoint["attnfit"]`` entry written by the training modules (plain data: loads weights-only)."""
    return {
        "format_version": FORMAT_VERSION,
        "task": task,
        "model_config": model_config,
        "tokenizer": tokenizer_json,
        "classifier_config": classifier_config,
        "label_names": label_names,
        "lora": lora,
        "run_config": run_config,
    }


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory means its best checkpoint (else ``last.ckpt``); a file or export directory is itself."""
    path = Path(str(path)).expanduser()  # a config may hand over a number or other scalar
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir() and not (path / EXPORT_CONFIG).exists():
        checkpoints = path / "checkpoints"
        best = sorted(checkpoints.glob("best-*.ckpt"))
        if best:
            return best[-1]
        if (checkpoints / "last.ckpt").exists():
            return checkpoints / "last.ckpt"
        raise CheckpointError(
            f"{path} is neither a run directory (no checkpoints/*.ckpt) nor an exported model (no {EXPORT_CONFIG})"
        )
    return path


def newest_valid_checkpoint(run_dir: str | Path) -> tuple[Path, list[str]]:
    """The most recent checkpoint of a run directory that loads, and a note for each broken one skipped."""
    directory = Path(run_dir) / "checkpoints"
    candidates = sorted(directory.glob("*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
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


def load_artifact(path: str | Path) -> Artifact:
    """Read a run directory, ``.ckpt`` file or exported directory; never unpickles arbitrary objects."""
    path = resolve_checkpoint(path)
    if path.is_dir():
        return _load_export(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # truncated, not a zip, or holds objects that are not plain data
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint: {first_line}") from None
    meta = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(meta, dict) or "model_config" not in meta:
        raise CheckpointError(f"{path} is not an attnfit checkpoint (it has no '{CHECKPOINT_KEY}' metadata)")
    _check_version(meta, path)
    state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    return Artifact(
        task=meta["task"],
        model_config=meta["model_config"],
        tokenizer_json=meta["tokenizer"],
        state_dict=state,
        source=path,
        classifier_config=meta.get("classifier_config"),
        label_names=meta.get("label_names"),
        lora=meta.get("lora"),
        run_config=meta.get("run_config"),
        extra={k: meta[k] for k in ("target_tokenizer", "decode", "metric") if k in meta},
    )


def _load_export(directory: Path) -> Artifact:
    from safetensors.torch import load_file

    for name in (EXPORT_CONFIG, EXPORT_WEIGHTS, EXPORT_TOKENIZER):
        if not (directory / name).exists():
            raise CheckpointError(f"exported model {directory} is missing {name}")
    try:
        meta = json.loads((directory / EXPORT_CONFIG).read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{directory / EXPORT_CONFIG} is not valid JSON: {error}") from None
    _check_version(meta, directory)
    extra = {k: meta[k] for k in ("decode", "metric") if k in meta}
    if meta.get("task") == "seq2seq":
        target = directory / EXPORT_TARGET_TOKENIZER
        extra["target_tokenizer"] = target.read_text() if target.exists() else None
    return Artifact(
        task=meta["task"],
        model_config=meta["model_config"],
        tokenizer_json=(directory / EXPORT_TOKENIZER).read_text(),
        state_dict=load_file(directory / EXPORT_WEIGHTS),
        source=directory,
        classifier_config=meta.get("classifier_config"),
        label_names=meta.get("label_names"),
        lora=meta.get("lora"),
        run_config=meta.get("run_config"),
        extra=extra,
    )


def _check_version(meta: dict, path: Path) -> None:
    version = meta.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer attnfit (format {version}, this version reads ≤ {FORMAT_VERSION}); upgrade"
        )


def build_model(artifact: Artifact, load_weights: bool = True) -> nn.Module:
    """The plain PyTorch model an artifact describes (LoRA adapters re-applied when its weights hold them)."""
    from attnfit.models import LanguageModel, ModelConfig

    if artifact.task == "seq2seq":
        from attnfit.models.seq2seq import Seq2SeqConfig, Seq2SeqModel

        model: nn.Module = Seq2SeqModel(Seq2SeqConfig.from_dict(artifact.model_config))
        tied: set[str] = set()
    else:
        config = ModelConfig.from_dict(artifact.model_config)
        if artifact.task == "classification":
            from attnfit.models.classifier import ClassifierConfig, SequenceClassifier

            model = SequenceClassifier(config, ClassifierConfig.from_dict(artifact.classifier_config))
            model.label_names = list(artifact.label_names or [])
        else:
            model = LanguageModel(config)
        tied = {"head.decoder.weight"} if config.tie_embeddings and artifact.task != "classification" else set()
    if artifact.lora:
        from attnfit.models.lora import apply_lora

        apply_lora(model.backbone, **artifact.lora)
    if load_weights:
        missing, unexpected = model.load_state_dict(artifact.state_dict, strict=False)
        absent = set(missing) - tied - _stored_under_another_name(model, artifact.state_dict)
        if absent or unexpected:
            raise CheckpointError(
                f"{artifact.source} does not match its own model config: missing {sorted(absent)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}"
            )
    return model


def _stored_under_another_name(model: nn.Module, state: dict[str, Tensor]) -> set[str]:
    """Names of shared tensors (tied output layer, shared embeddings) whose value ``state`` holds under another
    of their names: safetensors stores a shared tensor once, so an export lacks the other names."""
    groups: dict[int, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append(name)
    return {name for names in groups.values() if len(names) > 1 and any(n in state for n in names) for name in names}


def merged_state_dict(artifact: Artifact) -> dict[str, Tensor]:
    """The artifact's weights with any LoRA adapters folded in: what a further fine-tuning starts from."""
    if not artifact.lora:
        return artifact.state_dict
    from attnfit.models.lora import merge_lora

    model = build_model(artifact)
    merge_lora(model)
    return model.state_dict()


def load_pretrained(path: str | Path) -> tuple[nn.Module, Any]:
    """``model, tokenizer = attnfit.load_pretrained(path)`` for an exported directory, run directory or ``.ckpt``.

    The model is in eval mode; classifiers carry ``model.label_names``. The tokenizer is a ``tokenizers.Tokenizer``;
    for a seq2seq model it is the source tokenizer, and the model carries ``model.target_tokenizer`` (the same object
    when the vocabulary is joint) and ``model.decode_config`` (beam_size, length_penalty, max_len of its training).
    """
    from tokenizers import Tokenizer

    artifact = load_artifact(path)
    model, tokenizer = build_model(artifact).eval(), Tokenizer.from_str(artifact.tokenizer_json)
    if artifact.task == "seq2seq":
        target = artifact.extra.get("target_tokenizer")
        model.target_tokenizer = Tokenizer.from_str(target) if target else tokenizer
        model.decode_config = dict(artifact.extra.get("decode") or {})
    return model, tokenizer


def export(artifact: Artifact, out: str | Path, merge_lora: bool = True) -> Path:
    """Write ``model.safetensors``, ``config.json`` and ``tokenizer.json`` to ``out``; LoRA is merged by default.

    A seq2seq model with its own target vocabulary adds ``target_tokenizer.json``; its decoding settings and metric
    go into ``config.json``."""
    from safetensors.torch import save_model

    model = build_model(artifact)
    lora = artifact.lora
    if lora and merge_lora:
        from attnfit.models.lora import merge_lora as merge

        merge(model)
        lora = None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_model(model, str(out / EXPORT_WEIGHTS))  # shared (tied) tensors are stored once
    meta = {**artifact.metadata(), "lora": lora, "run_config": artifact.run_config}
    meta.update({k: v for k, v in artifact.extra.items() if k in ("decode", "metric")})
    (out / EXPORT_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
    (out / EXPORT_TOKENIZER).write_text(artifact.tokenizer_json)
    target = out / EXPORT_TARGET_TOKENIZER
    if artifact.extra.get("target_tokenizer"):
        target.write_text(artifact.extra["target_tokenizer"])
    elif target.exists():  # left over from an earlier export to the same directory
        target.unlink()
    return out
