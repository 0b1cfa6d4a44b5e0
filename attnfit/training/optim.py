"""Optimizers (AdamW, SGD, Adafactor or any ``torch.optim`` class) over weight-decay groups, and warmup +
cosine/linear/constant schedules."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from attnfit.errors import ConfigError, check_choice

SCHEDULES = ("cosine", "linear", "constant")
BUDGETS = ("steps", "time")  # what the decay spans: the run's steps, or (time) also its trainer.max_time


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only: biases, norms and embeddings are left alone, as in BERT/GPT recipes."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))  # tied weights appear twice
            plain = isinstance(module, (nn.LayerNorm, nn.Embedding)) or name.endswith("bias") or param.dim() < 2
            (no_decay if plain else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ``optimizer.name`` presets; any other class is named by ``optimizer._target_`` (configs/optimizer/custom.yaml).
OPTIMIZERS = {"adamw": "torch.optim.AdamW", "adam": "torch.optim.AdamW", "sgd": "torch.optim.SGD",
              "adafactor": "torch.optim.Adafactor"}  # fmt: skip


def optimizer_class(name: str | None, target: str | None = None) -> type[torch.optim.Optimizer]:
    """The class ``optimizer._target_`` names (any ``torch.optim.Optimizer``), else the ``optimizer.name`` preset's."""
    if target == "???":
        raise ConfigError("optimizer=custom needs optimizer._target_=CLASS, e.g. torch.optim.RMSprop")
    if target is None:
        check_choice("optimizer", name, OPTIMIZERS)
        target = OPTIMIZERS[name]
    from hydra.utils import get_class

    try:
        cls = get_class(target)
    except Exception as error:
        raise ConfigError(f"optimizer._target_={target} cannot be imported: {str(error).splitlines()[0]}") from None
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError(f"optimizer._target_={target} is not a torch.optim.Optimizer class")
    return cls


def build_optimizer(
    groups: Iterable[dict],
    name: str | None = "adamw",
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    _target_: str | None = None,
    fused: bool | None = None,
    **options: Any,
) -> torch.optim.Optimizer:
    """An optimizer over parameter ``groups``, which may carry their own ``lr`` and ``weight_decay`` (decay groups,
    layer-wise learning rates); ``options`` (``betas``, ``momentum``, …) go to the class's constructor.

    ``name``: ``adamw``, ``adam`` (AdamW without weight decay), ``sgd`` or ``adafactor``; ``_target_`` names any
    other ``torch.optim.Optimizer`` class instead. ``fused=None`` uses the fused kernel where the class has one
    and the parameters are on CUDA."""
    cls = optimizer_class(None if _target_ else name, _target_)
    what = _target_ or name
    if not math.isfinite(lr) or lr <= 0:  # inf passes "> 0" and NaN fails every comparison silently
        raise ConfigError(f"optimizer.lr={lr} must be > 0 and finite")
    if not math.isfinite(weight_decay) or weight_decay < 0:
        raise ConfigError(f"optimizer.weight_decay={weight_decay} must be ≥ 0 and finite")
    betas = options.get("betas")
    if betas is not None and not all(math.isfinite(b) and 0.0 <= b < 1.0 for b in betas):
        raise ConfigError(f"optimizer.betas={list(betas)} must be in [0, 1)")
    eps = options.get("eps", 1.0)
    if isinstance(eps, (int, float)) and not (math.isfinite(eps) and eps > 0):
        raise ConfigError(f"optimizer.eps={eps} must be > 0")
    if betas is not None:
        options["betas"] = tuple(betas)
    accepted = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    unknown = sorted(k for k in options if k not in accepted) if not takes_any else []
    if unknown:
        valid = ", ".join(k for k in accepted if k not in ("self", "params"))
        raise ConfigError(f"optimizer.{unknown[0]} is not an option of {cls.__module__}.{cls.__name__} ({what}); "
                          f"its options: {valid}")  # fmt: skip
    groups = [g for g in groups if g["params"]]
    if name == "adam" and not _target_:
        for group in groups:
            group["weight_decay"] = 0.0
    if "fused" in accepted:
        on_cuda = all(p.is_cuda for g in groups for p in g["params"])
        options["fused"] = (on_cuda and bool(groups)) if fused is None else fused
    try:
        return cls(groups, lr=lr, **options)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ConfigError(f"optimizer ({what}): {error}") from None


def lr_multiplier(
    step: int, name: str, warmup_steps: int, total_steps: int, min_lr_ratio: float, time_used: float = 0.0
) -> float:
    """Linear warmup to 1, then ``name`` decay to ``min_lr_ratio`` at ``total_steps``, or sooner: the decay is at
    least as far along as ``time_used``, the fraction of a time budget spent (0 when there is none)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if name == "constant":
        return 1.0
    progress = min(1.0, max((step - warmup_steps) / max(1, total_steps - warmup_steps), time_used))
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if name == "cosine" else 1 - progress
    return min_lr_ratio + (1 - min_lr_ratio) * shape


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    total_steps: int,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.1,
    decay_steps: int | None = None,
    budget: str = "steps",
    time_used: Callable[[], float] | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule; its position is restored from checkpoints by Lightning. The decay spans
    ``decay_steps`` when given, else the run's ``total_steps`` (so a fixed ``decay_steps`` keeps the schedule
    when a run is continued with a larger ``max_steps``).

    ``budget="time"``: the decay also ends when the run's time limit does, whichever comes first, so a slower
    machine still finishes it; ``time_used()`` gives the fraction of that limit spent (the run's clock, restored
    on resume). The learning rate then depends on the machine's speed: runs are no longer step-for-step
    reproducible."""
    check_choice("scheduler", name, SCHEDULES)
    check_choice("scheduler.budget", budget, BUDGETS)
    if budget == "time" and time_used is None:
        raise ConfigError("scheduler.budget=time needs trainer.max_time: the decay ends when that limit does")
    if warmup_steps < 0 or not 0.0 <= min_lr_ratio <= 1.0:
        raise ConfigError(
            f"scheduler.warmup_steps={warmup_steps} must be ≥ 0 and scheduler.min_lr_ratio={min_lr_ratio} in [0, 1]"
        )
    if decay_steps is not None and decay_steps < 1:
        raise ConfigError(f"scheduler.decay_steps={decay_steps} must be ≥ 1, or null for trainer.max_steps")
    span = decay_steps or total_steps
    clock = time_used if budget == "time" else None
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, name, warmup_steps, span, min_lr_ratio, clock() if clock else 0.0)
    )


def layerwise_groups(
    model: nn.Module,
    layers: list[list[nn.Parameter]],
    head: list[nn.Parameter],
    lr: float,
    weight_decay: float,
    layer_decay: float = 1.0,
    head_lr: float | None = None,
) -> list[dict]:
    """Parameter groups for fine-tuning: the top layer at ``lr``, each lower one ``layer_decay`` times smaller
    (layer-wise LR decay), the new head at ``head_lr``; weight decay split as in :func:`decay_groups`."""
    if not 0.0 < layer_decay <= 1.0:
        raise ConfigError(f"finetune.layer_lr_decay={layer_decay} must be in (0, 1]")
    plain = {id(p) for p in decay_groups(model, 0.0)[1]["params"]}
    groups = []

    def add(params: list[nn.Parameter], group_lr: float) -> None:
        for decayed in (True, False):
            chosen = [p for p in params if (id(p) not in plain) == decayed]
            if chosen:
                groups.append({"params": chosen, "lr": group_lr, "weight_decay": weight_decay if decayed else 0.0})

    for depth, params in enumerate(reversed(layers)):
        add(params, lr * layer_decay**depth)
    add(head, head_lr if head_lr is not None else lr)
    return groups
