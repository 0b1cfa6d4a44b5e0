"""startup: attnfit-train --help, imports, and launch → data ready → first training step.

``attnfit-train --help`` wall time (best of 3), ``python -c "import attnfit.recipes.run"`` wall time
(best of 3: the interpreter, Lightning and attnfit's run sequence imported, then exit), and launch →
first training step of a 1-step ``attnfit-train`` run with the data already cached (the default
config; a first run fills the cache and is reported as the cold figure). The real, unmodified CLI
runs; the marks are the moments its start-up log lines reach this process's pipe (Hydra's console
logging on stdout):
    run_began        ``start-up: data ready X s after the run began`` arrival − X (imports, Hydra)
    prepare_start    ``start-up: preparing <task> data`` (config composed, checks done, seeded)
    data_ready       ``start-up: data ready …`` (the task's prepare returned; its step timings too)
    first_step_start ``start-up: first step starts …`` (attnfit's StartupTimes callback)
    first_step_end   ``start-up: first step done …``
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import subprocess_env, table

MARKS = {  # mark: the start of the run's log message (after Hydra's "[time][logger][level] - " prefix)
    "prepare_start": "start-up: preparing ",
    "data_ready": "start-up: data ready ",
    "first_step_start": "start-up: first step starts ",
    "first_step_end": "start-up: first step done ",
}
AFTER_BEGAN = re.compile(r"data ready ([\d.]+) s after the run began")
STEP_TIME = re.compile(r"(\w+) ([\d.]+) s")


def timed_lines(command: list[str], cwd: Path, stop_at: str | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """Run ``command``; seconds from launch to the first line holding each of :data:`MARKS` and to exit
    ("total"), or until the ``stop_at`` mark, where the process is terminated. Also returns those lines."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=subprocess_env(), cwd=cwd
    )
    marks: dict[str, float] = {}
    lines: dict[str, str] = {}
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        for name, text in MARKS.items():
            if name not in marks and text in line:
                marks[name], lines[name] = time.perf_counter() - start, line.strip()
                if name == stop_at:
                    proc.terminate()
                    proc.wait()
                    return marks, lines
        tail = [*tail[-40:], line]
    code = proc.wait()
    marks["total"] = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"{' '.join(command[:3])} failed ({code}):\n{''.join(tail)}")
    missing = set(MARKS) - set(marks)
    if missing:
        raise RuntimeError(f"{' '.join(command[:3])} logged no {', '.join(sorted(missing))} line:\n{''.join(tail)}")
    return marks, lines


def best_wall(command: list[str], cwd: Path, repeats: int) -> float:
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True, env=subprocess_env(), cwd=cwd)
        walls.append(time.perf_counter() - start)
    return min(walls)


def run(args: argparse.Namespace, results: dict[str, Any], work: Path) -> None:
    cli = Path(sys.executable).with_name("attnfit-train")
    train_cmd = [str(cli)] if cli.exists() else [sys.executable, "-m", "attnfit.cli.train"]
    results["startup_help_s"] = best_wall([*train_cmd, "--help"], work, args.help_repeats)
    import_cmd = [sys.executable, "-c", "import attnfit.recipes.run"]
    results["startup_imports_s"] = best_wall(import_cmd, work, args.help_repeats)
    overrides = [
        "trainer.max_steps=1",
        "callbacks.progress_bar=none",
        f"paths.cache_dir={work / 'startup-cache'}",
        *args.startup_overrides,
    ]
    if args.quick:  # fill the cache in this process (imports already paid) instead of a cold run
        import datasets

        from attnfit.cli import compose_config
        from attnfit.tasks import get_task

        cfg = compose_config("train", [*overrides, f"paths.output_dir={work / 'startup-cold'}"])
        datasets.disable_progress_bars()
        try:
            get_task(cfg.task.name).prepare(cfg, None)
        finally:
            datasets.enable_progress_bars()
    runs: dict[str, dict[str, float]] = {}
    for kind in ("warm",) if args.quick else ("cold", "warm"):
        command = [*train_cmd, *overrides, f"hydra.run.dir={work / f'startup-{kind}'}"]
        marks, lines = timed_lines(command, work, stop_at="first_step_end" if args.quick else None)
        began = AFTER_BEGAN.search(lines["data_ready"])
        if began:  # the run's own clock: launch → run() began = arrival of the line − the seconds it reports
            marks["run_began"] = marks["data_ready"] - float(began.group(1))
        runs[kind] = marks
        if kind == "warm":  # the task's own step timings, as the line lists them: "(load 0.12 s, tokenizer …)"
            steps = lines["data_ready"].partition("began")[2]
            results.update({f"startup_data_{k}_s": float(v) for k, v in STEP_TIME.findall(steps)})
    warm = runs["warm"]
    results.update(
        startup_data_ready_s=warm["data_ready"],
        startup_prepare_data_s=warm["data_ready"] - warm["prepare_start"],
        startup_first_step_s=warm["first_step_start"],
        startup_data_to_first_step_s=warm["first_step_start"] - warm["data_ready"],
        startup_first_step_end_s=warm["first_step_end"],
        startup_prepare_start_s=warm["prepare_start"],
    )
    if "run_began" in warm:
        results["startup_run_began_s"] = warm["run_began"]
    if "total" in warm:
        results["startup_one_step_total_s"] = warm["total"]
    if "cold" in runs:
        cold = runs["cold"]
        results.update(
            startup_cold_data_ready_s=cold["data_ready"],
            startup_cold_first_step_s=cold["first_step_start"],
            startup_cold_total_s=cold["total"],
        )
    nan = float("nan")
    rows = [
        [f"attnfit-train --help (best of {args.help_repeats})", results["startup_help_s"], nan],
        [f"python -c 'import attnfit.recipes.run' (best of {args.help_repeats})", results["startup_imports_s"], nan],
    ]
    for label, key in (
        ("launch → run() begins (imports, Hydra compose)", "run_began"),
        ("launch → 'preparing data' (checks done)", "prepare_start"),
        ("launch → 'data ready'", "data_ready"),
        ("launch → 'first step starts'", "first_step_start"),
        ("launch → 'first step done'", "first_step_end"),
        ("whole 1-step run (checkpoint, report, exit)", "total"),
    ):
        rows.append([label, runs.get("cold", {}).get(key, nan), warm.get(key, nan)])
    table(
        f"start-up: attnfit-train {' '.join(o for o in overrides if not o.startswith('paths.'))} (seconds)",
        ["", "cold cache", "warm cache"],
        rows,
    )
    print(
        f"  warm: prepare {results['startup_prepare_data_s']:.2f} s; data ready → first step "
        f"{results['startup_data_to_first_step_s']:.2f} s (model, Trainer, fit set-up)"
        + ("" if "total" in warm else "; quick: stopped after the first step, cold run left out")
    )
