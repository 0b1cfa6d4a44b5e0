"""Seq2seq n-best lists, minimum length, no-repeat-n-gram and length normalisation against brute force: with a
beam wider than the number of possible hypotheses, beam search must return exactly the top-n of an exhaustive
enumeration scored by teacher forcing."""

from __future__ import annotations

import itertools

import pytest
import torch

from attnfit.errors import ConfigError
from attnfit.models import AttentionConfig, EncoderConfig, ModelConfig
from attnfit.models.seq2seq import CrossAttentionConfig, DecoderConfig, Seq2SeqConfig, Seq2SeqModel, beam_search
from attnfit.models.seq2seq.decoding import length_normalised, repeated_ngram_bans

PAD, BOS, EOS, VOCAB, MAX_LEN = 0, 1, 2, 5, 4


@pytest.fixture(scope="module")
def model() -> Seq2SeqModel:
    torch.manual_seed(3)
    config = Seq2SeqConfig(
        encoder=ModelConfig(
            vocab_size=9,
            dim=16,
            max_len=16,
            pad_id=PAD,
            encoder=EncoderConfig(name="transformer", num_layers=1, dropout=0.0),
            attention=AttentionConfig(name="self", num_heads=2),
        ),
        target_vocab_size=VOCAB,
        decoder=DecoderConfig(name="transformer", num_layers=1, num_heads=2, dropout=0.0),
        cross_attention=CrossAttentionConfig(name="self", num_heads=2),
    )
    model = Seq2SeqModel(config)
    for p in model.parameters():
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.5)  # peaked distributions: clear rankings, no near-ties
    return model.double().eval()


def brute_force(model, src, n, min_len=0, no_repeat=0, norm="gnmt", alpha=1.0) -> list[list[int]]:
    """Every hypothesis (tokens then EOS, or MAX_LEN tokens unfinished), scored by teacher forcing, best first."""
    others = [t for t in range(VOCAB) if t != EOS]
    hyps = [(list(seq), True) for k in range(MAX_LEN) for seq in itertools.product(others, repeat=k)]
    hyps += [(list(seq), False) for seq in itertools.product(others, repeat=MAX_LEN)]
    scored = []
    for seq, ended in hyps:
        if ended and len(seq) < min_len:
            continue
        grams = [tuple(seq[i : i + no_repeat]) for i in range(len(seq) - no_repeat + 1)] if no_repeat else []
        if len(grams) != len(set(grams)):
            continue
        target = [*seq, EOS] if ended else seq
        with torch.no_grad():
            logits, _ = model(src, None, torch.tensor([[BOS, *target[:-1]]]))
        logp = torch.log_softmax(logits[0], -1).gather(1, torch.tensor(target)[:, None]).sum()
        rank = length_normalised(logp[None], torch.tensor([len(target)]), norm, alpha)
        scored.append((float(rank), seq))
    scored.sort(key=lambda x: -x[0])
    return [seq for _, seq in scored[:n]]


@pytest.mark.parametrize(
    ("norm", "alpha", "min_len", "no_repeat"),
    [("gnmt", 1.0, 0, 0), ("average", 1.0, 0, 0), ("none", 0.0, 0, 0), ("gnmt", 0.6, 2, 0), ("average", 1.0, 0, 2)],
)
def test_nbest_equals_exhaustive_search(model, norm, alpha, min_len, no_repeat):
    src = torch.tensor([[5, 6, 7, 8]])
    out = beam_search(
        model, src, None, BOS, EOS, MAX_LEN, beam_size=4**MAX_LEN + 30, length_penalty=alpha, n_best=5,
        min_len=min_len, no_repeat_ngram=no_repeat, length_norm=norm,
    )  # fmt: skip
    got = [out.tokens[i, : int(out.lengths[i])].tolist() for i in range(5)]
    assert got == brute_force(model, src, 5, min_len, no_repeat, norm, alpha)


def test_constraints_change_the_search(model):
    src = torch.tensor([[5, 6, 7, 8], [8, 7, 6, 5]])
    free = beam_search(model, src, None, BOS, EOS, 8, beam_size=4, n_best=3)
    assert free.tokens.shape[0] == 6  # B·n rows, sentence-major
    assert (free.scores.view(2, 3)[:, 0] >= free.scores.view(2, 3)[:, 1] - 1e9).all()
    longer = beam_search(model, src, None, BOS, EOS, 8, beam_size=4, min_len=6)
    assert (longer.lengths >= 6).all()
    blocked = beam_search(model, src, None, BOS, EOS, 8, beam_size=4, no_repeat_ngram=1)
    for row in range(2):
        seq = blocked.tokens[row, : int(blocked.lengths[row])].tolist()
        assert len(seq) == len(set(seq))


def test_repeated_ngram_bans_like_a_loop():
    tokens = torch.tensor([[3, 4, 3, 4, 3], [1, 2, 3, 4, 5]])
    bans = repeated_ngram_bans(tokens, 2, 6)
    assert bans[0].nonzero()[:, 0].tolist() == [4]  # "3 4" seen: after a 3, 4 is banned
    assert not bans[1].any()
    assert repeated_ngram_bans(tokens, 1, 6)[1].nonzero()[:, 0].tolist() == [1, 2, 3, 4, 5]


def test_bad_nbest_and_length_norm(model):
    src = torch.tensor([[5, 6]])
    with pytest.raises(ConfigError, match="n_best=5 must be between 1 and beam_size=2"):
        beam_search(model, src, None, BOS, EOS, 4, beam_size=2, n_best=5)
    with pytest.raises(ConfigError, match="length_norm"):
        beam_search(model, src, None, BOS, EOS, 4, beam_size=2, length_norm="mean")
