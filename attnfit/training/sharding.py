"""Fully sharded data parallel, one transformer block per shard unit.

``trainer=fsdp`` builds Lightning's ``FSDPStrategy`` here: each encoder/decoder block is its own FSDP unit (its
parameters are gathered just before it runs and freed after, so a rank holds one block's full weights at a time
and 1/world of the rest), with a bf16 mixed-precision policy (bf16 compute and all-gathers, float32 gradient
reduction) and sharded checkpoints (one directory, a file per rank) that :func:`consolidate` reads back as one.
Activation checkpointing is the model's own (``model.activation_checkpointing=true``), so it is the same with or
without FSDP.

Lightning's FSDP (torch's FSDP1) needs CUDA. :func:`shard_blocks` applies the same per-block policy with torch's
``fully_shard`` (FSDP2), which also runs on CPU with gloo: the tests use it to check that sharding changes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

# The file Lightning writes beside the shards of a sharded checkpoint: everything but the weights and optimizer.
SHARDED_METADATA = "meta.pt"


def block_classes() -> set[type[nn.Module]]:
    """The modules that are FSDP units: every transformer encoder and decoder block."""
    from attnfit.models.encoders.layers import TransformerLayer
    from attnfit.models.seq2seq.decoders import DecoderLayer

    return {TransformerLayer, DecoderLayer}


def mixed_precision_policy(precision: str) -> Any:
    """bf16 parameters for compute and communication, float32 gradient reduction (sums of many bf16 gradients
    lose bits); None for other precisions (Lightning's own policy for them)."""
    from torch.distributed.fsdp import MixedPrecision

    if not str(precision).startswith("bf16"):
        return None
    return MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, buffer_dtype=torch.bfloat16)


def fsdp_strategy(options: dict[str, Any], precision: str) -> Any:
    """Lightning's ``FSDPStrategy`` with the per-block wrap policy, from ``trainer.fsdp`` options."""
    from lightning.pytorch.strategies import FSDPStrategy

    return FSDPStrategy(
        auto_wrap_policy=block_classes(),
        mixed_precision=mixed_precision_policy(precision) if options.get("mixed_precision", True) else None,
        state_dict_type=str(options.get("state_dict_type", "sharded")),
        sharding_strategy=str(options.get("sharding_strategy", "FULL_SHARD")),
        cpu_offload=bool(options.get("cpu_offload", False)),
    )


def shard_blocks(model: nn.Module, mesh: Any = None, mp_policy: Any = None) -> nn.Module:
    """``model`` sharded in place with FSDP2: each block its own unit, the rest (embeddings, head) the root's."""
    from torch.distributed.fsdp import fully_shard

    kwargs: dict[str, Any] = {"mesh": mesh}
    if mp_policy is not None:
        kwargs["mp_policy"] = mp_policy
    classes = tuple(block_classes())
    for module in model.modules():
        if isinstance(module, classes):
            fully_shard(module, **kwargs)
    fully_shard(model, **kwargs)
    return model


def is_sharded_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / SHARDED_METADATA).is_file()


def consolidate(path: Path) -> dict[str, Any]:
    """A sharded checkpoint directory read back as one ordinary Lightning checkpoint dict (on the CPU, in one
    process): what ``attnfit-export``, ``attnfit-eval`` and resuming read."""
    from lightning.fabric.utilities.load import _load_distributed_checkpoint
    from lightning.pytorch.utilities.consolidate_checkpoint import _format_checkpoint

    return _format_checkpoint(_load_distributed_checkpoint(path))
