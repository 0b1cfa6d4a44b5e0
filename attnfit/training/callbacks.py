"""Callbacks: throughput, progress, heat maps, and the guards that keep a run's work (NaN/Inf, signals, RNG)."""

from __future__ import annotations

import ctypes
import logging
import signal
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar, WeightAveraging
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger("attnfit")
OMP_PAUSE_SOFT = 1  # omp_pause_resource_t: release the threads, keep the settings


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


class StartupTimes(L.Callback):
    """Logs when the first training step starts and ends, in seconds since the run began (``started``, a
    ``time.perf_counter()`` value): how long model building, Trainer set-up and the first step take."""

    def __init__(self, started: float) -> None:
        self.started, self._steps = started, 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        if self._steps == 0:
            log.info("start-up: first step starts %.2f s after the run began", time.perf_counter() - self.started)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._steps += 1
        if self._steps == 1:
            log.info("start-up: first step done %.2f s after the run began", time.perf_counter() - self.started)


class FlushDenormals(L.Callback):
    """CPU arithmetic, in every thread, treats numbers below float32's smallest normal (1.2e-38) as zero from each
    stage's set-up to its teardown: a trained CNN's convolution backward met enough of them to run 5x slower
    (docs/transfer-log.md). A callback, so that it runs where the loop runs, in DDP's spawned
    workers too. No effect on GPU kernels; PyTorch's default (off) comes back at teardown."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        set_flush_denormal(True)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        set_flush_denormal(False)


def set_flush_denormal(enabled: bool) -> None:
    """``torch.set_flush_denormal`` for every CPU thread that computes, not the calling one alone.

    The mode is per thread, and OpenMP's workers keep the one they started with (with 2 threads, half of a large
    product stayed subnormal). Releasing OpenMP's pool makes the next parallel region start new workers, and a new
    thread copies its creator's floating-point mode."""
    torch.set_flush_denormal(enabled)
    try:
        release_pool = ctypes.CDLL(None).omp_pause_resource_all  # OpenMP 5.0; torch's OpenMP runtime is loaded
    except (AttributeError, OSError, TypeError):
        log.debug("no OpenMP runtime found: flush_denormal applies to the calling thread only")
        return
    if release_pool(OMP_PAUSE_SOFT) != 0:
        log.debug("OpenMP kept its threads: flush_denormal may not reach its workers")


class SaveLastOnTrainEnd(L.Callback):
    """Write ``last.ckpt`` when training ends, unless it already holds the final step.

    ModelCheckpoint saves it after validation and at epoch ends; a run that stops on ``max_steps`` between two
    validations would otherwise leave its last steps out of ``last.ckpt``. (The file itself is checked: other
    checkpoints, e.g. step ones, may have been written at the final step while ``last.ckpt`` was not.)
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Rank 0 decides for all: saving is collective, and a rank that read the file after rank 0 had written it
        # would skip the save and leave rank 0 waiting in its barrier (a DDP hang).
        if not trainer.strategy.broadcast(self._holds_final_step(trainer)):
            trainer.save_checkpoint(self.path, weights_only=False)  # full state: optimizer and loops, for resume

    def _holds_final_step(self, trainer: L.Trainer) -> bool:
        path = Path(self.path)
        if not path.exists():
            return False
        return (
            torch.load(path, map_location="cpu", mmap=True, weights_only=True).get("global_step") == trainer.global_step
        )


class UnfinishedEpochState(L.Callback):
    """Checkpoints record the epoch that the data position is in, so continuing from any of them is exact.

    Lightning counts the last epoch as completed before the end-of-training checkpoint is written (and after a
    resume at an epoch boundary its count lags one epoch behind), while the loader's state says "batch k of
    epoch e"; a run continued from such a checkpoint would skip the rest of the epoch. Here the epoch counters
    are set from the loader's epoch (e started, not processed), and at the end of training the last batch is
    recorded as processed-but-uncompleted, the state of a step checkpoint written after it: the continuation
    resumes after batch k, or at the next epoch when k was the epoch's last.
    """

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        fit_loop = checkpoint.get("loops", {}).get("fit_loop")
        loaders = (fit_loop or {}).get("state_dict", {}).get("combined_loader") or [{}]
        if "epoch" not in loaders[0] or fit_loop["epoch_loop.batch_progress"]["current"]["processed"] == 0:
            return  # not our resumable loader, or no epoch in progress
        epochs, batches = fit_loop["epoch_progress"], fit_loop["epoch_loop.batch_progress"]
        if epochs["total"]["completed"] != epochs["total"]["processed"]:
            return  # saved at an epoch's end, before Lightning counted it completed: its restart logic handles that
        counted_done = epochs["total"]["processed"] == epochs["total"]["started"]
        epoch = int(loaders[0]["epoch"])
        for progress in (epochs["total"], epochs["current"]):  # epoch `epoch`: started, not processed
            progress["ready"] = progress["started"] = epoch + 1
            progress["processed"] = progress["completed"] = epoch
        # Saved after the loop finished the epoch or the run (the end of training; a SIGTERM seen at an epoch's
        # end): record the last batch as a step checkpoint written after it would.
        if counted_done and (trainer.fit_loop.done or batches.get("is_last_batch")):
            for progress in (batches["total"], batches["current"]):
                progress["completed"] = min(progress["completed"], progress["processed"] - 1)


class StepCheckpoints(L.Callback):
    """``step{N:06d}.ckpt`` every ``every_n_steps`` optimizer steps and/or ``every_n_minutes``; the newest
    ``keep_last_k`` are kept. (Lightning's ModelCheckpoint with ``monitor="step"`` defers a save that falls on
    the last batch of an epoch to a validation that may never come, so these are written here.)"""

    def __init__(
        self, dirpath: str | Path, every_n_steps: int | None, every_n_minutes: float | None, keep_last_k: int
    ) -> None:
        self.dirpath, self.keep_last_k = Path(dirpath), keep_last_k
        self.every_n_steps, self.every_n_minutes = every_n_steps, every_n_minutes
        self._last_time, self._last_step = time.monotonic(), -1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step == self._last_step:  # mid-accumulation or a skipped batch: no new optimizer step
            return
        self._last_step = step
        due = bool(self.every_n_steps) and step % self.every_n_steps == 0
        if self.every_n_minutes:
            late = time.monotonic() - self._last_time >= 60 * self.every_n_minutes
            due = due or bool(trainer.strategy.broadcast(late))  # rank zero's clock decides for all ranks
        if not due or (self.dirpath / f"step{step:06d}.ckpt").exists():
            return
        trainer.save_checkpoint(self.dirpath / f"step{step:06d}.ckpt", weights_only=False)
        self._last_time = time.monotonic()
        if trainer.is_global_zero:
            for old in sorted(self.dirpath.glob("step*.ckpt"))[: -self.keep_last_k]:
                old.unlink(missing_ok=True)


class ProgressBar(RichProgressBar):
    """Rich progress bar; runs bounded by steps say "Epoch N", not Lightning's "Epoch N/-2"."""

    def _get_train_description(self, current_epoch: int) -> str:
        if self.trainer.max_epochs is None or self.trainer.max_epochs < 0:
            return f"Epoch {current_epoch} (step limit {self.trainer.max_steps})"
        return super()._get_train_description(current_epoch)


class GradualUnfreezing(L.Callback):
    """ULMFiT's gradual unfreezing: before each step, the top ``1 + step // every`` layer groups train
    (``layers``: bottom to top, as :class:`~attnfit.models.FinetunePlan` lists them)."""

    def __init__(self, layers: list[list[torch.nn.Parameter]], every: int) -> None:
        self.layers, self.every = layers, every

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        from attnfit.models.finetuning import unfreeze_top

        unfreeze_top(self.layers, self.every, trainer.global_step)


class AttentionHeatmaps(L.Callback):
    """After each validation, logs heat maps of a few fixed examples to every logger that takes images
    (``attention/example_i``):
    the pooling weights over the tokens and the last attention layer, so a user sees what the model looks at."""

    def __init__(self, batch: dict, tokens: list[list[str]]) -> None:
        self.batch, self.tokens = batch, tokens

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from attnfit.training.loggers import log_figure
        from attnfit.viz import attention_figure

        if not trainer.loggers or trainer.sanity_checking or not trainer.is_global_zero:
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
            log_figure(trainer.loggers, f"attention/example_{i}", fig, trainer.global_step)


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
        # One fused pass: the max-norm is NaN/Inf exactly when some gradient entry is (and never overflows).
        if not grads or bool(torch.isfinite(torch.nn.utils.get_total_norm(grads, norm_type=float("inf")))):
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

        last = _last_good_checkpoint(trainer)
        reason = f"after {self.skipped} skipped batches " if self.policy == "skip" else ""
        advice = "Lower optimizer.lr or check the data"
        if self.policy == "stop":
            advice += ", or set callbacks.nonfinite.policy=skip"
        raise NumericalError(
            f"non-finite loss or gradient at step {step} {reason}(NaN/Inf); training stopped. "
            f"Last good checkpoint: {last}. {advice}"
        )


def _last_good_checkpoint(trainer: L.Trainer) -> str:
    """The newest checkpoint of the run directory that loads and holds finite weights, or a note that none does."""
    from attnfit.training.checkpoint_io import first_non_finite

    directory = Path(trainer.default_root_dir) / "checkpoints"
    for path in sorted(directory.glob("*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("state_dict", {})
        except Exception:  # unreadable: not a good one
            continue
        if first_non_finite(state) is None:
            return f"{path} (weights verified finite)"
    return "none (no checkpoint with finite weights was saved before the fault)"


class RestoreRngState(L.Callback):
    """Saves torch's global RNG state (dropout draws from it) in every checkpoint and puts it back when training
    resumes, so resumed steps draw the dropout masks the uninterrupted run would have drawn. Data order and MLM
    masks do not depend on it (see ``attnfit.training.datamodule``). Under DDP the state is rank zero's."""

    def __init__(self) -> None:
        self._loaded: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        return {"torch": torch.get_rng_state(), "cuda": cuda}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._loaded is None:
            return
        torch.set_rng_state(self._loaded["torch"])
        if self._loaded["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self._loaded["cuda"])
        self._loaded = None


class GracefulShutdown(L.Callback):
    """SIGTERM (what cluster schedulers send before preemption) or Ctrl-C: finish the current step, save
    ``path`` and stop; the recipe turns that into :class:`~attnfit.errors.TrainingInterrupted`. Lightning
    already turns SIGTERM into a stop between steps; Ctrl-C is routed to the same handler so it cannot leave a
    half-applied optimizer step. A second Ctrl-C aborts at once."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.signal_name: str | None = None
        self.saved: str | None = None
        self._previous: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        self._previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        lightning_handler = self._previous[signal.SIGTERM]  # sets trainer.received_sigterm, stops DDP peers

        def handler(signum: int, frame: Any) -> None:
            if signum == signal.SIGINT and self.signal_name == "SIGINT":
                raise KeyboardInterrupt  # pressed twice: stop now
            self.signal_name = self.signal_name or signal.Signals(signum).name
            log.warning("%s received: stopping after this step and saving %s", self.signal_name, self.path)
            if callable(lightning_handler):
                lightning_handler(signal.SIGTERM, frame)

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()
        if isinstance(exception, SIGTERMException):
            self.signal_name = self.signal_name or "SIGTERM"
            trainer.save_checkpoint(self.path, weights_only=False)
            self.saved = self.path

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()

    def _restore_handlers(self) -> None:
        for signum, handler in (self._previous or {}).items():
            signal.signal(signum, handler)
        self._previous = None


class AlignmentHeatmaps(L.Callback):
    """After each validation, decode a few fixed validation pairs and log their cross-attention (target ×
    source, averaged over heads) as heat maps to every logger that takes images: how the alignment forms during
    training."""

    def __init__(self, dataset: Any, count: int, source_tokenizer_json: str) -> None:
        from tokenizers import Tokenizer

        self.rows = [dataset[i] for i in range(min(count, len(dataset)))]
        self.source_tokenizer = Tokenizer.from_str(source_tokenizer_json)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.rows or not trainer.loggers or trainer.sanity_checking or not trainer.is_global_zero:
            return
        from attnfit.training.loggers import log_figure
        from attnfit.viz import alignment_figure

        for i, row in enumerate(self.rows):
            src = torch.tensor([row["source_ids"]], device=pl_module.device)
            out = pl_module.generate(src, torch.zeros_like(src, dtype=torch.bool), beam_size=1, alignments=True)
            n = int(out.lengths[0])
            target = [pl_module.target_tokenizer.id_to_token(int(t)) for t in out.tokens[0, :n]]
            source = [self.source_tokenizer.id_to_token(int(t)) for t in row["source_ids"]]
            weights = out.alignments[0, :n].float().cpu().numpy()
            fig = alignment_figure(source, target, weights, title=f"validation pair {i}")
            log_figure(trainer.loggers, f"alignment/pair_{i}", fig, trainer.global_step)


class StepWeightAveraging(WeightAveraging):
    """Stochastic weight averaging counted in steps: the equal-weight average of the weights after every
    ``every_n_steps``-th optimizer step from ``start_fraction`` of ``trainer.max_steps`` on. Lightning's
    ``StochasticWeightAveraging`` counts epochs and replaces the learning-rate schedule; this keeps attnfit's."""

    def __init__(self, start_fraction: float = 0.75, every_n_steps: int = 1, **kwargs: Any) -> None:
        from attnfit.errors import ConfigError

        if not 0.0 <= start_fraction < 1.0 or every_n_steps < 1:
            raise ConfigError(
                f"start_fraction={start_fraction} must be in [0, 1) and every_n_steps={every_n_steps} ≥ 1"
            )
        super().__init__(**kwargs)
        self.start_fraction, self.every_n_steps, self.start_step = start_fraction, every_n_steps, 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start_step = int(self.start_fraction * max(trainer.max_steps, 0))

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        if step_idx is None or step_idx < self.start_step:
            return False
        return (step_idx - self.start_step) % self.every_n_steps == 0
