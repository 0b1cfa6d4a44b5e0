"""Fine-tuning controls of ClassificationModule: layer-wise LR, gradual unfreezing, class weights, label smoothing,
adversarial training."""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from attnfit.errors import ConfigError
from attnfit.models import (
    ClassifierConfig,
    ModelConfig,
    SequenceClassifier,
    auxiliary_mlm,
    prepare_for_finetuning,
)
from attnfit.models.classifier import pool
from attnfit.models.finetuning import layer_groups
from attnfit.pretrained import ModelRecord
from attnfit.training.callbacks import GradualUnfreezing
from attnfit.training.classification_module import ClassificationLoss, ClassificationModule, adversarial_loss
from attnfit.training.module import Optimization

MODEL = ModelConfig.from_dict(
    {
        "vocab_size": 30,
        "dim": 16,
        "max_len": 16,
        "encoder": {"name": "transformer", "num_layers": 3},
        "attention": {"name": "self", "num_heads": 2},
    }
).to_dict()
CLASSIFIER = {"num_labels": 2, "pooling": "mean", "dropout": 0.0}
OPT = {"name": "adamw", "lr": 1e-2, "weight_decay": 0.0}
SCHED = {"name": "constant", "warmup_steps": 0}


def module(
    class_weights: list[float] | None = None,
    mlm_weight: float = 0.0,
    label_smoothing: float = 0.0,
    adversarial_eps: float = 0.0,
    **finetune: Any,
) -> ClassificationModule:
    """A classifier prepared for fine-tuning as attnfit.tasks.classification does it."""
    model = SequenceClassifier(ModelConfig.from_dict(MODEL), ClassifierConfig.from_dict(CLASSIFIER))
    plan = prepare_for_finetuning(model, finetune)
    auxiliary = auxiliary_mlm(model) if mlm_weight else None
    if auxiliary is not None:
        shared = {id(p) for p in model.parameters()}
        plan.head += [p for p in auxiliary.head.parameters() if id(p) not in shared]
    optimization = Optimization(OPT, SCHED, 10, plan.layers, plan.head, plan.layer_lr_decay, plan.head_lr)
    record = ModelRecord("classification", MODEL, "", head_config=CLASSIFIER, label_names=["no", "yes"])
    loss = ClassificationLoss(class_weights, label_smoothing, mlm_weight, adversarial_eps)
    return ClassificationModule(model, record, optimization, loss, auxiliary)


def batches(n: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    rows = [
        {
            "input_ids": torch.randint(7, 30, (12,), generator=g),
            "padding_mask": torch.zeros(12, dtype=torch.bool),
            "labels": torch.tensor(i % 2),
        }
        for i in range(n * 4)
    ]
    return DataLoader(rows, batch_size=4)


def fit(m: ClassificationModule, steps: int, callbacks: list | None = None) -> None:
    L.Trainer(
        callbacks=callbacks,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    ).fit(m, batches())


def test_layerwise_lr_decays_from_top_to_embeddings_and_head_has_its_own():
    m = module(layer_lr_decay=0.5, head_lr=0.3)
    groups = m.configure_optimizers()["optimizer"].param_groups
    head = {id(p) for n, p in m.model.named_parameters() if not n.startswith("backbone.")}
    layers = layer_groups(m.model.backbone)  # [embeddings, layer0, layer1, layer2 (+ final norm)]
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert len(lr_of) == sum(1 for _ in m.model.parameters())  # every parameter in exactly one group
    for depth, params in enumerate(reversed(layers)):
        assert [lr_of[id(p)] for p in params] == pytest.approx([1e-2 * 0.5**depth] * len(params))
    assert {lr_of[i] for i in head} == {0.3}


def test_gradual_unfreezing_trains_top_layers_first():
    torch.manual_seed(0)
    m = module(gradual_unfreeze_every=2)
    layers = m.optimization.layers
    before = [[p.detach().clone() for p in group] for group in layers]
    fit(m, 3, [GradualUnfreezing(layers, 2)])  # steps 0-1: top group; step 2: top two groups
    changed = [
        any(not torch.equal(a, b) for a, b in zip(old, group, strict=True))
        for old, group in zip(before, layers, strict=True)
    ]
    assert changed == [False, False, True, True], changed  # embeddings and the lowest layer never moved


def test_gradual_unfreezing_and_lora_do_not_combine():
    with pytest.raises(ConfigError, match="cannot be combined"):
        module(gradual_unfreeze_every=2, lora={"enabled": True, "r": 2})


def test_class_weights_reach_the_loss():
    m = module(class_weights=[0.25, 4.0])
    batch = next(iter(batches()))
    loss, logits = m._loss(batch)
    expected = F.cross_entropy(logits, batch["labels"], weight=torch.tensor([0.25, 4.0]))
    torch.testing.assert_close(loss, expected)
    assert not torch.allclose(loss, F.cross_entropy(logits, batch["labels"]))


def test_label_smoothing_softens_the_training_targets_only_and_matches_a_float64_sum():
    m = module(class_weights=[0.25, 4.0], label_smoothing=0.3).eval()  # eval: no dropout between the two passes
    batch = next(iter(batches()))
    logits = m(batch["input_ids"], batch["padding_mask"]).double()
    log_p, labels, weights = logits.log_softmax(-1), batch["labels"].tolist(), [0.25, 4.0]
    # Target 1 - ε on the label plus ε/C on every class; each example counts by its label's weight.
    total = sum(
        0.7 * weights[y] * -log_p[i, y] + 0.3 / 2 * sum(weights[c] * -log_p[i, c] for c in range(2))
        for i, y in enumerate(labels)
    )
    expected = total / sum(weights[y] for y in labels)
    torch.testing.assert_close(m.training_step(batch, 0).double(), expected)
    plain = F.cross_entropy(logits, batch["labels"], weight=torch.tensor(weights, dtype=torch.float64))
    assert not torch.allclose(expected, plain)
    torch.testing.assert_close(m._loss(batch)[0].double(), plain)  # what validation and test log


def with_masked_copy(batch: dict) -> dict:
    """The batch as a masking collator leaves it: position 3 of every row masked (id 4), labelled."""
    labels = torch.full_like(batch["input_ids"], -100)
    labels[:, 3] = batch["input_ids"][:, 3]
    return {**batch, "masked_input_ids": batch["input_ids"].masked_fill(labels != -100, 4), "masked_labels": labels}


def test_auxiliary_mlm_loss_joins_the_task_loss_and_its_head_trains_but_is_not_saved():
    torch.manual_seed(0)
    m = module(mlm_weight=0.5, head_lr=0.3)
    batch = with_masked_copy(next(iter(batches())))
    m.eval()  # no dropout, so the forward passes agree
    masked_loss = m.auxiliary.labelled_loss(batch["masked_input_ids"], batch["padding_mask"], batch["masked_labels"])
    torch.testing.assert_close(m.training_step(batch, 0), m._loss(batch)[0] + 0.5 * masked_loss[0])

    groups = m.configure_optimizers()["optimizer"].param_groups
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    transform = list(m.auxiliary.head.transform.parameters())
    assert all(lr_of[id(p)] == 0.3 for p in transform)  # trained, at the head's learning rate
    assert len(lr_of) == len({id(p) for p in m.parameters()})  # each parameter once (the tied decoder too)
    assert all(not key.startswith("auxiliary") for key in m.model.state_dict())  # not part of the saved model
    before = [p.detach().clone() for p in transform]
    L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(m, DataLoader([batch, batch], batch_size=None))  # fmt: skip
    assert all(not torch.equal(a, b) for a, b in zip(before, transform, strict=True))


def test_adversarial_loss_moves_each_example_eps_along_its_gradient_as_a_float64_reference():
    torch.manual_seed(0)
    m = module(class_weights=[0.25, 4.0], label_smoothing=0.1, adversarial_eps=0.7).double().eval()
    batch = next(iter(batches()))
    batch["padding_mask"][0, 9:] = True  # a padded row: its padding gets no gradient, hence no shift
    model, labels = m.model, batch["labels"]
    weights = torch.tensor([0.25, 4.0], dtype=torch.float64)

    def loss_at(e: torch.Tensor) -> torch.Tensor:  # the classifier from its embedding output on, written out
        hidden, _ = model.backbone.encoder(e, batch["padding_mask"])
        logits = model.head(pool(hidden, batch["padding_mask"], "mean")[0])
        return F.cross_entropy(logits, labels, weights, label_smoothing=0.1)

    e = model.backbone.embeddings(batch["input_ids"]).detach().requires_grad_()
    clean = loss_at(e)
    (g,) = torch.autograd.grad(clean, e)
    shift = 0.7 * g / g.flatten(1).norm(dim=1)[:, None, None]  # (B, T, D), L2 norm 0.7 per example
    assert shift[0, 9:].abs().max() == 0
    loss_of = lambda logits: F.cross_entropy(logits, labels, weights, label_smoothing=0.1)  # noqa: E731
    got = adversarial_loss(model, batch, loss_of, 0.7)
    torch.testing.assert_close(got[0], clean)
    torch.testing.assert_close(got[2], loss_at(e.detach() + shift))
    assert got[2] > clean  # uphill: the worst nearby inputs cost more
    m.float()  # the module's own step: its clean and adversarial losses, summed
    clean32, _, adversarial32 = adversarial_loss(model, batch, lambda x: m._cross_entropy(x, labels, 0.1), 0.7)
    torch.testing.assert_close(m.training_step(batch, 0), clean32 + adversarial32)


def test_adversarial_training_trains_and_works_with_frozen_embeddings():
    torch.manual_seed(0)
    m = module(adversarial_eps=0.02, freeze_embeddings=True)  # small against these embeddings' norm, ~0.3 a row
    rows = [{**row, "labels": (row["input_ids"].float().mean() > 18.5).long()} for row in batches().dataset]
    batch = next(iter(DataLoader(rows, batch_size=len(rows))))
    before = m._loss(batch)[0].item()
    frozen = m.model.backbone.embeddings.token.weight.detach().clone()
    L.Trainer(max_steps=48, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(m, DataLoader(rows, batch_size=8, shuffle=True))  # fmt: skip
    assert m.eval()._loss(batch)[0].item() < before - 0.05
    assert torch.equal(frozen, m.model.backbone.embeddings.token.weight)  # still frozen: only e's gradient was taken
