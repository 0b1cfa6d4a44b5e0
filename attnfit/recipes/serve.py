"""Serve a saved model: load it once, check the options, run uvicorn until stopped."""

from __future__ import annotations

from omegaconf import DictConfig

from attnfit.errors import ConfigError
from attnfit.options import container


def serve(cfg: DictConfig) -> None:
    if not cfg.get("checkpoint"):
        raise ConfigError("checkpoint=PATH is required: a run directory, a .ckpt file or an exported model")
    port = cfg.port
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"port={port!r} must be a whole number from 0 to 65535 (0: any free port)")
    limits = container(cfg.limits)
    for key, value in limits.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"limits.{key}={value!r} must be a positive number")
    import torch  # after the checks: a mistake is reported before the slow imports
    import uvicorn

    from attnfit.pretrained import build_model, load_artifact
    from attnfit.serve import Limits, create_app

    torch.set_num_threads(int(cfg.threads))
    artifact = load_artifact(cfg.checkpoint, cfg.get("weights"))
    app = create_app(artifact, build_model(artifact), Limits(**limits))
    print(f"serving {artifact.source} ({artifact.task}) on http://{cfg.host}:{port}/  (API docs: /docs)")
    uvicorn.run(app, host=str(cfg.host), port=port, log_level=str(cfg.log_level))
