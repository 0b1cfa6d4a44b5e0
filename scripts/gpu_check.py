"""The GPU figures of the "Large models" section, in one run (scripts/gpu_check.sh calls this), printed as JSON.

- ``matmul_tflops``: the bf16 matmul rate this GPU reaches (8192² products): the MFU denominator.
- ``gpt2_small``: training tokens/s in bf16-mixed with fused AdamW, eager and ``torch.compile``-d per block, and MFU
  = model FLOPs/s ÷ the measured matmul rate, model FLOPs = 6·N + 12·layers·T·dim per token (Chinchilla's count).
- ``flash_sdpa``: whether the model's attention ran the flash kernel (kernel names seen by the profiler).
- ``local_attention``: forward+backward time and peak memory at 16k and 64k tokens of the blocked sliding-window
  path, FlexAttention's sliding-window block mask (same outputs checked), and dense SDPA.
- ``activation_checkpointing``: peak memory of a gpt2-small training step with and without it.
- ``fsdp_resume``: ``trainer=fsdp`` through attnfit-train on one GPU: sharded checkpoints, a resumed run against a
  straight one (largest weight difference), and the export of the sharded checkpoint.

``--tiny`` runs the same code on the CPU at toy sizes (a syntax and logic check; the figures mean nothing).
Each section records its error instead of stopping the others.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from attnfit.models import LanguageModel, ModelConfig

GPT2_SMALL = {"dim": 768, "layers": 12, "heads": 12, "vocab": 50257, "seq": 1024, "batch": 8}
TINY = {"dim": 64, "layers": 2, "heads": 2, "vocab": 500, "seq": 64, "batch": 2}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Median seconds of ``fn``."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _peak(fn: Callable[[], Any], device: torch.device) -> float | None:
    """Peak GiB allocated during ``fn`` above what was allocated before (CUDA only)."""
    if device.type != "cuda":
        fn()
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**30


def matmul_tflops(device: torch.device, size: int) -> float:
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    seconds = _timed(lambda: a @ b, device, repeats=20, warmup=3)
    return 2 * size**3 / seconds / 1e12


def gpt2(shape: dict[str, int], device: torch.device, checkpointing: bool = False) -> LanguageModel:
    config = ModelConfig.from_dict(
        {
            "vocab_size": shape["vocab"],
            "dim": shape["dim"],
            "max_len": shape["seq"],
            "causal": True,
            "activation_checkpointing": checkpointing,
            "encoder": {"num_layers": shape["layers"]},
            "attention": {"num_heads": shape["heads"]},
        }
    )
    return LanguageModel(config).to(device)


def _train_step(model: LanguageModel, optimizer: torch.optim.Optimizer, ids: torch.Tensor) -> None:
    with torch.autocast(ids.device.type, dtype=torch.bfloat16):
        loss = model.labelled_loss(ids, None, ids)[0]
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def throughput(shape: dict[str, int], device: torch.device, compile: bool, peak_tflops: float, steps: int) -> dict:
    torch.manual_seed(0)
    model = gpt2(shape, device).train()
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
    ids = torch.randint(5, shape["vocab"], (shape["batch"], shape["seq"]), device=device)
    started = time.perf_counter()
    if compile:
        from attnfit.training.module import compile_blocks

        compile_blocks(model)  # as attnfit's compile=true: each block in place
    _train_step(model, optimizer, ids)  # compiles here when asked
    _sync(device)
    first_step = time.perf_counter() - started
    seconds = _timed(lambda: _train_step(model, optimizer, ids), device, repeats=steps, warmup=1)
    tokens = shape["batch"] * shape["seq"]
    params = sum(p.numel() for p in model.parameters())
    flops_per_token = 6 * params + 12 * shape["layers"] * shape["seq"] * shape["dim"]
    rate = tokens / seconds
    return {
        "parameters": params,
        "tokens_per_s": rate,
        "step_ms": 1000 * seconds,
        "first_step_s": first_step,
        "mfu": rate * flops_per_token / (peak_tflops * 1e12),
    }


def flash_in_use(shape: dict[str, int], device: torch.device) -> dict:
    from torch.profiler import ProfilerActivity, profile

    model = gpt2(shape, device).eval()
    ids = torch.randint(5, shape["vocab"], (2, shape["seq"]), device=device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16), profile(activities=activities) as prof:
        model(ids)
    names = sorted({e.name for e in prof.events() if "attention" in e.name.lower() or "flash" in e.name.lower()})
    return {"flash": any("flash" in n.lower() for n in names), "kernels": names[:12]}


def _flex_local(window: int, n: int, device: torch.device) -> Callable | None:
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError:
        return None

    def sliding(b, h, q_idx, kv_idx):
        return (q_idx - kv_idx).abs() <= window

    mask = create_block_mask(sliding, None, None, n, n, device=str(device))
    compiled = torch.compile(flex_attention)
    return lambda q, k, v: compiled(q, k, v, block_mask=mask)


def local_attention(ns: list[int], device: torch.device, window: int, heads: int) -> dict:
    from attnfit.models.attention.local_attention import LocalAttention

    d = 64
    local = LocalAttention(heads * d, heads, window).to(device)
    results: dict[str, Any] = {"window": window, "heads": heads, "head_dim": d}
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    for n in ns:
        q, k, v = (torch.randn(1, heads, n, d, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
        grad = torch.randn(1, heads, n, d, device=device, dtype=dtype)
        cases: dict[str, Callable] = {
            "blocked": lambda q, k, v: local.attend(q, k, v, None, False, False)[0],
            "dense_sdpa": lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
        }
        try:
            flex = _flex_local(window, n, device)
            if flex is not None:
                cases["flex"] = flex
                plain = [t.detach() for t in (q, k, v)]  # the same outputs (CPU FlexAttention has no backward)
                diff = (flex(*plain).float() - cases["blocked"](*plain).float()).abs().max().item()
                results[f"flex_vs_blocked_max_abs_diff_{n}"] = diff
        except Exception as error:  # no Triton, or a FlexAttention this torch cannot compile
            results[f"flex_error_{n}"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
        for name, fn in cases.items():
            step = functools.partial(_forward_backward, fn, q, k, v, grad)
            try:
                results[f"{name}_ms_{n}"] = 1000 * _timed(step, device, repeats=5, warmup=1)
                results[f"{name}_peak_gib_{n}"] = _peak(step, device)
            except Exception as error:  # e.g. out of memory for dense at 64k without a fused kernel
                results[f"{name}_error_{n}"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return results


def _forward_backward(fn: Callable, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grad: torch.Tensor) -> None:
    fn(q, k, v).backward(grad)


def _checkpointing_case(shape: dict[str, int], device: torch.device, flag: bool) -> tuple[float | None, float]:
    """(peak GiB of one training step above the weights and optimizer state, its milliseconds)."""
    torch.manual_seed(0)
    model = gpt2(shape, device, checkpointing=flag).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    ids = torch.randint(5, shape["vocab"], (shape["batch"], shape["seq"]), device=device)
    step = functools.partial(_train_step, model, optimizer, ids)
    step()  # optimizer state exists from here on
    return _peak(step, device), 1000 * _timed(step, device, repeats=3, warmup=0)


def checkpointing_memory(shape: dict[str, int], device: torch.device) -> dict:
    results = {}
    for flag in (False, True):
        label = "with" if flag else "without"
        results[f"peak_gib_{label}"], results[f"step_ms_{label}"] = _checkpointing_case(shape, device, flag)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


FSDP_RUN = [
    "trainer=fsdp",
    "trainer.devices=1",
    "data.seq_len=32",
    "data.batch_size=8",
    "data.shuffle=false",
    "model.dim=64",
    "encoder.num_layers=2",
    "attention.num_heads=2",
    "tokenizer.vocab_size=300",
    "scheduler.warmup_steps=2",
    "scheduler.decay_steps=6",
    "trainer.val_check_interval=3",
    "trainer.limit_val_batches=2",
    "callbacks.progress_bar=none",
    "logger=csv",
]


def fsdp_resume(work: Path) -> dict:
    """Lightning's FSDP on one GPU through attnfit-train: 6 steps straight against 3 steps, then resumed from the
    sharded checkpoint to 6; both read back as one (consolidated) and compared; the resumed run exported."""
    import shutil
    import subprocess
    import sys

    from attnfit.pretrained import load_artifact

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    def train(run: str, *extra: str) -> None:
        command = [sys.executable, "-m", "attnfit.train", *FSDP_RUN, f"hydra.run.dir={work / run}", *extra]
        proc = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=240)
        if proc.returncode:
            raise RuntimeError(f"{run}: {(proc.stdout + proc.stderr)[-1500:]}")

    train("straight", "trainer.max_steps=6")
    train("resumed", "trainer.max_steps=3")
    train("resumed", "trainer.max_steps=6", f"ckpt_path={work / 'resumed'}")
    last = work / "resumed" / "checkpoints" / "last.ckpt"
    a = load_artifact(work / "straight" / "checkpoints" / "last.ckpt").state_dict
    b = load_artifact(last).state_dict
    diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    export = subprocess.run(
        [sys.executable, "-m", "attnfit.export", f"checkpoint={work / 'resumed'}", f"out={work / 'export'}"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return {
        "sharded_checkpoint": last.is_dir() and (last / "meta.pt").is_file(),
        "resumed_vs_straight_max_abs_diff": diff,
        "export_files": sorted(p.name for p in (work / "export").glob("*")) if export.returncode == 0 else None,
        "export_error": export.stderr[-800:] if export.returncode else None,
    }


STARTED = time.perf_counter()
BUDGET_S = 420.0  # gpu_check.sh kills the run at 480 s: later sections are skipped, so the JSON still prints


def section(results: dict, name: str, fn: Callable[[], Any]) -> None:
    started = time.perf_counter()
    if started - STARTED > BUDGET_S:
        results[name] = f"skipped: past the {BUDGET_S:.0f} s budget"
        return
    try:
        results[name] = fn()
    except Exception as error:
        results[name] = {"error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()[-1500:]}
    results.setdefault("seconds", {})[name] = round(time.perf_counter() - started, 1)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="GPU figures for the README's Large models section (JSON)")
    parser.add_argument("--tiny", action="store_true", help="toy sizes on the CPU: checks the code, not the GPU")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurement")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        raise SystemExit("gpu_check: CUDA is not available; --tiny runs the same code on the CPU at toy sizes")
    device = torch.device("cpu" if args.tiny else "cuda")
    shape = TINY if args.tiny else GPT2_SMALL
    ns = [1024, 2048] if args.tiny else [16384, 65536]
    results: dict[str, Any] = {
        "device": "cpu (tiny)" if args.tiny else torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "shape": shape,
    }
    section(results, "matmul_tflops", lambda: matmul_tflops(device, 256 if args.tiny else 8192))
    peak = results["matmul_tflops"] if isinstance(results["matmul_tflops"], float) else math.nan
    steps = 2 if args.tiny else args.steps
    section(results, "gpt2_small_eager", lambda: throughput(shape, device, False, peak, steps))
    if args.tiny or args.no_compile:
        results["gpt2_small_compiled"] = "skipped"
    else:
        section(results, "gpt2_small_compiled", lambda: throughput(shape, device, True, peak, steps))
    section(results, "flash_sdpa", lambda: flash_in_use(shape, device))
    section(results, "local_attention", lambda: local_attention(ns, device, 64 if args.tiny else 256, 8))
    section(results, "activation_checkpointing", lambda: checkpointing_memory(shape, device))
    if args.tiny:
        results["fsdp_resume"] = "skipped: Lightning's FSDP needs CUDA"
    else:
        section(results, "fsdp_resume", lambda: fsdp_resume(Path(tempfile.mkdtemp(prefix="attnfit-fsdp-"))))
    print(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()
