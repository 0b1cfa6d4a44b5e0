"""What every section shares: tables, medians, machine facts, the composed config, the model shape, the matmul rate.

Nothing here imports torch or attnfit at module level, so ``benchmark.py --help`` and the data section's fresh
processes pay only for what they use."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parents[1] / "benchmark.py"
ROOT = SCRIPT.parents[1]
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data" / "wikitext-2"
MASK_PROB = 0.15  # configs/task/mlm.yaml: the FLOP formula's masked fraction


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def n_label(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


def table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    """Print an aligned table; floats get 3 significant-ish digits."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            if math.isnan(v):
                return "-"
            return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
        return str(v)

    cells = [header, *[[fmt(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n== {title}")
    for i, row in enumerate(cells):
        padded = [c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True))]
        print("  " + "  ".join(padded))
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))


def matmul_gflops(size: int = 2048, repeats: int = 8) -> float:
    """Best-of-``repeats`` fp32 ``torch.mm`` rate at ``size``³ (GFLOP/s), after one warm-up product."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def load_average() -> float:
    """1-minute load average (other processes competing for the CPUs); NaN where the OS has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return float("nan")


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def machine_info(threads: int) -> dict[str, Any]:
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": usable_cpus(),
        "threads": threads,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "processor": _cpu_name(),
    }


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def subprocess_env() -> dict[str, str]:
    """Environment of the processes a section starts: offline datasets, unbuffered output, and the same attnfit
    as this process (its checkout first on PYTHONPATH), whatever the working directory."""
    import attnfit

    checkout = str(Path(attnfit.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (checkout, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}


@dataclass
class Shape:
    """The benchmarked MLM: model and batch shape (the train section's docstring has the defaults' origin)."""

    batch: int = 32
    seq_len: int = 128
    dim: int = 256
    layers: int = 4
    heads: int = 4
    ffn_mult: int = 4
    vocab: int = 8000
    dropout: float = 0.1

    @property
    def tokens(self) -> int:
        return self.batch * self.seq_len

    def flops_per_token(self, mask_prob: float = MASK_PROB) -> float:
        """Model FLOPs per token of one training step (formula in the train section's docstring)."""
        d, f, L, T, V = self.dim, self.ffn_mult * self.dim, self.layers, self.seq_len, self.vocab
        return 6 * L * (4 * d * d + 2 * d * f) + 12 * L * T * d + 6 * mask_prob * (d * d + d * V)
