"""Resident memory of reading token shards (data=shards) as the corpus grows.

    PYTHONPATH=. python scripts/bench/streaming.py --tokens 1e7,1e8,1e9 [--dir /tmp/attnfit-shards]

For each size: write random uint16 token shards of 10⁸ tokens each (no tokenizer: the cost measured is reading),
then, in a fresh process, read 200 shuffled batches of 32 × 512 tokens through the training loader
(TokenWindows → ResumableSampler → ResumableLoader, as data=shards trains) and report the process's peak resident
memory (VmHWM) and its anonymous part (RssAnon: memory of its own, not pages of the mapped files, which the kernel
drops under pressure). One JSON line per size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

SHARD = 100_000_000


def write(directory: Path, tokens: int) -> None:
    import numpy as np

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    shards = []
    for start in range(0, tokens, SHARD):
        n = min(SHARD, tokens - start)
        name = f"shard-{len(shards):05d}.bin"
        rng.integers(5, 50000, n, dtype=np.uint16).tofile(directory / name)
        shards.append({"file": name, "tokens": n})
    index = {"dtype": "uint16", "vocab_size": 50000, "shards": shards}
    (directory / "index.json").write_text(json.dumps(index))


def read(directory: Path) -> dict[str, float]:
    from attnfit.data import CLMCollator
    from attnfit.data.shards import TokenWindows
    from attnfit.training.datamodule import KeyedDataset, ResumableLoader, ResumableSampler

    windows = TokenWindows(directory, 512)
    dataset = KeyedDataset(windows)
    sampler = ResumableSampler(dataset, 1, 0, shuffle=True, seed=0)
    loader = ResumableLoader(dataset, sampler=sampler, batch_size=32, collate_fn=CLMCollator(0), progress=lambda: 0)
    for i, _ in enumerate(loader):
        if i == 199:
            break
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "RssAnon", "RssFile"):
                status[key] = int(value.split()[0]) / 1024
    return {"tokens": windows.num_tokens, "rows": len(windows), **{f"{k}_mib": v for k, v in status.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="1e7,1e8")
    parser.add_argument("--dir", default="/tmp/attnfit-shards")
    parser.add_argument("--read", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.read:
        print(json.dumps(read(Path(args.read))))
        return
    for size in (int(float(t)) for t in args.tokens.split(",")):
        directory = Path(args.dir) / f"{size:.0e}"
        if not (directory / "index.json").exists():
            write(directory, size)
        proc = subprocess.run(
            [sys.executable, __file__, "--read", str(directory)], capture_output=True, text=True, check=True
        )
        print(proc.stdout.strip())


if __name__ == "__main__":
    main()
