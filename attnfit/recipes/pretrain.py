"""Masked- and causal-LM pretraining: config → data → model → Lightning fit → report."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from attnfit.data import (
    CLMCollator,
    MLMCollator,
    get_tokenizer,
    load_text_splits,
    special_token_id,
    special_token_ids,
    tokenize_for_lm,
    unigram_cross_entropy,
)
from attnfit.errors import CheckpointError, ConfigError, check_choice
from attnfit.models import ModelConfig
from attnfit.pretrained import load_artifact
from attnfit.recipes.common import (
    build_trainer,
    check_option_types,
    container,
    final_metrics,
    fit,
    is_rank_zero,
    log_final_hparams,
    resume_path,
    run_config,
    total_training_steps,
    write_metrics,
)
from attnfit.training.datamodule import TokenizedDataModule
from attnfit.training.lm_module import LanguageModelingModule
from attnfit.training.optim import build_optimizer, build_scheduler

log = logging.getLogger("attnfit")
LM_TASKS = ("mlm", "clm")


def model_config_dict(cfg: DictConfig, vocab_size: int, pad_id: int = 0) -> dict[str, Any]:
    """The model's plain config: ``model`` + ``encoder`` + ``attention`` groups, vocabulary and task."""
    model = container(cfg.model)
    return {
        **model,
        "vocab_size": vocab_size,
        "pad_id": pad_id,
        "causal": cfg.task.name == "clm",
        "encoder": container(cfg.encoder),
        "attention": container(cfg.attention),
    }


def check_config(cfg: DictConfig) -> None:
    """Cheap checks that fail before any data is read or model built."""
    check_option_types(cfg)
    check_choice("task", cfg.task.name, LM_TASKS)
    ModelConfig.from_dict(model_config_dict(cfg, vocab_size=1))  # validates encoder/attention/model
    seq_len = int(cfg.data.seq_len)
    if seq_len < 2:
        raise ConfigError(f"data.seq_len={seq_len} must be ≥ 2")
    if cfg.model.max_len < seq_len:
        raise ConfigError(f"model.max_len={cfg.model.max_len} is shorter than data.seq_len={seq_len}")
    if cfg.attention.name == "local" and cfg.attention.window >= seq_len:
        raise ConfigError(
            f"attention.window={cfg.attention.window} is not smaller than data.seq_len={seq_len}: the window would "
            f"cover the whole sequence; choose attention.window < {seq_len} or attention=global"
        )
    if int(cfg.data.batch_size) < 1:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} must be ≥ 1")
    if cfg.task.name == "mlm" and not 0.0 < float(cfg.task.mask_prob) < 1.0:
        raise ConfigError(f"task.mask_prob={cfg.task.mask_prob} must be in (0, 1)")
    check_optimization(cfg)


def check_optimization(cfg: DictConfig) -> None:
    """Build the optimizer and schedule on a dummy parameter so their settings fail before data is loaded."""
    import torch

    opt, sched = container(cfg.optimizer), container(cfg.scheduler)
    dummy = [{"params": [torch.nn.Parameter(torch.zeros(1))], "weight_decay": opt.pop("weight_decay", 0.0)}]
    if dummy[0]["weight_decay"] < 0:
        raise ConfigError(f"optimizer.weight_decay={dummy[0]['weight_decay']} must be ≥ 0")
    build_scheduler(build_optimizer(dummy, **opt), sched.pop("name"), total_steps=1, **sched)


@dataclass
class PreparedData:
    datamodule: TokenizedDataModule
    tokenizer_json: str
    vocab_size: int
    pad_id: int
    unigram_baseline: float
    num_train_rows: int


def prepare_data(cfg: DictConfig, tokenizer_json: str | None = None) -> PreparedData:
    """Load the splits, get the tokenizer (from the checkpoint when resuming), tokenize and pack, build loaders."""
    from tokenizers import Tokenizer

    data, paths = cfg.data, cfg.paths
    cache_dir = Path(paths.cache_dir)
    splits = load_text_splits(
        data.source,
        files={k: v for k, v in (("train", data.get("train")), ("validation", data.get("validation"))) if v},
        hub_path=data.get("path"),
        hub_subset=data.get("subset"),
        hub_splits=container(data.get("splits")) if data.get("splits") else None,
        text_column=data.get("text_column", "text"),
        file_format=data.get("format"),
        val_fraction=data.get("val_fraction", 0.05),
        seed=cfg.seed,
        cache_dir=cache_dir / "datasets",
        embedded_dir=cache_dir / "embedded",
        num_train_docs=data.get("num_train_docs", 20000),
        num_val_docs=data.get("num_val_docs", 1000),
    )
    if tokenizer_json is not None:
        tokenizer = Tokenizer.from_str(tokenizer_json)
    else:
        tok = cfg.tokenizer
        tokenizer = get_tokenizer(
            tok.kind,
            lambda: iter(splits["train"]["text"]),
            int(tok.get("vocab_size", 8000)),
            cache_key=splits["train"]._fingerprint,
            cache_dir=cache_dir,
            path=tok.get("path"),
        )
    seq_len = int(data.seq_len)
    train = tokenize_for_lm(splits["train"], tokenizer, seq_len, packing=bool(data.packing))
    validation = tokenize_for_lm(splits["validation"], tokenizer, seq_len, packing=bool(data.packing))
    vocab_size = tokenizer.get_vocab_size()
    baseline = unigram_cross_entropy(train["input_ids"], validation["input_ids"], vocab_size)
    pad_id = special_token_id(tokenizer, "pad")
    if cfg.task.name == "mlm":
        mask_id = special_token_id(tokenizer, "mask")
        specials = tuple(i for i in special_token_ids(tokenizer).values() if i is not None)
        prob = float(cfg.task.mask_prob)
        train_collator = MLMCollator(pad_id, mask_id, vocab_size, specials, prob, seed=cfg.seed)
        val_collator = MLMCollator(pad_id, mask_id, vocab_size, specials, prob, seed=cfg.seed + 1, repeat_masks=True)
    else:
        train_collator = val_collator = CLMCollator(pad_id)
    datamodule = TokenizedDataModule(
        train,
        validation,
        train_collator,
        val_collator,
        int(data.batch_size),
        int(data.num_workers),
        cfg.seed,
        shuffle=bool(data.get("shuffle", True)),
    )
    return PreparedData(datamodule, tokenizer.to_str(), vocab_size, pad_id, baseline, len(train))


def train(cfg: DictConfig, callbacks: list[L.Callback] | None = None) -> float | None:
    """Run one pretraining job; returns ``cfg.optimized_metric`` for Hydra sweepers.

    ``callbacks`` are added to the Trainer's (a search adds its pruning callback here)."""
    if cfg.task.name == "seq2seq":
        from attnfit.recipes.seq2seq import train_seq2seq

        return train_seq2seq(cfg, callbacks)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    check_config(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    ckpt_path = resume_path(cfg.ckpt_path, output_dir)
    resume = load_artifact(ckpt_path) if ckpt_path else None
    prepared = prepare_data(cfg, tokenizer_json=resume.tokenizer_json if resume else None)
    if is_rank_zero():
        (output_dir / "tokenizer.json").write_text(prepared.tokenizer_json)
        OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)
    log.info(
        "data: %d training sequences of %d tokens, vocabulary %d; unigram baseline %.3f nats/token",
        prepared.num_train_rows,
        cfg.data.seq_len,
        prepared.vocab_size,
        prepared.unigram_baseline,
    )

    model_cfg = model_config_dict(cfg, prepared.vocab_size, prepared.pad_id)
    if resume is not None and resume.model_config != ModelConfig.from_dict(model_cfg).to_dict():
        raise CheckpointError(
            f"{ckpt_path} holds a different model than this config; resume with the config "
            "it was trained with (its run directory has config.yaml)"
        )
    batches = math.ceil(prepared.num_train_rows / int(cfg.data.batch_size))
    module = LanguageModelingModule(
        model_cfg,
        container(cfg.optimizer),
        container(cfg.scheduler),
        total_steps=total_training_steps(cfg.trainer, batches),
        tokenizer_json=prepared.tokenizer_json,
        compile=bool(cfg.compile),
        run_config=run_config(cfg),
    )
    log.info(
        "model: %s encoder + %s attention, %.2fM parameters",
        cfg.encoder.name,
        cfg.attention.name,
        sum(p.numel() for p in module.parameters()) / 1e6,
    )
    trainer = build_trainer(cfg, output_dir, extra_callbacks=callbacks)
    fit(trainer, module, prepared.datamodule, ckpt_path)

    metrics = final_metrics(trainer, trainer.checkpoint_callback)
    metrics["unigram_baseline"] = prepared.unigram_baseline
    if trainer.is_global_zero:
        write_metrics(output_dir, metrics)
        log_final_hparams(trainer, cfg, metrics)
        report(cfg, output_dir, metrics, trainer)
        if module.model_config.causal:
            print_sample(module, prepared.tokenizer_json)
    return metrics.get(cfg.optimized_metric)


def print_sample(module: LanguageModelingModule, tokenizer_json: str, max_new_tokens: int = 48) -> None:
    """Show what a causal LM learned: a continuation of a document boundary, sampled with top-k."""
    import torch
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    model = module.model.eval()
    prompt = torch.tensor([[special_token_id(tokenizer, "eos")]], device=module.device)
    generator = torch.Generator(device=module.device).manual_seed(0)
    ids = model.generate(prompt, max_new_tokens, temperature=0.8, top_k=20, generator=generator)
    print(f"sample: {tokenizer.decode(ids[0, 1:].tolist()).strip()}")


def report(cfg: DictConfig, output_dir: Path, metrics: dict[str, float], trainer: L.Trainer) -> None:
    """Tell the user how the run went, where it is, and what to try next."""
    from rich.console import Console

    console = Console(soft_wrap=True)  # long paths stay copyable on one line
    loss, baseline = metrics.get("val/loss"), metrics["unigram_baseline"]
    if loss is not None:
        if loss < 0.8 * baseline:
            verdict = f"{100 * (1 - loss / baseline):.0f}% lower: the model learned context"
        elif loss < baseline:
            verdict = f"only {100 * (1 - loss / baseline):.0f}% lower: train longer"
        else:
            verdict = "not better yet: train longer, or check the data and learning rate"
        console.print(
            f"[bold]validation loss {loss:.3f} nats/token[/] (perplexity {math.exp(min(loss, 50)):.1f}) "
            f"vs unigram baseline {baseline:.3f}: {verdict}"
        )
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    console.print(f"run directory: {output_dir}")
    if best:
        console.print(f"best checkpoint: {best}")
    console.print("next:")
    console.print(f"  attnfit-finetune pretrained={output_dir}   # fine-tune it (embedded task without data=)")
    console.print(f"  tensorboard --logdir {output_dir / 'tensorboard'}")
    console.print(
        f"  attnfit-train ckpt_path={output_dir / 'checkpoints' / 'last.ckpt'} "
        f"trainer.max_steps={2 * trainer.global_step}   # continue training"
    )
