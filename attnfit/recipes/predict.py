"""Predictions from a saved model, one input at a time, by its task (``Task.predict``): labels, generated text,
filled masks, translations or answers, with attention heat maps on request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from attnfit.errors import ConfigError, DataError
from attnfit.pretrained import build_model, load_artifact
from attnfit.tasks import get_task


def read_inputs(cfg: DictConfig) -> list[str]:
    """``text=`` or ``file=`` (one input a line; a tab separates the two texts of a pair, e.g. question and
    context), or ``question=`` with ``context=``."""
    if cfg.get("question") is not None or cfg.get("context") is not None:
        if cfg.get("question") is None or cfg.get("context") is None:
            raise ConfigError("give question=... and context=... together")
        return [f"{cfg.question}\t{cfg.context}"]
    if cfg.get("text") is not None and cfg.get("file"):
        raise ConfigError("give text=... or file=..., not both")
    if cfg.get("text") is not None:
        return [str(cfg.text)]
    if cfg.get("file"):
        path = Path(cfg.file)
        if not path.is_file():
            raise DataError(f"input file {path} does not exist")
        try:
            lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError as error:
            raise DataError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
        if not lines:
            raise DataError(f"{path} has no non-blank line to predict on")
        return lines
    raise ConfigError('nothing to predict: give text="..." or file=inputs.txt')


def predict(cfg: DictConfig) -> list[dict[str, Any]]:
    """Print and write ``predictions.jsonl`` (and heat maps when ``heatmap=true``) to ``cfg.out``."""
    if not cfg.get("checkpoint"):
        raise ConfigError("checkpoint=PATH is required: a run directory, a .ckpt file or an exported model")
    check_beam_size(cfg.get("beam_size"))
    inputs = read_inputs(cfg)
    artifact = load_artifact(cfg.checkpoint)
    task = get_task(artifact.task)
    model = build_model(artifact).eval()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(int(cfg.seed))
    results = [task.predict(model, artifact, text, cfg, out, i) for i, text in enumerate(inputs)]
    with open(out / "predictions.jsonl", "w", encoding="utf-8") as f:
        for result in results:
            f.write(json.dumps(result, ensure_ascii=False) + "\n")
    print(f"predictions written to {out / 'predictions.jsonl'}")
    return results


def check_beam_size(beam_size: Any) -> None:
    if beam_size is not None and (isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1):
        raise ConfigError(f"beam_size={beam_size!r} must be an integer ≥ 1 (1 = greedy), or null for the checkpoint's")
