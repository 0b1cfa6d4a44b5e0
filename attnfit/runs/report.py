"""Sweep reports: rank the runs of a Hydra multirun or an Optuna search; show them as a table, CSV and PNG.

Reads only what runs leave behind (``status.json``, ``metrics.json``, TensorBoard events), so it works on a sweep
that is still going or ran elsewhere, without Lightning or Hydra.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnfit.errors import ConfigError, DataError, check_choice, choice_error
from attnfit.runs.status import STATUS_FILE

logger = logging.getLogger("attnfit")

FORMATS = ("terminal", "markdown", "csv")
MODES = ("min", "max")
STATUS_ORDER = {"completed": 0, "pruned": 1, "failed": 2}  # any other status ranks after these
KEY_METRICS = ("val/loss", "val/ppl", "val/acc", "val/f1", "test/acc", "test/f1", "step")
MAX_DEFAULT_METRICS = 6
ERROR_WIDTH = 60  # error column in terminal and markdown; CSV keeps the whole message
MAX_BARS = 40  # bars in the PNG; a bigger sweep is in the tables


@dataclass
class RunRecord:
    """One run of a sweep, as its ``status.json`` and ``metrics.json`` describe it."""

    name: str  # path relative to the sweep directory
    path: Path
    status: str
    objective: float | None
    metric: str
    mode: str
    error: str | None = None
    seconds: float | None = None
    overrides: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    resumed: int = 0  # times a re-run of the sweep continued it from its checkpoint
    skipped: int = 0  # times a re-run of the sweep found it completed and left it


# --- collecting -------------------------------------------------------------------------------------------------


def collect_runs(sweep_dir: str | Path) -> list[RunRecord]:
    """Every run under ``sweep_dir`` (``status.json`` up to two levels down), in natural name order."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        what = "is not a directory" if sweep_dir.exists() else "does not exist"
        raise DataError(f"sweep directory {str(sweep_dir)!r} {what}")
    files = {*sweep_dir.glob(STATUS_FILE), *sweep_dir.glob(f"*/{STATUS_FILE}"), *sweep_dir.glob(f"*/*/{STATUS_FILE}")}
    runs = [run for run in (_read_run(path, sweep_dir) for path in files) if run is not None]
    if not runs:
        skipped = f" ({len(files)} unreadable, see the warnings)" if files else ""
        raise DataError(f"no run directories with {STATUS_FILE} under {str(sweep_dir)!r}{skipped}")
    return sorted(runs, key=lambda run: _natural(run.name))


def _read_run(status_path: Path, sweep_dir: Path) -> RunRecord | None:
    """One run, or ``None`` with a warning: a half-written or foreign file must not hide the rest of the sweep."""
    try:
        record = json.loads(status_path.read_text())
    except (OSError, ValueError) as error:
        logger.warning("skipping %s: %s", status_path, error)
        return None
    if not isinstance(record, dict):
        logger.warning("skipping %s: not a JSON object", status_path)
        return None
    mode = str(record.get("mode") or "min")
    if mode not in MODES:
        logger.warning("skipping %s: mode %r is neither 'min' nor 'max'", status_path, mode)
        return None
    run_dir = status_path.parent
    metrics = _read_metrics(run_dir / "metrics.json")
    metric = str(record.get("optimized_metric") or "")
    metric = "" if metric == "None" else metric  # write_status stringifies a missing optimized_metric
    objective = _as_float(record.get("objective"))
    if objective is None and record.get("status") == "completed":
        objective = _as_float(metrics.get(metric))  # an older status.json without the value
    overrides = record.get("overrides")
    error = record.get("error")
    name = run_dir.relative_to(sweep_dir).as_posix()
    return RunRecord(
        name=sweep_dir.resolve().name if name == "." else name,
        path=run_dir,
        status=str(record.get("status") or "unknown"),
        objective=objective,
        metric=metric,
        mode=mode,
        error=None if error is None else str(error),
        seconds=_as_float(record.get("seconds")),
        overrides=[str(o) for o in overrides] if isinstance(overrides, list) else [],
        metrics=metrics,
        resumed=_count(record.get("resumed")),
        skipped=_count(record.get("skipped")),
    )


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _read_metrics(path: Path) -> dict[str, float]:
    """The numeric entries of ``metrics.json``; empty when the run did not finish."""
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        logger.warning("ignoring %s: %s", path, error)
        return {}
    if not isinstance(record, dict):
        return {}
    return {str(k): float(v) for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _as_float(value: Any) -> float | None:
    """A finite number or ``None``: NaN and missing objectives rank last, not first."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _natural(name: str) -> list[Any]:
    """Sort key putting ``trial_2`` before ``trial_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


# --- ranking ----------------------------------------------------------------------------------------------------


def rank(runs: list[RunRecord], warn: bool = True) -> list[RunRecord]:
    """Completed runs best first, then pruned (by objective where they have one), then failed.

    Direction comes from the first run's mode; runs that disagree are ranked by it anyway, with a warning.
    """
    if not runs:
        return []
    mode = runs[0].mode
    if warn:
        _warn_if_mixed(runs)
    sign = -1.0 if mode == "max" else 1.0

    def key(run: RunRecord) -> tuple[Any, ...]:
        group = STATUS_ORDER.get(run.status, len(STATUS_ORDER))
        missing = run.objective is None or group > STATUS_ORDER["pruned"]
        return group, missing, 0.0 if missing else sign * run.objective, _natural(run.name)

    return sorted(runs, key=key)


def _warn_if_mixed(runs: list[RunRecord]) -> None:
    """Objectives of different metrics or directions do not compare: say so rather than rank silently."""
    first = runs[0]
    modes = sorted({run.mode for run in runs})
    if len(modes) > 1:
        logger.warning(
            "runs disagree on the mode (%s); ranking by %r, the mode of %s", ", ".join(modes), first.mode, first.name
        )
    metrics = sorted({run.metric for run in runs})
    if len(metrics) > 1:
        logger.warning("runs optimise different metrics (%s): their objectives do not compare", ", ".join(metrics))


def best_run(runs: list[RunRecord]) -> RunRecord | None:
    """The best completed run with an objective, if any."""
    ranked = rank(runs, warn=False)
    return ranked[0] if ranked and _is_ranked(ranked[0]) else None


def _is_ranked(run: RunRecord) -> bool:
    return run.status == "completed" and run.objective is not None


# --- tables -----------------------------------------------------------------------------------------------------


def default_metrics(runs: list[RunRecord]) -> list[str]:
    """The objective's metric plus the key metrics every completed run has (all runs', if none completed)."""
    if not runs:
        return []
    with_metrics = [run for run in runs if run.metrics]
    pool = [run for run in with_metrics if run.status == "completed"] or with_metrics
    chosen = [runs[0].metric] if any(runs[0].metric in run.metrics for run in pool) else []
    for name in KEY_METRICS:
        if name not in chosen and pool and all(name in run.metrics for run in pool):
            chosen.append(name)
    return chosen[:MAX_DEFAULT_METRICS]


def check_metrics(runs: list[RunRecord], metrics: list[str]) -> None:
    """A metric that no run recorded is a typo, not an empty column."""
    available = sorted({name for run in runs for name in run.metrics})
    for name in metrics:
        if name in available:
            continue
        if not available:
            raise ConfigError(f"metric {name!r} cannot be shown: no run of this sweep has a metrics.json")
        raise choice_error("metric", name, available, ConfigError)


def shared_overrides(runs: list[RunRecord]) -> list[str]:
    """Overrides every run has: the tables show only what varies, the report lists these once."""
    if len(runs) < 2:
        return []
    common = set(runs[0].overrides).intersection(*(run.overrides for run in runs[1:]))
    return [o for o in runs[0].overrides if o in common]


def format_table(runs: list[RunRecord], fmt: str = "terminal", metrics: list[str] | None = None) -> str:
    """The ranked runs as a terminal table (plain text), a markdown table or CSV."""
    check_choice("table format", fmt, FORMATS)
    ranked = rank(runs, warn=False)
    metrics = _resolve_metrics(ranked, metrics)
    if fmt == "csv":
        return _csv_table(ranked, metrics)
    if fmt == "markdown":
        return _markdown_table(ranked, metrics)
    from rich.console import Console

    console = Console(file=io.StringIO(), width=200, record=True, color_system=None)
    console.print(terminal_table(ranked, metrics))
    return console.export_text()


def _resolve_metrics(runs: list[RunRecord], metrics: list[str] | None) -> list[str]:
    if metrics is None:
        return default_metrics(runs)
    check_metrics(runs, metrics)
    return list(metrics)


def _header(metrics: list[str]) -> list[str]:
    return ["rank", "run", "status", "overrides", "objective", *metrics, "seconds", "error"]


def _display_rows(ranked: list[RunRecord], metrics: list[str]) -> list[list[str]]:
    """Rows for people: rounded numbers, varying overrides only, errors on one short line."""
    shared = set(shared_overrides(ranked))
    rows = []
    for position, run in enumerate(ranked, start=1):
        rows.append(
            [
                str(position) if _is_ranked(run) else "-",
                run.name,
                run.status,
                " ".join(o for o in run.overrides if o not in shared),
                _number(run.objective),
                *(_number(run.metrics.get(name)) for name in metrics),
                _duration(run.seconds),
                _truncate(run.error or "", ERROR_WIDTH),
            ]
        )
    return rows


def terminal_table(runs: list[RunRecord], metrics: list[str] | None = None):
    """A rich ``Table`` of the ranked runs (best bold, failures red), to print with colours."""
    from rich.table import Table
    from rich.text import Text

    ranked = rank(runs, warn=False)
    metrics = _resolve_metrics(ranked, metrics)
    first = ranked[0] if ranked else None
    title = f"{len(ranked)} runs · objective {first.metric or '?'} ({first.mode})" if first else "no runs"
    table = Table(title=title)
    for column in _header(metrics):
        numeric = column in ("rank", "objective", "seconds", *metrics)
        table.add_column(column, justify="right" if numeric else "left", overflow="fold")
    styles = {"completed": "", "pruned": "yellow", "failed": "red"}
    for run, row in zip(ranked, _display_rows(ranked, metrics), strict=True):
        style = "bold" if run is first and _is_ranked(run) else styles.get(run.status, "dim")
        table.add_row(*(Text(cell) for cell in row), style=style)  # Text: "[" in overrides is not markup
    return table


def _markdown_table(ranked: list[RunRecord], metrics: list[str]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|") or " "

    header = _header(metrics)
    numeric = {"rank", "objective", "seconds", *metrics}
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if h in numeric else "---" for h in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in _display_rows(ranked, metrics)]
    return "\n".join(lines) + "\n"


def _csv_table(ranked: list[RunRecord], metrics: list[str]) -> str:
    """Rows for programs: full precision, all overrides, whole error messages."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_header(metrics))
    for position, run in enumerate(ranked, start=1):
        writer.writerow(
            [
                position if _is_ranked(run) else "",
                run.name,
                run.status,
                " ".join(run.overrides),
                _raw(run.objective),
                *(_raw(run.metrics.get(name)) for name in metrics),
                _raw(run.seconds),
                run.error or "",
            ]
        )
    return buffer.getvalue()


def _raw(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _number(value: float | None) -> str:
    if value is None:
        return ""
    if math.isfinite(value) and value.is_integer() and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.0f}" if math.isfinite(value) and abs(value) >= 1e4 else f"{value:.4g}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _truncate(text: str, width: int) -> str:
    text = " ".join(text.split())  # tracebacks and multi-line messages on one line
    return text if len(text) <= width else text[: width - 1] + "…"


def summary(runs: list[RunRecord]) -> str:
    """One line: how many runs ended how, and the best one."""
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items(), key=lambda kv: _status_order(kv[0])))
    line = f"{len(runs)} runs: {parts}"
    best = best_run(runs)
    if best is not None:
        line += f"; best {best.name} with {best.metric or 'objective'} = {_number(best.objective)} ({best.mode})"
    skipped, resumed = sum(run.skipped > 0 for run in runs), sum(run.resumed > 0 for run in runs)
    if skipped or resumed:
        line += f"; re-running the sweep skipped {skipped} completed and resumed {resumed} stopped"
    return line


def _status_order(status: str) -> int:
    return STATUS_ORDER.get(status, len(STATUS_ORDER))


# --- learning curves and plot -----------------------------------------------------------------------------------


def learning_curves(run: RunRecord, tags: list[str]) -> dict[str, list[tuple[int, float]]]:
    """``tag -> [(step, value), ...]`` from the run's TensorBoard events (else its CSV log, else its MLflow
    store); absent tags are left out."""
    curves = _tensorboard_scalars(run.path / "tensorboard", tags)
    return curves or _csv_scalars(run.path / "csv" / "metrics.csv", tags) or _mlflow_scalars(run.path, tags)


def _tensorboard_scalars(log_dir: Path, tags: list[str]) -> dict[str, list[tuple[int, float]]]:
    if not log_dir.is_dir():
        return {}
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    merged: dict[str, dict[int, float]] = {}
    for directory in sorted({path.parent for path in log_dir.rglob("events.out.tfevents.*")}):
        try:
            events = EventAccumulator(str(directory), size_guidance={SCALARS: 0})  # 0: keep every point
            events.Reload()
            available = set(events.Tags().get("scalars", []))
            for tag in tags:
                if tag in available:
                    merged.setdefault(tag, {}).update((e.step, float(e.value)) for e in events.Scalars(tag))
        except Exception as error:  # a damaged or half-written event file costs its curves, not the report
            logger.warning("cannot read TensorBoard events in %s: %s", directory, error)
    return {tag: sorted(points.items()) for tag, points in merged.items()}


def _csv_scalars(path: Path, tags: list[str]) -> dict[str, list[tuple[int, float]]]:
    """Lightning's ``CSVLogger`` file: runs logged with ``logger=csv`` have no TensorBoard events."""
    if not path.exists():
        return {}
    merged: dict[str, dict[int, float]] = {}
    try:
        with path.open(newline="") as file:
            for row in csv.DictReader(file):
                if not row.get("step"):
                    continue
                step = int(float(row["step"]))
                for tag in tags:
                    if row.get(tag):
                        merged.setdefault(tag, {})[step] = float(row[tag])
    except (OSError, ValueError) as error:
        logger.warning("cannot read %s: %s", path, error)
    return {tag: sorted(points.items()) for tag, points in merged.items()}


def _mlflow_scalars(run_dir: Path, tags: list[str]) -> dict[str, list[tuple[int, float]]]:
    """The metric histories in the run's own MLflow store (``logger=mlflow``'s default ``RUN_DIR/mlflow.db``)."""
    db = run_dir / "mlflow.db"
    if not db.exists():
        return {}
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        return {}
    merged: dict[str, dict[int, float]] = {}
    try:
        client = MlflowClient(tracking_uri=f"sqlite:///{db.resolve()}")
        experiments = [e.experiment_id for e in client.search_experiments()]
        for mlflow_run in client.search_runs(experiments) if experiments else []:
            for tag in tags:
                for metric in client.get_metric_history(mlflow_run.info.run_id, tag):
                    merged.setdefault(tag, {})[int(metric.step)] = float(metric.value)
    except Exception as error:  # a damaged store costs the curves, not the report
        logger.warning("cannot read the MLflow store %s: %s", db, error)
    return {tag: sorted(points.items()) for tag, points in merged.items()}


def plot_report(runs: list[RunRecord], out_png: str | Path, top: int = 3) -> Path:
    """One PNG: the objective of every configuration (best at the top) and the learning curves of the ``top``
    best completed runs."""
    from attnfit.viz import _pyplot, save_figure

    _check_top(top)
    plt = _pyplot()
    ranked = rank(runs, warn=False)
    shown = ranked[:MAX_BARS]
    fig, (bars, curves) = plt.subplots(
        1, 2, figsize=(15, max(4.0, 0.32 * len(shown) + 1.8)), gridspec_kw={"width_ratios": [1, 1.1]}
    )
    try:
        _plot_objectives(bars, ranked, shown, top)
        _plot_curves(curves, [run for run in ranked if _is_ranked(run)][:top])
        fig.suptitle(summary(ranked), fontsize=10)
        fig.tight_layout()
        return save_figure(fig, out_png)
    finally:
        plt.close(fig)  # also when drawing fails; closing twice is harmless


def _check_top(top: int) -> None:
    if top < 0:
        raise ConfigError(f"top must be 0 or more (the number of learning curves to draw), got {top}")


def _colour(index: int) -> str:
    return f"C{index % 10}"


def _plot_objectives(ax: Any, ranked: list[RunRecord], shown: list[RunRecord], top: int) -> None:
    """Horizontal bars; the ``top`` runs in the colours of their curves, pruned hatched, failed as red outlines."""
    shared = set(shared_overrides(ranked))
    values = [run.objective for run in shown if run.objective is not None]
    span = max((abs(v) for v in values), default=1.0) or 1.0
    labels = []
    for i, run in enumerate(shown):
        label = _truncate(" ".join(o for o in run.overrides if o not in shared) or run.name, 45)
        if run.status != "completed":
            label += f"  ({run.status})"
        labels.append(label)
        if run.objective is not None and run.status != "failed":
            completed = run.status == "completed"
            colour = _colour(i) if completed and i < top else ("lightsteelblue" if completed else "0.85")
            ax.barh(i, run.objective, color=colour, hatch=None if completed else "//", edgecolor="0.4")
            ax.text(run.objective, i, f" {_number(run.objective)}", va="center", fontsize=8)
        else:
            colour = "tab:red" if run.status == "failed" else "0.5"
            ax.barh(i, span, fill=False, edgecolor=colour, linestyle="--")  # empty: no objective to show
            note = run.status if not run.error else f"{run.status}: {_truncate(run.error, 60)}"
            ax.text(0.02 * span, i, note, va="center", fontsize=7, color=colour)
    ax.set_yticks(range(len(shown)), labels, fontsize=8)
    ax.invert_yaxis()  # best at the top
    ax.margins(x=0.15)
    first = ranked[0] if ranked else None
    if first is not None:
        ax.set_xlabel(f"{first.metric or 'objective'} ({'lower' if first.mode == 'min' else 'higher'} is better)")
    more = f" (best {len(shown)} of {len(ranked)})" if len(shown) < len(ranked) else ""
    ax.set_title(f"objective per configuration{more}", fontsize=10)


def _plot_curves(ax: Any, best: list[RunRecord]) -> None:
    """The objective's metric (solid) and ``train/loss`` (dashed; right axis unless the metric is a loss)."""
    tag = best[0].metric.removeprefix("best/") if best else ""
    twin = None
    drawn = False
    for i, run in enumerate(best):
        curves = learning_curves(run, [tag, "train/loss"])
        label = f"#{i + 1} {_truncate(run.name, 40)}"
        if tag in curves:
            ax.plot(
                *zip(*curves[tag], strict=True),
                color=_colour(i),
                label=label,
                marker="." if len(curves[tag]) < 30 else None,
            )
            drawn = True
        if "train/loss" in curves and tag != "train/loss":
            target = ax
            if not tag.endswith("loss"):
                twin = twin or ax.twinx()
                twin.set_ylabel("train/loss (dashed)")
                target = twin
            target.plot(*zip(*curves["train/loss"], strict=True), color=_colour(i), linestyle="--", alpha=0.6)
            drawn = True
    if not drawn:
        ax.text(0.5, 0.5, "no learning curves\n(no TensorBoard scalars in the best runs)", ha="center", va="center")
        ax.set_axis_off()
        return
    ax.set_xlabel("step")
    ax.set_ylabel(f"{tag} (solid)")
    ax.legend(fontsize=8)
    ax.set_title(f"learning curves of the best {len(best)}: {tag} solid, train/loss dashed", fontsize=10)


# --- writing ----------------------------------------------------------------------------------------------------


def write_report(
    sweep_dir: str | Path, out_dir: str | Path | None = None, top: int = 3, metrics: list[str] | None = None
) -> dict[str, Path]:
    """``report.md``, ``report.csv`` and ``report.png`` for the sweep, in ``out_dir`` (default: the sweep)."""
    sweep_dir = Path(sweep_dir)
    return save_report(rank(collect_runs(sweep_dir)), out_dir or sweep_dir, top, metrics, sweep_dir)


def save_report(
    runs: list[RunRecord],
    out_dir: str | Path,
    top: int = 3,
    metrics: list[str] | None = None,
    sweep_dir: str | Path | None = None,
) -> dict[str, Path]:
    """Write the three report files for runs already collected; returns ``{"markdown", "csv", "png"}`` paths."""
    _check_top(top)
    ranked = rank(runs, warn=False)
    metrics = _resolve_metrics(ranked, metrics)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out_dir / "report.md", "csv": out_dir / "report.csv", "png": out_dir / "report.png"}
    plot_report(ranked, paths["png"], top)
    paths["csv"].write_text(_csv_table(ranked, metrics))
    paths["markdown"].write_text(_markdown_report(ranked, metrics, sweep_dir, paths["png"].name))
    return paths


SEARCH_PLOTS = {  # file name -> Optuna's matplotlib plot
    "optuna_history.png": "plot_optimization_history",
    "optuna_importances.png": "plot_param_importances",
    "optuna_intermediate.png": "plot_intermediate_values",
}


def search_plots(sweep_dir: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """For an ``attnfit-search`` directory: Optuna's optimisation history, parameter importances and
    intermediate values as PNG files in ``out_dir`` (nothing for a Hydra multirun). A plot the study cannot
    draw yet (importances need two completed trials) is left out with a warning."""
    import warnings

    sweep_dir, out_dir = Path(sweep_dir), Path(out_dir)
    info_path, db = sweep_dir / "study.json", sweep_dir / "study.db"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    storage = f"sqlite:///{db.resolve()}" if db.exists() else info.get("storage")
    if not storage:
        return {}
    if "***" in storage:
        logger.warning("no Optuna plots: the study's storage URL (%s) needs its password", storage)
        return {}
    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    from attnfit.viz import _pyplot, save_figure

    plt = _pyplot()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=info.get("study_name"), storage=storage)
    except Exception as error:  # a corrupt or unreachable store must not cost the report already written
        logger.warning("no Optuna plots: cannot load the study from %s: %s", storage, str(error).splitlines()[0])
        return {}
    paths = {}
    for name, plot in SEARCH_PLOTS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                axes = getattr(optuna_plots, plot)(study)
            except Exception as error:  # too few trials, a single parameter, ...
                logger.warning("no %s: %s", name, str(error).splitlines()[0] if str(error) else type(error).__name__)
                continue
        fig = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        try:
            fig.tight_layout()
            paths[name.removesuffix(".png")] = save_figure(fig, out_dir / name)
        finally:
            plt.close(fig)
    return paths


def _markdown_report(ranked: list[RunRecord], metrics: list[str], sweep_dir: str | Path | None, png: str) -> str:
    title = Path(sweep_dir).resolve().name if sweep_dir is not None else "sweep"
    lines = [f"# Sweep report: {title}", ""]
    if sweep_dir is not None:
        lines += [f"Sweep directory: `{sweep_dir}`", ""]
    lines += [summary(ranked) + ".", ""]
    shared = shared_overrides(ranked)
    if shared:
        lines += ["Overrides shared by all runs: " + " ".join(f"`{o}`" for o in shared), ""]
    lines += [_markdown_table(ranked, metrics), f"![objective per configuration and learning curves]({png})", ""]
    return "\n".join(lines)
