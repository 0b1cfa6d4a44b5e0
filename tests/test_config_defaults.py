"""Defaults live in one place: YAML is the source for command-line runs, and a Python dataclass default that a
YAML twin also sets must agree with it (where every YAML variant of the group agrees on one value)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from attnfit.cli import CONFIG_DIR
from attnfit.models import AttentionConfig, ClassifierConfig, EncoderConfig, ModelConfig
from attnfit.models.qa import QAConfig
from attnfit.models.seq2seq.config import CrossAttentionConfig, DecoderConfig

GROUPS = {  # config group (or task file) -> the dataclass it fills
    "encoder": EncoderConfig,
    "attention": AttentionConfig,
    "model": ModelConfig,
    "decoder": DecoderConfig,
}


def _variants(group: str) -> list[dict]:
    return [yaml.safe_load(path.read_text()) for path in sorted((Path(CONFIG_DIR) / group).glob("*.yaml"))]


def _defaults(cls: type) -> dict:
    return {
        f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING and f.name != "name"
    }


def _disagreements(cls: type, variants: list[dict]) -> list[str]:
    problems = []
    for key, default in _defaults(cls).items():
        # null in YAML means "resolved at run time" (e.g. follow the encoder), and ${...} an interpolation
        values = {repr(v[key]) for v in variants if v.get(key) is not None and not str(v[key]).startswith("${")}
        if len(values) == 1 and values != {repr(default)}:
            problems.append(f"{cls.__name__}.{key} = {default!r} in Python, {values.pop()} in YAML")
    return problems


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_python_defaults_agree_with_their_yaml_twins(group):
    assert _disagreements(GROUPS[group], _variants(group)) == []


def test_task_head_defaults_agree_with_their_yaml_twins():
    tasks = Path(CONFIG_DIR) / "task"
    classification = yaml.safe_load((tasks / "classification.yaml").read_text())
    qa = yaml.safe_load((tasks / "qa.yaml").read_text())["task"]
    seq2seq = yaml.safe_load((tasks / "seq2seq.yaml").read_text())["task"]["cross_attention"]
    assert _disagreements(ClassifierConfig, [classification]) == []
    assert _disagreements(QAConfig, [qa]) == []
    assert _disagreements(CrossAttentionConfig, [seq2seq]) == []


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize("config_name", ["train", "finetune"])
def test_every_config_group_option_composes(config_name):
    """Each option of each group composes on top of the entry point's defaults (an experiment may need data)."""
    skip = {"hydra", "experiment", "hparams_search", "debug", "paths"}
    groups = [p.name for p in Path(CONFIG_DIR).iterdir() if p.is_dir() and p.name not in skip]
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        for group in groups:
            for option in _options(group):
                if config_name == "finetune" and group in ("encoder", "attention", "model", "tokenizer"):
                    continue  # a fine-tuning run takes these from its pretrained model
                cfg = compose(config_name, overrides=[f"{group}={option}"])
                assert cfg.get(group) is not None or group == "decoder", (group, option)


def test_data_fallbacks_in_tasks_agree_with_the_data_configs():
    """``data.get(KEY, FALLBACK)`` in a task module: the fallback is what a data config without KEY gets, so it
    must be the value the data configs give KEY (one of them, where they differ on purpose)."""
    import re

    values: dict[str, set[str]] = {}
    for path in (Path(CONFIG_DIR) / "data").glob("*.yaml"):
        for key, value in yaml.safe_load(path.read_text()).items():
            values.setdefault(key, set()).add(repr(value))
    tasks = Path(CONFIG_DIR).parent / "attnfit" / "tasks"
    problems = []
    for path in tasks.glob("*.py"):
        for key, fallback in re.findall(r'data\.get\("(\w+)", ([^)]+)\)', path.read_text()):
            if key in values and repr(yaml.safe_load(fallback)) not in values[key]:
                problems.append(f"{path.name}: data.{key} falls back to {fallback}, configs/data say {values[key]}")
    assert problems == []


def test_every_experiment_composes_into_a_checked_config():
    """Each named recipe composes on its entry point (fine-tuning recipes on attnfit-finetune) and passes the checks
    every run makes before reading data, so a recipe in the README cannot be broken by a renamed key."""
    from attnfit.recipes.checks import check_common

    finetune_only = {"sms_spam", "sentence_finetune"}
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        for experiment in _options("experiment"):
            entry = "finetune" if experiment in finetune_only else "train"
            cfg = compose(entry, overrides=[f"experiment={experiment}"], return_hydra_config=False)
            assert cfg.get("run_name"), experiment
            check_common(cfg)
