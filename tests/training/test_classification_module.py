"""Fine-tuning controls of ClassificationModule: layer-wise LR, gradual unfreezing, class weights."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from attnfit.errors import ConfigError
from attnfit.models import ClassifierConfig, ModelConfig, SequenceClassifier, prepare_for_finetuning
from attnfit.models.finetuning import layer_groups
from attnfit.pretrained import ModelRecord
from attnfit.training.callbacks import GradualUnfreezing
from attnfit.training.classification_module import ClassificationModule
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


def module(class_weights: list[float] | None = None, **finetune) -> ClassificationModule:
    """A classifier prepared for fine-tuning as attnfit.tasks.classification does it."""
    model = SequenceClassifier(ModelConfig.from_dict(MODEL), ClassifierConfig.from_dict(CLASSIFIER))
    plan = prepare_for_finetuning(model, finetune)
    optimization = Optimization(OPT, SCHED, 10, plan.layers, plan.head, plan.layer_lr_decay, plan.head_lr)
    record = ModelRecord("classification", MODEL, "", head_config=CLASSIFIER, label_names=["no", "yes"])
    return ClassificationModule(model, record, optimization, class_weights=class_weights)


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
