"""Sweep reports: collecting run directories, ranking, tables, learning curves, the PNG and the CLI."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from attnfit.errors import ConfigError, DataError
from attnfit.runs.report import (
    RunRecord,
    collect_runs,
    format_table,
    learning_curves,
    plot_report,
    rank,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ERROR = "DataError: data.path='/nope/corpus.txt' does not exist; check the path and try again please"

# name -> (status, objective, overrides, error); the best (lowest val/loss) is the nested Optuna-style run.
RUNS = {
    "0-optimizer.lr=0.01": ("completed", 3.25, ["optimizer.lr=0.01"], None),
    "1-optimizer.lr=0.1": ("failed", None, ["optimizer.lr=0.1"], ERROR),
    "2-optimizer.lr=0.003": ("pruned", 4.5, ["optimizer.lr=0.003"], None),
    "nested/trial_3": ("completed", 2.75, ["optimizer.lr=0.001"], None),
}


def curve(objective: float) -> list[tuple[int, float]]:
    """A falling validation curve ending at ``objective`` (exact in float32)."""
    return [(step, objective + 0.5 * (4 - i)) for i, step in enumerate((0, 25, 50, 75, 100))]


def write_run(root: Path, name: str, status: str, objective, overrides, error, mode: str = "min") -> Path:
    from torch.utils.tensorboard import SummaryWriter

    run_dir = root / name
    run_dir.mkdir(parents=True)
    record = {
        "status": status,
        "objective": objective,
        "optimized_metric": "val/loss",
        "mode": mode,
        "error": error,
        "seconds": 12.5,
        "overrides": ["trainer.max_steps=100", *overrides],
    }
    (run_dir / "status.json").write_text(json.dumps(record))
    if status == "failed":
        return run_dir
    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
    for step, value in curve(objective):
        writer.add_scalar("val/loss", value, step)
        writer.add_scalar("train/loss", value - 0.25, step)
    writer.close()
    if status == "completed":
        metrics = {"val/loss": objective, "val/ppl": 2.0**objective, "val/acc": 0.5, "train/loss": 2.5, "step": 100}
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    for name, (status, objective, overrides, error) in RUNS.items():
        write_run(root, name, status, objective, overrides, error)
    (root / "study.db").write_bytes(b"SQLite format 3\x00")  # an Optuna study: not a run
    return root


def record(name: str, status: str, objective: float | None, mode: str = "min") -> RunRecord:
    return RunRecord(name=name, path=Path(name), status=status, objective=objective, metric="val/f1", mode=mode)


def test_collect_runs_reads_every_run_dir_up_to_two_levels_down(sweep):
    runs = collect_runs(sweep)
    assert [run.name for run in runs] == list(RUNS)
    best = runs[-1]
    assert (best.status, best.objective, best.metric, best.mode) == ("completed", 2.75, "val/loss", "min")
    assert best.overrides == ["trainer.max_steps=100", "optimizer.lr=0.001"]
    assert best.metrics["step"] == 100 and best.seconds == 12.5
    assert runs[1].error == ERROR and runs[1].metrics == {}


def test_collect_runs_sorts_naturally_and_skips_unreadable_status_files(tmp_path, caplog):
    for name in ("trial_10", "trial_2", "trial_1"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "status.json").write_text(json.dumps({"status": "pruned", "objective": None}))
    (tmp_path / "trial_3").mkdir()
    (tmp_path / "trial_3" / "status.json").write_text('{"status": "compl')  # still being written
    with caplog.at_level(logging.WARNING, logger="attnfit"):
        runs = collect_runs(tmp_path)
    assert [run.name for run in runs] == ["trial_1", "trial_2", "trial_10"]
    assert "trial_3" in caplog.text


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p])
def test_collect_runs_without_runs_names_the_directory(tmp_path, make):
    with pytest.raises(DataError, match=str(tmp_path)):
        collect_runs(make(tmp_path))


def test_rank_min_mode_orders_completed_then_pruned_then_failed(sweep):
    assert [run.name for run in rank(collect_runs(sweep))] == [
        "nested/trial_3",
        "0-optimizer.lr=0.01",
        "2-optimizer.lr=0.003",
        "1-optimizer.lr=0.1",
    ]


def test_rank_max_mode_puts_the_highest_first():
    runs = [
        record("failed", "failed", None, "max"),
        record("low", "completed", 0.5, "max"),
        record("pruned-none", "pruned", None, "max"),
        record("pruned", "pruned", 0.1, "max"),
        record("high", "completed", 0.8, "max"),
        record("no-objective", "completed", None, "max"),
    ]
    assert [run.name for run in rank(runs)] == ["high", "low", "no-objective", "pruned", "pruned-none", "failed"]


def test_rank_uses_the_first_runs_mode_and_warns_when_modes_disagree(caplog):
    runs = [record("a", "completed", 0.5, "max"), record("b", "completed", 0.9, "min")]
    with caplog.at_level(logging.WARNING, logger="attnfit"):
        assert [run.name for run in rank(runs)] == ["b", "a"]
    assert "disagree on the mode" in caplog.text and "'max'" in caplog.text


def test_markdown_table_lists_runs_best_first_with_the_error(sweep):
    lines = format_table(collect_runs(sweep), "markdown").splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:5] == ["rank", "run", "status", "overrides", "objective"]
    assert header[5:] == ["val/loss", "val/ppl", "val/acc", "step", "seconds", "error"]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert [row[1] for row in rows] == [
        "nested/trial_3",
        "0-optimizer.lr=0.01",
        "2-optimizer.lr=0.003",
        "1-optimizer.lr=0.1",
    ]
    assert [row[0] for row in rows] == ["1", "2", "-", "-"]
    assert rows[0][3] == "optimizer.lr=0.001"  # the override every run shares is left out
    assert rows[0][4] == "2.75" and rows[0][8] == "100"
    failed = rows[-1]
    assert failed[2] == "failed" and failed[-1].startswith("DataError: data.path=") and failed[-1].endswith("…")
    assert len(failed[-1]) <= 60


def test_csv_table_parses_and_keeps_full_values(sweep):
    rows = list(csv.DictReader(io.StringIO(format_table(collect_runs(sweep), "csv", metrics=["val/acc"]))))
    assert list(rows[0]) == ["rank", "run", "status", "overrides", "objective", "val/acc", "seconds", "error"]
    assert [row["run"] for row in rows] == [
        "nested/trial_3",
        "0-optimizer.lr=0.01",
        "2-optimizer.lr=0.003",
        "1-optimizer.lr=0.1",
    ]
    assert float(rows[0]["objective"]) == 2.75 and rows[0]["val/acc"] == "0.5" and rows[0]["rank"] == "1"
    assert rows[0]["overrides"] == "trainer.max_steps=100 optimizer.lr=0.001"
    assert rows[-1]["error"] == ERROR and rows[-1]["objective"] == "" and rows[-1]["rank"] == ""


def test_terminal_table_and_bad_choices(sweep):
    runs = collect_runs(sweep)
    text = format_table(runs, "terminal")
    assert text.index("nested/trial_3") < text.index("0-optimizer.lr=0.01") < text.index("1-optimizer.lr=0.1")
    assert "val/loss (min)" in text and "DataError" in text
    with pytest.raises(ConfigError, match=r"'val/acx'.*did you mean 'val/acc'"):
        format_table(runs, "markdown", metrics=["val/acx"])
    with pytest.raises(ConfigError, match="'html'"):
        format_table(runs, "html")


def test_learning_curves_read_back_what_was_written(sweep):
    best = rank(collect_runs(sweep))[0]
    curves = learning_curves(best, ["val/loss", "train/loss", "val/f1"])
    assert set(curves) == {"val/loss", "train/loss"}
    assert curves["val/loss"] == curve(2.75)
    assert curves["train/loss"] == [(step, value - 0.25) for step, value in curve(2.75)]


def test_write_report_writes_markdown_csv_and_png(sweep, tmp_path):
    paths = write_report(sweep, out_dir=tmp_path / "out", top=2)
    assert set(paths) == {"markdown", "csv", "png"} and all(p.parent == tmp_path / "out" for p in paths.values())
    png = paths["png"].read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000
    markdown = paths["markdown"].read_text()
    assert "4 runs: 2 completed, 1 pruned, 1 failed; best nested/trial_3" in markdown
    assert "`trainer.max_steps=100`" in markdown and "(report.png)" in markdown
    assert markdown.index("nested/trial_3 |") < markdown.index("1-optimizer.lr=0.1 |")
    assert len(list(csv.reader(paths["csv"].open()))) == 5


def test_plot_report_copes_with_a_sweep_where_every_run_failed(tmp_path):
    runs = [record("a", "failed", None), record("b", "failed", None)]
    png = plot_report(runs, tmp_path / "failed.png").read_bytes()
    assert png.startswith(PNG_MAGIC)


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "attnfit.cli.report", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_cli_prints_the_best_run_first_and_writes_the_report(sweep, tmp_path):
    proc = cli(str(sweep), "--out", str(tmp_path), "--top", "1")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.index("nested/trial_3") < out.index("0-optimizer.lr=0.01") < out.index("1-optimizer.lr=0.1")
    for name in ("report.md", "report.csv", "report.png"):
        assert f"wrote {tmp_path / name}" in out and (tmp_path / name).exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("missing", "sweep directory '{tmp}/missing' does not exist"),
        ("", "no run directories with status.json under '{tmp}'"),
    ],
)
def test_cli_explains_a_bad_directory_without_a_traceback(tmp_path, args, message):
    proc = cli(str(tmp_path / args))
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: " + message.format(tmp=tmp_path)
    assert "Traceback" not in proc.stderr and not list(tmp_path.iterdir())


def test_a_search_directory_gets_optunas_plots_as_png(tmp_path):
    import optuna

    from attnfit.runs.report import search_plots

    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}")
    for lr, heads in ((1e-3, 2), (3e-3, 4), (1e-2, 2), (3e-4, 4)):
        trial = study.ask()
        trial.suggest_float("optimizer.lr", 1e-4, 1e-1, log=True)
        trial.suggest_int("heads", 2, 4)
        for step in (2, 4):
            trial.report(lr * heads / step, step)
        study.tell(trial, lr * heads)
    assert search_plots(tmp_path / "nowhere", tmp_path) == {}  # a multirun: no study, no plots
    paths = search_plots(tmp_path, tmp_path / "out")
    assert sorted(paths) == ["optuna_history", "optuna_importances", "optuna_intermediate"]
    for path in paths.values():
        assert path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 5000
