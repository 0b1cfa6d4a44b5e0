"""LightningModule for sequence-to-sequence training: teacher forcing, label smoothing, decoding and BLEU/ROUGE."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from attnfit.models.seq2seq import Seq2SeqModel, beam_search, greedy_decode
from attnfit.pretrained import ModelRecord
from attnfit.training.module import Optimization, TaskModule, gather_objects

METRICS = ("bleu", "rouge")


def corpus_scores(hypotheses: list[str], references: list[str], metric: str) -> dict[str, float]:
    """sacreBLEU's corpus BLEU (13a tokenisation), or ROUGE-1/2/L F-measures (torchmetrics), in percent."""
    if metric == "bleu":
        import sacrebleu

        return {"bleu": float(sacrebleu.corpus_bleu(hypotheses, [references]).score)}
    from torchmetrics.text.rouge import ROUGEScore

    scores = ROUGEScore(rouge_keys=("rouge1", "rouge2", "rougeL"))(hypotheses, references)
    return {key: 100 * float(scores[f"{key}_fmeasure"]) for key in ("rouge1", "rouge2", "rougeL")}


class Seq2SeqModule(TaskModule):
    """Wraps a :class:`Seq2SeqModel`; decoding settings and metric come from its record.

    Validation scores the loss with teacher forcing and decodes every sentence (greedy unless
    ``decode.val_beam_size > 1``) for BLEU or ROUGE against the raw reference text.
    """

    model: Seq2SeqModel

    def __init__(
        self,
        model: Seq2SeqModel,
        record: ModelRecord,
        optimization: Optimization | None = None,
        label_smoothing: float = 0.1,
        num_samples: int = 4,
    ) -> None:
        super().__init__(model, record, optimization)
        self.model_config = model.config
        self.label_smoothing, self.num_samples = label_smoothing, num_samples
        self.metric = record.metric or "bleu"
        self.target_tokenizer = record.tokenizers()[1]
        defaults = {"beam_size": 4, "length_penalty": 1.0, "max_len": 64, "val_beam_size": 1}
        self.decode_cfg = {**defaults, **(record.decode or {})}
        # By role, as the data side finds them: an imported tokenizer names them [CLS]/[SEP] or <s>/</s>.
        from attnfit.data import special_token_id

        self.bos_id = special_token_id(self.target_tokenizer, "bos")
        self.eos_id = special_token_id(self.target_tokenizer, "eos")

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.model(batch["source_ids"], batch["source_padding_mask"], batch["target_in"])[0]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        logits = self(batch)
        loss = self.model.loss(logits, batch["labels"], self.label_smoothing)
        self.log("train/loss", loss)
        self.log("loss", loss, prog_bar=True, logger=False)
        self.log_learning_rate()
        return loss

    # ---- decoding ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self, source_ids: Tensor, source_padding_mask: Tensor, beam_size: int | None = None, alignments: bool = False
    ):
        """Decoded token ids (and alignments) for a batch; beam size 1 is greedy."""
        beam = int(beam_size or self.decode_cfg["beam_size"])
        common = dict(
            bos_id=self.bos_id, eos_id=self.eos_id, max_len=int(self.decode_cfg["max_len"]), need_alignments=alignments
        )
        if beam == 1:
            return greedy_decode(self.model, source_ids, source_padding_mask, **common)
        return beam_search(
            self.model,
            source_ids,
            source_padding_mask,
            beam_size=beam,
            length_penalty=float(self.decode_cfg["length_penalty"]),
            **common,
        )

    def detokenize(self, tokens: Tensor, lengths: Tensor) -> list[str]:
        rows = [row[: int(n)].tolist() for row, n in zip(tokens, lengths, strict=True)]
        return self.target_tokenizer.decode_batch(rows)

    # ---- validation / test ------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._sums = torch.zeros(2, dtype=torch.float64, device=self.device)  # loss·n, n
        self._hypotheses: list[str] = []
        self._references: list[str] = []

    on_test_epoch_start = on_validation_epoch_start

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self(batch)
        labels = batch["labels"]
        count = (labels != -100).sum()
        loss = self.model.loss(logits, labels)  # no label smoothing: the true cross-entropy
        self._sums += torch.stack([loss.double() * count, count.double()])
        beam = 1 if not self.trainer.testing else None
        if not self.trainer.testing and int(self.decode_cfg["val_beam_size"]) > 1:
            beam = int(self.decode_cfg["val_beam_size"])
        out = self.generate(batch["source_ids"], batch["source_padding_mask"], beam)
        self._hypotheses += self.detokenize(out.tokens, out.lengths)
        self._references += batch["target_text"]

    test_step = validation_step

    def _log_epoch(self, split: str) -> dict[str, float]:
        hypotheses, references = [], []  # under DDP: every rank's shard, so BLEU/ROUGE are the whole set's
        for rank_hypotheses, rank_references in gather_objects((self._hypotheses, self._references)):
            hypotheses += rank_hypotheses
            references += rank_references
        self._hypotheses, self._references = hypotheses, references
        total = self.trainer.strategy.reduce(self._sums, reduce_op="sum")
        loss = (total[0] / total[1].clamp(min=1)).float()
        self.log(f"{split}/loss", loss, sync_dist=False)
        self.log(f"{split}/ppl", torch.exp(loss.clamp(max=50)))
        scores = corpus_scores(self._hypotheses, self._references, self.metric) if self._hypotheses else {}
        for name, value in scores.items():
            self.log(f"{split}/{name}", value)
        if self._hypotheses:  # whole sentences right (whitespace-normalised): the strict measure for toy tasks
            same = sum(h.split() == r.split() for h, r in zip(self._hypotheses, self._references, strict=True))
            self.log(f"{split}/exact_match", same / len(self._hypotheses))
        if split == "val":
            self.log("val_loss", loss, prog_bar=True, logger=False)
            if scores:
                self.log(f"val_{self.metric}", next(iter(scores.values())), prog_bar=True, logger=False)
        return scores

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")
        if self.loggers and self._hypotheses and self.trainer.is_global_zero:
            from attnfit.training.loggers import log_text

            lines = [f"**hyp:** {h}  \n**ref:** {r}" for h, r in zip(self._hypotheses, self._references, strict=False)][
                : self.num_samples
            ]
            log_text(self.loggers, "samples", "\n\n".join(lines), self.global_step)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
