"""Predictions from a saved model, one input at a time, by its task (``Task.predict``): labels, generated text,
filled masks, translations or answers, with attention heat maps on request."""

from __future__ import annotations

import json
import math
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
            raise DataError(f"input file {path} {'is a directory' if path.is_dir() else 'does not exist'}")
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
    check_counts(cfg)
    inputs = read_inputs(cfg, free)
    out = output_dir(cfg.out, "out")
    artifact = load_artifact(cfg.checkpoint, cfg.get("weights"))
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


# Options of attnfit-predict and attnfit-eval that count something: a whole number ≥ 1 (null: the default), so
# that 0 or a negative number stops here instead of inside a model (top_k) or as an empty result (nbest).
COUNTS = {
    "beam_size": "an integer ≥ 1 (1 = greedy), or null for the checkpoint's",
    "top_k": "an integer ≥ 1 (sample from the k likeliest tokens), or null for no limit",
    "max_new_tokens": "an integer ≥ 1",
    "nbest": "an integer ≥ 1 (how many answers or translations to list), or null for the task's default",
    "max_answer_len": "an integer ≥ 1 (tokens), or null for the checkpoint's",
    "batch_size": "an integer ≥ 1",
}


def check_counts(cfg: DictConfig) -> None:
    """ConfigError naming the first option of :data:`COUNTS` in ``cfg`` that is not a whole number ≥ 1; a
    negative ``temperature`` (0 is greedy) too."""
    for key, rule in COUNTS.items():
        value = cfg.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{key}={value!r} must be {rule}")
    temperature = cfg.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature < math.inf
    ):
        raise ConfigError(f"temperature={temperature!r} must be a number ≥ 0 (0 = greedy, 1 = the model's own)")
