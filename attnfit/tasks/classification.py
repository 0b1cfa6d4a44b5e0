"""Sequence (and sentence-pair) classification (``task=classification``): fine-tuned from a pretrained LM, or
trained from scratch with ``attnfit-train task=classification``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch import nn

from attnfit.errors import CheckpointError, ConfigError, check_choice, check_fraction
from attnfit.options import container, input_length, run_config
from attnfit.pretrained import Artifact, ModelRecord, merged_state_dict
from attnfit.tasks import get_task
from attnfit.tasks.base import Prepared, Task, datamodule_for

log = logging.getLogger("attnfit")
AUXILIARY_MASK_PROB = 0.15  # finetune.mlm_weight's masking rate: BERT's


def task_tokenizer(cfg: DictConfig, texts: Any, cache_key: str) -> Any:
    """A tokenizer trained on a task's own training text (``tokenizer`` group), for runs without a pretrained model."""
    from attnfit.data.tokenizer import tokenizer_from_config

    tok = cfg.get("tokenizer")
    if tok is None:
        raise ConfigError("a run without pretrained= needs a tokenizer: tokenizer=bpe, tokenizer=char, …")
    return tokenizer_from_config(tok, texts, cache_key, Path(cfg.paths.cache_dir))


def backbone_config(cfg: DictConfig, tokenizer: Any, pretrained: Artifact | None) -> dict[str, Any]:
    """The pretrained model's backbone config as it was trained (``finetune.dropout`` replacing its encoder
    dropout when set), else the config groups' (bidirectional)."""
    from attnfit.data import special_token_id
    from attnfit.tasks.language_modeling import model_config_dict

    if pretrained is not None:
        config = dict(pretrained.model_config)
        dropout = (cfg.get("finetune") or {}).get("dropout")
        if dropout is not None:  # short pretraining runs use none; a small labelled set needs some
            config["encoder"] = {**config["encoder"], "dropout": float(dropout)}
        return config
    return {**model_config_dict(cfg, tokenizer.get_vocab_size(), special_token_id(tokenizer, "pad")), "causal": False}


def check_backbone(cfg: DictConfig, pretrained: Artifact | None, seq_len: int, key: str = "data.seq_len") -> None:
    """The sequence length against the pretrained model's positions, or the config groups when training from scratch."""
    from attnfit.tasks.language_modeling import check_backbone_config

    if pretrained is None:
        check_backbone_config(cfg, seq_len)
        return
    max_len = int(pretrained.model_config.get("max_len", seq_len))
    if seq_len > max_len:
        raise ConfigError(f"{key}={seq_len} exceeds the pretrained model's max_len={max_len}; choose {key} ≤ {max_len}")


def check_finetune_options(cfg: DictConfig, auxiliary_mlm: bool = False) -> None:
    """``auxiliary_mlm``: the task trains with ``finetune.mlm_weight`` (classification); others refuse it."""
    ft = cfg.get("finetune")
    if ft is None:
        return
    if int(ft.freeze_layers) < 0:
        raise ConfigError(f"finetune.freeze_layers={ft.freeze_layers} must be ≥ 0")
    if ft.head_lr is not None and float(ft.head_lr) <= 0:
        raise ConfigError(f"finetune.head_lr={ft.head_lr} must be > 0")
    weight = mlm_weight(cfg)
    if weight < 0:
        raise ConfigError(f"finetune.mlm_weight={ft.mlm_weight} must be ≥ 0 (0: no auxiliary masked-LM loss)")
    if weight > 0 and not auxiliary_mlm:
        raise ConfigError(f"finetune.mlm_weight={ft.mlm_weight} is for task=classification; set finetune.mlm_weight=0")
    if weight > 0:
        from attnfit.tasks.language_modeling import MASKINGS

        check_choice("finetune.mlm_masking", str(ft.get("mlm_masking")), MASKINGS)


# The finetune.* options a task applies only through FinetunePlan, at the values that change nothing.
PLAN_OPTIONS = {"from_scratch": False, "dropout": None, "freeze_embeddings": False, "freeze_layers": 0,
                "gradual_unfreeze_every": None, "layer_lr_decay": 1.0, "head_lr": None, "mlm_weight": 0.0,
                "lora.enabled": False}  # fmt: skip


def refuse_plan_options(cfg: DictConfig) -> None:
    """ConfigError for a ``finetune.*`` option set on a task that does not apply it, rather than ignoring it."""
    from omegaconf import OmegaConf

    for key, inert in PLAN_OPTIONS.items():
        value = OmegaConf.select(cfg, f"finetune.{key}", default=inert)
        if value != inert:
            raise ConfigError(
                f"finetune.{key}={value} is not applied by task={cfg.task.name}, which fine-tunes its whole "
                f"pretrained encoder; remove it (finetune.{key}={inert if inert is not None else 'null'})"
            )


def mlm_weight(cfg: DictConfig) -> float:
    """``finetune.mlm_weight``: how much the auxiliary masked-LM loss counts (0: none, and no masked copies)."""
    return float((cfg.get("finetune") or {}).get("mlm_weight") or 0.0)


def label_smoothing(cfg: DictConfig) -> float:
    """``task.label_smoothing``: the share of the training target spread over all labels (0: plain cross-entropy)."""
    return float(cfg.task.get("label_smoothing") or 0.0)


def adversarial_eps(cfg: DictConfig) -> float:
    """``task.adversarial_eps``: the size of the embedding perturbation of adversarial training (0: none)."""
    return float(cfg.task.get("adversarial_eps") or 0.0)


def check_auxiliary_mlm(cfg: DictConfig, pretrained: Artifact | None) -> None:
    """An auxiliary masked-LM loss continues a masked LM's head; other models have none to continue."""
    finetune = cfg.get("finetune") or {}
    if mlm_weight(cfg) > 0 and pretrained is not None and not finetune.get("from_scratch") and pretrained.task != "mlm":
        raise ConfigError(
            f"finetune.mlm_weight={finetune.mlm_weight} continues a masked LM's head, but {pretrained.source} is a "
            f"{pretrained.task} model; set finetune.mlm_weight=0 or fine-tune a task=mlm model"
        )


def finetuned_backbone(
    model: nn.Module, cfg: DictConfig, pretrained: Artifact | None, reused: tuple[str, ...] = ()
) -> Any:
    """Load the pretrained backbone (unless ``finetune.from_scratch``), then apply the fine-tuning surgery.
    ``reused``: head tensors the caller already loaded from ``pretrained`` (BERT's pooler), for the log.

    Returns the :class:`~attnfit.models.FinetunePlan` and logs what was loaded and what will train."""
    from attnfit.models import load_pretrained_backbone, prepare_for_finetuning

    finetune = container(cfg.get("finetune")) or {}
    if pretrained is not None and not finetune.get("from_scratch"):
        summary = load_pretrained_backbone(model, merged_state_dict(pretrained))
        summary.loaded += list(reused)
        summary.initialised = [key for key in summary.initialised if key not in reused]
        if mlm_weight(cfg) > 0:  # the pretraining head is not dropped: the auxiliary masked LM goes on with it
            summary.dropped = [key for key in summary.dropped if not key.startswith("head.")]
        log.info(summary.summary())
    elif pretrained is not None:
        log.info("finetune.from_scratch=true: every weight is newly initialised (baseline run)")
    plan = prepare_for_finetuning(model, finetune)
    total, trainable = (
        sum(p.numel() for p in model.parameters()),
        sum(p.numel() for p in model.parameters() if p.requires_grad),
    )
    log.info(f"trainable parameters: {trainable:,} of {total:,}" + (" (LoRA adapters and head)" if plan.lora else ""))
    return plan


def default_pooling(pretrained: Artifact | None) -> str:
    """``task.pooling=null``: the pooling of the imported architecture's own classifier, so that a fine-tuned
    classifier exports back to it: BERT's pooler for a BERT-family import (``BertForSequenceClassification``),
    the last real token for a GPT-2 import (``GPT2ForSequenceClassification``); attention pooling otherwise."""
    from attnfit.hf import BERT_FAMILY, GPT2_FAMILY

    model_type = _hf_model_type(pretrained)
    return "pooler" if model_type in BERT_FAMILY else "last" if model_type in GPT2_FAMILY else "attention"


def default_head_bias(pretrained: Artifact | None) -> bool:
    """``task.head_bias=null``: none for a GPT-2 import (GPT2ForSequenceClassification's ``score`` has none),
    else a bias."""
    from attnfit.hf import GPT2_FAMILY

    return _hf_model_type(pretrained) not in GPT2_FAMILY


def _hf_model_type(pretrained: Artifact | None) -> str | None:
    hf = pretrained.record.hf if pretrained is not None else None
    return hf.get("model_type") if hf else None


def reuse_pooler(model: nn.Module, cfg: DictConfig, pretrained: Artifact | None) -> tuple[str, ...]:
    """BERT's pretrained pooler (dense + tanh), when the import carried one, starts the ``pooler`` pooling;
    returns the keys it loaded."""
    import torch

    if pretrained is None or model.config.pooling != "pooler" or (cfg.get("finetune") or {}).get("from_scratch"):
        return ()
    weights = {**pretrained.extra, **pretrained.state_dict}
    keys = ("pooler.dense.weight", "pooler.dense.bias")
    if not all(key in weights for key in keys):
        return ()
    with torch.no_grad():
        model.pooler.load_state_dict({key.removeprefix("pooler."): weights[key] for key in keys})
    return keys


def finetune_optimization(cfg: DictConfig, plan: Any, total_steps: int) -> Any:
    from attnfit.training.module import Optimization

    return Optimization(
        container(cfg.optimizer), container(cfg.scheduler), total_steps, plan.layers, plan.head,
        plan.layer_lr_decay, plan.head_lr,
    )  # fmt: skip


def finetune_callbacks(cfg: DictConfig, module: Any) -> list[Any]:
    """Gradual unfreezing over the layer groups the module's optimizer was built with."""
    from attnfit.training.callbacks import GradualUnfreezing

    every = (cfg.get("finetune") or {}).get("gradual_unfreeze_every")
    return [GradualUnfreezing(module.optimization.layers, int(every))] if every else []


class Classification(Task):
    name = "classification"

    def monitor(self, cfg: DictConfig) -> tuple[str, str]:
        return "val/f1", "max"

    def check(self, cfg: DictConfig, pretrained: Artifact | None) -> None:
        if int(cfg.data.seq_len) < 3:
            raise ConfigError(f"data.seq_len={cfg.data.seq_len} must be ≥ 3 (<cls>, one token, <eos>)")
        continues = pretrained is None or pretrained.task == self.name or get_task(pretrained.task).is_pretraining
        if not continues:
            raise ConfigError(f"{pretrained.source} is a {pretrained.task} model; fine-tune a language model instead")
        check_backbone(cfg, pretrained, int(cfg.data.seq_len))
        check_fraction("task.label_smoothing", label_smoothing(cfg))
        if adversarial_eps(cfg) < 0:
            eps = cfg.task.adversarial_eps
            raise ConfigError(f"task.adversarial_eps={eps} must be ≥ 0 (0: no adversarial training)")
        check_finetune_options(cfg, auxiliary_mlm=True)
        check_auxiliary_mlm(cfg, pretrained)

    def prepare(
        self, cfg: DictConfig, tokenizers: tuple[Any, Any] | None, label_names: list[str] | None = None
    ) -> Prepared:
        """Load the splits, fix the label names (from train unless given), tokenize, and build loaders."""
        from attnfit.data import special_token_id
        from attnfit.data.classification import (
            ClassificationCollator,
            class_weights,
            label_names_from,
            load_classification_splits,
            tokenize_for_classification,
        )
        from attnfit.tasks.language_modeling import masking_collator

        data, cache_dir = cfg.data, Path(cfg.paths.cache_dir)
        files = {split: data.get(split) for split in ("train", "validation", "test") if data.get(split)}
        splits = load_classification_splits(
            data.source,
            files=files,
            hub_path=data.get("path"),
            hub_subset=data.get("subset"),
            hub_splits=container(data.get("splits")) if data.get("splits") else None,
            text_column=data.get("text_column", "text"),
            text_pair_column=data.get("text_pair_column"),
            label_column=data.get("label_column", "label"),
            column_names=container(data.get("column_names")) if data.get("column_names") else None,
            file_format=data.get("format"),
            val_fraction=data.get("val_fraction", 0.05),
            seed=cfg.seed,
            cache_dir=cache_dir / "datasets",
            embedded_dir=cache_dir / "embedded-classification",
        )
        train = splits["train"]
        columns = [c for c in ("text", "text_pair") if c in train.column_names]

        def texts() -> Any:
            return (row[c] for row in train for c in columns)

        tokenizer = tokenizers[0] if tokenizers is not None else task_tokenizer(cfg, texts, train._fingerprint)
        label_names = label_names or label_names_from(splits["train"]["label"])
        seq_len = int(data.seq_len)
        encoded = {
            name: tokenize_for_classification(ds, tokenizer, seq_len, label_names, split=name)
            for name, ds in splits.items()
        }
        weights = None
        if cfg.task.get("class_weights"):
            weights = class_weights(encoded["train"]["label"], len(label_names)).tolist()
        collator = ClassificationCollator(special_token_id(tokenizer, "pad"))
        train_collator = collator
        if mlm_weight(cfg) > 0:  # the same sentences masked too, for the auxiliary masked-LM loss
            masking = masking_collator(
                str(cfg.finetune.mlm_masking), AUXILIARY_MASK_PROB, tokenizer, cfg.seed, key="finetune.mlm_masking"
            )
            train_collator = ClassificationCollator(collator.pad_id, masking)
        datamodule = datamodule_for(cfg, encoded, train_collator, collator)
        validation = encoded["validation"]
        rows = [validation[i] for i in range(min(4, len(validation)))]  # fixed examples for heat maps
        tokens = [[tokenizer.decode([t]).strip() or tokenizer.id_to_token(t) for t in row["input_ids"]] for row in rows]
        log.info("data: %d training examples, labels: %s", len(encoded["train"]), ", ".join(label_names))
        extra = {"label_names": label_names, "class_weights": weights, "examples": collator(rows), "tokens": tokens}
        return Prepared(datamodule, tokenizer, num_train=len(encoded["train"]), extra=extra, texts=texts)

    def build_module(self, cfg: DictConfig, prepared: Prepared, total_steps: int, pretrained: Artifact | None) -> Any:
        from attnfit.models import ClassifierConfig, ModelConfig, SequenceClassifier, auxiliary_mlm
        from attnfit.training.classification_module import ClassificationLoss, ClassificationModule

        label_names = prepared.extra["label_names"]
        config = ModelConfig.from_dict(backbone_config(cfg, prepared.tokenizer, pretrained))
        pooling = cfg.task.pooling or default_pooling(pretrained)
        bias = cfg.task.get("head_bias")
        bias = default_head_bias(pretrained) if bias is None else bias
        head = ClassifierConfig.from_dict(
            {"num_labels": len(label_names), "pooling": pooling, "dropout": cfg.task.dropout, "bias": bias}
        )
        model = SequenceClassifier(config, head)
        plan = finetuned_backbone(model, cfg, pretrained, reuse_pooler(model, cfg, pretrained))
        auxiliary = None
        if mlm_weight(cfg) > 0:
            scratch = pretrained is None or cfg.finetune.get("from_scratch")
            auxiliary = auxiliary_mlm(model, None if scratch else merged_state_dict(pretrained))
            shared = {id(p) for p in model.parameters()}
            plan.head += [p for p in auxiliary.head.parameters() if id(p) not in shared]  # trained at the head's lr
            start = "a new MLM head" if scratch else "the pretrained MLM head"
            log.info("auxiliary masked LM: %s × finetune.mlm_weight=%s joins the task loss", start, mlm_weight(cfg))
        record = ModelRecord(
            "classification",
            config.to_dict(),
            prepared.tokenizer.to_str(),
            head_config=head.to_dict(),
            label_names=label_names,
            lora=plan.lora,
            run_config=run_config(cfg),
            hf=pretrained.record.hf if pretrained is not None else None,
        )
        optimization = finetune_optimization(cfg, plan, total_steps)
        loss = ClassificationLoss(
            class_weights=prepared.extra["class_weights"],
            label_smoothing=label_smoothing(cfg),
            mlm_weight=mlm_weight(cfg),
            adversarial_eps=adversarial_eps(cfg),
        )
        return ClassificationModule(model, record, optimization, loss, auxiliary)

    def callbacks(self, cfg: DictConfig, prepared: Prepared, module: Any) -> list[Any]:
        from attnfit.training.callbacks import AttentionHeatmaps

        extra = finetune_callbacks(cfg, module)
        if cfg.callbacks.get("heatmaps"):
            extra.append(AttentionHeatmaps(prepared.extra["examples"], prepared.extra["tokens"]))
        return extra

    # ---- saved models -----------------------------------------------------------------------------------------
    def build_model(self, record: ModelRecord) -> nn.Module:
        from attnfit.models import ClassifierConfig, ModelConfig, SequenceClassifier

        head = ClassifierConfig.from_dict(record.head_config or {})
        if record.label_names is not None and len(record.label_names) != head.num_labels:
            raise CheckpointError(
                f"its {len(record.label_names)} label names do not match the classifier's {head.num_labels} outputs"
            )
        return SequenceClassifier(ModelConfig.from_dict(record.model_config), head)

    def evaluation_data(self, job: DictConfig, artifact: Artifact, split: str) -> Any:
        return self.prepare(job, artifact.record.tokenizers(), label_names=artifact.label_names).datamodule

    def evaluation_module(self, artifact: Artifact, cfg: DictConfig) -> Any:
        from attnfit.pretrained import build_model
        from attnfit.training.classification_module import ClassificationModule

        return ClassificationModule(build_model(artifact), artifact.record)

    endpoint = "classify"

    def infer(self, model: nn.Module, artifact: Artifact, inputs: list[str], options: Any, need_weights: bool) -> list:
        """Label and probabilities per input (a tab separates a pair); weights: every attention layer and head,
        and the pooling weights over the tokens."""
        import torch

        from attnfit.data.classification import encode_for_classification
        from attnfit.tasks.base import attention_maps, pad_right, rounded
        from attnfit.viz import token_strings

        tokenizer, label_names = artifact.record.tokenizers()[0], list(artifact.label_names or [])
        max_len = input_length(options.get("max_len"), int(artifact.model_config["max_len"]))
        rows = []
        for text in inputs:
            first, tab, second = text.partition("\t")
            rows.append(encode_for_classification(first, tokenizer, max_len, second if tab else None))
        ids, padding = pad_right(rows, int(artifact.model_config.get("pad_id", 0)))
        with torch.no_grad():
            output = model(ids, padding, need_weights=need_weights)
        probs = output.logits.float().softmax(-1)  # (B, C)
        results = []
        for i, text in enumerate(inputs):
            record: dict[str, Any] = {
                "text": text,
                "label": label_names[int(probs[i].argmax())],
                "probabilities": {name: round(float(p), 6) for name, p in zip(label_names, probs[i], strict=True)},
            }
            if need_weights:
                n = len(rows[i])
                record["attention"] = {
                    "tokens": token_strings(tokenizer, rows[i]),
                    "pooling": rounded(output.pooling_weights[i, :n]),
                    "layers": attention_maps(output.attentions, i, n),
                }
            results.append(record)
        return results

    def predict(self, model: nn.Module, artifact: Artifact, text: str, cfg: DictConfig, out: Path, index: int) -> dict:
        """The label and probabilities, printed (the same inference as attnfit-serve's classify); with
        ``heatmap=true`` the pooling weights and the last layer's attention (mean over heads) as a PNG."""
        import numpy as np

        from attnfit.viz import show_attention

        result = self.infer(model, artifact, [text], cfg, need_weights=bool(cfg.heatmap))[0]
        probabilities = "  ".join(f"{k}={v:.3f}" for k, v in result["probabilities"].items())
        print(f"{result['label']}  {probabilities}  | {text}")
        if cfg.heatmap:
            attention = result.pop("attention")
            tokens, pooling = attention["tokens"], np.asarray(attention["pooling"])
            last = np.asarray(attention["layers"][-1]).mean(0) if attention["layers"] else None
            path = out / f"attention_{index}.png"
            confidence = max(result["probabilities"].values())
            show_attention(tokens, pooling, last, f"{result['label']} ({confidence:.2f})", path)
            result["attention"] = {"tokens": tokens, "pooling": attention["pooling"], "heatmap": str(path)}
        return result
