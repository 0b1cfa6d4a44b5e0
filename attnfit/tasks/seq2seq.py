"""Sequence-to-sequence (``task=seq2seq``): translation and summarization with any encoder × decoder ×
cross-attention. ``attnfit-train task=seq2seq`` trains from scratch; ``attnfit-finetune pretrained=RUN
task=seq2seq`` starts the encoder from a pretrained language model (its tokenizer then serves both sides)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch import nn

from attnfit.errors import ConfigError, check_choice, check_fraction
from attnfit.options import container, input_length, run_config
from attnfit.pretrained import Artifact, ModelRecord
from attnfit.tasks.base import Prepared, Task, datamodule_for
from attnfit.tasks.classification import refuse_plan_options

log = logging.getLogger("attnfit")
METRICS = ("bleu", "rouge")


def _with_text(encoded: Any, raw: Any) -> Any:
    """Keep the raw reference next to the token ids: BLEU is computed on detokenized text, not on ids."""
    return encoded.add_column("target_text", [raw["target"][int(i)] for i in encoded["index"]])


def seq2seq_config_dict(
    cfg: DictConfig, source_vocab: int, target_vocab: int, pad_id: int, encoder: dict | None = None
) -> dict[str, Any]:
    """The plain-data :class:`Seq2SeqConfig` this run's config describes; ``encoder``: a pretrained encoder's
    model config, used instead of the ``model``/``encoder``/``attention`` groups."""
    from attnfit.tasks.language_modeling import model_config_dict

    task = cfg.task
    if encoder is None:
        encoder = model_config_dict(cfg, source_vocab, pad_id)
        encoder["max_len"] = max(int(encoder["max_len"]), int(cfg.data.max_source_len))
    encoder = {**encoder, "causal": False}
    attention = encoder["attention"]  # unset cross-attention settings follow the encoder's attention
    cross = container(task.cross_attention)
    # An encoder with the sliding window gets Luong's local attention as its cross-attention by default.
    cross["name"] = cross.get("name") or {"local": "luong_local"}.get(attention["name"], attention["name"])
    if cross.get("score") is None:
        cross["score"] = "dot" if cross["name"] == "self" else (attention.get("score") or "general")
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


def _pretrained_encoder(pretrained: Artifact | None) -> dict[str, Any] | None:
    return {**pretrained.model_config, "causal": False} if pretrained is not None else None


class Seq2Seq(Task):
    name = "seq2seq"

    def monitor(self, cfg: DictConfig) -> tuple[str, str]:
        return f"val/{'bleu' if cfg.task.metric == 'bleu' else 'rougeL'}", "max"

    def check(self, cfg: DictConfig, pretrained: Artifact | None) -> None:
        from attnfit.models.seq2seq import Seq2SeqConfig

        if pretrained is not None and pretrained.task == "seq2seq":
            raise ConfigError(f"{pretrained.source} is already a seq2seq model; continue it with ckpt_path= instead")
        encoder = _pretrained_encoder(pretrained)
        refuse_plan_options(cfg)
        check_choice("task.metric", cfg.task.metric, METRICS)
        if cfg.get("decoder") is None:
            raise ConfigError("task=seq2seq needs a decoder: decoder=gru, decoder=lstm or decoder=transformer")
        for key in ("max_source_len", "max_target_len", "batch_size"):
            if int(cfg.data.get(key, 0)) < 1:
                raise ConfigError(
                    f"data.{key}={cfg.data.get(key)} must be ≥ 1 for task=seq2seq (is data= a seq2seq source?)"
                )
        check_fraction("task.label_smoothing", float(cfg.task.label_smoothing))
        if int(cfg.task.decode.beam_size) < 1:
            raise ConfigError(f"task.decode.beam_size={cfg.task.decode.beam_size} must be ≥ 1")
        vocab = int(encoder["vocab_size"]) if encoder else 64
        Seq2SeqConfig.from_dict(seq2seq_config_dict(cfg, vocab, vocab, 0, encoder))  # encoder, decoder, cross-attention
        if encoder is not None and int(cfg.data.max_source_len) > int(encoder["max_len"]):
            raise ConfigError(
                f"data.max_source_len={cfg.data.max_source_len} exceeds the pretrained encoder's max_len="
                f"{encoder['max_len']}; set data.max_source_len={encoder['max_len']} or less"
            )

    def prepare(self, cfg: DictConfig, tokenizers: tuple[Any, Any] | None) -> Prepared:
        """Load parallel splits, get the tokenizer(s) (from a checkpoint when given), tokenize, build loaders."""
        from attnfit.data import special_token_id
        from attnfit.data.seq2seq import Seq2SeqCollator, load_parallel_splits, parallel_texts, tokenize_for_seq2seq
        from attnfit.data.tokenizer import tokenizer_from_config

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
            num_val=int(data.get("num_val", 500)),
            num_test=int(data.get("num_test", 500)),
            val_fraction=float(data.get("val_fraction", 0.05)),
            seed=int(cfg.seed),
            embedded_dir=cache_dir / "embedded-translation",
        )
        if tokenizers is not None:
            source_tok, target_tok = tokenizers
        else:
            tok, joint = cfg.get("tokenizer"), bool(cfg.task.joint_tokenizer)
            key = splits["train"]._fingerprint

            def train_tokenizer(side: str) -> Any:
                texts = functools.partial(parallel_texts, splits["train"], side)
                return tokenizer_from_config(tok, texts, f"{key}|{side}", cache_dir)

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
        collator = Seq2SeqCollator(pad_id)
        datamodule = datamodule_for(cfg, encoded, collator)
        target = None if target_tok is source_tok else target_tok
        return Prepared(datamodule, source_tok, target, num_train=len(encoded["train"]))

    def build_module(self, cfg: DictConfig, prepared: Prepared, total_steps: int, pretrained: Artifact | None) -> Any:
        from attnfit.data import special_token_id
        from attnfit.models.finetuning import load_pretrained_backbone
        from attnfit.models.seq2seq import Seq2SeqConfig, Seq2SeqModel
        from attnfit.training.module import Optimization
        from attnfit.training.seq2seq_module import Seq2SeqModule

        source, target = prepared.tokenizer, prepared.target_tokenizer or prepared.tokenizer
        config = Seq2SeqConfig.from_dict(
            seq2seq_config_dict(
                cfg,
                source.get_vocab_size(),
                target.get_vocab_size(),
                special_token_id(target, "pad"),
                _pretrained_encoder(pretrained),
            )
        )
        model = Seq2SeqModel(config)
        if pretrained is not None:
            loaded = load_pretrained_backbone(model, pretrained.state_dict)
            log.info("encoder initialised from %s (%d tensors)", pretrained.source, len(loaded.loaded))
        record = ModelRecord(
            "seq2seq",
            config.to_dict(),
            source.to_str(),
            target_tokenizer_json=prepared.target_tokenizer.to_str() if prepared.target_tokenizer else None,
            decode=container(cfg.task.decode),
            metric=str(cfg.task.metric),
            run_config=run_config(cfg),
        )
        optimization = Optimization(container(cfg.optimizer), container(cfg.scheduler), total_steps)
        module = Seq2SeqModule(
            model,
            record,
            optimization,
            label_smoothing=float(cfg.task.label_smoothing),
            num_samples=int(cfg.task.num_samples),
        )
        log.info(
            "model: %s encoder + %s decoder, %s cross-attention",
            config.encoder.encoder.name,
            cfg.decoder.name,
            config.cross_attention.name,
        )
        return module

    def callbacks(self, cfg: DictConfig, prepared: Prepared, module: Any) -> list[Any]:
        from attnfit.recipes.common import is_rank_zero
        from attnfit.training.callbacks import AlignmentHeatmaps

        count = int(cfg.task.get("alignment_heatmaps", 0))
        if not count or not is_rank_zero():
            return []
        return [AlignmentHeatmaps(prepared.datamodule.validation, count, prepared.tokenizer.to_str())]

    def summarise(self, metrics: dict[str, float], module: Any, prepared: Prepared) -> list[str]:
        shown = {k: v for k, v in metrics.items() if k.split("/")[-1] in ("loss", "ppl", "bleu", "rouge1", "rougeL")}
        return ["  ".join(f"[bold]{k}[/] {v:.3f}" for k, v in sorted(shown.items()))]

    def next_steps(self, run_dir: Path) -> list[str]:
        return [
            f"attnfit-eval checkpoint={run_dir}        # BLEU with beam search on the test split",
            f"attnfit-predict checkpoint={run_dir} text='...' heatmap=true   # translate, with alignments",
            f"tensorboard --logdir {run_dir / 'tensorboard'}",
        ]

    # ---- saved models -----------------------------------------------------------------------------------------
    def build_model(self, record: ModelRecord) -> nn.Module:
        from attnfit.models.seq2seq import Seq2SeqConfig, Seq2SeqModel

        return Seq2SeqModel(Seq2SeqConfig.from_dict(record.model_config))

    def evaluation_data(self, job: DictConfig, artifact: Artifact, split: str) -> Any:
        """Validation and test keep their reference texts for BLEU/ROUGE; train gets them back from its target ids
        when it is the split scored."""
        tokenizers = artifact.record.tokenizers()
        datamodule = self.prepare(job, tokenizers).datamodule
        if split == "train" and "target_text" not in datamodule.train.column_names:
            target = tokenizers[1]
            datamodule.train = datamodule.train.map(
                lambda batch: {"target_text": target.decode_batch([ids[1:-1] for ids in batch["target_ids"]])},
                batched=True,
                desc="reference texts (train)",
            )
        return datamodule

    def evaluation_module(self, artifact: Artifact, cfg: DictConfig) -> Any:
        """Decodes with beam search: ``beam_size=``, else the width the checkpoint was trained to use."""
        import dataclasses

        from attnfit.pretrained import build_model
        from attnfit.training.seq2seq_module import Seq2SeqModule

        decode = dict(artifact.record.decode or {})
        if cfg.get("beam_size") is not None:
            decode["beam_size"] = int(cfg.beam_size)
        return Seq2SeqModule(build_model(artifact), dataclasses.replace(artifact.record, decode=decode))

    def evaluation_notes(self, module: Any) -> dict[str, Any]:
        return {"decode": {k: module.decode_cfg[k] for k in ("beam_size", "length_penalty", "max_len")}}

    endpoint = "translate"

    def infer(self, model: nn.Module, artifact: Artifact, inputs: list[str], options: Any, need_weights: bool) -> list:
        """Beam search over every input in one padded batch: the translation, its score and, with ``nbest``, the
        ``n`` best hypotheses; ``min_len``, ``no_repeat_ngram``, ``length_norm`` and ``length_penalty`` constrain
        and rank them (the checkpoint's ``task.decode`` unless given). Weights: the source→target alignment (the
        last decoder layer's cross-attention, averaged over heads) and the encoder's self-attention maps."""
        import torch

        from attnfit.data import special_token_id
        from attnfit.models.seq2seq import beam_search
        from attnfit.tasks.base import attention_maps, pad_right, rounded
        from attnfit.viz import token_strings

        tokenizer, target_tokenizer = artifact.record.tokenizers()
        decode = artifact.record.decode or {}
        beam = int(options.get("beam_size") or decode.get("beam_size", 4))
        nbest = int(options.get("nbest") or 1)
        if nbest > beam:
            beam = nbest  # the n best need at least n beams
        max_len = min(int(options.get("max_new_tokens") or decode.get("max_len", 64)), model.config.max_target_len)
        max_source = input_length(options.get("max_len"), int(artifact.model_config["encoder"]["max_len"]))
        eos = special_token_id(tokenizer, "eos")
        rows = [[*tokenizer.encode(t, add_special_tokens=False).ids[: max_source - 1], eos] for t in inputs]
        source, padding = pad_right(rows, model.config.pad_id)
        length_penalty = options.get("length_penalty")
        with torch.no_grad():
            output = beam_search(
                model,
                source,
                padding if bool(padding.any()) else None,
                bos_id=special_token_id(target_tokenizer, "bos"),
                eos_id=special_token_id(target_tokenizer, "eos"),
                max_len=max_len,
                beam_size=beam,
                length_penalty=float(decode.get("length_penalty", 1.0) if length_penalty is None else length_penalty),
                need_alignments=need_weights,
                n_best=nbest,
                min_len=int(options.get("min_len") or 0),
                no_repeat_ngram=int(options.get("no_repeat_ngram") or 0),
                length_norm=str(options.get("length_norm") or "gnmt"),
            )
            encoder_maps = model.encoder(source, padding, need_weights=True)[1] if need_weights else []
        results = []
        for i, text in enumerate(inputs):
            hyps = []
            for r in range(i * nbest, (i + 1) * nbest):
                n = int(output.lengths[r])
                hyps.append((output.tokens[r, :n].tolist(), float(output.scores[r]), r, n))
            best_ids, best_score, best_row, n = hyps[0]
            record: dict[str, Any] = {
                "source": text,
                "translation": target_tokenizer.decode(best_ids),
                "score": round(best_score, 6),
                "beam_size": beam,
            }
            if nbest > 1:
                record["nbest"] = [
                    {"translation": target_tokenizer.decode(ids), "score": round(score, 6)} for ids, score, _, _ in hyps
                ]
            if need_weights:
                record["attention"] = {
                    "source_tokens": token_strings(tokenizer, rows[i]),
                    "target_tokens": token_strings(target_tokenizer, best_ids),
                    "alignment": rounded(output.alignments[best_row, :n, : len(rows[i])]),  # (target, source)
                    "layers": attention_maps(encoder_maps, i, len(rows[i])),
                }
            results.append(record)
        return results

    def predict(self, model: nn.Module, artifact: Artifact, text: str, cfg: DictConfig, out: Path, index: int) -> dict:
        """Beam search (the checkpoint's width unless ``beam_size=``; ``nbest=N`` lists the N best); with
        ``heatmap=true`` the cross-attention alignment (target × source, averaged over heads) as a PNG and as a
        matrix in the JSON record."""
        result = self.infer(model, artifact, [text], cfg, need_weights=bool(cfg.heatmap))[0]
        print(f"{text}  →  \033[1m{result['translation']}\033[0m")
        for rank, hyp in enumerate(result.get("nbest", [])[1:], start=2):
            print(f"  {rank}. {hyp['translation']}  ({hyp['score']:.3f})")
        if cfg.heatmap:
            import numpy as np

            from attnfit.viz import alignment_figure, save_figure

            attention = result.pop("attention")
            source_tokens, target_tokens = attention["source_tokens"], attention["target_tokens"]
            weights = np.asarray(attention["alignment"], dtype=np.float32).reshape(len(target_tokens), -1)
            path = out / f"alignment_{index}.png"
            save_figure(alignment_figure(source_tokens, target_tokens, weights, title=result["translation"]), path)
            links = [f"{t}←{source_tokens[int(row.argmax())]}" for t, row in zip(target_tokens, weights, strict=True)]
            print("alignment (strongest source token): " + " ".join(links))
            print(f"alignment heat map: {path}")
            result["alignment"] = {
                "source_tokens": source_tokens,
                "target_tokens": target_tokens,
                "weights": [[round(float(w), 6) for w in row] for row in weights],
                "heatmap": str(path),
            }
        return result
