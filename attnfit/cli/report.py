"""``attnfit-report SWEEP_DIR``: rank a sweep's runs; print a table and write report.md, report.csv and report.png.

Plain argparse, not Hydra: it reads a finished (or running) sweep and composes no config.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="attnfit-report",
        description="Rank the runs of a sweep (Hydra multirun or Optuna search) and write a report.",
    )
    p.add_argument("sweep_dir", type=Path, help="the sweep directory (run directories with status.json inside)")
    p.add_argument("--top", type=_count, default=3, help="learning curves of this many best runs (default: 3)")
    p.add_argument(
        "--metrics", default=None, help="comma-separated metric columns, e.g. val/acc,val/f1 (default: key metrics)"
    )
    p.add_argument("--out", type=Path, default=None, help="where to write the report files (default: SWEEP_DIR)")
    return p


def _count(text: str) -> int:
    """``--top``: a whole number, 0 or more; anything else is a usage error (exit 2) naming the value."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number, 0 or more, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Exit code 0, or 2 with one ``error: ...`` line for a user mistake (bad directory, unknown metric)."""
    from attnfit.errors import AttnfitError

    args = parser().parse_args(argv)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    try:
        report(args.sweep_dir, args.out, args.top, metrics or None)
    except AttnfitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def report(sweep_dir: Path, out_dir: Path | None, top: int, metrics: list[str] | None) -> None:
    from rich.console import Console

    from attnfit.options import output_dir
    from attnfit.runs.report import (
        collect_runs,
        rank,
        save_report,
        search_plots,
        shared_overrides,
        summary,
        terminal_table,
    )

    out = output_dir(out_dir, "--out") if out_dir else sweep_dir  # before anything is printed
    runs = rank(collect_runs(sweep_dir))
    table = terminal_table(runs, metrics)  # checks the metric names before anything is written
    console = Console(width=None if sys.stdout.isatty() else 200)  # piped: no wrapping at 80 columns
    console.print(table)
    print(summary(runs))
    shared = shared_overrides(runs)
    if shared:
        print(f"overrides shared by all runs: {' '.join(shared)}")
    paths = save_report(runs, out, top, metrics, sweep_dir)
    paths.update(search_plots(sweep_dir, out))  # an attnfit-search directory: Optuna's own plots too
    for path in paths.values():
        print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
