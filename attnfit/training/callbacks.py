"""Callbacks: token throughput for the progress bar and TensorBoard."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar

log = logging.getLogger("attnfit")


class TokenThroughput(L.Callback):
    """Logs ``train/tokens_per_s``: non-padding tokens per wall-clock second over each logging interval.

    Counts come from the collator as Python ints, so measuring costs no device synchronisation.
    """

    def __init__(self, every_n_batches: int = 10) -> None:
        self.every_n_batches = every_n_batches
        self._tokens, self._start = 0, None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._start is None:
            self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._tokens += int(batch["num_tokens"])
        if (batch_idx + 1) % self.every_n_batches == 0:
            elapsed = time.perf_counter() - self._start
            rate = self._tokens / max(elapsed, 1e-9)
            pl_module.log("train/tokens_per_s", rate)
            pl_module.log("tok/s", rate, prog_bar=True, logger=False)
            self._tokens, self._start = 0, time.perf_counter()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._tokens, self._start = 0, None  # validation time is not training throughput


class SaveLastOnTrainEnd(L.Callback):
    """Write ``last.ckpt`` when training ends, unless it already holds the final step.

    ModelCheckpoint saves after validation and at epoch ends; a run that stops on ``max_steps`` between
    two validations would otherwise leave its last steps out of ``last.ckpt``.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._saved_step = -1

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._saved_step = trainer.global_step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step != self._saved_step or not Path(self.path).exists():
            trainer.save_checkpoint(self.path, weights_only=False)  # full state: optimizer and loops, for resume


class ProgressBar(RichProgressBar):
    """Rich progress bar; runs bounded by steps say "Epoch N", not Lightning's "Epoch N/-2"."""

    def _get_train_description(self, current_epoch: int) -> str:
        if self.trainer.max_epochs is None or self.trainer.max_epochs < 0:
            return f"Epoch {current_epoch} (step limit {self.trainer.max_steps})"
        return super()._get_train_description(current_epoch)


class AttentionHeatmaps(L.Callback):
    """After each validation, logs heat maps of a few fixed examples to TensorBoard (``attention/example_i``):
    the pooling weights over the tokens and the last attention layer, so a user sees what the model looks at."""

    def __init__(self, batch: dict, tokens: list[list[str]]) -> None:
        self.batch, self.tokens = batch, tokens

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lightning.pytorch.loggers import TensorBoardLogger

        from attnfit.viz import attention_figure

        if not isinstance(trainer.logger, TensorBoardLogger) or trainer.sanity_checking or not trainer.is_global_zero:
            return
        import torch

        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            ids = self.batch["input_ids"].to(pl_module.device)
            out = pl_module.model(ids, self.batch["padding_mask"].to(pl_module.device), need_weights=True)
        pl_module.train(was_training)
        for i, tokens in enumerate(self.tokens):
            n = len(tokens)
            last = out.attentions[-1][i].mean(0)[:n, :n].float().cpu().numpy() if out.attentions else None
            pooling = out.pooling_weights[i, :n].float().cpu().numpy()
            probs = out.logits[i].float().softmax(-1)
            label = pl_module.label_names[int(probs.argmax())]
            fig = attention_figure(tokens, pooling, last, title=f"predicted {label} ({float(probs.max()):.2f})")
            trainer.logger.experiment.add_figure(f"attention/example_{i}", fig, global_step=trainer.global_step)


class NonFiniteGuard(L.Callback):
    """Checks the gradients before every optimizer step; a NaN/Inf loss makes them non-finite too, so one check
    catches both within the step. ``stop`` ends the run naming the step and the last good checkpoint (kept
    intact: nothing is saved after the fault); ``skip`` drops the batch's update, up to ``max_skips`` times."""

    def __init__(self, policy: str = "stop", max_skips: int = 10) -> None:
        from attnfit.errors import check_choice

        check_choice("callbacks.nonfinite.policy", policy, ("stop", "skip"))
        self.policy, self.max_skips, self.skipped = policy, max_skips, 0

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        import torch

        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
            return
        step = trainer.global_step
        if self.policy == "skip" and self.skipped < self.max_skips:
            self.skipped += 1
            optimizer.zero_grad(set_to_none=True)  # AdamW leaves parameters without gradients untouched
            log.warning(
                "non-finite loss or gradient at step %d: batch skipped (%d of at most %d)",
                step,
                self.skipped,
                self.max_skips,
            )
            return
        from attnfit.errors import NumericalError

        last = getattr(trainer.checkpoint_callback, "last_model_path", "") or "none saved yet"
        reason = f"after {self.skipped} skipped batches " if self.policy == "skip" else ""
        advice = "Lower optimizer.lr or check the data"
        if self.policy == "stop":
            advice += ", or set callbacks.nonfinite.policy=skip"
        raise NumericalError(
            f"non-finite loss or gradient at step {step} {reason}(NaN/Inf); training stopped. "
            f"Last good checkpoint: {last}. {advice}"
        )
