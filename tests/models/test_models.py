"""Every encoder × attention × LM task builds, trains and respects causality; configs fail clearly."""

from __future__ import annotations

import itertools

import pytest
import torch

from attnfit.errors import ConfigError
from attnfit.models import AttentionConfig, EncoderConfig, LanguageModel, ModelConfig

ENCODERS = ["lstm", "gru", "cnn", "transformer"]
ATTENTIONS = [("global", "dot"), ("global", "general"), ("global", "concat"), ("local", "dot"), ("self", "dot")]
COMBINATIONS = list(itertools.product(ENCODERS, ATTENTIONS, ["mlm", "clm"]))


def tiny_model(encoder: str, attention: str, score: str = "dot", causal: bool = False, **encoder_kw) -> LanguageModel:
    return LanguageModel(
        ModelConfig(
            vocab_size=40,
            dim=32,
            max_len=64,
            causal=causal,
            encoder=EncoderConfig(name=encoder, num_layers=2, dropout=0.0, **encoder_kw),
            attention=AttentionConfig(name=attention, num_heads=2, score=score, window=3),
        )
    )


@pytest.mark.parametrize(
    ("encoder", "attention", "task"), COMBINATIONS, ids=lambda x: "-".join(x) if isinstance(x, tuple) else x
)
def test_every_combination_learns(encoder, attention, task):
    torch.manual_seed(0)
    name, score = attention
    model = tiny_model(encoder, name, score, causal=task == "clm")
    # A learnable tiny batch: repeated patterns, padding in one row.
    ids = torch.tensor([[7, 8, 9, 10, 11, 12] * 3, [13, 14, 15, 16, 17, 18] * 3])
    padding = torch.zeros_like(ids, dtype=torch.bool)
    padding[1, 15:] = True
    inputs, labels = ids.clone(), ids.masked_fill(padding, -100)
    if task == "mlm":
        masked = torch.zeros_like(padding)
        masked[:, 2::5] = True
        masked &= ~padding
        inputs = inputs.masked_fill(masked, 4)  # <mask>
        labels = labels.masked_fill(~masked, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = model.loss(model(inputs, padding), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(map(torch.isfinite, map(torch.tensor, losses)))
    assert losses[-1] < 0.75 * losses[0], losses  # RNNs are the slowest: ~0.67 after 20 steps


@pytest.mark.parametrize(("encoder", "attention"), list(itertools.product(ENCODERS, ["global", "local", "self"])))
def test_causal_models_do_not_see_the_future(encoder, attention):
    torch.manual_seed(0)
    model = tiny_model(encoder, attention, causal=True).eval()
    ids = torch.randint(7, 40, (2, 16))
    changed = ids.clone()
    changed[:, 10:] = torch.randint(7, 40, (2, 6))
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


@pytest.mark.parametrize("encoder", ENCODERS)
def test_padding_does_not_change_real_positions(encoder):
    torch.manual_seed(0)
    model = tiny_model(encoder, "global").eval()
    ids = torch.randint(7, 40, (1, 9))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], 1)
    mask = torch.zeros(1, 13, dtype=torch.bool)
    mask[0, 9:] = True
    torch.testing.assert_close(model(padded, mask)[:, :9], model(ids), atol=1e-5, rtol=1e-4)


def test_generate_respects_top_k_and_greedy():
    torch.manual_seed(0)
    model = tiny_model("transformer", "self", causal=True).eval()
    prompt = torch.randint(7, 40, (3, 4))
    out = model.generate(prompt, 5, temperature=0.0)
    assert out.shape == (3, 9) and torch.equal(out[:, :4], prompt)
    assert torch.equal(out, model.generate(prompt, 5, temperature=0.0))  # greedy is deterministic
    top1 = model.generate(prompt, 5, temperature=1.0, top_k=1)  # top-1 sampling is greedy
    assert torch.equal(top1, out)
    with pytest.raises(ValueError, match="causal LM"):
        tiny_model("transformer", "self").generate(prompt, 2)


def test_tied_embeddings_share_storage():
    model = tiny_model("gru", "self")
    assert model.head.decoder.weight is model.backbone.embeddings.token.weight


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"encoder": {"name": "rnn"}}, r"unknown encoder 'rnn'; valid choices: cnn, gru, lstm, transformer"),
        ({"attention": {"name": "sparse"}}, r"unknown attention 'sparse'; valid choices: global, local, self"),
        ({"attention": {"name": "self", "score": "concat"}}, r"attention=self always uses scaled dot-product"),
        ({"attention": {"num_heads": 5}}, r"num_heads=5 does not divide model.dim=32"),
        ({"attention": {"window": 0}}, r"attention.window=0 must be ≥ 1"),
        ({"encoder": {"num_layers": 0}}, r"encoder.num_layers=0 must be ≥ 1"),
        ({"causal": True, "encoder": {"name": "lstm", "bidirectional": True}}, r"cannot be causal"),
        ({"dim": "wide"}, r"model.dim must be int, got 'wide'"),
        (
            {"encoder": {"num_layer": 2}},
            r"unknown key model.encoder.num_layer \(did you mean model.encoder.num_layers\?\)",
        ),
        ({"position": "rotary"}, r"unknown model.position 'rotary'"),
    ],
)
def test_bad_model_configs_name_the_value(kwargs, message):
    data = {"vocab_size": 40, "dim": 32, **kwargs}
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_dict(data)


def test_config_round_trips_through_plain_dict():
    config = ModelConfig(vocab_size=40, dim=32, encoder=EncoderConfig(name="cnn"), attention=AttentionConfig("local"))
    assert ModelConfig.from_dict(config.to_dict()) == config
