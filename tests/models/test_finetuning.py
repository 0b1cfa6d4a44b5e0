"""Fine-tuning: layer groups cover the backbone, freezing really freezes, pretrained backbones load all-or-nothing."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from attnfit.errors import CheckpointError, ConfigError
from attnfit.models import (
    AttentionConfig,
    ClassifierConfig,
    EncoderConfig,
    LanguageModel,
    ModelConfig,
    SequenceClassifier,
    auxiliary_mlm,
    freeze_bottom,
    layer_groups,
    load_pretrained_backbone,
)

ENCODERS = ["lstm", "gru", "cnn", "transformer"]


def backbone_config(encoder: str = "transformer", vocab_size: int = 40, **encoder_kw) -> ModelConfig:
    return ModelConfig(
        vocab_size=vocab_size,
        dim=16,
        max_len=32,
        encoder=EncoderConfig(name=encoder, num_layers=3, attention_layers=2, ffn_mult=2, dropout=0.0, **encoder_kw),
        attention=AttentionConfig(name="self", num_heads=2),
    )


def classifier(encoder: str = "transformer", **kw) -> SequenceClassifier:
    return SequenceClassifier(backbone_config(encoder, **kw), ClassifierConfig(num_labels=2, dropout=0.0))


@pytest.mark.parametrize("encoder", ENCODERS)
def test_layer_groups_cover_every_parameter_once_bottom_to_top(encoder):
    backbone = classifier(encoder).backbone
    groups = layer_groups(backbone)
    # embeddings, 3 encoder layers (+ 2 attention layers on top for rnn/cnn)
    assert len(groups) == (4 if encoder == "transformer" else 6)
    flat = [id(p) for group in groups for p in group]
    assert len(flat) == len(set(flat))
    assert set(flat) == {id(p) for p in backbone.parameters()}

    names = {id(p): name for name, p in backbone.named_parameters()}
    named = [[names[id(p)] for p in group] for group in groups]
    assert all(name.startswith("embeddings.") for name in named[0])
    if encoder in ("lstm", "gru"):
        for k in range(3):  # both directions of RNN layer k, nothing else
            assert {n.rsplit("_l", 1)[1] for n in named[1 + k]} == {str(k), f"{k}_reverse"}
    elif encoder == "cnn":
        assert all(n.startswith("encoder.blocks.1.") for n in named[2])
    top = "encoder.stack" if encoder == "transformer" else "encoder.top"
    num_top = 3 if encoder == "transformer" else 2
    for i, group in enumerate(named[-num_top:]):
        assert all(n.startswith(f"{top}.layers.{i}.") for n in group[: -2 if i == num_top - 1 else None])
    assert {f"{top}.norm.weight", f"{top}.norm.bias"} <= set(named[-1])  # final LayerNorm joins the last group


def test_unidirectional_rnn_groups():
    config = ModelConfig(vocab_size=40, dim=16, causal=True, encoder=EncoderConfig(name="gru", num_layers=2))
    groups = layer_groups(SequenceClassifier(config, ClassifierConfig(num_labels=2)).backbone)
    assert [len(g) for g in groups[1:3]] == [4, 4]  # weight_ih, weight_hh, bias_ih, bias_hh


@pytest.mark.parametrize(("encoder", "embeddings", "layers"), [("transformer", True, 2), ("lstm", False, 4)])
def test_freeze_bottom_freezes_exactly_those_groups_and_training_leaves_them(encoder, embeddings, layers):
    torch.manual_seed(0)
    model = classifier(encoder)
    groups = layer_groups(model.backbone)
    frozen_groups = (groups[:1] if embeddings else []) + groups[1 : 1 + layers]
    frozen_ids = {id(p) for group in frozen_groups for p in group}
    count = freeze_bottom(model.backbone, freeze_embeddings=embeddings, num_layers=layers)
    assert count == sum(p.numel() for group in frozen_groups for p in group) > 0
    assert {id(p) for p in model.parameters() if not p.requires_grad} == frozen_ids

    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    ids = torch.randint(7, 40, (4, 8))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)  # frozen ones get no grad, so no update
    for _ in range(3):
        loss = F.cross_entropy(model(ids).logits, torch.tensor([0, 1, 0, 1]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) == (id(p) in frozen_ids), name


def test_freeze_bottom_rejects_more_layers_than_there_are():
    backbone = classifier("cnn").backbone
    assert freeze_bottom(backbone, freeze_embeddings=False, num_layers=0) == 0
    with pytest.raises(
        ConfigError,
        match=r"cannot freeze 6 encoder layers: this cnn encoder has 5 layers \(3 convolutional \+ 2 attention\)",
    ):
        freeze_bottom(backbone, freeze_embeddings=True, num_layers=6)
    assert all(p.requires_grad for p in backbone.parameters())


def test_load_pretrained_backbone_from_a_language_model():
    torch.manual_seed(0)
    lm = LanguageModel(backbone_config("gru"))
    torch.manual_seed(1)
    model = classifier("gru")
    report = load_pretrained_backbone(model, lm.state_dict(), source="pretrained model")

    for key, value in lm.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key
    assert report.loaded == [f"backbone.{key}" for key in model.backbone.state_dict()]
    assert report.initialised == ["pooler.score.weight", "pooler.score.bias", "head.weight", "head.bias"]
    assert {"head.decoder.weight", "head.decoder.bias", "head.transform.0.weight"} <= set(report.dropped)
    assert not any(key.startswith("backbone.") for key in report.dropped)
    assert report.loaded_values == sum(p.numel() for p in model.backbone.parameters())
    summary = report.summary()
    assert summary.startswith(f"loaded {len(report.loaded)} tensors (")
    assert (
        "from the pretrained model; newly initialised: pooler.score.weight, pooler.score.bias, head.weight" in summary
    )
    assert "dropped: head." in summary


def test_loading_into_a_language_model_counts_tied_weights_as_loaded():
    source, target = LanguageModel(backbone_config()), LanguageModel(backbone_config())
    report = load_pretrained_backbone(target, source.state_dict())
    assert "head.decoder.weight" not in report.initialised  # tied to the loaded token embedding
    assert "head.decoder.bias" in report.initialised


def test_lightning_prefix_and_checkpoint_dict_are_accepted():
    lm = LanguageModel(backbone_config("cnn"))
    model = classifier("cnn")
    state = {f"model.{key}": value for key, value in lm.state_dict().items()}
    report = load_pretrained_backbone(model, {"state_dict": state, "epoch": 3})
    assert torch.equal(model.backbone.embeddings.token.weight, lm.backbone.embeddings.token.weight)
    assert "head.decoder.bias" in report.dropped


def test_vocabulary_mismatch_names_the_key_and_both_shapes():
    lm = LanguageModel(backbone_config(vocab_size=50))
    model = classifier(vocab_size=40)
    before = model.backbone.embeddings.position.weight.detach().clone()
    message = r"backbone.embeddings.token.weight: checkpoint \(50, 16\) vs model \(40, 16\)"
    with pytest.raises(CheckpointError, match=message):
        load_pretrained_backbone(model, lm.state_dict())
    assert torch.equal(model.backbone.embeddings.position.weight, before)  # nothing loaded at all


def test_missing_and_unexpected_backbone_keys_are_errors():
    state = LanguageModel(backbone_config()).state_dict()
    model = classifier()
    missing = {k: v for k, v in state.items() if k != "backbone.encoder.stack.layers.1.ffn.0.weight"}
    with pytest.raises(CheckpointError, match=r"backbone.encoder.stack.layers.1.ffn.0.weight: missing from"):
        load_pretrained_backbone(model, missing)
    extra = {**state, "backbone.encoder.stack.layers.9.ffn.0.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"layers.9.ffn.0.weight: in the checkpoint but not in the model"):
        load_pretrained_backbone(model, extra)
    with pytest.raises(CheckpointError, match=r"has no backbone.\* tensors"):
        load_pretrained_backbone(model, {"head.weight": torch.zeros(2, 16)})


def test_a_different_encoder_is_refused():
    lm = LanguageModel(backbone_config("lstm"))
    message = r"the checkpoint has a recurrent \(lstm/gru\) encoder, the model a transformer encoder(.|\n)*stack"
    with pytest.raises(CheckpointError, match=message):
        load_pretrained_backbone(classifier("transformer"), lm.state_dict())


def test_auxiliary_mlm_shares_the_backbone_and_continues_the_pretrained_head():
    torch.manual_seed(0)
    lm = LanguageModel(backbone_config("cnn"))
    model = classifier("cnn")
    load_pretrained_backbone(model, lm.state_dict())
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    auxiliary = auxiliary_mlm(model, lm.state_dict())

    assert auxiliary.backbone is model.backbone  # shared, so its loss trains the classifier's backbone
    assert auxiliary.head.decoder.weight is model.backbone.embeddings.token.weight  # tied as in pretraining
    for key, value in lm.head.state_dict().items():
        assert torch.equal(auxiliary.head.state_dict()[key], value), key
    for key, value in backbone_before.items():  # building it re-initialised nothing of the backbone
        assert torch.equal(model.backbone.state_dict()[key], value), key
    ids = torch.randint(7, 40, (3, 10))
    labels = torch.full_like(ids, -100)
    labels[:, 4] = ids[:, 4]
    masked = ids.clone()
    masked[:, 4] = 4
    torch.testing.assert_close(
        auxiliary.labelled_loss(masked, None, labels)[0], lm.labelled_loss(masked, None, labels)[0]
    )


def test_auxiliary_mlm_needs_a_masked_lm_head():
    model = classifier()
    fresh = auxiliary_mlm(model)  # no checkpoint: a new head (the from-scratch baseline)
    assert fresh.backbone is model.backbone and fresh.head.transform is not None
    causal = LanguageModel(dataclasses.replace(backbone_config(), causal=True))
    with pytest.raises(CheckpointError, match=r"no masked-LM head to continue \(missing: head\.transform"):
        auxiliary_mlm(model, causal.state_dict())
