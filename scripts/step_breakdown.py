#!/usr/bin/env python
"""Where a language-model pretraining step's time goes: the encoder, the vocabulary projection, the optimizer.

    python scripts/step_breakdown.py RUN_DIR [RUN_DIR …]          # e.g. a word and a BPE backbone side by side
    python scripts/step_breakdown.py RUN_DIR --batch 64 --seq-len 64 --steps 20 --threads 2 --json out.json

For each run (a run directory, ``.ckpt`` or exported model of task mlm or clm) the model is rebuilt from its
config with fresh weights and timed on random token ids of one batch shape (drawn by Zipf's law, as a vocabulary
in frequency order sees them), three ways, each the median of
``--steps`` steps after 3 of warm-up (the three interleaved):
* step: the loss as pretraining computes it (the vocabulary projection on the labelled positions only: the
  masked ``--mask-prob`` for an MLM, every position for a causal LM), backward, AdamW;
* no optimizer: the same without AdamW's update;
* encoder: embeddings and encoder forward and backward alone (a stand-in loss on the hidden states).
``no optimizer − encoder`` is what the vocabulary costs: the output projection, its gradient and, with tied
embeddings, the embedding table's; printed as a share of the step, it is most of a word-vocabulary model's step
with a full softmax and a quarter of it with an adaptive one (``model.adaptive_cutoffs``; docs/transfer-log.md, "A word
vocabulary").
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from attnfit.models import ModelConfig
from attnfit.models.language_model import LanguageModel


def breakdown(
    model: LanguageModel, batch: int, seq_len: int, steps: int, mask_prob: float = 0.15, warmup: int = 3
) -> dict:
    """Milliseconds a step of ``model`` takes at ``(batch, seq_len)``, the median of ``steps`` after ``warmup``:
    whole, without the optimizer, encoder only."""
    generator = torch.Generator().manual_seed(0)
    V = model.config.vocab_size
    # Zipf's law over the ids (p ∝ 1/(id + 1)), as a frequency-ordered word vocabulary sees them: the costs of an
    # adaptive-softmax head (model.adaptive_cutoffs) depend on how often labels fall in its rare clusters.
    zipf = 1.0 / torch.arange(1, V + 1, dtype=torch.float64)
    ids = torch.multinomial(zipf, batch * seq_len, replacement=True, generator=generator).view(batch, seq_len)  # (B, T)
    labels = ids.clone()
    if not model.config.causal:
        labels[torch.rand(ids.shape, generator=generator) >= mask_prob] = -100  # the masked positions only
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(vocabulary: bool, update: bool) -> None:
        # the pretraining loss, or a stand-in on the hidden states (B, T, D) that reaches the encoder alone
        loss = model.labelled_loss(ids, None, labels)[0] if vocabulary else model.backbone(ids, None)[0].square().mean()
        loss.backward()
        if update:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    ways = {"step": (True, True), "no_optimizer": (True, False), "encoder": (False, False)}
    times: dict[str, list[float]] = {name: [] for name in ways}
    for round_ in range(warmup + steps):  # the three ways interleaved, so the machine's drift hits them alike
        for name, (vocabulary, update) in ways.items():
            started = time.perf_counter()
            step(vocabulary, update)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - started)
    ms = {name: 1000 * statistics.median(values) for name, values in times.items()}
    return {
        "vocab_size": V,
        "parameters": sum(p.numel() for p in model.parameters()),
        **{f"{name}_ms": value for name, value in ms.items()},
        "vocabulary_share": (ms["no_optimizer"] - ms["encoder"]) / ms["step"],
    }


def model_of(run: str) -> LanguageModel:
    """The run's language model, rebuilt from its config with fresh weights (timing does not need trained ones)."""
    from attnfit.errors import ConfigError
    from attnfit.pretrained import load_artifact

    artifact = load_artifact(run)
    if artifact.task not in ("mlm", "clm"):
        raise ConfigError(f"{run} is a {artifact.task} model; step_breakdown times language models (mlm, clm)")
    return LanguageModel(ModelConfig.from_dict({**artifact.model_config, "causal": artifact.task == "clm"}))


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories, .ckpt files or exported models (mlm or clm)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--mask-prob", type=float, default=0.15)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    print(f"{'run':<40} {'vocab':>7} {'params':>8} {'step':>8} {'no opt':>8} {'encoder':>8} {'vocab share':>11}")
    for run in args.runs:
        row = {"run": run, **breakdown(model_of(run), args.batch, args.seq_len, args.steps, args.mask_prob)}
        rows.append(row)
        print(
            f"{run[-40:]:<40} {row['vocab_size']:>7,} {row['parameters'] / 1e6:>7.2f}M {row['step_ms']:>6.0f}ms "
            f"{row['no_optimizer_ms']:>6.0f}ms {row['encoder_ms']:>6.0f}ms {row['vocabulary_share']:>11.0%}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
