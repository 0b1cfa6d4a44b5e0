"""Predictions from a saved model, one input at a time, by its task (``Task.predict``): labels, generated text,
filled masks, translations or answers, with attention heat maps on request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from attnfit.errors import AttnfitError, ConfigError, DataError
from attnfit.options import check_option_types, output_dir, write_text
from attnfit.pretrained import build_model, load_artifact
from attnfit.tasks import get_task


def read_inputs(cfg: DictConfig, free: dict[str, Any] | None = None) -> list[str]:
    """The inputs, one string each: ``text=``, ``question=`` with ``context=`` (joined by a tab), lines from
    standard input (``-``) or ``file=`` (one a line; a tab separates the two texts of a pair). ``free`` holds what
    the command line gave as free text (see attnfit.cli.predict); ``cfg`` what a Python caller set."""
    given = {key: value for key, value in (free or {}).items() if value is not None}
    for key in ("text", "question", "context", "file"):
        if key not in given and cfg.get(key) is not None:
            given[key] = str(cfg.get(key))
    if "question" in given or "context" in given:
        if "question" not in given or "context" not in given:
            raise ConfigError("give question=... and context=... together")
        return [f"{given['question']}\t{given['context']}"]
    sources = [key for key in ("text", "lines", "file") if key in given]
    if len(sources) > 1:
        raise ConfigError(f"give one of text=..., - (standard input) or file=..., not {' and '.join(sources)}")
    if "text" in given:
        if not given["text"].strip():
            raise DataError("text= is empty: give the text to predict on")
        return [given["text"]]
    if "lines" in given:
        lines = [line for line in given["lines"] if line.strip()]
        if not lines:
            raise DataError("standard input has no non-blank line to predict on")
        return lines
    if "file" in given:
        path = Path(given["file"])
        if not path.is_file():
            raise DataError(f"input file {path} does not exist")
        try:
            lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError as error:
            raise DataError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
        if not lines:
            raise DataError(f"{path} has no non-blank line to predict on")
        return lines
    raise ConfigError('nothing to predict: give text="...", file=inputs.txt or - (read standard input)')


def predict(cfg: DictConfig, free: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Print and write ``predictions.jsonl`` (and heat maps when ``heatmap=true``) to ``cfg.out``; ``free``: the
    command line's free text (:func:`read_inputs`)."""
    if not cfg.get("checkpoint"):
        raise ConfigError("checkpoint=PATH is required: a run directory, a .ckpt file or an exported model")
    check_option_types(cfg)
    check_beam_size(cfg.get("beam_size"))
    inputs = read_inputs(cfg, free)
    out = output_dir(cfg.out, "out")
    artifact = load_artifact(cfg.checkpoint)
    task = get_task(artifact.task)
    given = [key for key in ("question", "context") if (free or {}).get(key) is not None or cfg.get(key) is not None]
    unread = [key for key in given if key not in task.predict_keys]
    if unread:
        raise ConfigError(
            f"{'= and '.join(unread)}= are for question answering; {artifact.source} is a {artifact.task} model: "
            "give text=... (a tab separates the two texts of a pair)"
        )
    model = build_model(artifact).eval()
    torch.manual_seed(int(cfg.seed))
    try:  # heat maps are written as the inputs go
        results = [task.predict(model, artifact, text, cfg, out, i) for i, text in enumerate(inputs)]
    except OSError as error:
        raise AttnfitError(f"cannot write into out={out}: {error.strerror or error}") from None
    write_text(out / "predictions.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results))
    print(f"predictions written to {out / 'predictions.jsonl'}")
    return results


def check_beam_size(beam_size: Any) -> None:
    if beam_size is not None and (isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1):
        raise ConfigError(f"beam_size={beam_size!r} must be an integer ≥ 1 (1 = greedy), or null for the checkpoint's")
