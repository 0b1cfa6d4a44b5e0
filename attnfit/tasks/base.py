"""The one interface every task implements; the run sequence, eval, predict and export reach tasks only through it.

A task owns everything that differs between tasks: its config checks, its data, its model and LightningModule,
its evaluation data, how it predicts on one input and how it summarises a run. Everything else (run directory,
resume, Trainer, checkpoints, metrics files, status) is the run sequence's (``attnfit.recipes.run``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch import nn

from attnfit.pretrained import Artifact, ModelRecord


def data_seed(cfg: DictConfig) -> int:
    """The seed of the training data's order: ``data_seed`` where set, so runs can share their initial weights
    (``seed``) and differ only in the order they see the data (a model soup's members), else ``seed``."""
    seed = cfg.get("data_seed")
    return int(cfg.seed if seed is None else seed)


def datamodule_for(cfg: DictConfig, encoded: dict[str, Any], collator: Any, val_collator: Any = None) -> Any:
    """The run's loaders over tokenized ``encoded`` splits (train, validation, optionally test), as ``cfg.data``
    says, shuffled by ``cfg.data_seed`` (``cfg.seed`` where unset)."""
    from attnfit.training.datamodule import TokenizedDataModule

    data = cfg.data
    return TokenizedDataModule(
        encoded["train"],
        encoded["validation"],
        collator,
        val_collator or collator,
        int(data.batch_size),
        int(data.num_workers),
        data_seed(cfg),
        test=encoded.get("test"),
        shuffle=bool(data.get("shuffle", True)),
    )


@dataclass
class Prepared:
    """A task's data, ready for the Trainer, and the facts a run reports about it."""

    datamodule: Any  # attnfit.training.datamodule.TokenizedDataModule
    tokenizer: Any  # tokenizers.Tokenizer
    target_tokenizer: Any = None  # seq2seq with its own target vocabulary
    num_train: int = 0
    facts: dict[str, float] = field(default_factory=dict)  # written to metrics.json (e.g. a baseline)
    extra: Any = None  # task-private (examples for heat maps, raw validation contexts, …)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per preparation step (load, tokenize, …)
    texts: Callable[[], Iterator[str]] | None = None  # the training split's unlabelled text (domain adaptation)


@contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Add the seconds the block takes to ``timings[name]``: where a run's start-up time goes."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


class Task:
    """Base class; one subclass per task family, registered in :data:`attnfit.tasks.TASKS`."""

    name: str = ""
    is_pretraining: bool = False  # its models are what attnfit-finetune starts from

    # ---- training ---------------------------------------------------------------------------------------------
    def monitor(self, cfg: DictConfig) -> tuple[str, str]:
        """The metric (and min/max) the best checkpoint and early stopping watch."""
        return "val/loss", "min"

    def check(self, cfg: DictConfig, pretrained: Artifact | None) -> None:
        """Cheap config checks, before any data is read or model built."""

    def prepare(self, cfg: DictConfig, tokenizers: tuple[Any, Any] | None) -> Prepared:
        """Load and tokenize the data; ``tokenizers`` (source, target) come from a resumed or pretrained model."""
        raise NotImplementedError

    def build_module(self, cfg: DictConfig, prepared: Prepared, total_steps: int, pretrained: Artifact | None) -> Any:
        """The LightningModule to fit; ``pretrained`` (when not resuming) initialises what it can."""
        raise NotImplementedError

    def callbacks(self, cfg: DictConfig, prepared: Prepared, module: Any) -> list[Any]:
        """Task-specific Lightning callbacks (heat maps …)."""
        return []

    def summarise(self, metrics: dict[str, float], module: Any, prepared: Prepared) -> list[str]:
        """Lines (rich markup) the end-of-run summary shows before the run directory and next steps."""
        shown = {k: v for k, v in metrics.items() if k.split("/")[0] in ("val", "test", "best")}
        return ["  ".join(f"{k} {v:.4f}" for k, v in sorted(shown.items()))]

    predict_example: str = 'text="..." heatmap=true'  # what attnfit-predict takes, shown after a run
    predict_keys: tuple[str, ...] = ("text",)  # the free-text options of attnfit-predict its models read

    def next_steps(self, run_dir: Path) -> list[str]:
        return [
            f"attnfit-eval checkpoint={run_dir}",
            f"attnfit-predict checkpoint={run_dir} {self.predict_example}",
            f"attnfit-export checkpoint={run_dir} out={run_dir / 'export'}",
        ]

    # ---- saved models -----------------------------------------------------------------------------------------
    def build_model(self, record: ModelRecord) -> nn.Module:
        """The plain PyTorch model a record describes (weights not loaded)."""
        raise NotImplementedError

    def evaluation_data(self, job: DictConfig, artifact: Artifact, split: str) -> Any:
        """The datamodule ``attnfit-eval`` scores: the job's data tokenized with the artifact's tokenizer(s)."""
        return self.prepare(job, artifact.record.tokenizers()).datamodule

    def evaluation_module(self, artifact: Artifact, cfg: DictConfig) -> Any:
        """A LightningModule around the saved model, for ``Trainer.test``."""
        raise NotImplementedError

    def evaluation_notes(self, module: Any) -> dict[str, Any]:
        """Settings of the evaluation worth recording beside its metrics (e.g. the beam width)."""
        return {}

    def predict(self, model: nn.Module, artifact: Artifact, text: str, cfg: DictConfig, out: Path, index: int) -> dict:
        """One prediction, printed and returned as a JSON-able record (heat maps written under ``out``)."""
        raise NotImplementedError

    # What attnfit-serve exposes: the endpoint name and whether inputs are (question, context) pairs.
    endpoint: str | None = None

    def infer(self, model: nn.Module, artifact: Artifact, inputs: list[str], options: Any, need_weights: bool) -> list:
        """Predictions for a batch of inputs as JSON-able records, with the attention weights when asked: nothing
        printed, nothing written (attnfit-serve's path). ``options``: a mapping with ``.get`` (a request's)."""
        raise NotImplementedError(f"task {self.name} has no batched inference")


def rounded(values: Any, digits: int = 6) -> Any:
    """A tensor as nested lists of floats rounded to ``digits`` (JSON that a browser draws quickly)."""
    return ((values.double() * 10**digits).round() / 10**digits).tolist()  # float64: 0.500612, not 0.50061202


def attention_maps(attentions: list[Any], row: int, length: int) -> list:
    """Row ``row``'s maps ``[layer][head][query][key]`` over its first ``length`` positions (padding cut off)."""
    return [rounded(layer[row, :, :length, :length]) for layer in attentions]


def pad_right(rows: list[list[int]], pad_id: int) -> tuple[Any, Any]:
    """``(ids (B, T), padding_mask (B, T))`` of token lists padded on the right."""
    import torch

    width = max(map(len, rows))
    ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows])
    return ids, torch.tensor([[False] * len(r) + [True] * (width - len(r)) for r in rows])
