#!/usr/bin/env python
"""Cached generation speed: attnfit's causal transformer LM against Hugging Face ``GPT2LMHeadModel.generate``.

    python scripts/generation_benchmark.py                   # d=256, 4 layers, batch 1 and 8, 128 new tokens
    python scripts/generation_benchmark.py --quick           # a few seconds
    python scripts/generation_benchmark.py --json gen.json

Both models have the same shape (pre-norm layers, d_model, heads, 4·d GELU feed-forward, learned positions,
tied embeddings, vocabulary) and random weights; both decode greedily, side by side in one process on the CPU,
for exactly ``--new-tokens`` tokens (no end-of-sequence stop). Batched prompts are left-padded to different
lengths, with an attention mask for Hugging Face and a padding mask for attnfit. Tokens/s counts generated
tokens of all rows; each figure is the best of ``--repeats`` runs after one warm-up. Needs transformers
(``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from attnfit.models import AttentionConfig, EncoderConfig, LanguageModel, ModelConfig


def build_pair(dim: int, layers: int, heads: int, vocab: int, max_len: int) -> tuple[LanguageModel, torch.nn.Module]:
    from transformers import GPT2Config, GPT2LMHeadModel

    ours = LanguageModel(
        ModelConfig(
            vocab_size=vocab,
            dim=dim,
            max_len=max_len,
            causal=True,
            encoder=EncoderConfig(name="transformer", num_layers=layers, dropout=0.0, ffn_mult=4),
            attention=AttentionConfig(name="self", num_heads=heads, dropout=0.0),
        )
    ).eval()
    hf_config = GPT2Config(
        vocab_size=vocab,
        n_positions=max_len,
        n_embd=dim,
        n_layer=layers,
        n_head=heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=0,
    )
    hf = GPT2LMHeadModel(hf_config).eval()
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    return ours, hf


def prompts(batch: int, length: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded random prompts ``(B, length)``: row ``b`` has ``length - 3·b`` real tokens (at least 1)."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, vocab, (batch, length), generator=generator)
    mask = torch.zeros(batch, length, dtype=torch.bool)
    for b in range(batch):
        mask[b, : min(3 * b, length - 1)] = True
    return ids.masked_fill(mask, 0), mask


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up: allocator, kernels, lazy initialisation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="d=64, 2 layers, 16 new tokens, one repeat")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.dim, args.layers, args.heads, args.vocab, args.new_tokens, args.repeats = 64, 2, 2, 500, 16, 1
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    max_len = args.prompt_len + args.new_tokens
    ours, hf = build_pair(args.dim, args.layers, args.heads, args.vocab, max_len)
    print(
        f"shape: d={args.dim}, {args.layers} layers, {args.heads} heads, vocab {args.vocab}; prompt {args.prompt_len}, "
        f"{args.new_tokens} new tokens, greedy, {args.threads} thread(s), torch {torch.__version__}"
    )
    results = {}
    for batch in (int(b) for b in args.batches.split(",")):
        ids, mask = prompts(batch, args.prompt_len, args.vocab)

        def run_ours(ids=ids, mask=mask):
            return ours.generate(ids, args.new_tokens, temperature=0, padding_mask=mask if mask.any() else None)

        def run_hf(ids=ids, mask=mask):
            with torch.no_grad():
                return hf.generate(
                    ids,
                    attention_mask=(~mask).long(),
                    max_new_tokens=args.new_tokens,
                    min_new_tokens=args.new_tokens,
                    do_sample=False,
                )

        assert run_ours().shape == run_hf().shape  # both produced exactly the same number of tokens
        tokens = batch * args.new_tokens
        t_ours, t_hf = best_time(run_ours, args.repeats), best_time(run_hf, args.repeats)
        row = {"attnfit_tokens_per_s": tokens / t_ours, "hf_tokens_per_s": tokens / t_hf, "ratio": t_hf / t_ours}
        results[f"batch_{batch}"] = row
        print(
            f"batch {batch}: attnfit {row['attnfit_tokens_per_s']:,.0f} tokens/s, Hugging Face GPT-2 "
            f"{row['hf_tokens_per_s']:,.0f} tokens/s: {row['ratio']:.2f}×"
        )
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": results}, indent=2))


if __name__ == "__main__":
    main()
