"""How training cost grows with model size on the CPU: tokens/s and MFU of the presets from model=small up to
gpt2-small, at a short sequence, one thread, float32, AdamW.

    PYTHONPATH=. python scripts/bench/sizes.py [--seq-len 64] [--batch 4] [--steps 3]

MFU = (6·N + 12·layers·T·dim) FLOPs per token × tokens/s ÷ the fp32 matmul rate this core reaches (2048³
products): the share of the machine's dense-matmul speed that training turns into model FLOPs. Prints a table and
one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for bench.common

from bench.common import load_average, matmul_gflops, table

# (preset, dim, layers, heads, vocab): model=small/base with the bpe tokenizer's 8000 tokens, then the published ones
SIZES = [
    ("small", 128, 2, 4, 8000),
    ("base", 256, 2, 4, 8000),
    ("bert-base", 768, 12, 12, 30522),
    ("gpt2-small", 768, 12, 12, 50257),
]


def measure(dim: int, layers: int, heads: int, vocab: int, args: argparse.Namespace) -> dict[str, float]:
    import torch

    from attnfit.models import LanguageModel, ModelConfig

    config = ModelConfig.from_dict(
        {
            "vocab_size": vocab,
            "dim": dim,
            "max_len": args.seq_len,
            "causal": True,
            "encoder": {"num_layers": layers},
            "attention": {"num_heads": heads},
        }
    )
    torch.manual_seed(0)
    model = LanguageModel(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(5, vocab, (args.batch, args.seq_len))

    def step() -> None:
        loss = model.labelled_loss(ids, None, ids)[0]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # optimizer state, lazy kernels
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    seconds = min(times)  # other processes only ever add time
    params = sum(p.numel() for p in model.parameters())
    flops = 6 * params + 12 * layers * args.seq_len * dim
    tokens = args.batch * args.seq_len
    return {"parameters": params, "step_s": seconds, "tokens_per_s": tokens / seconds, "gflops_per_token": flops / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--sizes", default=",".join(name for name, *_ in SIZES))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    peak = matmul_gflops()
    rows, results = [], {"matmul_gflops": peak, "load_average": load_average(), "sizes": {}}
    for name, dim, layers, heads, vocab in SIZES:
        if name not in args.sizes.split(","):
            continue
        result = measure(dim, layers, heads, vocab, args)
        result["mfu"] = result["tokens_per_s"] * result["gflops_per_token"] / peak
        results["sizes"][name] = result
        rows.append([name, f"{result['parameters'] / 1e6:.1f}M", result["tokens_per_s"], f"{100 * result['mfu']:.0f}%"])
    table(
        f"training on 1 CPU thread, batch {args.batch} × {args.seq_len} tokens (matmul {peak:.0f} GFLOP/s)",
        ["model", "parameters", "tokens/s", "MFU"],
        rows,
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
