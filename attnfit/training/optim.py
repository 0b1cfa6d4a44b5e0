"""AdamW with weight-decay groups, and warmup + cosine/linear/constant schedules."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from attnfit.errors import ConfigError, check_choice

SCHEDULES = ("cosine", "linear", "constant")


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


def build_optimizer(
    groups: Iterable[dict],
    name: str = "adamw",
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-8,
) -> torch.optim.Optimizer:
    """AdamW (or Adam) over parameter ``groups``; groups may carry their own ``lr`` and ``weight_decay``."""
    check_choice("optimizer", name, ("adamw", "adam"))
    if not math.isfinite(lr) or lr <= 0:  # inf passes "> 0" and NaN fails every comparison silently
        raise ConfigError(f"optimizer.lr={lr} must be > 0 and finite")
    if not math.isfinite(weight_decay) or weight_decay < 0:
        raise ConfigError(f"optimizer.weight_decay={weight_decay} must be ≥ 0 and finite")
    if not all(math.isfinite(b) and 0.0 <= b < 1.0 for b in betas) or not (math.isfinite(eps) and eps > 0):
        raise ConfigError(f"optimizer.betas={list(betas)} must be in [0, 1) and optimizer.eps={eps} > 0")
    groups = [g for g in groups if g["params"]]
    if name == "adam":
        for group in groups:
            group["weight_decay"] = 0.0
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)


def lr_multiplier(step: int, name: str, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Linear warmup to 1, then ``name`` decay to ``min_lr_ratio`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if name == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if name == "cosine" else 1 - progress
    return min_lr_ratio + (1 - min_lr_ratio) * shape


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    total_steps: int,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.1,
    decay_steps: int | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule; its position is restored from checkpoints by Lightning. The decay spans
    ``decay_steps`` when given, else the run's ``total_steps`` (so a fixed ``decay_steps`` keeps the schedule
    when a run is continued with a larger ``max_steps``)."""
    check_choice("scheduler", name, SCHEDULES)
    if warmup_steps < 0 or not 0.0 <= min_lr_ratio <= 1.0:
        raise ConfigError(
            f"scheduler.warmup_steps={warmup_steps} must be ≥ 0 and scheduler.min_lr_ratio={min_lr_ratio} in [0, 1]"
        )
    if decay_steps is not None and decay_steps < 1:
        raise ConfigError(f"scheduler.decay_steps={decay_steps} must be ≥ 1, or null for trainer.max_steps")
    span = decay_steps or total_steps
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, name, warmup_steps, span, min_lr_ratio)
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
