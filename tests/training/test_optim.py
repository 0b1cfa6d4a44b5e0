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


def test_a_time_budget_ends_the_decay_when_time_runs_out_whatever_the_step():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer([{"params": [param], "weight_decay": 0.0}], lr=1.0)
    clock = {"used": 0.0}  # the fraction of trainer.max_time spent, as the run's Timer reports it
    scheduler = build_scheduler(optimizer, "cosine", 1000, 2, 0.1, budget="time", time_used=lambda: clock["used"])
    lrs = []
    for used in (0.0, 0.0, 0.0, 0.5, 0.5, 1.0, 1.0):  # a slow machine: 7 of the planned 1000 steps in the time
        clock["used"] = used
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    steps_only = lr_multiplier(6, "cosine", 2, 1000, 0.1)
    assert lrs[1] == pytest.approx(1.0) and lrs[2] == pytest.approx(lr_multiplier(3, "cosine", 2, 1000, 0.1))
    assert lrs[3] == pytest.approx(0.1 + 0.9 * 0.5) and lrs[6] == pytest.approx(0.1)  # time leads …
    assert steps_only > 0.99  # … where the steps alone would have barely begun the decay
    # and where the steps are ahead of the clock, they lead
    assert lr_multiplier(900, "cosine", 2, 1000, 0.1, time_used=0.2) == lr_multiplier(900, "cosine", 2, 1000, 0.1)


def test_a_time_budget_needs_a_time_limit_and_a_known_budget():
    optimizer = build_optimizer([{"params": [torch.nn.Parameter(torch.zeros(1))]}])
    with pytest.raises(ConfigError, match="scheduler.budget=time needs trainer.max_time"):
        build_scheduler(optimizer, "cosine", 10, budget="time")
    with pytest.raises(ConfigError, match="unknown scheduler.budget 'hours'.*steps, time"):
        build_scheduler(optimizer, "cosine", 10, budget="hours")


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


def _layerwise(opt: dict):
    """An optimizer from ``opt`` (the optimizer config group) over fine-tuning's layer-wise groups."""
    from attnfit.models.finetuning import layer_groups
    from attnfit.training.module import Optimization

    model = LanguageModel(ModelConfig(vocab_size=50, dim=16))
    layers = layer_groups(model.backbone)
    head = [p for p in model.parameters() if all(p is not q for layer in layers for q in layer)]
    optimization = Optimization(opt, {"name": "constant"}, 10, layers, head, layer_lr_decay=0.5, head_lr=0.05)
    return model, len(layers), optimization.configure(model)["optimizer"]


@pytest.mark.parametrize(
    ("opt", "cls"),
    [
        ({"name": "adamw", "lr": 0.01, "weight_decay": 0.1, "betas": [0.9, 0.98], "eps": 1e-8}, torch.optim.AdamW),
        ({"name": "sgd", "lr": 0.01, "weight_decay": 0.1, "momentum": 0.9, "nesterov": True}, torch.optim.SGD),
        ({"name": "adafactor", "lr": 0.01, "weight_decay": 0.1}, torch.optim.Adafactor),
        ({"_target_": "torch.optim.RMSprop", "lr": 0.01, "weight_decay": 0.1, "alpha": 0.9}, torch.optim.RMSprop),
    ],
)
def test_every_optimizer_keeps_decay_groups_and_layerwise_learning_rates(opt, cls):
    model, depth, optimizer = _layerwise(dict(opt))
    assert type(optimizer) is cls
    lrs = sorted({group["lr"] for group in optimizer.param_groups})  # each lower layer half the next, the head 0.05
    assert depth >= 3 and lrs == pytest.approx([0.01 * 0.5**k for k in reversed(range(depth))] + [0.05])
    decays = {group["weight_decay"] for group in optimizer.param_groups}
    assert decays == {0.0, 0.1}  # matrices decayed, biases and norms not
    extra = {k: v for k, v in opt.items() if k not in ("name", "_target_", "lr", "weight_decay")}
    for key, value in extra.items():  # the class's own options arrive
        assert optimizer.defaults[key] == (tuple(value) if isinstance(value, list) else value)
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randint(0, 50, (2, 8))).sum().backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_adamw_is_fused_only_where_the_parameters_are_on_cuda():
    param = torch.nn.Parameter(torch.zeros(2, 2))
    assert build_optimizer([{"params": [param]}], "adamw").defaults["fused"] is False  # CPU: the foreach path
    assert build_optimizer([{"params": [param]}], "adamw", fused=True).defaults["fused"] is True  # asked for
