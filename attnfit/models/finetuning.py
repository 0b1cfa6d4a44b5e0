"""Fine-tuning helpers: layer groups for freezing (or layer-wise learning rates) and loading a pretrained backbone."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from attnfit.errors import CheckpointError, ConfigError
from attnfit.models.language_model import Backbone, LanguageModel


def layer_groups(backbone: Backbone) -> list[list[nn.Parameter]]:
    """Backbone parameters bottom to top: ``[embeddings]``, then the encoder's own groups (``layer_groups()``).

    Transformer: each layer of the stack. RNN: each recurrent layer ``k`` (both directions), then each attention
    layer on top. CNN: each conv block, then each attention layer on top. The stack's final LayerNorm joins the
    last group. Every parameter appears exactly once.
    """
    encoder_groups = getattr(backbone.encoder, "layer_groups", None)
    if encoder_groups is None:
        raise TypeError(f"the encoder {type(backbone.encoder).__name__} does not define layer_groups()")
    groups: list[list[nn.Parameter]] = [list(backbone.embeddings.parameters()), *encoder_groups()]

    # Guard against a new encoder submodule silently escaping freezing.
    grouped = [id(p) for group in groups for p in group]
    missing = [name for name, p in backbone.named_parameters() if id(p) not in grouped]
    if missing or len(grouped) != len(set(grouped)):
        raise AssertionError(f"layer groups miss {missing} or repeat a parameter")
    return groups


def freeze_bottom(backbone: Backbone, freeze_embeddings: bool, num_layers: int) -> int:
    """Freeze the embeddings (if asked) and the lowest ``num_layers`` encoder layers; returns frozen values.

    Lower layers hold general features that a small labelled set would mostly disturb; freezing them also saves
    their gradients and optimizer state. Layers count as in :func:`layer_groups` (RNN/CNN: their own layers,
    then the attention layers on top).
    """
    groups = layer_groups(backbone)
    available = len(groups) - 1
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or not 0 <= num_layers <= available:
        name = backbone.config.encoder.name
        composition = "" if name == "transformer" else f" ({backbone.encoder.describe_layers()})"
        raise ConfigError(
            f"cannot freeze {num_layers!r} encoder layers: this {backbone.config.encoder.name} encoder has "
            f"{available} layers{composition} (valid: 0 to {available})"
        )
    frozen = (groups[:1] if freeze_embeddings else []) + groups[1 : 1 + num_layers]
    count = 0
    for group in frozen:
        for parameter in group:
            parameter.requires_grad_(False)
            count += parameter.numel()
    return count


@dataclass
class FinetunePlan:
    """What :func:`prepare_for_finetuning` did to a model, and what training needs to carry it out."""

    layers: list[list[nn.Parameter]]  # backbone groups bottom to top, permanently frozen parameters left out
    head: list[nn.Parameter]  # the parameters outside the backbone (the new head)
    lora: dict[str, Any] | None  # LoRA settings when adapters were applied
    layer_lr_decay: float = 1.0
    head_lr: float | None = None


def prepare_for_finetuning(model: nn.Module, finetune: dict[str, Any]) -> FinetunePlan:
    """Apply LoRA and freezing (``finetune``: the keys of configs/finetune.yaml) to ``model.backbone``.

    Call it after the pretrained weights are loaded, so LoRA wraps layers whose keys already match."""
    from attnfit.models.lora import apply_lora

    lora = finetune.get("lora") or {}
    settings = None
    unfreeze_every = finetune.get("gradual_unfreeze_every")
    if unfreeze_every is not None and (isinstance(unfreeze_every, bool) or int(unfreeze_every) < 1):
        raise ConfigError(f"finetune.gradual_unfreeze_every={unfreeze_every} must be ≥ 1 (or null)")
    if lora.get("enabled"):
        if unfreeze_every:
            raise ConfigError("finetune.gradual_unfreeze_every cannot be combined with finetune.lora.enabled=true")
        settings = {k: v for k, v in lora.items() if k != "enabled"}
        apply_lora(model.backbone, **settings)
    freeze_bottom(model.backbone, bool(finetune.get("freeze_embeddings")), int(finetune.get("freeze_layers", 0)))
    # Permanently frozen parameters are left out; those gradual unfreezing will turn on stay in, and AdamW
    # skips them while their gradient is None, so they do not change before then (weight decay included).
    layers = [[p for p in group if p.requires_grad] for group in layer_groups(model.backbone)]
    head = [p for name, p in model.named_parameters() if not name.startswith("backbone.")]
    head_lr = finetune.get("head_lr")
    return FinetunePlan(
        layers,
        head,
        settings,
        float(finetune.get("layer_lr_decay", 1.0)),
        float(head_lr) if head_lr is not None else None,
    )


def unfreeze_top(layers: list[list[nn.Parameter]], every: int, step: int) -> None:
    """ULMFiT's gradual unfreezing at optimizer step ``step``: the top layer first, one more every ``every`` steps."""
    unfrozen = 1 + step // every
    for depth, params in enumerate(reversed(layers)):
        for p in params:
            p.requires_grad_(depth < unfrozen)


@dataclass
class LoadSummary:
    """What :func:`load_pretrained_backbone` did, to log once at the start of fine-tuning."""

    loaded: list[str]  # model keys copied from the checkpoint
    initialised: list[str]  # model keys left at their fresh initialisation (new heads)
    dropped: list[str]  # checkpoint keys not used (the pretraining head)
    loaded_values: int = 0  # number of values in the loaded tensors
    source: str = field(default="checkpoint")

    def summary(self) -> str:
        parts = [f"loaded {len(self.loaded)} tensors ({_millions(self.loaded_values)} values) from the {self.source}"]
        parts.append(f"newly initialised: {_abbreviate(self.initialised)}")
        parts.append(f"dropped: {_abbreviate(self.dropped)}")
        return "; ".join(parts)


def _encoder_kind(keys: Iterable[str]) -> str:
    """Which encoder family a backbone state dict comes from, by its key names."""
    prefixes = {"encoder.rnn.": "recurrent (lstm/gru)", "encoder.blocks.": "cnn", "encoder.stack.": "transformer"}
    found = {kind for key in keys for prefix, kind in prefixes.items() if key.startswith(prefix)}
    return " + ".join(sorted(found)) or "unknown"


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 10_000 else str(n)


def _abbreviate(names: list[str], limit: int = 6) -> str:
    if not names:
        return "none"
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit])}, … ({len(names) - limit} more)"


def load_pretrained_backbone(
    model: nn.Module, state_dict: dict[str, Tensor], source: str = "checkpoint"
) -> LoadSummary:
    """Copy every ``backbone.*`` tensor of ``state_dict`` into ``model.backbone``: all of them or none.

    ``model`` is anything with a ``.backbone`` (a SequenceClassifier, a LanguageModel). Keys may carry Lightning's
    ``model.`` prefix, and a whole Lightning checkpoint (with a ``state_dict`` entry) is accepted too. A missing or
    unexpected backbone key or a shape mismatch raises :class:`CheckpointError`: a partially loaded backbone
    would train without complaint and quietly do worse.
    """
    if not isinstance(getattr(model, "backbone", None), nn.Module):
        raise TypeError(f"{type(model).__name__} has no .backbone module to load into")
    if isinstance(state_dict.get("state_dict"), dict):
        state_dict = state_dict["state_dict"]
    if any(key.startswith("model.backbone.") for key in state_dict):
        state_dict = {key.removeprefix("model."): value for key, value in state_dict.items()}

    incoming = {key.removeprefix("backbone."): v for key, v in state_dict.items() if key.startswith("backbone.")}
    dropped = [key for key in state_dict if not key.startswith("backbone.")]
    expected = model.backbone.state_dict(keep_vars=True)
    if not incoming:
        raise CheckpointError(
            f"the {source} has no backbone.* tensors to load; its keys start: {_abbreviate(list(state_dict), 4)}"
        )
    problems = [  # shape mismatches first: the most telling (a different vocabulary, dim or ffn width)
        f"backbone.{key}: {source} {tuple(incoming[key].shape)} vs model {tuple(tensor.shape)}"
        for key, tensor in expected.items()
        if key in incoming and incoming[key].shape != tensor.shape
    ]
    problems += [f"backbone.{key}: missing from the {source}" for key in expected if key not in incoming]
    problems += [f"backbone.{key}: in the {source} but not in the model" for key in incoming if key not in expected]
    if problems:
        theirs, ours = _encoder_kind(incoming), _encoder_kind(expected)
        kinds = f"; the {source} has a {theirs} encoder, the model a {ours} encoder" if theirs != ours else ""
        listed = "\n  ".join(problems[:8]) + (f"\n  … and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise CheckpointError(
            f"the {source}'s backbone does not match the model ({len(problems)} problem(s){kinds}); "
            f"model/encoder/attention/tokenizer settings must equal those used for pretraining:\n  {listed}"
        )

    with torch.no_grad():
        model.backbone.load_state_dict(incoming, strict=True)
    loaded_tensors = {id(t) for t in expected.values()}
    loaded = [f"backbone.{key}" for key in expected]
    # Tensors tied to a loaded one (an LM's output embedding) are loaded too, not fresh.
    initialised = [
        key
        for key, tensor in model.state_dict(keep_vars=True).items()
        if not key.startswith("backbone.") and id(tensor) not in loaded_tensors
    ]
    return LoadSummary(
        loaded=loaded,
        initialised=initialised,
        dropped=dropped,
        loaded_values=sum(t.numel() for t in expected.values()),
        source=source,
    )


def auxiliary_mlm(model: nn.Module, state_dict: dict[str, Tensor] | None = None) -> LanguageModel:
    """A masked LM over ``model.backbone`` (shared, not copied), for GPT's auxiliary LM objective while
    fine-tuning: the task's own sentences, masked, keep training the backbone as it was pretrained.

    ``state_dict``: a masked LM's weights, whose MLM head (``head.*``) starts the auxiliary one; None: a new head.
    """
    lm = LanguageModel(model.backbone.config, backbone=model.backbone)
    if state_dict is not None:
        head = {key.removeprefix("head."): value for key, value in state_dict.items() if key.startswith("head.")}
        tied = {"decoder.weight"} if lm.config.tie_embeddings else set()
        expected = {key for key in lm.head.state_dict() if key not in tied}
        if not expected <= set(head):
            missing = sorted(expected - set(head))
            raise CheckpointError(f"the checkpoint has no masked-LM head to continue (missing: head.{missing[0]})")
        with torch.no_grad():
            lm.head.load_state_dict({key: head[key] for key in expected}, strict=False)
    return lm
