"""The one run sequence of ``attnfit-train`` and ``attnfit-finetune``, for every task:

output dir → checks → seed → resume → data → tokenizer/config files → module → trainer → fit → test (best
checkpoint) → metrics → hparams → summary. What differs between tasks is asked of the task (``attnfit.tasks``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import shlex
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import WeightAveraging
from omegaconf import DictConfig, OmegaConf

from attnfit.errors import CheckpointError, ConfigError
from attnfit.options import data_fits
from attnfit.pretrained import Artifact, load_artifact
from attnfit.recipes.checks import check_common
from attnfit.recipes.common import (
    build_trainer,
    final_metrics,
    fit,
    is_rank_zero,
    log_final_hparams,
    resume_path,
    total_training_steps,
    write_metrics,
)
from attnfit.runs.lock import run_directory_lock
from attnfit.tasks import Prepared, Task, get_task
from attnfit.training.callbacks import FlushDenormals, StartupTimes
from attnfit.training.module import compile_blocks

log = logging.getLogger("attnfit")


def run(cfg: DictConfig, callbacks: list[L.Callback] | None = None) -> float | None:
    """Train (or fine-tune, with ``pretrained=``) the configured task; returns ``cfg.optimized_metric`` for sweeps.

    ``callbacks`` are added to the Trainer's (a search adds its pruning callback here)."""
    started = time.perf_counter()
    task = get_task(cfg.task.name)
    output_dir = Path(cfg.paths.output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError, PermissionError) as error:
        raise ConfigError(f"cannot create the run directory {output_dir}: {error.strerror or error}") from None
    lock = run_directory_lock(output_dir) if is_rank_zero() else contextlib.nullcontext()
    with lock:
        return _run(cfg, callbacks, task, output_dir, started)


def _run(
    cfg: DictConfig, callbacks: list[L.Callback] | None, task: Task, output_dir: Path, started: float
) -> float | None:
    if not cfg.get("ckpt_path") and list((output_dir / "checkpoints").glob("*.ckpt")):
        raise ConfigError(
            f"{output_dir} already holds a run (see its checkpoints/); continue it with ckpt_path=auto, or start over "
            "in a fresh hydra.run.dir"
        )
    if cfg.get("search"):  # an experiment config that selects a search space: only attnfit-search runs it
        raise ConfigError("this config holds a search (search: …): run it with attnfit-search, not attnfit-train")
    if "pretrained" in cfg and not cfg.pretrained:  # attnfit-finetune's config has the key, attnfit-train's not
        raise ConfigError(
            "pretrained=PATH is required: a run directory (as printed by attnfit-train), a .ckpt file or an "
            "exported model directory"
        )
    weights = str(cfg.get("pretrained_weights") or "average")
    pretrained = load_artifact(cfg.pretrained, weights, "pretrained_weights") if cfg.get("pretrained") else None
    if pretrained is not None:
        log.info("pretrained: %s (%s, %s weights)", pretrained.source, pretrained.task, weights)
    check_common(cfg)
    task.check(cfg, pretrained)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    ckpt_path = resume_path(cfg.ckpt_path, output_dir)
    resume = load_artifact(ckpt_path) if ckpt_path else None
    if resume is not None:
        check_resume_overrides(cfg, resume)
    source = resume or pretrained  # the vocabulary is never retrained for a resumed or pretrained model
    log.info("start-up: preparing %s data", cfg.task.name)
    with data_fits(f"task={cfg.task.name}", f"choose a data= group for task={cfg.task.name} (attnfit-train --help)"):
        prepared = task.prepare(cfg, source.record.tokenizers() if source is not None else None)
    steps = ", ".join(f"{name.removesuffix('_s')} {seconds:.2f} s" for name, seconds in prepared.timings.items())
    elapsed = time.perf_counter() - started
    log.info("start-up: data ready %.2f s after the run began%s", elapsed, f" ({steps})" if steps else "")
    if is_rank_zero():
        (output_dir / "tokenizer.json").write_text(prepared.tokenizer.to_str())
        if prepared.target_tokenizer is not None:
            (output_dir / "target_tokenizer.json").write_text(prepared.target_tokenizer.to_str())
        OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)
    if "unigram_baseline" in prepared.facts:
        log.info(
            "data: %d training sequences of %d tokens, vocabulary %d; unigram baseline %.3f nats/token",
            prepared.num_train,
            cfg.data.seq_len,
            prepared.tokenizer.get_vocab_size(),
            prepared.facts["unigram_baseline"],
        )

    adapt_steps = int(OmegaConf.select(cfg, "finetune.adapt_steps", default=0) or 0)
    if pretrained is not None and adapt_steps > 0 and resume is None:
        pretrained = adapt(cfg, pretrained, prepared, adapt_steps)
    batches = math.ceil(prepared.num_train / int(cfg.data.batch_size))
    module = task.build_module(cfg, prepared, total_training_steps(cfg.trainer, batches), pretrained)
    if "adaptive_head_share" in prepared.facts:
        log_head_share(prepared.facts["adaptive_head_share"], list(module.record.model_config["adaptive_cutoffs"]))
    if resume is not None and resume.record.model_config != module.record.model_config:
        raise CheckpointError(
            f"{ckpt_path} holds a different model than this config; resume with the config "
            "it was trained with (its run directory has config.yaml)"
        )
    log.info("model: %s, %.2fM parameters", describe(cfg, module), sum(p.numel() for p in module.parameters()) / 1e6)
    if cfg.compile:  # every task: each block compiled once its weights are loaded
        log.info("torch.compile: %d blocks", compile_blocks(module.model))
    monitor, mode = task.monitor(cfg)
    extra = [StartupTimes(started), *task.callbacks(cfg, prepared, module), *(callbacks or [])]
    if cfg.get("flush_denormal"):
        extra.append(FlushDenormals())
    trainer = build_trainer(cfg, output_dir, monitor=monitor, mode=mode, extra_callbacks=extra)
    if is_rank_zero():
        log_memory_estimate(cfg, module, trainer)
    fit(trainer, module, prepared.datamodule, ckpt_path)

    metrics = final_metrics(trainer, trainer.checkpoint_callback)
    if prepared.datamodule.test is not None:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        for callback in trainer.callbacks:  # EMA/SWA: test the checkpoint's averaged weights, as validation did,
            if isinstance(callback, WeightAveraging):  # not the training copy the callback would load back in
                callback._average_model = None
        tested = trainer.test(
            module, datamodule=prepared.datamodule, ckpt_path=best or None, verbose=False, weights_only=True
        )
        metrics.update({k: float(v) for k, v in (tested[0] if tested else {}).items()})
    metrics.update(prepared.facts)
    if cfg.optimized_metric not in metrics:  # a typo, or no validation ran: say so rather than record nothing
        logged = ", ".join(sorted(k for k in metrics if k.startswith(("val/", "test/", "best/"))))
        log.warning(
            "optimized_metric=%s was not logged by this run; logged: %s", cfg.optimized_metric, logged or "none"
        )
    if trainer.is_global_zero:
        write_metrics(output_dir, metrics)
        log_final_hparams(trainer, cfg, metrics)
        summarise(cfg, task, metrics, module, prepared, trainer)
    return metrics.get(cfg.optimized_metric)


def log_memory_estimate(cfg: DictConfig, module: L.LightningModule, trainer: L.Trainer) -> None:
    """One line before training: parameters and memory per device; a warning when that will not fit."""
    from attnfit.training.memory import check_fits, run_estimate

    strategy = type(trainer.strategy).__name__
    precision = str(trainer.precision)
    try:
        estimate = run_estimate(module.model, cfg, trainer.world_size, strategy, precision)
        accelerator = "cuda" if trainer.strategy.root_device.type == "cuda" else "cpu"
        warning = check_fits(estimate, accelerator, trainer.world_size)
    except Exception as error:  # an estimate is advice: a model or config it does not know never stops a run
        log.warning("memory: no estimate for this run (%s: %s)", type(error).__name__, error)
        return
    where = f"{trainer.world_size} × {type(trainer.accelerator).__name__.removesuffix('Accelerator')}"
    log.info(
        "memory: %s; batch %d × %d tokens, precision %s, %s on %s",
        estimate.describe(),
        int(cfg.data.batch_size),
        int(cfg.data.seq_len),
        precision,
        strategy,
        where,
    )
    if warning:
        log.warning("memory: %s", warning)


# What a checkpoint has baked in: the architecture, the vocabulary, the objective, the optimizer's state and the
# data order. A resume cannot honour a change to them, so it refuses one instead of silently keeping the old value.
FIXED_ON_RESUME = ("model", "encoder", "attention", "decoder", "tokenizer", "task", "optimizer", "finetune", "seed",
                   "data_seed", "data.seq_len", "data.packing", "data.batch_size")  # fmt: skip


def log_head_share(share: float, cutoffs: list[int]) -> None:
    """Says how much of the training text an adaptive softmax's head cluster covers, and warns when it is under half:
    the head is cheap only when the ids below the first cutoff are the common tokens (tokenizer=word orders them
    by frequency; BPE's merge order comes close: 77% of WikiText-2's tokens below 2,000 of 8,000 pieces)."""
    log.info("adaptive softmax: ids below %d hold %.1f%% of the training tokens", cutoffs[0], 100 * share)
    if share < 0.5:
        log.warning(
            "adaptive softmax: model.adaptive_cutoffs=%s puts only %.1f%% of the training tokens in the head "
            "cluster; it saves time only on a vocabulary in frequency order (tokenizer=word, or BPE), or with a "
            "larger first cutoff",
            cutoffs,
            100 * share,
        )


def check_resume_overrides(cfg: DictConfig, resume: Artifact) -> None:
    """ConfigError naming every setting of :data:`FIXED_ON_RESUME` that differs from the checkpoint's run.
    Schedules, step and time limits, logging and callbacks may change (a longer ``max_steps`` stretches the
    schedule from where it is)."""
    saved = resume.record.run_config
    if not saved:  # a checkpoint of an older attnfit: nothing recorded to compare with
        return
    current = OmegaConf.to_container(cfg, resolve=True)
    changed = []
    for key in FIXED_ON_RESUME:
        before, now = OmegaConf.select(OmegaConf.create(saved), key), OmegaConf.select(OmegaConf.create(current), key)
        before = OmegaConf.to_container(before) if isinstance(before, DictConfig) else before
        now = OmegaConf.to_container(now) if isinstance(now, DictConfig) else now
        if before != now:
            changed.append(f"{key} ({_short(before)} in the checkpoint, {_short(now)} now)")
    if changed:
        raise ConfigError(
            f"resuming from {resume.source} cannot change {'; '.join(changed)}: the checkpoint has them baked in. "
            "Drop these overrides to continue the run, or start a new run (fine-tune it with pretrained=)"
        )


def _short(value: object, width: int = 60) -> str:
    text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def adapt(cfg: DictConfig, pretrained: Artifact, prepared: Prepared, steps: int) -> Artifact:
    """Domain-adaptive pretraining (ULMFiT's second stage): continue ``pretrained``'s own objective for ``steps``
    on this task's training text, with its tokenizer, in ``RUN_DIR/adapt``; returns the adapted model."""
    if prepared.texts is None or not get_task(pretrained.task).is_pretraining:
        raise ConfigError(
            f"finetune.adapt_steps={steps} continues a pretrained language model on task={cfg.task.name}'s text; "
            f"{pretrained.source} is a {pretrained.task} model{'' if prepared.texts else ' and the task has no text'}"
        )
    if not pretrained.run_config:
        raise ConfigError(f"{pretrained.source} does not record its pretraining config; finetune.adapt_steps needs it")
    adapt_dir = Path(cfg.paths.output_dir) / "adapt"
    adapt_dir.mkdir(parents=True, exist_ok=True)
    corpus = adapt_dir / "train.txt"
    if is_rank_zero():
        with open(corpus, "w", encoding="utf-8") as f:
            f.writelines(" ".join(text.split()) + "\n" for text in prepared.texts() if text and text.strip())
    lm = OmegaConf.create(pretrained.run_config)
    OmegaConf.set_struct(lm, False)
    lm.data = {
        **{k: v for k, v in (lm.get("data") or {}).items() if k in ("seq_len", "batch_size", "packing", "num_workers")},
        "source": "files", "train": str(corpus), "format": "text", "val_fraction": 0.05, "shuffle": True,
    }  # fmt: skip
    lm.data.seq_len = min(int(lm.data.get("seq_len", 128)), int(pretrained.model_config["max_len"]))
    lm.pretrained, lm.ckpt_path, lm.seed = str(pretrained.source), None, int(cfg.seed)
    lm.paths = {**OmegaConf.to_container(cfg.paths, resolve=True), "output_dir": str(adapt_dir)}
    lm.trainer.max_steps = steps
    if lm.get("scheduler") is not None:  # its own warmup and decay, not the pretraining run's planned span
        lm.scheduler.decay_steps = None
        lm.scheduler.warmup_steps = min(int(lm.scheduler.get("warmup_steps") or 0), steps // 10)
    lm.trainer.val_check_interval = min(steps, int(lm.trainer.get("val_check_interval") or steps))
    lm.callbacks.progress_bar = cfg.callbacks.progress_bar  # the pretraining run's own callbacks otherwise
    # This run's loggers, unresolved: their ${paths.output_dir} becomes the adapt directory
    lm.logger = OmegaConf.to_container(cfg.logger, resolve=False) if cfg.get("logger") else None
    if OmegaConf.select(cfg, "finetune.adapt_lr") is not None:
        lm.optimizer.lr = float(cfg.finetune.adapt_lr)
    log.info("domain adaptation: %d %s steps on %s (tokenizer kept) into %s", steps, pretrained.task, corpus, adapt_dir)
    run(lm)
    adapted = load_artifact(adapt_dir)
    log.info("domain adaptation done: fine-tuning starts from %s", adapted.source)
    return adapted


def describe(cfg: DictConfig, module: L.LightningModule) -> str:
    """``transformer encoder + self attention`` (what the run trains, in one phrase)."""
    config = module.record.model_config
    encoder = config.get("encoder", {})
    if "encoder" in encoder:  # seq2seq: the encoder's own model config
        encoder = encoder["encoder"]
    attention = config.get("attention", config.get("encoder", {}).get("attention", {}))
    return f"{cfg.task.name}: {encoder.get('name')} encoder + {attention.get('name')} attention"


def summarise(
    cfg: DictConfig, task: Task, metrics: dict[str, float], module: L.LightningModule, prepared: Prepared,
    trainer: L.Trainer,
) -> None:  # fmt: skip
    """Tell the user how the run went, where it is, and what to try next."""
    from rich.console import Console

    console = Console(soft_wrap=True)  # long paths stay copyable on one line
    output_dir = Path(cfg.paths.output_dir)
    for line in task.summarise(metrics, module, prepared):
        console.print(line)
    # Paths and commands are printed literally: rich would take `[label,text]` in an override for markup.
    console.print(f"run directory: {output_dir}", markup=False)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best:
        console.print(f"best checkpoint: {best}", markup=False)
    console.print("next:")
    for line in task.next_steps(output_dir):
        console.print(f"  {line}", markup=False)
    last = output_dir / "checkpoints" / "last.ckpt"
    if last.exists() and trainer.global_step > 0:
        hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
        command = hydra_cfg.overrides.task if hydra_cfg else []
        # The entry point the run came from (attnfit-train +pretrained=RUN continues pretraining with train.yaml)
        config_name = hydra_cfg.job.config_name if hydra_cfg else ("finetune" if "pretrained" in cfg else "train")
        entry = "attnfit-finetune" if config_name == "finetune" else "attnfit-train"
        continuation = continue_overrides(cfg, last, trainer.global_step, list(command))
        console.print(f"  {entry} {continuation}   # continue training, exactly", markup=False)


def continue_overrides(cfg: DictConfig, last: Path, step: int, command: Sequence[str] = ()) -> str:
    """The overrides that continue a run from ``last`` as one uninterrupted run would have: the run's own
    ``command`` line overrides (same data, model and directory), and a decaying schedule that keeps its span
    (``scheduler.decay_steps``: the planned ``max_steps``) where a longer ``max_steps`` would stretch it. A run cut
    short (``max_time``, early stopping) continues to its planned steps without its time limit (the clock is
    restored from the checkpoint, so the same limit would stop it at once); a finished one to twice its steps.
    A schedule whose decay ended with the time limit (``scheduler.budget=time``) has no steps to keep: the
    continuation trains as many steps again at the schedule's end."""
    replaced = ("ckpt_path", "trainer.max_steps", "scheduler.decay_steps", "trainer.max_time", "scheduler.budget")
    kept = [o for o in command if o.split("=", 1)[0].lstrip("+~") not in replaced]
    planned = int(cfg.get("trainer", {}).get("max_steps") or -1)
    timed = cfg.scheduler.get("budget") == "time"
    short = 0 < step < planned and not timed
    new = [f"ckpt_path={last}", f"trainer.max_steps={planned if short else 2 * step}"]
    if timed:
        new.append("scheduler.budget=steps")
    if cfg.scheduler.name != "constant":
        span = step if timed else cfg.scheduler.get("decay_steps") or (planned if planned > 0 else step)
        new.append(f"scheduler.decay_steps={span}")
    from_command = any(o.split("=", 1)[0].lstrip("+~") == "trainer.max_time" for o in command)
    if (short or timed) and cfg.get("trainer", {}).get("max_time") and not from_command:
        new.append("trainer.max_time=null")  # set by a config file; one from the command line is simply left out
    return " ".join(shlex.quote(o) for o in [*kept, *new])
