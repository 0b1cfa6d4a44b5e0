"""What every task's LightningModule shares: the model it wraps, its record and its optimization.

The record (:class:`attnfit.pretrained.ModelRecord`) is written into every checkpoint here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
from torch import nn

from attnfit.pretrained import CHECKPOINT_KEY, ModelRecord
from attnfit.training.optim import build_optimizer, build_scheduler, decay_groups, layerwise_groups


@dataclass
class Optimization:
    """Optimizer and per-step schedule settings (the ``optimizer``/``scheduler`` config groups, plain data).

    ``layers``/``head``: fine-tuning's layer-wise learning rates (see :class:`attnfit.models.FinetunePlan`);
    without them every parameter shares ``optimizer.lr``."""

    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    total_steps: int
    layers: list[list[nn.Parameter]] | None = None
    head: list[nn.Parameter] | None = None
    layer_lr_decay: float = 1.0
    head_lr: float | None = None

    def configure(self, model: nn.Module, time_used: Callable[[], float] | None = None) -> dict[str, Any]:
        """What ``LightningModule.configure_optimizers`` returns; ``time_used``: the fraction of the run's time
        limit spent, for ``scheduler.budget=time``."""
        opt, sched = dict(self.optimizer), dict(self.scheduler)
        weight_decay = opt.pop("weight_decay", 0.01)
        if self.layers is None:
            groups = decay_groups(model, weight_decay)
        else:
            groups = layerwise_groups(
                model, self.layers, self.head or [], opt["lr"], weight_decay, self.layer_lr_decay, self.head_lr
            )
        optimizer = build_optimizer(groups, **opt)
        scheduler = build_scheduler(optimizer, sched.pop("name"), self.total_steps, **sched, time_used=time_used)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class TaskModule(L.LightningModule):
    """``model``: the plain PyTorch model; ``record``: what checkpoints say about it; ``optimization``: None for
    evaluation-only modules."""

    def __init__(self, model: nn.Module, record: ModelRecord, optimization: Optimization | None = None) -> None:
        super().__init__()
        self.model, self.record, self.optimization = model, record, optimization

    def configure_optimizers(self) -> dict[str, Any]:
        if self.optimization is None:
            raise RuntimeError(f"{type(self).__name__} was built for evaluation only (no optimization)")
        return self.optimization.configure(self, self._time_used())  # the model and any auxiliary head

    def _time_used(self) -> Callable[[], float] | None:
        """The fraction of ``trainer.max_time`` spent, from Lightning's Timer (its clock is restored on resume);
        None for a run without a time limit."""
        from lightning.pytorch.callbacks import Timer

        callbacks = self.trainer.callbacks if self._trainer is not None else []
        timer = next((c for c in callbacks if isinstance(c, Timer) and c.time_remaining() is not None), None)
        if timer is None:
            return None
        limit = max(1e-9, timer.time_elapsed() + timer.time_remaining())  # trainer.max_time in seconds
        return lambda: min(1.0, timer.time_elapsed() / limit)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = self.record.to_dict()

    def log_learning_rate(self) -> None:
        self.log("train/lr", self.optimizers().param_groups[0]["lr"])


def compile_blocks(model: nn.Module, **options: Any) -> int:
    """``torch.compile`` each repeated block in place (transformer encoder and decoder layers, CNN blocks), else
    the whole model; returns how many modules were compiled. Per block, as FSDP wraps them: identical blocks share
    one compiled graph, so compilation costs one block rather than the whole depth, and activation checkpointing
    and FSDP units keep their block boundaries. The module tree (and so checkpoint keys) stays the same.
    ``options`` go to ``torch.compile`` (``backend=``, ``mode=``)."""
    from attnfit.models.encoders.cnn import ConvBlock
    from attnfit.models.encoders.layers import TransformerLayer
    from attnfit.models.seq2seq.decoders import DecoderLayer

    blocks = [m for m in model.modules() if isinstance(m, (TransformerLayer, DecoderLayer, ConvBlock))]
    for block in blocks or [model]:
        block.compile(**options)
    return len(blocks) or 1


def gather_objects(value: Any) -> list[Any]:
    """``[value of rank 0, value of rank 1, …]`` under torch.distributed, else ``[value]``: the pieces of a
    corpus-level metric (decoded sentences, answers) that each rank scored on its shard."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered
