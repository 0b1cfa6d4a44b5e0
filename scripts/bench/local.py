"""local: local attention vs dense SDPA vs the local-attention package, time and peak memory.

Local (sliding-window, ±128) attention forward+backward at n = 1k, 4k, 16k, batch 1, 4 heads, head dim
64, on the attention core only (q, k, v in; no projections): attnfit ``LocalAttention.attend`` vs
dense ``F.scaled_dot_product_attention`` (full attention, the fused CPU kernel) vs the local-attention
package (``exact_windowsize=True``, the same ±128 band; outputs are checked to match attnfit's).
Times are medians of interleaved rounds. Peak memory is the peak of live tensor bytes allocated by
ATen ops during one forward+backward (outputs of every op, autograd-saved tensors and gradients
included; q, k, v and the incoming gradient excluded), tracked with a TorchDispatchMode that adds each
new storage and subtracts it when it is freed. Kernel-internal scratch buffers are not seen.
``*_linearity`` = (growth of time or memory between the two largest n) / (growth of n): 1.0 is linear,
4.0 at a 4× step would be quadratic. The time growth uses the best round of each case (``*_min_ms_*``):
other processes only ever add time, so the minimum is the steadier basis for a ratio across cases
that did not run side by side; the speed-ups between implementations use the medians.
"""

from __future__ import annotations

import argparse
import time
import weakref
from collections.abc import Callable
from typing import Any

from bench.common import median, n_label, table

OptionalImport = Callable[[str], tuple[Any, "str | None"]]  # benchmark.optional_module


class LiveTensorBytes:
    """Peak of live tensor bytes created by ATen ops while active (a TorchDispatchMode; see the docstring)."""

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_leaves

        self.live = self.peak = 0
        self._seen: dict[int, int] = {}
        outer = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
                out = func(*args, **(kwargs or {}))
                for t in tree_leaves(out):
                    if hasattr(t, "untyped_storage"):
                        outer._track(t.untyped_storage())
                return out

        self._mode = _Mode()

    def _track(self, storage: Any) -> None:
        key, size = storage.data_ptr(), storage.nbytes()
        if size == 0 or key in self._seen:  # views and in-place results share an already counted storage
            return
        self._seen[key] = size
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        size = self._seen.pop(key, None)
        if size is not None:
            self.live -= size

    def __enter__(self) -> LiveTensorBytes:
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._mode.__exit__(*exc)


def implementations(
    window: int, heads: int, head_dim: int, optional: OptionalImport
) -> tuple[dict[str, Callable], dict[str, str]]:
    """{name: fn(q, k, v) -> out} for the available implementations, and {name: reason} for the skipped."""
    import torch.nn.functional as F

    from attnfit.models.attention import LocalAttention

    attnfit_local = LocalAttention(heads * head_dim, heads, window)
    impls: dict[str, Callable] = {
        "attnfit": lambda q, k, v: attnfit_local.attend(q, k, v, None, False, False)[0],
        "dense": lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
    }
    skipped = {}
    package, reason = optional("local_attention")
    if reason:
        skipped["package"] = reason
    else:
        pkg = package.LocalAttention(
            window_size=window, causal=False, look_backward=1, look_forward=1, exact_windowsize=True, autopad=True
        )
        impls["package"] = lambda q, k, v: pkg(q, k, v)
    return impls, skipped


def run(args: argparse.Namespace, results: dict[str, Any], optional: OptionalImport) -> None:
    import torch

    heads, head_dim, window = args.local_heads, args.local_head_dim, args.local_window
    impls, skipped = implementations(window, heads, head_dim, optional)
    for name, reason in skipped.items():
        results[f"local_{name}_skipped"] = reason
    times: dict[tuple[str, int], float] = {}
    best: dict[tuple[str, int], float] = {}
    peaks: dict[tuple[str, int], float] = {}
    for n in args.local_n:
        gen = torch.Generator().manual_seed(n)
        q, k, v = (torch.randn(1, heads, n, head_dim, generator=gen).requires_grad_() for _ in range(3))
        grad = torch.randn(1, heads, n, head_dim, generator=gen)

        def step(fn: Callable, q: Any = q, k: Any = k, v: Any = v, grad: Any = grad) -> None:
            fn(q, k, v).backward(grad)
            q.grad = k.grad = v.grad = None

        if "package" in impls:  # the same band: the comparison is only fair if both compute the same thing
            with torch.no_grad():
                diff = (impls["attnfit"](q, k, v) - impls["package"](q, k, v)).abs().max().item()
            results[f"local_max_abs_diff_vs_package_{n_label(n)}"] = diff
        samples: dict[str, list[float]] = {name: [] for name in impls}
        for name, fn in impls.items():  # warm-up (allocator, kernels) and memory, untimed
            step(fn)
            tracker = LiveTensorBytes()
            with tracker:
                step(fn)
            peaks[name, n] = tracker.peak / 2**20
        rounds = args.local_rounds if n < 16384 else max(2, args.local_rounds - 2)
        for r in range(rounds):  # interleaved, rotating order
            names = list(impls)
            names = names[r % len(names) :] + names[: r % len(names)]
            for name in names:
                start = time.perf_counter()
                step(impls[name])
                samples[name].append(time.perf_counter() - start)
        label = n_label(n)
        for name, ts in samples.items():
            times[name, n] = 1000 * median(ts)
            best[name, n] = 1000 * min(ts)
            results[f"local_{name}_ms_{label}"] = times[name, n]
            results[f"local_{name}_min_ms_{label}"] = best[name, n]
            results[f"local_{name}_peak_mb_{label}"] = peaks[name, n]
        results[f"local_speedup_vs_dense_{label}"] = times["dense", n] / times["attnfit", n]
        if "package" in impls:
            results[f"local_ratio_vs_package_{label}"] = times["package", n] / times["attnfit", n]
    sizes = sorted(args.local_n)
    lo, hi = (sizes[-2], sizes[-1]) if len(sizes) > 1 else (sizes[0], sizes[0])  # the two largest: past overheads
    if hi > lo:
        for name in impls:
            results[f"local_time_linearity_{name}"] = (best[name, hi] / best[name, lo]) / (hi / lo)
            results[f"local_memory_linearity_{name}"] = (peaks[name, hi] / peaks[name, lo]) / (hi / lo)
    rows = []
    for n in args.local_n:
        for name in impls:
            row = [f"n={n_label(n)} {name}", times[name, n], peaks[name, n], peaks[name, n] * 2**20 / n / 1024]
            row.append(times["dense", n] / times[name, n])
            rows.append(row)
    table(
        f"local attention fwd+bwd: window ±{window}, {heads} heads × {head_dim}, batch 1 "
        f"(median of interleaved rounds; memory = peak live tensor bytes)",
        ["case", "ms", "peak MB", "KB/token", "speed-up vs dense"],
        rows,
    )
    if hi > lo:
        print(
            f"  linearity n={n_label(lo)}→{n_label(hi)} (growth / n growth, 1.0 = linear): "
            + ", ".join(
                f"{name} time {results[f'local_time_linearity_{name}']:.2f} "
                f"memory {results[f'local_memory_linearity_{name}']:.2f}"
                for name in impls
            )
        )
    for name, reason in skipped.items():
        print(f"  {name} skipped: {reason}")
