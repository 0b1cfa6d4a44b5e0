"""The adaptive-softmax LM head (``model.adaptive_cutoffs``) against a naive float64 reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnfit.errors import ConfigError
from attnfit.models import ModelConfig
from attnfit.models.electra import ElectraModel
from attnfit.models.language_model import LanguageModel, LMHead

V, D, CUTOFFS = 50, 16, [10, 30]


@torch.no_grad()
def naive_probs(head: LMHead, hidden: torch.Tensor) -> torch.Tensor:
    """``p(id)`` one id at a time: the head softmax over the frequent ids and one logit per tail cluster, times the
    softmax inside the id's cluster. float64 throughout."""
    x = head.transform(hidden).double() if head.transform is not None else hidden.double()
    w, b = head.decoder.weight.double(), head.decoder.bias.double()
    cw, cb = head.cluster.weight.double(), head.cluster.bias.double()
    bounds = [0, *CUTOFFS, V]
    probs = torch.zeros(x.shape[0], V, dtype=torch.float64)
    for n in range(x.shape[0]):
        logits = [float(w[i] @ x[n] + b[i]) for i in range(V)]
        head_logits = logits[: CUTOFFS[0]] + [float(cw[c] @ x[n] + cb[c]) for c in range(len(CUTOFFS))]
        head_total = sum(torch.tensor(head_logits, dtype=torch.float64).exp())
        for i in range(V):
            cluster = max(c for c in range(len(bounds) - 1) if bounds[c] <= i)
            if cluster == 0:
                probs[n, i] = torch.tensor(logits[i]).double().exp() / head_total
                continue
            lo, hi = bounds[cluster], bounds[cluster + 1]
            inside = torch.tensor(logits[lo:hi], dtype=torch.float64).exp()
            p_cluster = torch.tensor(head_logits[CUTOFFS[0] + cluster - 1]).double().exp() / head_total
            probs[n, i] = p_cluster * inside[i - lo] / inside.sum()
    return probs


@pytest.fixture
def head() -> LMHead:
    torch.manual_seed(0)
    head = LMHead(D, V, transform=True, cutoffs=CUTOFFS)
    for p in head.parameters():  # larger than init_weights' N(0, 0.02), so the clusters' probabilities differ a lot
        torch.nn.init.normal_(p, std=0.5)
    return head


def test_log_probabilities_match_the_naive_reference_and_sum_to_one(head):
    hidden = torch.randn(6, D)
    expected = naive_probs(head, hidden)
    got = head(hidden).double().exp()
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got.sum(-1), torch.ones(6, dtype=torch.float64), atol=1e-6, rtol=0)


def test_the_training_loss_equals_the_full_negative_log_likelihood_with_labels_in_every_cluster(head):
    hidden = torch.randn(30, D)
    labels = torch.tensor([0, 9, 10, 29, 30, 49] * 5)  # the first and last id of the head and of both tails
    expected = -naive_probs(head, hidden)[torch.arange(30), labels].log().mean()
    torch.testing.assert_close(head.loss(hidden, labels).double(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(head.loss(hidden, labels), F.nll_loss(head(hidden), labels), atol=1e-5, rtol=1e-5)
    plain = LMHead(D, V, transform=True)  # no cutoffs: the same method is plain cross-entropy
    torch.testing.assert_close(plain.loss(hidden, labels), F.cross_entropy(plain(hidden), labels))


def test_a_tail_no_label_falls_in_gets_no_gradient(head):
    """What the head saves: rare ids' output rows are not computed, so a batch of frequent ids leaves them alone."""
    hidden = torch.randn(8, D)
    head.loss(hidden, torch.tensor([1, 2, 3, 4, 12, 20, 29, 5])).backward()  # head and first tail only
    grad = head.decoder.weight.grad
    assert grad[:30].abs().sum() > 0
    assert torch.equal(grad[30:], torch.zeros_like(grad[30:]))
    assert head.cluster.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("causal", [False, True])
def test_training_and_evaluation_losses_agree_and_training_projects_no_logits(causal):
    config = {"vocab_size": V, "dim": D, "causal": causal, "adaptive_cutoffs": CUTOFFS}
    model = LanguageModel(ModelConfig.from_dict({**config, "encoder": {"name": "cnn", "num_layers": 1}}))
    ids = torch.randint(0, V, (3, 12), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[:, ::3] = -100  # unlabelled positions: masked LM's unmasked tokens, causal LM's padding
    model.train()
    train_loss, train_logits, train_labels = model.labelled_loss(ids, None, labels)
    model.eval()
    eval_loss, eval_logits, eval_labels = model.labelled_loss(ids, None, labels)
    assert train_logits is None and eval_logits.shape == (len(eval_labels), V)
    assert torch.equal(train_labels, eval_labels) and (eval_labels != -100).all()
    torch.testing.assert_close(train_loss, eval_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(eval_logits.exp().sum(-1), torch.ones(len(eval_labels)), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("cutoffs", "expected"),
    [
        ([30, 10], "model.adaptive_cutoffs=[30, 10] must be increasing ids ≥ 1"),
        ([0, 10], "model.adaptive_cutoffs=[0, 10] must be increasing ids ≥ 1"),
        ([10, "x"], "model.adaptive_cutoffs[1] must be int, got 'x'"),
        ([10, 50], "model.adaptive_cutoffs=[10, 50] must lie inside the vocabulary of 50 ids"),
    ],
)
def test_bad_cutoffs_are_refused_with_the_value(cutoffs, expected):
    with pytest.raises(ConfigError) as error:
        LanguageModel(ModelConfig.from_dict({"vocab_size": V, "dim": D, "adaptive_cutoffs": cutoffs}))
    assert expected in str(error.value)


def test_electra_refuses_an_adaptive_head():
    config = ModelConfig.from_dict({"vocab_size": V, "dim": D, "adaptive_cutoffs": CUTOFFS})
    with pytest.raises(ConfigError, match=r"model.adaptive_cutoffs=\[10, 30\] is for task=mlm and task=clm"):
        ElectraModel(config)
