"""Extractive QA: BiDAF attention against a float64 loop, segment plumbing, every encoder × attention, a toy task."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F

from attnfit.errors import ConfigError
from attnfit.models import AttentionConfig, EncoderConfig, LanguageModel, ModelConfig, load_pretrained_backbone
from attnfit.models.qa import (
    MASKED_LOGIT,
    BiDAFAttention,
    QAConfig,
    SpanExtractor,
    scatter_back,
    scatter_grid,
    split_segments,
)

ENCODERS = ["lstm", "gru", "cnn", "transformer"]
ATTENTIONS = ["global", "local", "self"]
INTERACTIONS = ["concat", "bidaf"]
PAD, CLS, SEP, EOS = 0, 1, 2, 3
MARKERS = range(4, 8)  # toy task: the answer follows the marker that the question names
FILLERS = (8, 24)  # token ids [8, 24)


def backbone_config(encoder: str = "transformer", attention: str = "self", dim: int = 16, layers: int = 1):
    return ModelConfig(
        vocab_size=FILLERS[1],
        dim=dim,
        max_len=40,
        encoder=EncoderConfig(name=encoder, num_layers=layers, dropout=0.0),
        attention=AttentionConfig(name=attention, num_heads=2, window=2),
    )


def pair(questions: list[list[int]], contexts: list[list[int]], extra_padding: int = 0):
    """``[<cls>] q [<sep>] c [<eos>]`` rows, right-padded → ``(input_ids, padding_mask, segment_ids)``."""
    rows = [[CLS, *q, SEP, *c, EOS] for q, c in zip(questions, contexts, strict=True)]
    segs = [[0] * (len(q) + 2) + [1] * len(c) + [2] for q, c in zip(questions, contexts, strict=True)]
    T = max(map(len, rows)) + extra_padding
    ids = torch.tensor([r + [PAD] * (T - len(r)) for r in rows])
    segments = torch.tensor([s + [2] * (T - len(s)) for s in segs])
    return ids, ids == PAD, segments


def random_pairs(generator: torch.Generator, batch: int = 4, extra_padding: int = 0):
    lengths = torch.randint(1, 6, (batch, 2), generator=generator).tolist()
    draw = lambda n: torch.randint(*FILLERS, (n,), generator=generator).tolist()  # noqa: E731
    return pair([draw(q) for q, _ in lengths], [draw(c) for _, c in lengths], extra_padding)


# ---------------------------------------------------------------------------------------------------------------
# BiDAF attention


@torch.no_grad()
def naive_bidaf(module: BiDAFAttention, h, u, h_pad, u_pad):
    """Seo et al.'s formulas with explicit loops in float64: (G, c2q, q2c) at real context positions."""
    w = module.similarity.weight[0].double()
    h, u = h.double(), u.double()
    B, T, D = h.shape
    J = u.shape[1]
    g = torch.zeros(B, T, 4 * D, dtype=torch.float64)
    c2q = torch.zeros(B, T, J, dtype=torch.float64)
    q2c = torch.zeros(B, T, dtype=torch.float64)
    for b in range(B):
        ts = [t for t in range(T) if not h_pad[b, t]]
        js = [j for j in range(J) if not u_pad[b, j]]
        s = {(t, j): float(w @ torch.cat([h[b, t], u[b, j], h[b, t] * u[b, j]])) for t in ts for j in js}
        for t in ts:
            c2q[b, t, js] = torch.softmax(torch.tensor([s[t, j] for j in js], dtype=torch.float64), 0)
        q2c[b, ts] = torch.softmax(torch.tensor([max(s[t, j] for j in js) for t in ts], dtype=torch.float64), 0)
        h_tilde = sum(q2c[b, t] * h[b, t] for t in ts)
        for t in ts:
            u_tilde = sum(c2q[b, t, j] * u[b, j] for j in js)
            g[b, t] = torch.cat([h[b, t], u_tilde, h[b, t] * u_tilde, h[b, t] * h_tilde])
    return g, c2q, q2c


def _bidaf_inputs(seed: int, T: int = 7, J: int = 5, D: int = 6):
    generator = torch.Generator().manual_seed(seed)
    h = torch.randn(3, T, D, generator=generator, dtype=torch.float64)
    u = torch.randn(3, J, D, generator=generator, dtype=torch.float64)
    h_pad = torch.zeros(3, T, dtype=torch.bool)
    u_pad = torch.zeros(3, J, dtype=torch.bool)
    h_pad[1, T - 3 :] = True  # padding in both context and question, in different rows
    u_pad[2, J - 2 :] = True
    h_pad[2, T - 1 :] = True
    return h, u, h_pad, u_pad


def test_bidaf_attention_matches_naive_loop():
    torch.manual_seed(0)
    module = BiDAFAttention(6).double()
    nn_w = module.similarity.weight
    with torch.no_grad():
        nn_w.normal_()  # large enough that the softmaxes are far from uniform
    h, u, h_pad, u_pad = _bidaf_inputs(0)
    g, c2q, q2c = module(h, u, h_pad, u_pad)
    ref_g, ref_c2q, ref_q2c = naive_bidaf(module, h, u, h_pad, u_pad)
    assert g.shape == (3, 7, 24) and c2q.shape == (3, 7, 5) and q2c.shape == (3, 7)
    for ours, ref in ((g, ref_g), (c2q, ref_c2q), (q2c, ref_q2c)):  # padding rows are zero in both
        torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-10)
    assert (c2q.masked_select(u_pad[:, None, :].expand_as(c2q)) == 0).all()  # padding question gets nothing


def test_bidaf_attention_ignores_appended_padding():
    torch.manual_seed(0)
    module = BiDAFAttention(6).double()
    h, u, h_pad, u_pad = _bidaf_inputs(1)
    g, c2q, q2c = module(h, u, h_pad, u_pad)
    noise = torch.Generator().manual_seed(2)
    h2 = torch.cat([h, 100 * torch.randn(3, 4, 6, generator=noise, dtype=torch.float64)], 1)
    u2 = torch.cat([u, 100 * torch.randn(3, 3, 6, generator=noise, dtype=torch.float64)], 1)
    h_pad2 = torch.cat([h_pad, torch.ones(3, 4, dtype=torch.bool)], 1)
    u_pad2 = torch.cat([u_pad, torch.ones(3, 3, dtype=torch.bool)], 1)
    g2, c2q2, q2c2 = module(h2, u2, h_pad2, u_pad2)
    torch.testing.assert_close(g2[:, :7], g, atol=1e-12, rtol=0)
    torch.testing.assert_close(c2q2[:, :7, :5], c2q, atol=1e-12, rtol=0)
    torch.testing.assert_close(q2c2[:, :7], q2c, atol=1e-12, rtol=0)
    assert (g2[:, 7:] == 0).all() and (c2q2[:, :, 5:] == 0).all() and (q2c2[:, 7:] == 0).all()


# ---------------------------------------------------------------------------------------------------------------
# Segment plumbing


def test_split_segments_and_scatter_back_round_trip():
    ids, _, segments = random_pairs(torch.Generator().manual_seed(0), batch=5, extra_padding=2)
    hidden = torch.randn(*ids.shape, 3)
    for segment in (0, 1, 2):
        inside = segments == segment
        got, index, pad = split_segments(hidden, segments, segment)
        assert got.shape == (5, int(inside.sum(1).max()), 3)
        assert ((~pad).sum(1) == inside.sum(1)).all()
        for b in range(5):  # the segment's tokens, in order, at the front
            torch.testing.assert_close(got[b][~pad[b]], hidden[b][inside[b]], rtol=0, atol=0)
        assert all(len(set(row.tolist())) == len(row) for row in index)  # no collisions when scattering
        back = scatter_back(got, index, pad, ids.shape[1], fill=-7.0)
        torch.testing.assert_close(back, hidden.masked_fill(~inside[..., None], -7.0), rtol=0, atol=0)
        ids_back = scatter_back(split_segments(ids, segments, segment)[0], index, pad, ids.shape[1], fill=-1)
        assert torch.equal(ids_back, ids.masked_fill(~inside, -1))


def test_split_segments_handles_an_empty_segment():
    segments = torch.tensor([[0, 0, 2], [0, 2, 2]])
    got, index, pad = split_segments(torch.arange(6).view(2, 3), segments, 1)
    assert got.shape == (2, 1) and pad.all()
    assert (scatter_back(got, index, pad, 3, fill=0) == 0).all()


def test_scatter_grid_places_blocks():
    segments = torch.tensor([[0, 0, 1, 1, 1, 2], [0, 1, 1, 2, 2, 2]])
    _, r_index, r_pad = split_segments(segments, segments, 1)
    _, c_index, c_pad = split_segments(segments, segments, 0)
    weights = torch.rand(2, 3, 2)
    grid = scatter_grid(weights, r_index, r_pad, c_index, c_pad, 6)
    rows, cols = segments == 1, segments == 0
    for b in range(2):
        torch.testing.assert_close(grid[b][rows[b]][:, cols[b]], weights[b][~r_pad[b]][:, ~c_pad[b]])
    assert grid[~(rows[:, :, None] & cols[:, None, :])].abs().sum() == 0


# ---------------------------------------------------------------------------------------------------------------
# The span extractor over every backbone


def test_qa_config_validation_and_round_trip():
    with pytest.raises(ConfigError, match="task.interaction"):
        QAConfig(interaction="coattention")
    with pytest.raises(ConfigError, match="task.modeling_layers"):
        QAConfig(modeling_layers=0)
    with pytest.raises(ConfigError, match="did you mean task.dropout"):
        QAConfig.from_dict({"dropuot": 0.2})
    config = QAConfig(interaction="bidaf", dropout=0.2, modeling_layers=2)
    assert QAConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("interaction", INTERACTIONS)
@pytest.mark.parametrize(("encoder", "attention"), list(itertools.product(ENCODERS, ATTENTIONS)))
def test_every_backbone_gives_masked_logits_and_question_attention(encoder, attention, interaction):
    torch.manual_seed(0)
    model = SpanExtractor(backbone_config(encoder, attention), QAConfig(interaction=interaction, dropout=0.0)).eval()
    ids, padding, segments = random_pairs(torch.Generator().manual_seed(1), batch=4)
    B, T = ids.shape
    out = model(ids, padding, segments, need_weights=True)
    allowed = segments == 1
    allowed[:, 0] = True
    for logits in (out.start_logits, out.end_logits):
        assert logits.shape == (B, T) and torch.isfinite(logits).all()
        assert (logits[~allowed] == MASKED_LOGIT).all() and (logits[allowed] != MASKED_LOGIT).all()
    assert len(out.attentions) == 1 and out.attentions[0].shape == (B, 2, T, T)
    qa = out.question_attention
    assert qa.shape == (B, T, T)
    context_rows = segments == 1
    sums = qa.sum(-1)[context_rows]
    if attention == "local" and interaction == "concat":  # rows whose window misses the question stay 0
        sums = torch.where(sums == 0, 1.0, sums)
    torch.testing.assert_close(sums, torch.ones(int(context_rows.sum())))
    assert qa[~(context_rows[:, :, None] & (segments == 0)[:, None, :])].abs().sum() == 0
    plain = model(ids, padding, segments)
    assert plain.attentions == [] and plain.question_attention is None
    torch.testing.assert_close(plain.start_logits, out.start_logits)

    # Extra padding changes nothing at the real positions.
    ids2, padding2, segments2 = random_pairs(torch.Generator().manual_seed(1), batch=4, extra_padding=3)
    out2 = model(ids2, padding2, segments2, need_weights=True)
    torch.testing.assert_close(out2.start_logits[:, :T], out.start_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out2.end_logits[:, :T], out.end_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out2.question_attention[:, :T, :T], qa, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("interaction", INTERACTIONS)
def test_gradients_reach_the_backbone(interaction):
    torch.manual_seed(0)
    model = SpanExtractor(backbone_config("lstm", "global"), QAConfig(interaction=interaction))
    ids, padding, segments = random_pairs(torch.Generator().manual_seed(0))
    out = model(ids, padding, segments)
    target = torch.tensor([0, 0, 0, 0]) + (segments == 1).long().argmax(1)  # first context token
    (F.cross_entropy(out.start_logits, target) + F.cross_entropy(out.end_logits, target)).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
    assert model.backbone.encoder.rnn.weight_ih_l0.grad.abs().sum() > 0
    assert model.backbone.embeddings.token.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("interaction", INTERACTIONS)
def test_pretrained_backbone_loads_into_the_span_extractor(interaction):
    config = backbone_config("transformer", "local")
    lm = LanguageModel(config)
    model = SpanExtractor(config, QAConfig(interaction=interaction))
    head_before = copy.deepcopy({k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")})
    report = load_pretrained_backbone(model, lm.state_dict())
    assert report.dropped and all(k.startswith("head.") for k in report.dropped)
    for key, value in lm.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key
    for key, value in head_before.items():  # the QA layers stay as initialised
        assert torch.equal(model.state_dict()[key], value), key
    assert sorted(report.initialised) == sorted(head_before)


# ---------------------------------------------------------------------------------------------------------------
# A toy span task: the answer is the context token right after the marker that the question names


def toy_batch(generator: torch.Generator, batch: int, distractors: int = 1):
    """Questions hold one marker among fillers; contexts hold that marker and ``distractors`` other markers, each
    followed by a filler. The answer (start = end) is the filler right after the question's marker.
    """
    rand = lambda high: int(torch.randint(high, (1,), generator=generator))  # noqa: E731
    filler = lambda: rand(FILLERS[1] - FILLERS[0]) + FILLERS[0]  # noqa: E731
    questions, contexts, answers = [], [], []
    for _ in range(batch):
        markers = [MARKERS[i] for i in torch.randperm(len(MARKERS), generator=generator)[: 1 + distractors].tolist()]
        question = [filler() for _ in range(1 + rand(3))]
        question.insert(rand(len(question) + 1), markers[0])
        context = [filler() for _ in range(6 + rand(4))]
        slots = torch.randperm(len(context) - 1, generator=generator)[: len(markers)].tolist()
        while any(abs(a - b) < 2 for a, b in itertools.combinations(slots, 2)):  # a marker never hides an answer
            slots = torch.randperm(len(context) - 1, generator=generator)[: len(markers)].tolist()
        for slot, marker in zip(slots, markers, strict=True):
            context[slot] = marker
        questions.append(question)
        contexts.append(context)
        answers.append(len(question) + 2 + slots[0] + 1)  # <cls> question <sep>, then the context
    return (*pair(questions, contexts), torch.tensor(answers))


# concat with one marker: finding it is enough. bidaf with a distractor marker: the question decides the span.
@pytest.mark.parametrize(
    ("interaction", "encoder", "distractors", "steps"),
    [("concat", "gru", 0, 200), ("concat", "transformer", 0, 600), ("bidaf", "lstm", 1, 300)],
)
def test_tiny_model_learns_the_toy_span_task(interaction, encoder, distractors, steps):
    torch.manual_seed(0)
    config = backbone_config(encoder, "self", dim=32, layers=1 if encoder == "gru" or interaction == "bidaf" else 2)
    model = SpanExtractor(config, QAConfig(interaction=interaction, dropout=0.0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        ids, padding, segments, answer = toy_batch(generator, 32, distractors)
        out = model(ids, padding, segments)
        loss = (F.cross_entropy(out.start_logits, answer) + F.cross_entropy(out.end_logits, answer)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        ids, padding, segments, answer = toy_batch(torch.Generator().manual_seed(123), 256, distractors)
        out = model(ids, padding, segments)
    exact = ((out.start_logits.argmax(1) == answer) & (out.end_logits.argmax(1) == answer)).float().mean()
    start, end = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert end < start / 2, (start, end)
    assert exact > 0.8, (exact, start, end)
