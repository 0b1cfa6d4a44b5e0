"""LoRA (Hu et al., 2021): fine-tune a frozen model through low-rank updates ``W + (alpha/r)·B·A``.

Only ``A (r, in)`` and ``B (out, r)`` train, a small fraction of the weights; :func:`merge_lora` folds them back
into plain ``nn.Linear`` layers, so an exported model is the same architecture as before and runs as fast.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from attnfit.errors import ConfigError, check_fraction
from attnfit.models.attention import MultiHeadAttention
from attnfit.models.encoders import FeedForward

ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
LORA_TARGETS = (*ATTENTION_TARGETS, "ffn")  # "ffn" = both Linears of every FeedForward


class LoRALinear(nn.Module):
    """``y = base(x) + (B·A·dropout(x))·alpha/r``; base frozen, B starts at zero so training starts at the base."""

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, dropout: float = 0.0) -> None:
        super().__init__()
        _check_hyperparameters(r, dropout)
        self.base = base
        self.base.requires_grad_(False)
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **factory))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, **factory))  # (out, r)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's own init, as in the paper's code
        self.dropout = nn.Dropout(dropout)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: Tensor) -> Tensor:  # (..., in) -> (..., out)
        update = (self.dropout(x) @ self.lora_A.T) @ self.lora_B.T  # (..., r) -> (..., out)
        return self.base(x) + update * self.scaling

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain Linear computing the same function (up to float error): ``W + (alpha/r)·B@A``, same bias."""
        base = self.base
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        linear = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None, **factory)
        delta = (self.lora_B.float() @ self.lora_A.float()) * self.scaling  # (out, in), in fp32 for low precision
        linear.weight.copy_(base.weight.float() + delta)
        linear.weight.requires_grad_(base.weight.requires_grad)
        if base.bias is not None:
            linear.bias.copy_(base.bias)
            linear.bias.requires_grad_(base.bias.requires_grad)
        return linear

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}"


def apply_lora(
    module: nn.Module,
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    targets: Iterable[str] = LORA_TARGETS,
) -> list[str]:
    """Wrap the target Linears in :class:`LoRALinear` and freeze every other parameter of ``module``.

    Attention targets are the projections of every :class:`MultiHeadAttention` (so on RNN/CNN encoders, the
    attention layers on top; the recurrent/convolutional weights just stay frozen). Apply it to
    ``model.backbone`` to keep a new classification head trainable. Returns the wrapped modules' names.
    """
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    unknown = [t for t in targets if t not in LORA_TARGETS]
    if unknown or not targets:
        close = difflib.get_close_matches(str(unknown[0]), LORA_TARGETS, n=1) if unknown else []
        raise ConfigError(
            f"unknown LoRA target(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"valid choices: {', '.join(LORA_TARGETS)}" + (f" (did you mean {close[0]!r}?)" if close else "")
        )
    _check_hyperparameters(r, dropout)

    to_wrap: list[tuple[nn.Module, str, str]] = []  # (parent, attribute, full name)
    for name, child in module.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(child, MultiHeadAttention):
            to_wrap += [(child, attr, prefix + attr) for attr in ATTENTION_TARGETS if attr in targets]
        elif isinstance(child, FeedForward) and "ffn" in targets:
            to_wrap += [(child, key, prefix + key) for key, sub in child.named_children() if isinstance(sub, nn.Linear)]
    # Collected first, replaced after: never mutate modules while iterating them.
    wrapped = []
    for parent, attr, name in to_wrap:
        linear = getattr(parent, attr)
        if isinstance(linear, nn.Linear):  # an existing LoRALinear is left as it is
            setattr(parent, attr, LoRALinear(linear, r, alpha, dropout))
            wrapped.append(name)
    if not wrapped and not any(isinstance(m, LoRALinear) for m in module.modules()):
        raise ConfigError(
            f"LoRA found no layer to adapt for targets {', '.join(targets)} in {type(module).__name__}: "
            "it adapts the Linear layers of attention and feed-forward sublayers"
        )

    lora = {id(p) for p in lora_parameters(module)}
    for parameter in module.parameters():
        parameter.requires_grad_(id(parameter) in lora)
    return wrapped


def merge_lora(module: nn.Module) -> int:
    """Replace every :class:`LoRALinear` in ``module`` by its merged ``nn.Linear``, in place; returns how many.

    The merged layers keep the base weights' ``requires_grad`` (False after :func:`apply_lora`).
    """
    found = [(name, child) for name, child in module.named_modules() if name and isinstance(child, LoRALinear)]
    for name, child in found:
        parent_name, _, attr = name.rpartition(".")
        setattr(module.get_submodule(parent_name), attr, child.merged())
    return len(found)


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The trainable ``A``/``B`` matrices of every :class:`LoRALinear` in ``module``."""
    return [p for m in module.modules() if isinstance(m, LoRALinear) for p in (m.lora_A, m.lora_B)]


def _check_hyperparameters(r: int, dropout: float) -> None:
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ConfigError(f"lora.r={r!r} must be an integer ≥ 1 (the rank of the update; 4-16 is usual)")
    check_fraction("lora.dropout", dropout)
