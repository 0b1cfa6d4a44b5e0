"""train: training throughput and MFU of one MLM through attnfit, plain PyTorch and Hugging Face BERT.

Training throughput (tokens/s = batch·length / median step time after warm-up) of the same MLM
(4 layers, d=256, 4 heads, ffn 1024, vocab 8000, length 128, batch 32; AdamW, fp32, gradient clipping
at 1.0, dropout 0.1, no attention dropout, tied embeddings, BERT's Linear→GELU→LayerNorm head
transform) through three stacks:
* attnfit: the composed ``attnfit-train task=mlm`` config, its model built as the mlm task builds it
  (``model_config_dict`` → ``ModelConfig`` → ``LanguageModel``, a ``ModelRecord``, an
  ``Optimization`` from the optimizer/scheduler groups → ``LanguageModelingModule``), fitted by the
  Trainer of ``build_trainer`` (its callbacks, TensorBoard logger; the rich progress bar is attnfit's
  ``ProgressBar`` handed to ``build_trainer`` as an extra callback with its console on /dev/null, so
  it renders as on a terminal at its cost, without output; validation and checkpoint saving fall
  outside the timed steps);
* plain: a plain PyTorch loop over ``nn.TransformerEncoder`` (pre-norm like attnfit; vocabulary
  projection on masked positions only, as attnfit does);
* hf: Hugging Face ``BertForMaskedLM`` in a plain loop (post-norm, embedding LayerNorm, vocabulary
  logits at every position as the stock model computes them).
The plain loops get their AdamW and warm-up + cosine schedule from the same config through attnfit's
``Optimization.configure`` (decay on matrices only), and clip at ``trainer.gradient_clip_val``. All
three read the same batches: one DataLoader each over the same dataset with identically seeded MLM
collators, so the data cost is inside every step. Steps are interleaved (after each attnfit step one
plain and one HF step run, in rotating order), so machine noise hits all three alike. The attnfit
step time is the time between consecutive ``on_train_batch_start`` calls minus the interleaved steps:
everything Lightning does per step is counted (data loading, logging, callbacks, progress bar).

MFU = achieved model FLOP/s / fp32 matmul FLOP/s measured in the same run (best of several 2048³
``torch.mm`` before and after; never a datasheet peak). Model FLOPs per token (fwd + bwd = 3 × fwd):
    6·L·(4d² + 2d·f)  +  12·L·T·d  +  6·p·(d² + d·V)
i.e. 6 × the encoder's matmul parameters, the attention scores and weighted sums (QKᵀ and AV,
2·T·d each per layer forward), and the MLM head on the masked fraction p of tokens (0.15). The same
formula is used for all three stacks, so a stack doing unneeded work (HF's full-vocabulary logits)
gets a lower MFU. Embedding look-ups, norms, softmax and the optimizer are not counted.

The RNN (LSTM, GRU) and CNN encoders' tokens/s use the same driver (dim, batch, 4 layers + 1 self-
attention layer on top as configured).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import MASK_PROB, Shape, matmul_gflops, median, table

OptionalImport = Callable[[str], tuple[Any, "str | None"]]  # benchmark.optional_module


def config(shape: Shape, encoder: str, out_dir: Path, steps: int, progress_bar: str) -> Any:
    """``attnfit-train task=mlm`` at ``shape``; a rich progress bar is added by :func:`run_attnfit` (see above)."""
    from attnfit.cli import compose_config

    return compose_config(
        "train",
        [
            "task=mlm",
            f"task.mask_prob={MASK_PROB}",
            f"encoder={encoder}",
            "attention=self",
            f"model.dim={shape.dim}",
            f"data.seq_len={shape.seq_len}",
            f"data.batch_size={shape.batch}",
            f"encoder.num_layers={shape.layers}",
            f"encoder.ffn_mult={shape.ffn_mult}",
            f"encoder.dropout={shape.dropout}",
            f"attention.num_heads={shape.heads}",
            f"tokenizer.vocab_size={shape.vocab}",
            f"trainer.max_steps={steps}",
            "callbacks.progress_bar=none",  # run_attnfit adds the rich bar itself, with its console on /dev/null
            f"+trainer.enable_progress_bar={progress_bar == 'rich'}",
            f"paths.output_dir={out_dir}",
            f"paths.cache_dir={out_dir / 'cache'}",
            "+trainer.enable_model_summary=false",  # printed before the first step: outside the timed window
        ],
    )


def token_dataset(shape: Shape, rows: int, seed: int) -> Any:
    """Random non-special ids as a datasets.Dataset of int32 rows, like ``tokenize_for_lm``'s packed output."""
    import torch
    from datasets import Dataset, Features, List, Value

    from attnfit.data import SPECIAL_TOKENS

    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(len(SPECIAL_TOKENS), shape.vocab, (rows, shape.seq_len), generator=gen, dtype=torch.int32)
    return Dataset.from_dict({"input_ids": ids.tolist()}, features=Features({"input_ids": List(Value("int32"))}))


def datamodule(shape: Shape, train: Any, val: Any, seed: int) -> Any:
    """attnfit's TokenizedDataModule with MLM collators as the mlm task sets them up (one per stack)."""
    from attnfit.data import MASK_ID, PAD_ID, SPECIAL_TOKENS, MLMCollator
    from attnfit.training.datamodule import TokenizedDataModule

    specials = tuple(range(len(SPECIAL_TOKENS)))
    train_collator = MLMCollator(PAD_ID, MASK_ID, shape.vocab, specials, MASK_PROB, seed=seed)
    val_collator = MLMCollator(PAD_ID, MASK_ID, shape.vocab, specials, MASK_PROB, seed=seed + 1, repeat_masks=True)
    return TokenizedDataModule(train, val, train_collator, val_collator, shape.batch, 0, seed)


def attnfit_module(cfg: Any, vocab: int, total_steps: int) -> Any:
    """The LanguageModelingModule the mlm task builds from ``cfg`` (no tokenizer: random ids, PAD_ID padding)."""
    from attnfit.data import PAD_ID
    from attnfit.models import LanguageModel, ModelConfig
    from attnfit.pretrained import ModelRecord
    from attnfit.recipes.common import container
    from attnfit.tasks.language_modeling import model_config_dict
    from attnfit.training.lm_module import LanguageModelingModule
    from attnfit.training.module import Optimization, compile_blocks

    model_config = ModelConfig.from_dict(model_config_dict(cfg, vocab, PAD_ID))
    record = ModelRecord(cfg.task.name, model_config.to_dict(), tokenizer_json="")
    optimization = Optimization(container(cfg.optimizer), container(cfg.scheduler), total_steps)
    module = LanguageModelingModule(LanguageModel(model_config), record, optimization)
    if cfg.compile:
        compile_blocks(module.model)
    return module


def _init_weights(module: Any) -> None:
    from torch import nn

    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)


def plain_model(shape: Shape) -> Any:
    """The same MLM in plain PyTorch: ``nn.TransformerEncoder`` (pre-norm, GELU), tied BERT-style head."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class PlainMLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            d = shape.dim
            self.token = nn.Embedding(shape.vocab, d, padding_idx=0)
            self.position = nn.Embedding(shape.seq_len, d)
            self.dropout = nn.Dropout(shape.dropout)
            layer = nn.TransformerEncoderLayer(
                d, shape.heads, shape.ffn_mult * d, shape.dropout, "gelu", batch_first=True, norm_first=True
            )
            layer.self_attn.dropout = 0.0  # attnfit: dropout on residual branches, none on attention weights
            self.encoder = nn.TransformerEncoder(layer, shape.layers, norm=nn.LayerNorm(d), enable_nested_tensor=False)
            self.transform = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d))
            self.decoder = nn.Linear(d, shape.vocab)
            self.apply(_init_weights)
            self.decoder.weight = self.token.weight

        def forward(self, ids: torch.Tensor, padding_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            x = self.token(ids) + self.position(torch.arange(ids.shape[1]))
            hidden = self.encoder(self.dropout(x), src_key_padding_mask=padding_mask)
            selected = labels != -100  # vocabulary projection on masked positions only, as attnfit
            logits = self.decoder(self.transform(hidden[selected]))
            return F.cross_entropy(logits, labels[selected])

    return PlainMLM()


def hf_model(shape: Shape) -> Any:
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.dim,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.ffn_mult * shape.dim,
        hidden_act="gelu",
        hidden_dropout_prob=shape.dropout,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=shape.seq_len,
        type_vocab_size=1,
        pad_token_id=0,
        tie_word_embeddings=True,
    )
    config._attn_implementation = "sdpa"
    return BertForMaskedLM(config)


@dataclass
class Stepper:
    """One full training step of a plain loop per call: fetch + collate a batch, forward, backward, clip, step."""

    name: str
    model: Any
    step: Callable[[], None]


def make_stepper(name: str, model: Any, loader: Any, cfg: Any, total_steps: int, hf: bool = False) -> Stepper:
    """A plain loop with the optimizer and schedule attnfit's ``Optimization`` builds from ``cfg``."""
    import torch

    from attnfit.recipes.common import container
    from attnfit.training.module import Optimization

    model.train()
    configured = Optimization(container(cfg.optimizer), container(cfg.scheduler), total_steps).configure(model)
    opt, sched = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    clip = float(cfg.trainer.gradient_clip_val)
    params = [p for p in model.parameters() if p.requires_grad]
    batches: Iterator = iter(loader)

    def step() -> None:
        batch = next(batches)
        with torch.enable_grad():
            opt.zero_grad(set_to_none=True)
            if hf:
                attention_mask = (~batch["padding_mask"]).long()
                loss = model(input_ids=batch["input_ids"], attention_mask=attention_mask, labels=batch["labels"]).loss
            else:
                loss = model(batch["input_ids"], batch["padding_mask"], batch["labels"])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            sched.step()

    return Stepper(name, model, step)


class Interleaver:
    """Lightning callback: times attnfit's steps and runs one step of every other stack after each of them."""

    def __init__(self, others: list[Stepper]) -> None:
        import lightning as L

        self.others = others
        self.times: dict[str, list[float]] = {"attnfit": [], **{o.name: [] for o in others}}
        self._start: float | None = None
        self._other_s = 0.0
        self._step = 0
        outer = self

        class _Callback(L.Callback):
            def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
                now = time.perf_counter()
                if outer._start is not None:
                    outer.times["attnfit"].append(now - outer._start - outer._other_s)
                outer._start, outer._other_s = now, 0.0

            def on_train_batch_end(self, *args: Any) -> None:
                begin = time.perf_counter()
                k = outer._step % max(1, len(outer.others))
                for other in outer.others[k:] + outer.others[:k]:  # rotate the order: no stack always goes first
                    start = time.perf_counter()
                    other.step()
                    outer.times[other.name].append(time.perf_counter() - start)
                outer._step += 1
                outer._other_s = time.perf_counter() - begin

        self.callback = _Callback()


def run_attnfit(
    shape: Shape,
    encoder: str,
    warmup: int,
    steps: int,
    others_fn: Callable[[Any, int], list[Stepper]] | None,
    work: Path,
    progress_bar: str,
    seed: int = 0,
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Fit attnfit for warm-up + timed + 1 steps (the last only closes the timing), others interleaved.

    ``others_fn(cfg, total_steps)`` builds the other stacks. Returns per-stack step times of the timed steps
    and the parameter counts."""
    import lightning as L

    from attnfit.cli import quiet_third_party_logs
    from attnfit.recipes.common import build_trainer
    from attnfit.training.callbacks import ProgressBar

    quiet_third_party_logs()
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    total = warmup + steps + 1
    rows = shape.batch * (total + 4)  # no epoch end (and its checkpoint) inside the timed steps
    train, val = token_dataset(shape, rows, seed), token_dataset(shape, shape.batch, seed + 1)
    out_dir = work / f"attnfit-{encoder}"
    L.seed_everything(seed, workers=True, verbose=False)
    cfg = config(shape, encoder, out_dir, total, progress_bar)
    module = attnfit_module(cfg, shape.vocab, total)
    others = others_fn(cfg, total) if others_fn else []
    interleaver = Interleaver(others)
    with open(os.devnull, "w") as sink:
        extra = [interleaver.callback]
        if progress_bar == "rich":  # where build_trainer puts its own (last), rendered as on a terminal, unseen
            extra.append(ProgressBar(leave=True, console_kwargs={"file": sink, "force_terminal": True}))
        trainer = build_trainer(cfg, out_dir, extra_callbacks=extra)
        try:
            trainer.fit(module, datamodule=datamodule(shape, train, val, seed))
        finally:
            if progress_bar == "rich":
                import rich

                rich.reconfigure()  # the bar reconfigured rich's global console to the sink: back to stdout
    params = {"attnfit": sum(p.numel() for p in module.parameters())}
    params.update({o.name: sum(p.numel() for p in o.model.parameters()) for o in others})
    return {name: ts[warmup : warmup + steps] for name, ts in interleaver.times.items()}, params


def run(args: argparse.Namespace, results: dict[str, Any], work: Path, optional: OptionalImport) -> None:
    import torch

    shape = Shape(args.batch, args.seq_len, args.dim, args.layers, args.heads, vocab=args.vocab)
    results.update(
        train_default_shape=shape == Shape(),
        train_progress_bar=args.progress_bar,
        train_batch_size=shape.batch,
        train_seq_len=shape.seq_len,
        train_dim=shape.dim,
        train_layers=shape.layers,
        train_warmup_steps=args.warmup,
        train_steps_timed=args.steps,
        train_flops_per_token=shape.flops_per_token(),
    )
    transformers, hf_reason = optional("transformers")
    if hf_reason:
        results["train_hf_skipped"] = hf_reason
    else:
        transformers.logging.set_verbosity_error()

    def others(cfg: Any, total: int) -> list[Stepper]:
        steppers = []
        rows = shape.batch * (total + 4)
        torch.manual_seed(args.seed)
        loader = datamodule(shape, token_dataset(shape, rows, args.seed), None, args.seed).train_dataloader()
        steppers.append(make_stepper("plain", plain_model(shape), loader, cfg, total))
        if not hf_reason:
            torch.manual_seed(args.seed)
            loader = datamodule(shape, token_dataset(shape, rows, args.seed), None, args.seed).train_dataloader()
            steppers.append(make_stepper("hf", hf_model(shape), loader, cfg, total, hf=True))
        return steppers

    rate = matmul_gflops(repeats=args.matmul_repeats)
    times, params = run_attnfit(shape, "transformer", args.warmup, args.steps, others, work, args.progress_bar)
    rate = max(rate, matmul_gflops(repeats=args.matmul_repeats))  # best of before and after: noise only lowers it
    results["matmul_gflops"] = rate
    flops = shape.flops_per_token()
    rows = []
    for name, ts in times.items():
        step = median(ts)
        tps = shape.tokens / step
        mfu = tps * flops / (rate * 1e9)
        spread = (max(ts) - min(ts)) / step if ts else float("nan")
        results[f"train_step_ms_{name}"] = 1000 * step
        results[f"train_tokens_per_s_{name}"] = tps
        results[f"train_params_{name}"] = params[name]
        results["mfu" if name == "attnfit" else f"mfu_{name}"] = mfu
        rows.append([name, params[name], 1000 * step, spread, tps, 100 * mfu])
    results["train_ratio_vs_plain"] = results["train_tokens_per_s_attnfit"] / results["train_tokens_per_s_plain"]
    if "train_tokens_per_s_hf" in results:
        results["train_ratio_vs_hf"] = results["train_tokens_per_s_attnfit"] / results["train_tokens_per_s_hf"]
    table(
        f"training throughput: batch {shape.batch} × {shape.seq_len}, d={shape.dim}, {shape.layers} layers, "
        f"vocab {shape.vocab}; {args.steps} timed steps after {args.warmup} warm-up, interleaved; "
        f"{torch.get_num_threads()} threads; matmul {rate:,.0f} GFLOP/s; {flops / 1e6:.1f} MFLOP/token",
        ["stack", "params", "median ms/step", "(max-min)/med", "tokens/s", "MFU %"],
        rows,
    )
    print(f"  attnfit / plain = {results['train_ratio_vs_plain']:.3f}", end="")
    if "train_ratio_vs_hf" in results:
        print(f";  attnfit / HF = {results['train_ratio_vs_hf']:.3f}")
    else:
        print(f";  HF skipped: {hf_reason}")

    rows = []
    for encoder in args.encoders:
        enc_times, enc_params = run_attnfit(
            shape, encoder, args.encoder_warmup, args.encoder_steps, None, work, args.progress_bar
        )
        ts = enc_times["attnfit"]
        step = median(ts)
        results[f"train_tokens_per_s_{encoder}"] = shape.tokens / step
        results[f"train_step_ms_{encoder}"] = 1000 * step
        results[f"train_params_{encoder}"] = enc_params["attnfit"]
        spread = (max(ts) - min(ts)) / step
        rows.append([encoder, enc_params["attnfit"], 1000 * step, spread, shape.tokens / step])
    if rows:
        table(
            f"attnfit encoders (same shape, + 1 self-attention layer; {args.encoder_steps} timed steps)",
            ["encoder", "params", "median ms/step", "(max-min)/med", "tokens/s"],
            rows,
        )
