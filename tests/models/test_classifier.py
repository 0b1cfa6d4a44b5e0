"""Sequence classifiers: every encoder × attention × pooling learns, ignores padding and explains its pooling."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from attnfit.errors import ConfigError
from attnfit.models import (
    POOLINGS,
    AttentionConfig,
    ClassifierConfig,
    EncoderConfig,
    ModelConfig,
    SequenceClassifier,
)

ENCODERS = ["lstm", "gru", "cnn", "transformer"]
ATTENTIONS = ["global", "local", "self"]


def tiny_classifier(
    encoder: str = "transformer",
    attention: str = "self",
    pooling: str = "attention",
    causal: bool = False,
    num_labels: int = 2,
    num_layers: int = 1,
) -> SequenceClassifier:
    backbone = ModelConfig(
        vocab_size=40,
        dim=16,
        max_len=32,
        causal=causal,
        encoder=EncoderConfig(name=encoder, num_layers=num_layers, dropout=0.0),
        attention=AttentionConfig(name=attention, num_heads=2, window=2),
    )
    return SequenceClassifier(backbone, ClassifierConfig(num_labels=num_labels, pooling=pooling, dropout=0.0))


def separable_batch(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class 0 draws tokens from 7..22, class 1 from 23..39, so every position (and pooling) carries the label."""
    labels = torch.arange(8) % 2
    ids = torch.randint(7, 23, (8, 10), generator=generator) + 16 * labels[:, None]
    padding = torch.zeros_like(ids, dtype=torch.bool)
    padding[::3, 7:] = True  # some rows padded
    return ids.masked_fill(padding, 0), padding, labels


@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
@pytest.mark.parametrize(("encoder", "attention"), list(itertools.product(ENCODERS, ATTENTIONS)))
def test_every_combination_and_pooling_learns(encoder, attention, causal):
    for pooling in POOLINGS:
        torch.manual_seed(0)
        model = tiny_classifier(encoder, attention, pooling, causal)
        ids, padding, labels = separable_batch(torch.Generator().manual_seed(1))
        out = model(ids, padding, need_weights=True)
        assert out.logits.shape == (8, 2) and out.pooling_weights.shape == (8, 10)
        assert len(out.attentions) == 1 and out.attentions[0].shape == (8, 2, 10, 10)
        assert model(ids, padding).attentions == []

        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-2)
        losses = []
        for _ in range(10):
            loss = F.cross_entropy(model(ids, padding).logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert losses[-1] < 0.6 * losses[0], (pooling, losses)  # worst (causal lstm, last): ~0.5


@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
@pytest.mark.parametrize(("encoder", "attention"), list(itertools.product(ENCODERS, ATTENTIONS)))
def test_padding_changes_neither_logits_nor_weights(encoder, attention, causal):
    ids = torch.randint(7, 40, (2, 9), generator=torch.Generator().manual_seed(0))
    padded = torch.cat([ids, torch.zeros(2, 4, dtype=torch.long)], 1)
    mask = torch.zeros(2, 13, dtype=torch.bool)
    mask[:, 9:] = True
    for pooling in POOLINGS:
        torch.manual_seed(0)
        model = tiny_classifier(encoder, attention, pooling, causal, num_layers=2).eval()
        plain = model(ids)
        with_padding = model(padded, mask)
        torch.testing.assert_close(with_padding.logits, plain.logits, atol=1e-5, rtol=1e-4, msg=pooling)
        torch.testing.assert_close(with_padding.pooling_weights[:, :9], plain.pooling_weights, atol=1e-6, rtol=0)
        assert torch.all(with_padding.pooling_weights[:, 9:] == 0), pooling


@pytest.mark.parametrize("pooling", POOLINGS)
def test_pooling_weights_sum_to_one_over_real_positions(pooling):
    torch.manual_seed(0)
    model = tiny_classifier("gru", "local", pooling).eval()
    ids = torch.randint(7, 40, (3, 8))
    padding = torch.zeros_like(ids, dtype=torch.bool)
    padding[0, 5:], padding[1, 2:] = True, True
    weights = model(ids.masked_fill(padding, 0), padding).pooling_weights
    assert torch.all(weights >= 0) and torch.all(weights[padding] == 0)
    torch.testing.assert_close(weights.sum(1), torch.ones(3))
    lengths = (~padding).sum(1)
    if pooling == "cls":
        assert torch.all(weights[:, 0] == 1)
    elif pooling == "last":
        assert torch.all(weights[torch.arange(3), lengths - 1] == 1)
    elif pooling == "mean":
        torch.testing.assert_close(weights[:, 0], 1 / lengths.float())


def float64_run(encoder: str, attention: str, pooling: str, real_in_row_1: int):
    """A seeded float64 classifier on 2 rows of 7 ids, row 1 padded after ``real_in_row_1``: the model, the
    padding mask, its output and the backbone's hidden states (B, T, D), for hand computations to check."""
    torch.manual_seed(0)
    model = tiny_classifier(encoder, attention, pooling).double().eval()
    ids = torch.randint(7, 40, (2, 7))
    padding = torch.zeros_like(ids, dtype=torch.bool)
    padding[1, real_in_row_1:] = True
    with torch.no_grad():
        return model, padding, model(ids, padding), model.backbone(ids, padding)[0]


def test_max_pooling_matches_a_float64_loop_over_features_and_ignores_padding():
    model, padding, out, hidden = float64_run("cnn", "self", "max", real_in_row_1=3)
    B, T, D = hidden.shape
    pooled, weights = torch.zeros(B, D, dtype=torch.float64), torch.zeros(B, T, dtype=torch.float64)
    for b in range(B):
        n = int((~padding[b]).sum())
        for d in range(D):
            values = [float(hidden[b, t, d]) for t in range(n)]  # real positions only
            peak = max(values)
            pooled[b, d] = peak
            weights[b, values.index(peak)] += 1 / D
    torch.testing.assert_close(out.pooling_weights, weights, atol=1e-12, rtol=0)
    torch.testing.assert_close(out.logits, pooled @ model.head.weight.T + model.head.bias, atol=1e-12, rtol=1e-10)
    assert (hidden[1].max(0).values > pooled[1]).sum() > D // 4  # padding would have won these features


def test_attention_pooling_matches_a_float64_hand_computation():
    model, padding, out, hidden = float64_run("lstm", "global", "attention", real_in_row_1=4)
    W, b = model.pooler.score.weight[0], model.pooler.score.bias  # (D,), (1,)
    scores = hidden @ W + b  # F = W·h + b, (B, T)
    scores[padding] = float("-inf")
    A = torch.exp(scores - scores.max(1, keepdim=True).values)
    A = A / A.sum(1, keepdim=True)  # softmax over the real positions
    pooled = (A[:, :, None] * hidden).sum(1)  # Σ A·h, (B, D)
    logits = pooled @ model.head.weight.T + model.head.bias
    torch.testing.assert_close(out.pooling_weights, A, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(out.logits, logits, atol=1e-12, rtol=1e-10)


def test_new_layers_are_initialised_small_and_only_attention_pooling_has_a_pooler():
    model = tiny_classifier(pooling="attention")
    assert model.head.weight.std() < 0.05 and torch.all(model.head.bias == 0)
    assert torch.all(model.pooler.score.bias == 0)
    assert tiny_classifier(pooling="mean").pooler is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pooling": "min"}, r"unknown classifier.pooling 'min'; valid choices: attention, cls, last, max, mean"),
        ({"pooling": "clss"}, r"did you mean 'cls'\?"),
        ({"num_labels": 1}, r"classifier.num_labels=1 must be ≥ 2"),
        ({"dropout": 1.0}, r"classifier.dropout=1.0 must be in \[0, 1\)"),
        ({"num_label": 3}, r"unknown key classifier.num_label \(did you mean classifier.num_labels\?\)"),
    ],
)
def test_bad_classifier_configs_name_the_value(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ClassifierConfig.from_dict({"num_labels": 2, **kwargs})


def test_classifier_config_round_trips_through_plain_dict():
    config = ClassifierConfig(num_labels=5, pooling="last", dropout=0.2)
    assert ClassifierConfig.from_dict(config.to_dict()) == config
