"""Loggers from the ``logger`` config group, and what every one of them is sent: figures, text, the final
hyper-parameters with the final metrics, and the resolved config.

``cfg.logger`` maps a name to a Lightning logger spec (``_target_`` plus its arguments), so ``logger=[tensorboard,
mlflow]`` selects several configs of the group and ``+logger.NAME._target_=CLASS`` adds any other logger. Lightning
sends metrics to all of them; the helpers here send what Lightning leaves to each logger's own API. Optional
packages (mlflow, wandb) are imported only when their logger is chosen.
"""

from __future__ import annotations

import io
import logging
import os
import socket
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from attnfit.errors import ConfigError
from attnfit.options import lightning_class

log = logging.getLogger("attnfit")

# The package each optional logger needs, for a one-line error instead of Lightning's traceback.
NEEDS = {"MLFlowLogger": "mlflow-skinny", "WandbLogger": "wandb", "CometLogger": "comet-ml", "NeptuneLogger": "neptune"}


def check_loggers(cfg: DictConfig) -> dict[str, type]:
    """``{name: class}`` of ``cfg.logger``; an entry without an importable Lightning logger class is a one-line
    ConfigError (checked before any data is read)."""
    example = (
        "+logger.{0}._target_=lightning.pytorch.loggers.CSVLogger (or choose logger=tensorboard|csv|mlflow|wandb, "
        "several as logger=[tensorboard,mlflow])"
    )
    return {
        str(name): lightning_class(f"logger.{name}", spec, Logger, example.format(name))
        for name, spec in (cfg.get("logger") or {}).items()
    }


def build_loggers(cfg: DictConfig) -> list[Logger]:
    """Instantiate every entry of ``cfg.logger`` (none: ``~logger``)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    loggers = []
    for name, cls in check_loggers(cfg).items():
        options = OmegaConf.to_container(cfg.logger[name], resolve=True)
        if cls.__name__ == "WandbLogger":
            _wandb_mode(options)
            _wandb_run(options, resuming=bool(cfg.get("ckpt_path")))
        if cls.__name__ == "MLFlowLogger":
            _mlflow_run(options, str(cfg.paths.output_dir), resuming=bool(cfg.get("ckpt_path")))
        try:
            logger = instantiate(options)
        except InstantiationException as error:
            cause = error.__cause__ or error
            package = NEEDS.get(cls.__name__)
            if isinstance(cause, ModuleNotFoundError) and package:
                raise ConfigError(f"logger.{name} needs the {package} package: pip install {package}") from None
            raise ConfigError(f"logger.{name} ({cls.__name__}): {str(cause).splitlines()[0]}") from None
        loggers.append(logger)
    return loggers


def _wandb_mode(options: dict[str, Any]) -> None:
    """``offline: auto`` (the preset): offline unless W&B's servers answer, so a run without network still logs
    (``wandb sync`` uploads it later). An explicit ``WANDB_MODE`` wins."""
    if options.get("offline") != "auto":
        return
    if os.environ.get("WANDB_MODE"):
        options["offline"] = os.environ["WANDB_MODE"] in ("offline", "dryrun")
        return
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        socket.create_connection((host.split(":")[0], 443), timeout=2).close()
        options["offline"] = False
    except OSError:
        options["offline"] = True
        log.info("W&B: %s cannot be reached; logging offline (wandb sync uploads the run later)", host)


def _wandb_run(options: dict[str, Any], resuming: bool) -> None:
    """A run resumed in its directory continues the W&B run its newest ``wandb/*run-DATE-ID`` folder belongs to
    (its ``id``; Lightning's WandbLogger passes ``resume="allow"``): offline, ``wandb sync`` uploads both halves
    into that one run."""
    if not resuming or options.get("id"):
        return
    folders = Path(options.get("save_dir") or ".").glob("wandb/*run-*-*")
    started = sorted(folder.name.split("run-", 1)[1] for folder in folders)  # "YYYYMMDD_HHMMSS-ID", oldest first
    if started:
        options["id"] = started[-1].split("-", 1)[1]
        log.info("W&B: continuing run %s", options["id"])


RUN_DIR_TAG = "attnfit.run_dir"


def _mlflow_run(options: dict[str, Any], run_dir: str, resuming: bool) -> None:
    """Tag the MLflow run with its run directory; a run resumed in that directory (``ckpt_path=auto`` or the
    directory itself) continues the newest MLflow run so tagged instead of opening a second one."""
    options["tags"] = {**(options.get("tags") or {}), RUN_DIR_TAG: run_dir}
    if not resuming or options.get("run_id"):
        return
    try:
        from mlflow.tracking import MlflowClient
    except ModuleNotFoundError:  # instantiating the logger then names the package to install
        return
    client = MlflowClient(tracking_uri=options.get("tracking_uri"))
    experiment = client.get_experiment_by_name(options.get("experiment_name") or "lightning_logs")
    if experiment is None:
        return
    # The store filters by tag (one shared store may hold thousands of runs); a quote in the path would end
    # MLflow's string literal, so such a path is matched here instead, over the newest runs.
    tagged = "" if "'" in run_dir else f"tags.`{RUN_DIR_TAG}` = '{run_dir}'"
    runs = client.search_runs([experiment.experiment_id], tagged, order_by=["attributes.start_time DESC"])
    earlier = [r for r in runs if r.data.tags.get(RUN_DIR_TAG) == run_dir]
    if earlier:
        options["run_id"] = earlier[0].info.run_id
        log.info("MLflow: continuing run %s of %s", options["run_id"], run_dir)


def log_figure(loggers: list[Logger], tag: str, fig: Any, step: int) -> None:
    """A matplotlib figure to every logger that takes images (TensorBoard, MLflow, W&B); closes it."""
    import matplotlib.pyplot as plt

    try:
        for logger in loggers:
            kind = type(logger).__name__
            if kind == "TensorBoardLogger":
                logger.experiment.add_figure(tag, fig, global_step=step, close=False)
            elif kind == "MLFlowLogger":
                logger.experiment.log_figure(logger.run_id, fig, f"{tag}/step{step:06d}.png")
            elif kind == "WandbLogger":
                from PIL import Image

                logger.log_image(key=tag, images=[Image.open(io.BytesIO(_png(fig)))], step=step)
    finally:
        plt.close(fig)


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def log_text(loggers: list[Logger], tag: str, text: str, step: int) -> None:
    """Markdown text (decoded samples) to every logger that takes text."""
    for logger in loggers:
        kind = type(logger).__name__
        if kind == "TensorBoardLogger":
            logger.experiment.add_text(tag, text, global_step=step)
        elif kind == "MLFlowLogger":
            logger.experiment.log_text(logger.run_id, text, f"{tag}/step{step:06d}.md")
        elif kind == "WandbLogger":
            logger.log_text(key=tag, columns=["text"], data=[[text]], step=step)


def log_final(loggers: list[Logger], hparams: dict[str, Any], metrics: dict[str, float], config: Path) -> None:
    """The run's hyper-parameters with its final metrics (TensorBoard's hparams tab, MLflow params + metrics,
    W&B config + summary) and the resolved ``config.yaml`` as an artifact where the logger stores files."""
    for logger in loggers:
        kind = type(logger).__name__
        if kind == "TensorBoardLogger":
            logger.log_hyperparams(hparams, {f"hparams/{k}": v for k, v in metrics.items()})
            if config.exists():
                logger.experiment.add_text("config", f"```yaml\n{config.read_text()}\n```")
            continue
        if kind == "MLFlowLogger":  # MLflow params are write-once: a continued run keeps its first values
            logged = logger.experiment.get_run(logger.run_id).data.params
            logger.log_hyperparams({k: v for k, v in hparams.items() if k not in logged})
        else:
            logger.log_hyperparams(hparams)
        if kind in ("MLFlowLogger", "CSVLogger"):
            logger.log_metrics({f"final/{k}": v for k, v in metrics.items()})
        if kind == "MLFlowLogger" and config.exists():
            logger.experiment.log_artifact(logger.run_id, str(config))
        elif kind == "WandbLogger":
            logger.experiment.summary.update({f"final/{k}": v for k, v in metrics.items()})
            if config.exists():  # W&B writes its own config.yaml there: attnfit's goes under another name
                copy = Path(logger.experiment.dir) / "run_config.yaml"
                copy.write_text(config.read_text())
                logger.experiment.save(str(copy), base_path=str(copy.parent), policy="now")
    for logger in loggers:
        logger.finalize("success")
