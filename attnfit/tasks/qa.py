"""Extractive question answering (``task=qa``): SQuAD-style spans over every encoder × attention, with the
question and context as one pair (``task.interaction=concat``) or BiDAF's attention flow over separately
encoded question and context (``task.interaction=bidaf``). From scratch (``attnfit-train task=qa``) or from a
pretrained LM (``attnfit-finetune pretrained=RUN task=qa``).

Contexts longer than a window are split (``data.doc_stride``); each validation pass decodes the best span over
all windows of a context and scores exact match and F1 (SQuAD's normalisation; characters for Chinese).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from attnfit.errors import ConfigError, DataError, check_choice
from attnfit.options import container, run_config
from attnfit.pretrained import Artifact, ModelRecord
from attnfit.tasks import get_task
from attnfit.tasks.base import Prepared, Task, datamodule_for
from attnfit.tasks.classification import (
    backbone_config,
    check_backbone,
    check_finetune_options,
    finetune_callbacks,
    finetune_optimization,
    finetuned_backbone,
    task_tokenizer,
)

log = logging.getLogger("attnfit")
WINDOW_KEYS = ("seq_len", "doc_stride", "max_question_len")  # how contexts were cut into windows
TRAIN_WINDOWS = ("all", "answer")  # all: windows without the answer learn the null position | answer: only these


def _with_examples(windows: Any, rows: Any) -> Any:
    """Validation/test windows carry their question id, context and reference answers: decoding needs them."""
    index = windows["example_index"]
    for column in ("id", "context", "answer_texts"):
        values = rows[column]
        windows = windows.add_column(column, [values[int(i)] for i in index])
    return windows


class QuestionAnswering(Task):
    name = "qa"
    predict_example = "question='...' context='...' heatmap=true"
    predict_keys = ("text", "question", "context")

    def monitor(self, cfg: DictConfig) -> tuple[str, str]:
        return "val/f1", "max"

    def check(self, cfg: DictConfig, pretrained: Artifact | None) -> None:
        from attnfit.data.qa import MALFORMED_POLICIES
        from attnfit.models.qa import QAConfig

        data = cfg.data
        for key in (*WINDOW_KEYS, "batch_size"):
            if key not in data:
                raise ConfigError(f"task=qa needs data.{key} (is data= a QA source? e.g. data=embedded_qa, data=squad)")
        check_choice("data.malformed", data.get("malformed", "skip"), MALFORMED_POLICIES)
        if pretrained is not None and not get_task(pretrained.task).is_pretraining:
            raise ConfigError(f"{pretrained.source} is a {pretrained.task} model; fine-tune a language model instead")
        if int(cfg.task.max_answer_len) < 1:
            raise ConfigError(f"task.max_answer_len={cfg.task.max_answer_len} must be ≥ 1")
        QAConfig.from_dict(self._head(cfg))
        check_backbone(cfg, pretrained, int(data.seq_len))
        check_finetune_options(cfg)

    def _head(self, cfg: DictConfig) -> dict[str, Any]:
        return {key: cfg.task[key] for key in ("interaction", "dropout", "modeling_layers")}

    def prepare(self, cfg: DictConfig, tokenizers: tuple[Any, Any] | None) -> Prepared:
        from attnfit.data import special_token_id
        from attnfit.data.qa import QACollator, load_qa_splits, tokenize_for_qa

        data, cache_dir = cfg.data, Path(cfg.paths.cache_dir)
        files = {split: container(data.get(split)) for split in ("train", "validation", "test") if data.get(split)}
        splits = load_qa_splits(
            data.source,
            files=files,
            hub_path=data.get("path"),
            hub_subset=data.get("subset"),
            val_fraction=float(data.get("val_fraction", 0.1)),
            seed=int(cfg.seed),
            cache_dir=cache_dir / "datasets",
            embedded_dir=cache_dir / "embedded-qa",
            malformed=str(data.get("malformed", "skip")),
            hub_splits=container(data.get("splits")) if data.get("splits") else None,
        )
        train = splits["train"]

        def texts() -> Any:
            return (text for row in train for text in (row["question"], row["context"]))

        tokenizer = tokenizers[0] if tokenizers is not None else task_tokenizer(cfg, texts, train._fingerprint)
        window = {key: int(data[key]) for key in WINDOW_KEYS}
        encoded = {name: tokenize_for_qa(ds, tokenizer, **window, split=name) for name, ds in splits.items()}
        train_windows = str(data.get("train_windows", "all"))
        check_choice("data.train_windows", train_windows, TRAIN_WINDOWS)
        if train_windows == "answer":  # only windows that hold the answer train; decoding still reads them all
            encoded["train"] = encoded["train"].filter(
                lambda batch: [s > 0 for s in batch["start_position"]], batched=True, desc="windows with the answer"
            )
        for name in ("validation", "test"):
            if name in encoded:
                encoded[name] = _with_examples(encoded[name], splits[name])
        collator = QACollator(special_token_id(tokenizer, "pad"))
        datamodule = datamodule_for(cfg, encoded, collator)
        log.info(
            "data: %d training questions in %d windows of ≤ %d tokens; %d validation questions",
            len(splits["train"]),
            len(encoded["train"]),
            window["seq_len"],
            len(splits["validation"]),
        )
        window_extra = {"window": window}
        return Prepared(datamodule, tokenizer, num_train=len(encoded["train"]), extra=window_extra, texts=texts)

    def build_module(self, cfg: DictConfig, prepared: Prepared, total_steps: int, pretrained: Artifact | None) -> Any:
        from attnfit.models import ModelConfig
        from attnfit.models.qa import QAConfig, SpanExtractor

        config = ModelConfig.from_dict(backbone_config(cfg, prepared.tokenizer, pretrained))
        head = QAConfig.from_dict(self._head(cfg))
        model = SpanExtractor(config, head)
        plan = finetuned_backbone(model, cfg, pretrained)
        decode = {**prepared.extra["window"], "max_answer_len": int(cfg.task.max_answer_len)}
        record = ModelRecord(
            "qa",
            config.to_dict(),
            prepared.tokenizer.to_str(),
            head_config=head.to_dict(),
            lora=plan.lora,
            decode=decode,
            run_config=run_config(cfg),
        )
        from attnfit.training.qa_module import QAModule

        return QAModule(model, record, finetune_optimization(cfg, plan, total_steps))

    def callbacks(self, cfg: DictConfig, prepared: Prepared, module: Any) -> list[Any]:
        return finetune_callbacks(cfg, module)

    # ---- saved models -----------------------------------------------------------------------------------------
    def build_model(self, record: ModelRecord) -> nn.Module:
        from attnfit.models import ModelConfig
        from attnfit.models.qa import QAConfig, SpanExtractor

        return SpanExtractor(ModelConfig.from_dict(record.model_config), QAConfig.from_dict(record.head_config or {}))

    def evaluation_module(self, artifact: Artifact, cfg: DictConfig) -> Any:
        from attnfit.pretrained import build_model
        from attnfit.training.qa_module import QAModule

        return QAModule(build_model(artifact), artifact.record)

    def evaluation_data(self, job: DictConfig, artifact: Artifact, split: str) -> Any:
        window = {key: (artifact.record.decode or {}).get(key) for key in WINDOW_KEYS}
        for key, value in window.items():  # windows as the model was trained on, unless the user's data says
            if value is not None and key not in job.data:
                job.data[key] = value
        return self.prepare(job, artifact.record.tokenizers()).datamodule

    endpoint = "answer"

    def infer(self, model: nn.Module, artifact: Artifact, inputs: list[str], options: Any, need_weights: bool) -> list:
        """The best answer (and ``nbest`` candidates) to each ``question<TAB>context``, over all windows of the
        context; weights: the backbone's maps of the best answer's window and its context→question attention."""
        from attnfit.tasks.base import attention_maps, rounded
        from attnfit.viz import token_strings

        tokenizer = artifact.record.tokenizers()[0]
        results = []
        for text in inputs:
            question, tab, context = text.partition("\t")
            if not tab or not question.strip() or not context.strip():
                raise DataError("a QA model answers a question about a context: give both, non-empty")
            batch, output, lengths, spans = answer_spans(model, artifact, question, context, options, need_weights)
            best = spans[0] if spans else None
            record: dict[str, Any] = {
                "question": question,
                "context": context,
                "answer": best.text if best else "",
                "probability": round(best.probability, 6) if best else None,
                "span": [best.char_start, best.char_end] if best else None,
                "nbest": [{"text": s.text, "probability": round(s.probability, 6)} for s in spans],
            }
            if need_weights:
                w = best.window if best else 0
                n = lengths[w]
                record["attention"] = {
                    "tokens": token_strings(tokenizer, batch["input_ids"][w, :n].tolist()),
                    "layers": attention_maps(output.attentions, w, n),
                }
                if output.question_attention is not None:
                    record["attention"]["question_attention"] = rounded(output.question_attention[w, :n, :n])
            results.append(record)
        return results

    def predict(self, model: nn.Module, artifact: Artifact, text: str, cfg: DictConfig, out: Path, index: int) -> dict:
        """The best answers (``nbest``) of ``question<TAB>context``; with ``heatmap=true`` the question→context
        attention and the start/end probabilities over the context as a PNG."""
        question, tab, context = text.partition("\t")
        if not tab or not question.strip() or not context.strip():
            raise DataError(
                "a QA model answers a question about a context: give question=... context=... "
                "(or text=QUESTION<TAB>CONTEXT, one per line in file=)"
            )
        batch, output, lengths, spans = answer_spans(model, artifact, question, context, cfg, bool(cfg.heatmap))
        tokenizer = artifact.record.tokenizers()[0]
        best = spans[0] if spans else None
        shown = f"\033[1m{best.text}\033[0m  (p={best.probability:.3f})" if best else "(no span found)"
        print(f"Q: {question}\nA: {shown}")
        result: dict[str, Any] = {
            "question": question,
            "context": context,
            "answer": best.text if best else "",
            "score": round(best.score, 6) if best else None,
            "span": [best.char_start, best.char_end] if best else None,
            "nbest": [
                {
                    "text": s.text,
                    "score": round(s.score, 6),
                    "probability": round(s.probability, 6),
                    "span": [s.char_start, s.char_end],
                }
                for s in spans
            ],
        }
        if cfg.heatmap:
            w = best.window if best else 0
            path = out / f"qa_{index}.png"
            save_qa_figure(tokenizer, batch, output, w, lengths[w], best.text if best else "", path)
            print(f"attention heat map: {path}")
            result["heatmap"] = str(path)
        return result


def answer_spans(
    model: nn.Module, artifact: Artifact, question: str, context: str, options: Any, weights: bool
) -> tuple:
    """``(batch, output, lengths, spans)``: the model run over every window of ``context`` and its ``nbest`` answer
    spans, best first (``options``: ``nbest``, ``max_answer_len``; the checkpoint's windowing)."""
    from datasets import Dataset

    from attnfit.data.qa import QACollator, tokenize_for_qa
    from attnfit.data.qa_metrics import best_spans

    tokenizer, decode = artifact.record.tokenizers()[0], artifact.record.decode or {}
    row = {"id": "0", "title": "", "paragraph": "", "question": question, "context": context}
    row.update(answer_texts=[], answer_starts=[])  # nothing to score: only the windows are needed
    window = {key: int(decode[key]) for key in WINDOW_KEYS}
    windows = tokenize_for_qa(Dataset.from_list([row]), tokenizer, **window, split="predict")
    batch = QACollator(0)([windows[i] for i in range(len(windows))])
    with torch.no_grad():
        output = model(batch["input_ids"], batch["padding_mask"], batch["segment_ids"], weights)
    lengths = (~batch["padding_mask"]).sum(1).tolist()
    spans = best_spans(
        [output.start_logits[i, :n] for i, n in enumerate(lengths)],
        [output.end_logits[i, :n] for i, n in enumerate(lengths)],
        [windows[i]["offsets"] for i in range(len(windows))],
        context,
        int(options.get("max_answer_len") or decode.get("max_answer_len", 30)),
        int(options.get("nbest") or 5),
    )
    return batch, output, lengths, spans


def save_qa_figure(tokenizer: Any, batch: dict, output: Any, w: int, length: int, answer: str, path: Path) -> None:
    """Window ``w``: question→context attention (rows: question tokens) above the start/end probabilities."""
    import matplotlib

    from attnfit.viz import save_figure, token_strings

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids = batch["input_ids"][w, :length].tolist()
    segments = batch["segment_ids"][w, :length]
    question = (segments == 0).nonzero().flatten().tolist()
    context = (segments == 1).nonzero().flatten().tolist()
    tokens = token_strings(tokenizer, ids)
    start = output.start_logits[w, :length].float().softmax(-1)[context].numpy()
    end = output.end_logits[w, :length].float().softmax(-1)[context].numpy()
    width = max(6.0, 0.28 * len(context))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(width, 2.0 + 0.25 * len(question) + 2.0), height_ratios=[2, 1])
    if output.question_attention is not None:
        grid = output.question_attention[w][context][:, question].float().numpy().T  # (question, context)
        image = top.imshow(grid, aspect="auto", cmap="viridis")
        fig.colorbar(image, ax=top, fraction=0.02)
        top.set_yticks(range(len(question)), [tokens[i] for i in question], fontsize=7)
    top.set_xticks(range(len(context)), [tokens[i] for i in context], rotation=90, fontsize=7)
    top.set_title(f"question → context attention · answer: {answer}")
    bottom.bar(range(len(context)), start, alpha=0.6, label="start")
    bottom.bar(range(len(context)), end, alpha=0.6, label="end")
    bottom.set_xticks(range(len(context)), [tokens[i] for i in context], rotation=90, fontsize=7)
    bottom.set_ylabel("probability")
    bottom.legend(fontsize=7)
    save_figure(fig, path)
