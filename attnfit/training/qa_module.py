"""LightningModule for extractive QA: start/end cross-entropy, and EM/F1 of the answers decoded over all windows of
each context at every validation and test."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnfit.pretrained import ModelRecord
from attnfit.training.module import Optimization, TaskModule, gather_objects


class QAModule(TaskModule):
    """Start/end cross-entropy on a :class:`~attnfit.models.qa.SpanExtractor`; EM/F1 of the decoded answers."""

    def __init__(self, model: nn.Module, record: ModelRecord, optimization: Optimization | None = None) -> None:
        super().__init__(model, record, optimization)
        decode = record.decode or {}
        self.max_answer_len = int(decode.get("max_answer_len", 30))

    def forward(self, batch: dict[str, Any], need_weights: bool = False) -> Any:
        return self.model(batch["input_ids"], batch["padding_mask"], batch["segment_ids"], need_weights)

    def _loss(self, out: Any, batch: dict[str, Any]) -> Tensor:
        start = F.cross_entropy(out.start_logits.float(), batch["start_positions"])
        end = F.cross_entropy(out.end_logits.float(), batch["end_positions"])
        return (start + end) / 2

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = self._loss(self(batch), batch)
        self.log("train/loss", loss)
        self.log("loss", loss, prog_bar=True, logger=False)
        self.log_learning_rate()
        return loss

    def on_validation_epoch_start(self) -> None:
        self._sums = torch.zeros(2, dtype=torch.float64, device=self.device)  # loss·windows, windows
        self._windows: dict[str, list] = defaultdict(list)  # question id -> [(start, end, offsets)]
        self._examples: dict[str, tuple[str, list[str]]] = {}  # question id -> (context, references)

    on_test_epoch_start = on_validation_epoch_start

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        out = self(batch)
        n = batch["input_ids"].shape[0]
        self._sums += torch.stack([self._loss(out, batch).double() * n, torch.tensor(n, dtype=torch.float64)])
        lengths = (~batch["padding_mask"]).sum(1).tolist()
        for i, qid in enumerate(batch["id"]):
            length = lengths[i]
            self._windows[qid].append(
                (out.start_logits[i, :length].cpu(), out.end_logits[i, :length].cpu(), batch["offsets"][i])
            )
            self._examples[qid] = (batch["context"][i], batch["answer_texts"][i])

    test_step = validation_step

    def answers(self) -> dict[str, str]:
        """The best span of every question seen this pass, over all its windows."""
        from attnfit.data.qa_metrics import best_spans

        predictions = {}
        for qid, windows in self._windows.items():
            starts, ends, offsets = zip(*windows, strict=True)
            spans = best_spans(starts, ends, offsets, self._examples[qid][0], self.max_answer_len, n_best=1)
            predictions[qid] = spans[0].text if spans else ""
        return predictions

    def _merge_ranks(self) -> None:
        """Under DDP each rank saw some windows of the set: every rank takes all of them, so EM/F1 are the whole
        set's (a question's windows may be spread over ranks)."""
        windows, examples = defaultdict(list), {}
        for rank_windows, rank_examples in gather_objects((dict(self._windows), self._examples)):
            for qid, items in rank_windows.items():
                windows[qid].extend(items)
            examples.update(rank_examples)
        self._windows, self._examples = windows, examples

    def _log_epoch(self, split: str) -> None:
        from attnfit.data.qa_metrics import squad_scores

        total = self.trainer.strategy.reduce(self._sums, reduce_op="sum")
        self.log(f"{split}/loss", (total[0] / total[1].clamp(min=1)).float())
        self._merge_ranks()
        if not self._windows:
            return
        references = {qid: refs for qid, (_, refs) in self._examples.items()}
        scores = squad_scores(self.answers(), references)
        self.log(f"{split}/exact_match", scores["exact_match"])
        self.log(f"{split}/f1", scores["f1"])
        if split == "val":
            self.log("val_f1", scores["f1"], prog_bar=True, logger=False)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
