"""Peak memory of training a language model on the CPU, measured, beside attnfit's estimate of it.

    python scripts/bench/memory.py --dim 256 --layers 4 --vocab 8000 --batch 8 --seq-len 128 [--checkpointing]

Prints one JSON line: the estimate's parts and the measured peak, both in MiB.

What is measured: the process's peak resident memory (``VmHWM``) over three AdamW steps, minus its resident memory
just before the model is built (after torch's own start-up and a throw-away step of a tiny model, so lazily
created kernels and threads are not counted). glibc would otherwise keep freed blocks of up to 32 MiB in its heap
and hand them out again in other sizes, so the peak would depend on the order of allocations; the script re-runs
itself with ``MALLOC_MMAP_THRESHOLD_=65536``, which maps every tensor of 64 KiB or more on its own and returns it
when freed: the peak is then the peak of live tensors plus small change.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def _model(args: argparse.Namespace, dim: int, layers: int, vocab: int, checkpointing: bool):
    from attnfit.models import LanguageModel, ModelConfig

    config = ModelConfig.from_dict(
        {
            "vocab_size": vocab,
            "dim": dim,
            "max_len": args.seq_len,
            "causal": args.task == "clm",
            "activation_checkpointing": checkpointing,
            "encoder": {"num_layers": layers},
            "attention": {"num_heads": max(1, dim // 64)},
        }
    )
    return LanguageModel(config)


def _steps(model, args: argparse.Namespace, vocab: int, steps: int) -> None:
    import torch

    from attnfit.training.optim import build_optimizer, decay_groups

    generator = torch.Generator().manual_seed(0)
    optimizer = build_optimizer(decay_groups(model, 0.01), "adamw", lr=1e-4)
    model.train()
    for _ in range(steps):
        ids = torch.randint(5, vocab, (args.batch, args.seq_len), generator=generator)
        labels = ids.clone()
        if args.task == "mlm":
            labels[torch.rand(ids.shape, generator=generator) > args.mask_prob] = -100
        loss = model.labelled_loss(ids, None, labels)[0]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def measure(args: argparse.Namespace) -> dict[str, float]:
    import torch

    from attnfit.training.memory import estimate_memory

    torch.set_num_threads(1)
    _steps(_model(args, 16, 1, 64, args.checkpointing), args, 64, 1)  # lazy start-up costs, before the baseline
    baseline = _status("VmRSS")
    model = _model(args, args.dim, args.layers, args.vocab, args.checkpointing)
    _steps(model, args, args.vocab, 3)
    peak = _status("VmHWM") - baseline
    labelled = 1.0 if args.task == "clm" else args.mask_prob
    estimate = estimate_memory(
        model, args.batch, args.seq_len, "32-true", "adamw", labelled_tokens=labelled, vocab_size=args.vocab
    )
    mib = 2**20
    return {
        "parameters": estimate.parameters,
        "checkpointing": args.checkpointing,
        "estimate_mib": estimate.total / mib,
        "weights_mib": estimate.weights / mib,
        "gradients_mib": estimate.gradients / mib,
        "optimizer_mib": estimate.optimizer / mib,
        "activations_mib": estimate.activations / mib,
        "measured_peak_mib": peak / mib,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--task", choices=("clm", "mlm"), default="clm")
    parser.add_argument("--mask-prob", type=float, default=0.15)
    parser.add_argument("--checkpointing", action="store_true")
    args = parser.parse_args(argv)
    if any(os.environ.get(key) != value for key, value in ENV.items()):  # glibc reads these at start-up only
        argv = sys.argv[1:] if argv is None else argv
        proc = subprocess.run([sys.executable, __file__, *argv], env={**os.environ, **ENV})
        raise SystemExit(proc.returncode)
    print(json.dumps(measure(args)))


if __name__ == "__main__":
    main()
