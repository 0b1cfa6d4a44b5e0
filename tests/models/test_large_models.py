"""Large models: activation checkpointing changes memory, not results; presets have their published sizes; the
memory estimate is close to what a run really takes."""

from __future__ import annotations

import pytest
import torch

from attnfit.models import LanguageModel, ModelConfig


def _tiny(checkpointing: bool, dropout: float, causal: bool) -> LanguageModel:
    config = ModelConfig.from_dict(
        {
            "vocab_size": 50,
            "dim": 16,
            "max_len": 12,
            "causal": causal,
            "activation_checkpointing": checkpointing,
            "encoder": {"num_layers": 3, "dropout": dropout},
            "attention": {"num_heads": 2, "dropout": dropout},
        }
    )
    torch.manual_seed(0)
    return LanguageModel(config).double()


@pytest.mark.parametrize(("dropout", "causal"), [(0.0, True), (0.0, False), (0.2, True)])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(dropout, causal):
    """Float64, the same weights: checkpointed blocks recompute exactly what plain ones stored; with dropout too,
    since the recomputation replays the RNG state of the forward pass."""
    ids = torch.randint(1, 50, (3, 12), generator=torch.Generator().manual_seed(1))
    padding = torch.zeros(3, 12, dtype=torch.bool)
    padding[1, 9:] = True
    labels = ids.masked_fill(padding, -100)
    results, saved = [], []
    for checkpointing in (False, True):
        model = _tiny(checkpointing, dropout, causal).train()
        torch.manual_seed(7)  # the same dropout masks in both runs
        stored: list[int] = []  # tensors autograd keeps for the backward pass, as the forward pass stores them

        def pack(t: torch.Tensor, stored: list[int] = stored) -> torch.Tensor:
            stored.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model.labelled_loss(ids, padding, labels)[0]
        saved.append(sum(stored))
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    assert saved[1] < saved[0] / 2, saved  # checkpointed: the blocks' insides were not stored
    (plain_loss, plain), (ckpt_loss, ckpt) = results
    torch.testing.assert_close(ckpt_loss, plain_loss, rtol=1e-12, atol=1e-12)
    assert plain.keys() == ckpt.keys()
    for name, grad in plain.items():
        torch.testing.assert_close(ckpt[name], grad, rtol=1e-10, atol=1e-12, msg=name)


def test_activation_checkpointing_only_while_training_with_gradients():
    model = _tiny(True, 0.0, True)
    ids = torch.randint(1, 50, (2, 12))
    with torch.no_grad():
        model.train()
        a = model(ids)
    model.eval()
    torch.testing.assert_close(model(ids), a)  # eval and no_grad take the plain path: same outputs
