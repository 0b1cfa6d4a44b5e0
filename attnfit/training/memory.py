"""How much memory a training run will take per device, estimated before it starts.

Four parts: weights, gradients, optimizer state (all three divided over the ranks under FSDP) and activations, the
tensors the forward pass keeps for the backward pass at the configured batch and sequence length. Each transformer
layer keeps, per token, its two LayerNorm inputs, the q/k/v projections' input and outputs, the attention output,
the feed-forward input and its hidden layer before and after GELU: ``8·dim + 2·ffn`` values (fused SDPA keeps no
attention map). With activation checkpointing a layer keeps its input only, and one layer at a time is recomputed.
A language-model head adds ``3 · labelled tokens · vocabulary`` float32 values as the backward pass begins: the
log-softmax of the logits and the two gradients of the cross-entropy's backward pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# Optimizer state per parameter value, in units of the parameter's own size.
OPTIMIZER_STATES = {"adamw": 2.0, "adam": 2.0, "sgd": 1.0, "adafactor": 0.0}  # adafactor: rows + columns, below


@dataclass
class MemoryEstimate:
    """Bytes per device."""

    parameters: int
    weights: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def describe(self) -> str:
        parts = ", ".join(
            f"{name} {gib(value)}"
            for name, value in (
                ("weights", self.weights),
                ("gradients", self.gradients),
                ("optimizer", self.optimizer),
                ("activations", self.activations),
            )
        )
        count = f"{self.parameters / 1e6:.{1 if self.parameters >= 1e7 else 3}f}M parameters"
        return f"{count}; memory per device ≈ {gib(self.total)} ({parts})"


def gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


def _bytes(precision: str) -> tuple[int, int]:
    """(bytes of a weight, gradient and optimizer value; bytes of an activation) for a Lightning precision."""
    precision = str(precision)
    if precision.startswith("64"):
        return 8, 8
    if precision.endswith("-true") and "16" in precision:  # bf16-true / 16-true: everything in 16 bits
        return 2, 2
    if "16" in precision:  # mixed: float32 master weights, 16-bit activations
        return 4, 2
    return 4, 4


def _transformer_layers(model: nn.Module) -> list[tuple[int, int]]:
    """``(dim, ffn hidden)`` of every transformer layer (encoder, decoder or attention layers on an RNN/CNN)."""
    from attnfit.models.encoders.layers import TransformerLayer
    from attnfit.models.seq2seq.decoders import DecoderLayer

    layers = []
    for module in model.modules():
        if isinstance(module, (TransformerLayer, DecoderLayer)):
            linear = module.ffn[0]
            layers.append((linear.in_features, linear.out_features))
    return layers


def _checkpointed(model: nn.Module) -> bool:
    from attnfit.models.encoders.layers import AttentionStack

    return any(isinstance(m, AttentionStack) and m.checkpointing for m in model.modules())


def estimate_memory(
    model: nn.Module,
    batch_size: int,
    seq_len: int,
    precision: str = "32-true",
    optimizer: str = "adamw",
    world_size: int = 1,
    strategy: str = "auto",
    labelled_tokens: float = 1.0,
    vocab_size: int = 0,
) -> MemoryEstimate:
    """Memory per device for training ``model`` (which may live on the ``meta`` device).

    ``batch_size``: per device; ``labelled_tokens``: the fraction of positions whose ``vocab_size`` logits are
    computed (1 for a causal LM, the mask rate for a masked LM, 0 for heads without a vocabulary)."""
    params = list({id(p): p for p in model.parameters()}.values())  # tied weights once
    count = sum(p.numel() for p in params)
    state_bytes, act_bytes = _bytes(precision)
    sharded = 1
    if "fsdp" in str(strategy).lower() and world_size > 1:
        sharded = world_size  # FSDP: each rank holds 1/world of weights, gradients and optimizer state
    weights = count * state_bytes // sharded
    gradients = count * state_bytes // sharded
    if "ddp" in str(strategy).lower() and world_size > 1:
        gradients *= 2  # DDP copies gradients into its all-reduce buckets
    if optimizer == "adafactor":
        values = sum(sum(p.shape[-2:]) if p.dim() >= 2 else p.numel() for p in params)
    else:
        values = count * OPTIMIZER_STATES.get(optimizer, 2.0)
    optim = int(values * state_bytes) // sharded

    tokens = batch_size * seq_len
    layers = _transformer_layers(model)
    per_layer = [tokens * (8 * dim + 2 * ffn) for dim, ffn in layers]
    # The peak comes as the backward pass begins, in the head (logits, their log-softmax, two gradients of their
    # size), or, with checkpointing, possibly later while a layer is recomputed (the head's tensors freed by then).
    head = int(3 * labelled_tokens * tokens * vocab_size) * 4
    if layers and _checkpointed(model):
        stored = sum(tokens * dim for dim, _ in layers) * act_bytes  # each layer's input
        transient = max(head, max(per_layer) * act_bytes)
    else:
        stored, transient = sum(per_layer) * act_bytes, head
    dim = layers[-1][0] if layers else 0
    stored += 2 * tokens * dim * act_bytes  # the final LayerNorm's input and output (the head's input)
    return MemoryEstimate(count, weights, gradients, optim, stored + transient)


def available_memory(accelerator: str = "auto") -> tuple[int | None, str]:
    """(bytes free on the device training will use, its name): CUDA's free memory, else the RAM available."""
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return int(free), torch.cuda.get_device_name()
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "CPU RAM"
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "CPU RAM"
    except (ValueError, OSError):
        return None, "CPU RAM"


def labelled_fraction(task: str, mask_prob: float = 0.15) -> float:
    """The share of positions whose vocabulary logits a task's loss computes."""
    if task in ("clm", "seq2seq"):
        return 1.0
    if task in ("mlm", "electra"):
        return mask_prob
    return 0.0


def run_estimate(model: nn.Module, cfg: Any, world_size: int, strategy: str, precision: str) -> MemoryEstimate:
    """The estimate for a composed training config (``data``, ``task``, ``optimizer`` groups)."""
    embeddings = [m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)]
    task = str(cfg.task.name)
    return estimate_memory(
        model,
        int(cfg.data.batch_size),
        int(cfg.data.seq_len),
        precision,
        str(cfg.optimizer.get("name") or "custom"),
        world_size,
        strategy,
        labelled_fraction(task, float(cfg.task.get("mask_prob", 0.15) or 0.15)),
        max(embeddings, default=0),
    )


def check_fits(estimate: MemoryEstimate, accelerator: str, world_size: int) -> str | None:
    """A warning when the estimate exceeds what the device has free, else None. CPU ranks share one RAM."""
    free, device = available_memory(accelerator)
    if free is None:
        return None
    on_cpu = device == "CPU RAM"
    needed = estimate.total * (world_size if on_cpu else 1)
    if needed <= free:
        return None
    return (
        f"this run needs about {gib(needed)} but {device} has {gib(free)} free: it will probably run out of memory; "
        "try model.activation_checkpointing=true, a smaller data.batch_size (with trainer.accumulate_grad_batches), "
        "trainer.precision=bf16-mixed, or trainer=fsdp on several GPUs"
    )
