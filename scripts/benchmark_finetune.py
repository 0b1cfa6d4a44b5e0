#!/usr/bin/env python
"""Does pretraining help? Fine-tune a pretrained model and the same architecture from scratch with the same
budget, over several seeds, and print validation/test accuracy and macro-F1 side by side.

    python scripts/benchmark_finetune.py                       # pretrains the default model first (~2 min)
    python scripts/benchmark_finetune.py --pretrained RUN_DIR --seeds 3 --json out.json
    python scripts/benchmark_finetune.py --experiment sms_spam --pretrained RUN_DIR   # real data (see README)

Every run goes through the real CLIs (attnfit-train / attnfit-finetune); each run's metrics.json is read back.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def run(verb: str, args: list[str]) -> None:
    command = [sys.executable, "-m", f"attnfit.{verb}", *args]
    print("$", " ".join(command[2:]), flush=True)
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{verb} failed:\n{proc.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", help="a pretrained run directory (default: pretrain one now)")
    parser.add_argument("--experiment", help="an experiment= config for fine-tuning (default: embedded task)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="outputs/benchmark-finetune", help="where the runs go")
    parser.add_argument("--json", help="write the figures here as JSON")
    parser.add_argument("overrides", nargs="*", help="extra attnfit-finetune overrides, e.g. trainer.max_steps=200")
    args = parser.parse_args()

    out = Path(args.out)
    pretrained = Path(args.pretrained) if args.pretrained else out / "pretrained"
    if not args.pretrained:
        run("train", [f"hydra.run.dir={pretrained}", "callbacks.progress_bar=none"])
    extra = ([f"experiment={args.experiment}"] if args.experiment else []) + args.overrides
    results: dict[str, list[dict]] = {"pretrained": [], "scratch": []}
    for seed in range(args.seeds):
        for variant in results:
            run_dir = out / f"{variant}-seed{seed}"
            start = time.perf_counter()
            run(
                "finetune",
                [
                    f"pretrained={pretrained}",
                    f"seed={seed}",
                    f"hydra.run.dir={run_dir}",
                    "callbacks.progress_bar=none",
                    f"finetune.from_scratch={variant == 'scratch'}",
                    *extra,
                ],
            )
            metrics = json.loads((run_dir / "metrics.json").read_text())
            metrics["seconds"] = time.perf_counter() - start
            results[variant].append(metrics)

    keys = [k for k in ("best/val/f1", "val/acc", "val/f1", "test/acc", "test/f1") if k in results["pretrained"][0]]
    summary: dict[str, float] = {}
    print(f"\n{'metric':14s} {'pretrained':>20s} {'from scratch':>20s}   (mean ± sd over {args.seeds} seeds)")
    for key in keys:
        row = []
        for variant, runs in results.items():
            values = [r[key] for r in runs]
            mean, sd = statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
            summary[f"{variant}/{key}"] = mean
            row.append(f"{mean:.4f} ± {sd:.4f}")
        print(f"{key:14s} {row[0]:>20s} {row[1]:>20s}")
    for variant, runs in results.items():
        summary[f"{variant}/seconds"] = statistics.mean(r["seconds"] for r in runs)
    print(
        f"seconds per fine-tuning run: pretrained {summary['pretrained/seconds']:.0f}, "
        f"scratch {summary['scratch/seconds']:.0f}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "runs": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
