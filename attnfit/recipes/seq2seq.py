"""Sequence-to-sequence training: parallel data → joint (or per-side) tokenizer → encoder-decoder → fit → test → report.

``attnfit-train task=seq2seq`` trains from scratch; ``attnfit-finetune pretrained=RUN task=seq2seq`` starts the
encoder from a pretrained language model (its tokenizer then serves both sides).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf, open_dict

from attnfit.data import special_token_id
from attnfit.data.seq2seq import Seq2SeqCollator, load_parallel_splits, parallel_texts, tokenize_for_seq2seq
from attnfit.data.tokenizer import get_tokenizer
from attnfit.errors import CheckpointError, ConfigError, check_choice
from attnfit.models.seq2seq import Seq2SeqConfig
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
from attnfit.training.seq2seq_module import METRICS, Seq2SeqModule

log = logging.getLogger("attnfit")


@dataclass
class PreparedPairs:
    datamodule: TokenizedDataModule
    source_tokenizer_json: str
    target_tokenizer_json: str | None  # None: the source tokenizer serves both sides
    source_vocab: int
    target_vocab: int
    pad_id: int
    num_train: int


def _with_text(encoded: Any, raw: Any) -> Any:
    """Keep the raw reference next to the token ids: BLEU is computed on detokenized text, not on ids."""
    return encoded.add_column("target_text", [raw["target"][int(i)] for i in encoded["index"]])


class _Collator(Seq2SeqCollator):
    def __call__(self, examples: list[dict]) -> dict:
        batch = super().__call__(examples)
        batch["num_tokens"] = int((~batch["source_mask"]).sum() + batch["num_target_tokens"])  # for throughput
        if examples and "target_text" in examples[0]:
            batch["target_text"] = [ex["target_text"] for ex in examples]
        return batch


def prepare_pairs(cfg: DictConfig, tokenizer_json: str | None = None, target_json: str | None = None) -> PreparedPairs:
    """Load parallel splits, get the tokenizer(s) (from a checkpoint when given), tokenize, build loaders."""
    from tokenizers import Tokenizer

    data, cache_dir = cfg.data, Path(cfg.paths.cache_dir)

    def files(split: str) -> Any:
        return container(data.get(split)) if data.get(split) is not None else None

    splits = load_parallel_splits(
        data.source,
        cache_dir=cache_dir / "datasets",
        train=files("train"),
        validation=files("validation"),
        test=files("test"),
        source_column=data.get("source_column", "source"),
        target_column=data.get("target_column", "target"),
        source_lang=data.get("source_lang"),
        target_lang=data.get("target_lang"),
        path=data.get("path"),
        subset=data.get("subset"),
        file_format=data.get("format"),
        num_train=int(data.get("num_train", 20000)),
        num_val=int(data.get("num_val", 1000)),
        num_test=int(data.get("num_test", 1000)),
        val_fraction=float(data.get("val_fraction", 0.05)),
        seed=int(cfg.seed),
        embedded_dir=cache_dir / "embedded-translation",
    )
    tok, joint = cfg.get("tokenizer"), bool(cfg.task.joint_tokenizer)
    key = splits["train"]._fingerprint

    def train_tokenizer(side: str) -> Any:
        return get_tokenizer(
            tok.kind,
            lambda: parallel_texts(splits["train"], side),
            int(tok.get("vocab_size", 8000)),
            cache_key=f"{key}|{side}",
            cache_dir=cache_dir,
            path=tok.get("path"),
        )

    if tokenizer_json is not None:
        source_tok = Tokenizer.from_str(tokenizer_json)
        target_tok = Tokenizer.from_str(target_json) if target_json else source_tok
    else:
        source_tok = train_tokenizer("both" if joint else "source")
        target_tok = source_tok if joint else train_tokenizer("target")
    max_src, max_tgt = int(data.max_source_len), int(data.max_target_len)
    encoded = {
        split: tokenize_for_seq2seq(ds, source_tok, target_tok, max_src, max_tgt, split=split)
        for split, ds in splits.items()
    }
    for split in ("validation", "test"):
        if split in encoded:
            encoded[split] = _with_text(encoded[split], splits[split])
    pad_id = special_token_id(target_tok, "pad")
    if special_token_id(source_tok, "pad") != pad_id:
        raise ConfigError("source and target tokenizers must use the same <pad> id")
    collator = _Collator(pad_id)
    datamodule = TokenizedDataModule(
        encoded["train"],
        encoded["validation"],
        collator,
        collator,
        int(data.batch_size),
        int(data.num_workers),
        int(cfg.seed),
        test=encoded.get("test"),
        shuffle=bool(data.get("shuffle", True)),
    )
    return PreparedPairs(
        datamodule=datamodule,
        source_tokenizer_json=source_tok.to_str(),
        target_tokenizer_json=None if target_tok is source_tok else target_tok.to_str(),
        source_vocab=source_tok.get_vocab_size(),
        target_vocab=target_tok.get_vocab_size(),
        pad_id=pad_id,
        num_train=len(encoded["train"]),
    )


def seq2seq_config_dict(
    cfg: DictConfig, source_vocab: int, target_vocab: int, pad_id: int, encoder: dict | None = None
) -> dict[str, Any]:
    """The plain-data :class:`Seq2SeqConfig` this run's config describes; ``encoder``: a pretrained encoder's
    model config, used instead of the ``model``/``encoder``/``attention`` groups."""
    from attnfit.recipes.pretrain import model_config_dict

    task = cfg.task
    if encoder is None:
        encoder = model_config_dict(cfg, source_vocab, pad_id)
        encoder["max_len"] = max(int(encoder["max_len"]), int(cfg.data.max_source_len))
    encoder = {**encoder, "causal": False}
    attention = encoder["attention"]  # unset cross-attention settings follow the encoder's attention
    cross = container(task.cross_attention)
    cross["name"] = cross.get("name") or attention["name"]
    if cross.get("score") is None:
        cross["score"] = attention.get("score") or ("dot" if cross["name"] == "self" else "general")
        if cross["name"] == "self":
            cross["score"] = "dot"
    if cross.get("num_heads") is None:
        cross["num_heads"] = int(attention["num_heads"]) if cross["name"] == "self" else 1
    return {
        "encoder": encoder,
        "target_vocab_size": target_vocab,
        "decoder": container(cfg.decoder),
        "cross_attention": cross,
        "tie_output": bool(task.tie_output),
        "share_embeddings": bool(task.share_embeddings) and source_vocab == target_vocab,
        "max_target_len": int(cfg.data.max_target_len) + 1,
    }


def check_seq2seq_config(cfg: DictConfig, encoder: dict | None = None) -> None:
    """Cheap checks before any data is read."""
    check_option_types(cfg)
    check_choice("task.metric", cfg.task.metric, METRICS)
    if cfg.get("decoder") is None:
        raise ConfigError("task=seq2seq needs a decoder: decoder=gru, decoder=lstm or decoder=transformer")
    for key in ("max_source_len", "max_target_len", "batch_size"):
        if int(cfg.data.get(key, 0)) < 1:
            raise ConfigError(
                f"data.{key}={cfg.data.get(key)} must be ≥ 1 for task=seq2seq (is data= a seq2seq source?)"
            )
    if not 0.0 <= float(cfg.task.label_smoothing) < 1.0:
        raise ConfigError(f"task.label_smoothing={cfg.task.label_smoothing} must be in [0, 1)")
    if int(cfg.task.decode.beam_size) < 1:
        raise ConfigError(f"task.decode.beam_size={cfg.task.decode.beam_size} must be ≥ 1")
    vocab = int(encoder["vocab_size"]) if encoder else 64
    Seq2SeqConfig.from_dict(seq2seq_config_dict(cfg, vocab, vocab, 0, encoder))  # encoder, decoder, cross-attention
    from attnfit.recipes.pretrain import check_optimization

    check_optimization(cfg)


def train_seq2seq(
    cfg: DictConfig,
    callbacks: list[L.Callback] | None = None,
    pretrained: Any = None,
) -> float | None:
    """Run one seq2seq job; returns ``cfg.optimized_metric``. ``pretrained``: an LM :class:`Artifact` whose
    backbone initialises the encoder (its tokenizer is then used for both sides)."""
    from attnfit.models.finetuning import load_pretrained_backbone
    from attnfit.pretrained import load_artifact

    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if pretrained is not None and pretrained.task == "seq2seq":
        raise ConfigError(f"{pretrained.source} is already a seq2seq model; continue it with ckpt_path= instead")
    pretrained_encoder = {**pretrained.model_config, "causal": False} if pretrained is not None else None
    check_seq2seq_config(cfg, pretrained_encoder)
    if pretrained_encoder is not None and int(cfg.data.max_source_len) > int(pretrained_encoder["max_len"]):
        raise ConfigError(
            f"data.max_source_len={cfg.data.max_source_len} exceeds the pretrained encoder's max_len="
            f"{pretrained_encoder['max_len']}; set data.max_source_len={pretrained_encoder['max_len']} or less"
        )
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    ckpt_path = resume_path(cfg.ckpt_path, output_dir)
    resume = load_artifact(ckpt_path) if ckpt_path else None
    if resume is not None:
        tok_json, target_json = resume.tokenizer_json, resume.extra.get("target_tokenizer")
    elif pretrained is not None:
        tok_json, target_json = pretrained.tokenizer_json, None
    else:
        tok_json = target_json = None
    prepared = prepare_pairs(cfg, tok_json, target_json)
    if is_rank_zero():
        (output_dir / "tokenizer.json").write_text(prepared.source_tokenizer_json)
        if prepared.target_tokenizer_json:
            (output_dir / "target_tokenizer.json").write_text(prepared.target_tokenizer_json)
        OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)
    model_cfg = seq2seq_config_dict(
        cfg, prepared.source_vocab, prepared.target_vocab, prepared.pad_id, pretrained_encoder
    )
    if resume is not None and resume.model_config != Seq2SeqConfig.from_dict(model_cfg).to_dict():
        raise CheckpointError(f"{ckpt_path} holds a different model than this config; resume with its config.yaml")
    batches = math.ceil(prepared.num_train / int(cfg.data.batch_size))
    module = Seq2SeqModule(
        model_cfg,
        container(cfg.optimizer),
        container(cfg.scheduler),
        total_steps=total_training_steps(cfg.trainer, batches),
        tokenizer_json=prepared.source_tokenizer_json,
        target_tokenizer_json=prepared.target_tokenizer_json,
        label_smoothing=float(cfg.task.label_smoothing),
        metric=str(cfg.task.metric),
        decode=container(cfg.task.decode),
        num_samples=int(cfg.task.num_samples),
        compile=bool(cfg.compile),
        run_config=run_config(cfg),
    )
    if pretrained is not None and resume is None:
        report = load_pretrained_backbone(module.model, pretrained.state_dict)
        log.info("encoder initialised from %s (%d tensors)", pretrained.source, len(report.loaded))
    log.info(
        "model: %s encoder + %s decoder, %s cross-attention; %.2fM parameters; %d training pairs",
        module.model_config.encoder.encoder.name,
        cfg.decoder.name,
        module.model_config.cross_attention.name,
        sum(p.numel() for p in module.parameters()) / 1e6,
        prepared.num_train,
    )
    extra = list(callbacks or [])
    heatmaps = int(cfg.task.get("alignment_heatmaps", 0))
    if heatmaps and is_rank_zero():
        from attnfit.training.callbacks import AlignmentHeatmaps

        extra.append(AlignmentHeatmaps(prepared.datamodule.validation, heatmaps, prepared.source_tokenizer_json))
    monitor = f"val/{'bleu' if cfg.task.metric == 'bleu' else 'rougeL'}"
    if cfg.callbacks.get("early_stopping"):  # fine-tuning's preset watches a classification metric
        with open_dict(cfg):
            cfg.callbacks.early_stopping.monitor, cfg.callbacks.early_stopping.mode = monitor, "max"
    trainer = build_trainer(cfg, output_dir, monitor=monitor, mode="max", extra_callbacks=extra)
    fit(trainer, module, prepared.datamodule, ckpt_path)

    metrics = final_metrics(trainer, trainer.checkpoint_callback)
    if prepared.datamodule.test is not None:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        tested = trainer.test(module, datamodule=prepared.datamodule, ckpt_path=best or None, weights_only=True)
        metrics.update(tested[0] if tested else {})
    if trainer.is_global_zero:
        write_metrics(output_dir, metrics)
        log_final_hparams(trainer, cfg, metrics)
        report_seq2seq(output_dir, metrics, trainer, module)
    return metrics.get(cfg.optimized_metric)


def report_seq2seq(output_dir: Path, metrics: dict[str, float], trainer: L.Trainer, module: Seq2SeqModule) -> None:
    from rich.console import Console

    console = Console(soft_wrap=True)
    shown = {k: v for k, v in metrics.items() if k.split("/")[-1] in ("loss", "ppl", "bleu", "rouge1", "rougeL")}
    console.print("  ".join(f"[bold]{k}[/] {v:.3f}" for k, v in sorted(shown.items())))
    console.print(f"run directory: {output_dir}")
    console.print("next:")
    console.print(f"  attnfit-eval checkpoint={output_dir}        # BLEU with beam search on the test split")
    console.print(f"  attnfit-predict checkpoint={output_dir} text='...' heatmap=true   # translate, with alignments")
    console.print(f"  tensorboard --logdir {output_dir / 'tensorboard'}")
