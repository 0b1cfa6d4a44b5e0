"""LoRA: starts at the base model, trains only A/B, never touches the base weights, merges back exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnfit.errors import ConfigError
from attnfit.models import (
    LORA_TARGETS,
    AttentionConfig,
    ClassifierConfig,
    EncoderConfig,
    LoRALinear,
    ModelConfig,
    SequenceClassifier,
    apply_lora,
    freeze_bottom,
    layer_groups,
    lora_parameters,
    merge_lora,
)


def tiny_classifier(encoder: str = "transformer", attention: str = "self") -> SequenceClassifier:
    backbone = ModelConfig(
        vocab_size=40,
        dim=16,
        max_len=32,
        encoder=EncoderConfig(name=encoder, num_layers=2, ffn_mult=2, dropout=0.0),
        attention=AttentionConfig(name=attention, num_heads=2),
    )
    return SequenceClassifier(backbone, ClassifierConfig(num_labels=3, dropout=0.0))


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(7, 40, (6, 9), generator=generator)
    padding = torch.zeros_like(ids, dtype=torch.bool)
    padding[::2, 6:] = True
    return ids.masked_fill(padding, 0), padding, torch.arange(6) % 3


def train(model: nn.Module, steps: int = 5) -> list[float]:
    ids, padding, labels = batch()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(ids, padding).logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_lora_linear_starts_at_base_and_merges_exactly():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    lora = LoRALinear(base, r=2, alpha=4.0)
    x = torch.randn(3, 4, 6)
    assert lora.lora_A.shape == (2, 6) and lora.lora_B.shape == (5, 2)
    assert torch.equal(lora(x), base(x))  # B = 0
    assert not base.weight.requires_grad and lora.lora_A.requires_grad
    with torch.no_grad():
        lora.lora_B.normal_()
    expected = base(x) + x @ lora.lora_A.T @ lora.lora_B.T * 2.0  # alpha / r = 2
    torch.testing.assert_close(lora(x), expected)
    merged = lora.merged()
    assert type(merged) is nn.Linear and torch.equal(merged.bias, base.bias)
    torch.testing.assert_close(merged(x), lora(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("encoder", ["transformer", "lstm", "cnn"])
def test_apply_lora_wraps_targets_and_freezes_everything_else(encoder):
    torch.manual_seed(0)
    model = tiny_classifier(encoder).eval()
    ids, padding, _ = batch()
    before = model(ids, padding).logits
    names = apply_lora(model.backbone, r=4)

    attention_layers = 2 if encoder == "transformer" else 1  # rnn/cnn: one attention layer on top
    assert len(names) == attention_layers * 6  # q, k, v, out + both FFN Linears
    assert f"encoder.{'stack' if encoder == 'transformer' else 'top'}.layers.0.attention.q_proj" in names
    assert all(isinstance(model.backbone.get_submodule(name), LoRALinear) for name in names)
    trainable = [p for p in model.backbone.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in lora_parameters(model.backbone)}
    dim, hidden, r = 16, 32, 4
    per_layer = 4 * (r * dim + dim * r) + (r * dim + hidden * r) + (r * hidden + dim * r)
    assert sum(p.numel() for p in trainable) == attention_layers * per_layer
    assert all(p.requires_grad for p in model.head.parameters())  # applied to the backbone only
    assert torch.equal(model(ids, padding).logits, before)  # B = 0: training starts at the base model


def test_training_lora_leaves_base_weights_bit_identical():
    torch.manual_seed(0)
    model = tiny_classifier("transformer", "local")
    apply_lora(model.backbone, r=4, alpha=8.0, dropout=0.1, targets=["q_proj", "v_proj", "ffn"])
    lora = {id(p) for p in lora_parameters(model)}
    frozen = {name: p.detach().clone() for name, p in model.backbone.named_parameters() if id(p) not in lora}
    losses = train(model, steps=8)
    assert losses[-1] < losses[0]
    for name, p in model.backbone.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), name
    assert all(p.abs().sum() > 0 for p in lora_parameters(model))  # B moved off zero, A is random


@pytest.mark.parametrize("encoder", ["transformer", "lstm"])
def test_merged_model_matches_unmerged(encoder):
    torch.manual_seed(0)
    model = tiny_classifier(encoder, "global")
    count = len(apply_lora(model.backbone, r=4))
    train(model, steps=3)
    model.eval()
    ids, padding, _ = batch()
    unmerged = model(ids, padding).logits
    assert merge_lora(model) == count
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert "base" not in " ".join(model.state_dict())  # the original architecture's keys again
    torch.testing.assert_close(model(ids, padding).logits, unmerged, atol=1e-5, rtol=1e-5)
    assert not any(p.requires_grad for p in model.backbone.parameters())  # base weights stay frozen


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"targets": ["q_proj", "query"]},
            r"unknown LoRA target\(s\) 'query'; valid choices: " + ", ".join(LORA_TARGETS),
        ),
        ({"targets": ["qproj"]}, r"'qproj'; valid choices: .* \(did you mean 'q_proj'\?\)"),
        ({"targets": []}, r"unknown LoRA target\(s\) \(none given\)"),
        ({"r": 0}, r"lora.r=0 must be an integer ≥ 1"),
        ({"dropout": 1.5}, r"lora.dropout=1.5 must be in \[0, 1\)"),
    ],
)
def test_bad_lora_settings_name_the_value(kwargs, message):
    model = tiny_classifier()
    with pytest.raises(ConfigError, match=message):
        apply_lora(model, **kwargs)
    assert not lora_parameters(model)  # nothing was wrapped


def test_lora_needs_something_to_adapt():
    with pytest.raises(ConfigError, match="LoRA found no layer to adapt"):
        apply_lora(nn.Sequential(nn.Linear(4, 4)))


def test_layer_groups_and_freezing_still_work_on_a_lora_backbone():
    model = tiny_classifier("cnn")
    apply_lora(model.backbone, r=2)
    groups = layer_groups(model.backbone)
    assert sum(len(g) for g in groups) == len(list(model.backbone.parameters()))
    lora_in_last = [p for p in groups[-1] if p.requires_grad]
    assert len(lora_in_last) == 12  # A and B of q, k, v, out and both FFN Linears of the top attention layer
    freeze_bottom(model.backbone, freeze_embeddings=True, num_layers=len(groups) - 1)
    assert not any(p.requires_grad for p in model.backbone.parameters())
