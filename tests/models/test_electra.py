"""ELECTRA: generator at the masked positions, replaced-token labels, loss, shared embeddings, fine-tune loading."""

from __future__ import annotations

import pytest
import torch

from attnfit.data.lm import IGNORE_INDEX, MLMCollator
from attnfit.errors import ConfigError
from attnfit.models import (
    AttentionConfig,
    ClassifierConfig,
    EncoderConfig,
    ModelConfig,
    SequenceClassifier,
    load_pretrained_backbone,
)
from attnfit.models.electra import ElectraConfig, ElectraModel, generator_config

V, MASK = 30, 4
SPECIALS = (0, 1, 2, 3, 4, 5, 6)


def tiny_config(**overrides) -> ModelConfig:
    kwargs = dict(
        vocab_size=V,
        dim=32,
        max_len=32,
        encoder=EncoderConfig(num_layers=1, dropout=0.0),
        attention=AttentionConfig(num_heads=2),
    )
    return ModelConfig(**{**kwargs, **overrides})


def toy_batch(seed: int = 0) -> dict:
    collator = MLMCollator(pad_id=0, mask_id=MASK, vocab_size=V, special_ids=SPECIALS, mask_prob=0.3, seed=seed)
    rows = [[2, *[7 + (i + k) % 20 for i in range(n)], 3] for k, n in [(0, 20), (3, 14), (5, 9)]]
    return collator([{"input_ids": r, "sample_key": k} for k, r in enumerate(rows)])


def hand_batch() -> dict:
    """One row; masked positions 1 ([MASK], original 9), 2 (kept, original 10), 4 (random 12, original 8)."""
    input_ids = torch.tensor([[2, MASK, 10, 11, 12, 13, 3, 0]])
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[0, 1], labels[0, 2], labels[0, 4] = 9, 10, 8
    return {"input_ids": input_ids, "labels": labels, "padding_mask": input_ids == 0}


def run(model: ElectraModel, batch: dict, seed: int = 0):
    return model(batch["input_ids"], batch["padding_mask"], batch["labels"], torch.Generator().manual_seed(seed))


def test_generator_predicts_exactly_the_masked_positions(monkeypatch: pytest.MonkeyPatch) -> None:
    model, batch = ElectraModel(tiny_config()), toy_batch()
    seen = {}
    forward = model.generator.forward

    def spy(input_ids, padding_mask, selected):
        seen["input_ids"], seen["selected"] = input_ids, selected
        seen["logits"] = forward(input_ids, padding_mask, selected)
        return seen["logits"]

    monkeypatch.setattr(model.generator, "forward", spy)
    out = run(model, batch)
    masked = batch["labels"] != IGNORE_INDEX
    assert torch.equal(seen["selected"], masked) and torch.equal(seen["input_ids"], batch["input_ids"])
    assert seen["logits"].shape == (int(masked.sum()), V)
    assert not (out.replaced & ~masked).any()  # only masked positions can be replaced


def test_discriminator_labels_are_the_positions_replaced_by_a_different_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, batch = ElectraModel(tiny_config()), hand_batch()
    forced = 10  # every sample is 10: equal to the original at position 2, different at positions 1 and 4

    def all_mass_on_forced(hidden):
        logits = torch.full((hidden.shape[0], V), -1e4)
        logits[:, forced] = 1e4
        return logits + hidden.sum() * 0  # keep the graph

    monkeypatch.setattr(model.generator.head, "forward", all_mass_on_forced)
    seen = {}
    discriminate = model.discriminate

    def spy(input_ids, padding_mask):
        seen["ids"] = input_ids
        return discriminate(input_ids, padding_mask)

    monkeypatch.setattr(model, "discriminate", spy)
    out = run(model, batch)

    masked = batch["labels"] != IGNORE_INDEX
    original = torch.where(masked, batch["labels"], batch["input_ids"])
    corrupted = torch.where(masked, torch.full_like(original, forced), original)  # explicit recomputation
    assert torch.equal(seen["ids"], corrupted)
    assert torch.equal(out.replaced, corrupted != original)
    assert out.replaced[0].tolist() == [False, True, False, False, True, False, False, False]


def test_loss_is_generator_plus_lambda_times_discriminator() -> None:
    for weight in (50.0, 7.5):
        torch.manual_seed(0)
        model = ElectraModel(tiny_config(), ElectraConfig(discriminator_weight=weight))
        out = run(model, toy_batch())
        assert torch.allclose(out.loss, out.generator_loss + weight * out.discriminator_loss)
        assert 0.0 <= float(out.disc_accuracy) <= 1.0 and out.replaced.dtype == torch.bool


def test_sampling_is_deterministic_given_a_torch_generator() -> None:
    model, batch = ElectraModel(tiny_config()), toy_batch()
    a, b, c = run(model, batch, seed=1), run(model, batch, seed=1), run(model, batch, seed=2)
    assert torch.equal(a.replaced, b.replaced) and torch.equal(a.loss, b.loss)
    assert a.replaced.any() and not torch.equal(a.replaced, c.replaced)  # untrained generator: mostly wrong samples


def test_gradients_reach_generator_and_discriminator_but_not_through_the_sample() -> None:
    model, batch = ElectraModel(tiny_config()), toy_batch()
    out = run(model, batch)
    out.discriminator_loss.backward(retain_graph=True)
    gen_encoder = list(model.generator.backbone.encoder.parameters())
    assert all(p.grad is None or not p.grad.any() for p in gen_encoder)  # the discrete sample blocks gradients
    model.zero_grad()
    out.loss.backward()
    groups = {
        "generator encoder": gen_encoder,
        "generator projection": list(model.generator.backbone.embeddings.project.parameters()),
        "discriminator encoder": list(model.backbone.encoder.parameters()),
        "rtd head": list(model.rtd_head.parameters()),
        "shared embeddings": [model.backbone.embeddings.token.weight],
    }
    for name, params in groups.items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params), name


def test_embeddings_are_shared_and_the_generator_is_smaller() -> None:
    model = ElectraModel(tiny_config())
    shared, disc = model.generator.backbone.embeddings.shared, model.backbone.embeddings
    assert shared is disc
    assert shared.token.weight is disc.token.weight and shared.position.weight is disc.position.weight
    assert model.generator.head.decoder.weight is disc.token.weight  # output tied to the shared table too
    assert model.generator.config.dim == 8 and model.generator.config.encoder.num_layers == 1
    params = {id(p) for p in model.parameters()}
    assert len(params) == sum(1 for _ in model.parameters())  # nothing counted twice


def test_generator_width_rounding() -> None:
    config = tiny_config(dim=128, attention=AttentionConfig(num_heads=4))
    assert generator_config(config, ElectraConfig(generator_dim_ratio=0.3)).dim == 40  # 38.4 → 10 heads × 4
    assert generator_config(config, ElectraConfig(generator_dim_ratio=0.01)).dim == 4  # at least one head
    assert generator_config(config, ElectraConfig(generator_layers=3)).encoder.num_layers == 3
    wide = ElectraModel(tiny_config(), ElectraConfig(generator_dim_ratio=1.0))
    assert isinstance(wide.generator.backbone.embeddings.project, torch.nn.Identity)


def test_config_round_trip_and_validation() -> None:
    config = ElectraConfig(generator_dim_ratio=0.5, generator_layers=2, discriminator_weight=20, temperature=0.7)
    assert ElectraConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="did you mean electra.temperature"):
        ElectraConfig.from_dict({"temprature": 1.0})
    for bad in ({"generator_dim_ratio": 0.0}, {"temperature": 0.0}, {"discriminator_weight": -1.0}):
        with pytest.raises(ConfigError):
            ElectraConfig(**bad)
    with pytest.raises(ConfigError, match="causal"):
        ElectraModel(tiny_config(causal=True))


def test_state_dict_backbone_is_the_discriminator_and_fine_tunes() -> None:
    model = ElectraModel(tiny_config())
    state = model.state_dict()
    disc = model.backbone.state_dict()
    assert {k.removeprefix("backbone.") for k in state if k.startswith("backbone.")} == set(disc)
    classifier = SequenceClassifier(tiny_config(), ClassifierConfig(num_labels=2))
    lightning_style = {f"model.{k}": v for k, v in state.items()}
    report = load_pretrained_backbone(classifier, {"state_dict": lightning_style})
    assert any(k.startswith("generator.") for k in report.dropped) and "rtd_head.0.weight" in report.dropped
    for key, tensor in classifier.backbone.state_dict().items():
        assert torch.equal(tensor, disc[key]), key


def cyclic_batch(seed: int) -> dict:
    """Rows cycling through ids 7..16 of the 30: learnable from unigrams alone within a few dozen steps."""
    collator = MLMCollator(pad_id=0, mask_id=MASK, vocab_size=V, special_ids=SPECIALS, mask_prob=0.3, seed=seed)
    rows = [[2, *[7 + (i + k) % 10 for i in range(n)], 3] for k, n in [(0, 20), (3, 14), (5, 9), (7, 25)]]
    return collator([{"input_ids": r, "sample_key": k} for k, r in enumerate(rows)])


@torch.no_grad()
def held_out_losses(model: ElectraModel) -> torch.Tensor:
    """Mean (loss, generator_loss, discriminator_loss) on fixed batches with fixed samples."""
    outs = [run(model, cyclic_batch(1000 + s), seed=s) for s in range(4)]
    return torch.tensor([[o.loss, o.generator_loss, o.discriminator_loss] for o in outs]).mean(0)


def test_a_tiny_electra_learns_a_toy_corpus() -> None:
    torch.manual_seed(0)
    model = ElectraModel(tiny_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    before = held_out_losses(model)
    for step in range(40):
        out = run(model, cyclic_batch(step), seed=step)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    after = held_out_losses(model)
    assert after[0] < 0.8 * before[0] and after[1] < 0.85 * before[1], (before, after)
    assert after[2] < 0.6 < before[2]  # below ln 2: the discriminator has learnt something
