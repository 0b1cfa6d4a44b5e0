"""Optimizer groups and learning-rate schedules."""

import itertools
import math

import pytest
import torch

from attnfit.errors import ConfigError
from attnfit.models import LanguageModel, ModelConfig
from attnfit.training.optim import build_optimizer, build_scheduler, decay_groups, lr_multiplier


def test_decay_groups_cover_every_parameter_once():
    model = LanguageModel(ModelConfig(vocab_size=50, dim=16))
    decay, no_decay = decay_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    ids = [id(p) for p in decay["params"] + no_decay["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))  # the tied weight appears once
    decayed = {id(p) for p in decay["params"]}
    assert id(model.backbone.embeddings.token.weight) not in decayed
    assert all(p.dim() == 2 for p in decay["params"])


def test_warmup_then_cosine_to_the_floor():
    values = [lr_multiplier(s, "cosine", 10, 110, 0.1) for s in range(120)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[60] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert values[110] == pytest.approx(0.1) and values[119] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(values[10:]))
    assert lr_multiplier(60, "linear", 10, 110, 0.0) == pytest.approx(0.5)
    assert lr_multiplier(500, "constant", 10, 110, 0.0) == 1.0


def test_scheduler_drives_the_optimizer():
    param = torch.nn.Parameter(torch.zeros(2, 2))
    optimizer = build_optimizer([{"params": [param], "weight_decay": 0.0}], lr=1.0)
    scheduler = build_scheduler(optimizer, "linear", total_steps=4, warmup_steps=0, min_lr_ratio=0.0)
    lrs = []
    for _ in range(4):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([1.0, 0.75, 0.5, 0.25])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -1.0}, "optimizer.lr=-1.0 must be > 0"),
        ({"weight_decay": -0.1}, "optimizer.weight_decay=-0.1 must be ≥ 0"),
        ({"name": "sgdd"}, "unknown optimizer 'sgdd'"),
    ],
)
def test_bad_optimizer_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        build_optimizer([{"params": [torch.nn.Parameter(torch.zeros(1))]}], **kwargs)


def test_bad_schedule_name():
    optimizer = build_optimizer([{"params": [torch.nn.Parameter(torch.zeros(1))]}])
    with pytest.raises(ConfigError, match="unknown scheduler 'cosin'.*did you mean 'cosine'"):
        build_scheduler(optimizer, "cosin", 10)


@pytest.mark.parametrize("lr", [float("inf"), float("nan"), 0.0])
def test_impossible_learning_rates_fail_the_config_check(lr):
    with pytest.raises(ConfigError, match=r"optimizer.lr=.* must be > 0 and finite"):
        build_optimizer([{"params": [torch.nn.Parameter(torch.zeros(1))]}], lr=lr)
