"""The ``README.md`` model card every export writes: what the model does, what it was trained on, how well it did
(the run's own ``metrics.json``), how to reproduce it, what not to use it for, and the Hugging Face Hub's
``model-index`` metadata block so the Hub shows the results."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import yaml

CARD = "README.md"
PIPELINE_TAGS = {
    "mlm": "fill-mask",
    "electra": "fill-mask",
    "clm": "text-generation",
    "classification": "text-classification",
    "qa": "question-answering",
    "seq2seq": "text2text-generation",
}
TASK_NAMES = {
    "mlm": "Masked language modelling",
    "electra": "ELECTRA replaced-token detection (pretraining)",
    "clm": "Causal language modelling",
    "classification": "Text classification",
    "qa": "Extractive question answering",
    "seq2seq": "Sequence-to-sequence generation",
}
METRIC_TYPES = {"acc": "accuracy", "f1": "f1", "loss": "loss", "ppl": "perplexity", "perplexity": "perplexity"}
USES = {
    "mlm": "filling in masked tokens, and as the pretrained encoder for fine-tuning (attnfit-finetune pretrained=…)",
    "electra": "as the pretrained encoder for fine-tuning (attnfit-finetune pretrained=…)",
    "clm": "generating continuations of text like its training text, and as a backbone for fine-tuning",
    "classification": "labelling texts like those of its training data with one of its labels",
    "qa": "extracting the answer span to a question from a given passage",
    "seq2seq": "mapping input texts to output texts like those of its training pairs",
}


def read_metrics(run_dir: Path) -> dict[str, float]:
    """The numeric entries of a run's ``metrics.json``; empty when there is none (an import, a bare export)."""
    try:
        data = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def reproducing_command(run_dir: Path, run_config: dict[str, Any] | None) -> str | None:
    """The command line that trained the model: its entry point and the overrides the run recorded."""
    if run_config is None:
        return None
    overrides = None
    try:
        status = json.loads((run_dir / "status.json").read_text())
        overrides = status.get("overrides") if isinstance(status, dict) else None
    except (OSError, ValueError):
        pass
    if overrides is None:
        try:
            overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
        except (OSError, yaml.YAMLError):
            overrides = None
    entry = "attnfit-finetune" if "pretrained" in run_config else "attnfit-train"
    if not isinstance(overrides, list):
        return f"{entry} …  # the run's overrides were not recorded; the resolved config below is complete"
    return " ".join([entry, *(shlex.quote(str(o)) for o in overrides)])


def describe_data(run_config: dict[str, Any] | None) -> tuple[str, str]:
    """``(human description, dataset id for the Hub metadata)`` of the run's data."""
    data = (run_config or {}).get("data") or {}
    source = data.get("source")
    if source == "hub":
        name = str(data.get("path"))
        subset = f" ({data['subset']})" if data.get("subset") else ""
        return f"the Hugging Face dataset `{name}`{subset}", name
    if source == "files":
        files = [f"`{data[s]}`" for s in ("train", "validation", "test") if data.get(s)]
        return f"local files {', '.join(files) or '(not recorded)'}", "local-files"
    if source == "embedded":
        task = (run_config or {}).get("task", {}).get("name", "")
        return f"attnfit's embedded offline toy data for {task} (not a real-world corpus)", f"attnfit-embedded-{task}"
    return "not recorded", "unknown"


def _metric_rows(metrics: dict[str, float]) -> list[tuple[str, str, str, float]]:
    """``(split, name, Hub metric type, value)`` for test metrics, else validation ones."""
    for split, prefix in (("test", "test/"), ("validation", "val/")):
        rows = [
            (split, key.removeprefix(prefix), METRIC_TYPES.get(key.removeprefix(prefix), key.removeprefix(prefix)), v)
            for key, v in sorted(metrics.items())
            if key.startswith(prefix)
        ]
        if rows:
            return rows
    return []


def model_card(record: Any, run_dir: Path, fmt: str, name: str) -> str:
    """The model card's text for ``record`` (a :class:`~attnfit.pretrained.ModelRecord`) from ``run_dir``."""
    task, run_config = record.task, record.run_config
    metrics = read_metrics(run_dir)
    data_text, dataset = describe_data(run_config)
    base = (record.hf or {}).get("source")
    pipeline = PIPELINE_TAGS.get(task)
    rows = _metric_rows(metrics)
    meta: dict[str, Any] = {
        "library_name": "transformers" if fmt == "transformers" else "attnfit",
        "tags": ["attnfit", task],
    }
    if pipeline:
        meta["pipeline_tag"] = pipeline
    if base and (record.hf or {}).get("from_hub"):  # the Hub links a repository id, not a local path
        meta["base_model"] = base
    if run_config is not None:
        meta["datasets"] = [dataset]
    if rows:
        meta["model-index"] = [
            {
                "name": name,
                "results": [
                    {
                        "task": {"type": pipeline or task, "name": TASK_NAMES.get(task, task)},
                        "dataset": {"name": data_text, "type": dataset, "split": rows[0][0]},
                        "metrics": [
                            {"type": kind, "value": round(value, 6), "name": f"{split} {metric}"}
                            for split, metric, kind, value in rows
                        ],
                    }
                ],
            }
        ]
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "", f"# {name}", ""]
    lines += [f"{TASK_NAMES.get(task, task)} model trained with attnfit."]
    if base:
        lines += ["", f"Base model: `{base}` (Hugging Face format), imported into attnfit and fine-tuned there."]
    if record.label_names:
        lines += ["", f"Labels: {', '.join(f'`{label}`' for label in record.label_names)}."]
    lines += ["", "## Training data", "", f"Trained on {data_text}."]
    lines += ["", "## Results", ""]
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {key} | {value:.4g} |" for key, value in sorted(metrics.items())]
        lines += ["", f"From the run's `metrics.json` ({run_dir})."]
    else:
        lines += ["No metrics recorded (the model was exported without its run directory's `metrics.json`)."]
    lines += ["", "## How to use", "", "```python"]
    if fmt == "transformers":
        auto = {"mlm": "AutoModelForMaskedLM", "clm": "AutoModelForCausalLM"}.get(
            task, "AutoModelForSequenceClassification"
        )
        lines += [f"from transformers import {auto}, AutoTokenizer", f'model = {auto}.from_pretrained("{name}")']
        lines += [f'tokenizer = AutoTokenizer.from_pretrained("{name}")']
    else:
        lines += ["import attnfit", f'model, tokenizer = attnfit.load_pretrained("{name}")']
    lines += ["```"]
    command = reproducing_command(run_dir, run_config)
    if command:
        lines += ["", "## Reproduce", "", "```bash", command, "```"]
    lines += ["", "## Intended use and limits", ""]
    lines += [f"Intended for {USES.get(task, 'the task it was trained on')}."]
    lines += [
        "It knows only what its training data held: expect errors on text unlike it (other domains, languages,",
        "lengths beyond its maximum of "
        + f"{record.model_config.get('max_len', '?')} tokens), and biases of that data.",
        "The metrics above come from its own validation/test splits; measure it on your data before relying on it.",
        "Not for decisions about people without human review.",
    ]
    if run_config is not None:
        lines += ["", "## Resolved config", "", "```yaml", yaml.safe_dump(run_config, sort_keys=False).rstrip(), "```"]
    return "\n".join(lines) + "\n"


def write_model_card(record: Any, run_dir: Path, out: Path, fmt: str, name: str | None = None) -> Path:
    """Write ``out/README.md``; ``name`` (the Hub repository, else the directory's name) titles it."""
    path = out / CARD
    path.write_text(model_card(record, run_dir, fmt, name or out.name), encoding="utf-8")
    return path
