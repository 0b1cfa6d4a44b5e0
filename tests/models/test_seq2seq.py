"""Seq2seq: every decoder × cross-attention trains and ignores source padding; incremental decoding equals teacher
forcing; greedy equals beam search with one beam; a tiny model learns to reverse; configs fail clearly."""

from __future__ import annotations

import itertools

import pytest
import torch

from attnfit.errors import ConfigError
from attnfit.models import AttentionConfig, EncoderConfig, LanguageModel, ModelConfig, load_pretrained_backbone
from attnfit.models.seq2seq import (
    CrossAttentionConfig,
    DecoderConfig,
    Seq2SeqConfig,
    Seq2SeqModel,
    beam_search,
    greedy_decode,
    reorder_state,
)

PAD, BOS, EOS = 0, 1, 2
SRC_VOCAB, TGT_VOCAB = 30, 27
DECODERS = ["lstm", "gru", "transformer"]
CROSS = {  # id -> CrossAttentionConfig kwargs
    "global-dot": {"name": "global", "score": "dot"},
    "global-general": {"name": "global", "score": "general"},
    "global-concat": {"name": "global", "score": "concat"},
    "local-m": {"name": "luong_local", "local_mode": "m"},
    "local-p": {"name": "luong_local", "local_mode": "p"},
    "self": {"name": "self"},
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine waiting for them costs 10×."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config(
    decoder: str, cross: str, encoder: str = "transformer", dim: int = 16, decoder_options: dict | None = None, **kw
) -> Seq2SeqConfig:
    decoder_options = decoder_options or {}
    return Seq2SeqConfig(
        encoder=ModelConfig(
            vocab_size=kw.pop("src_vocab", SRC_VOCAB),
            dim=dim,
            max_len=32,
            pad_id=PAD,
            encoder=EncoderConfig(name=encoder, num_layers=1, dropout=0.0),
            attention=AttentionConfig(name="self", num_heads=2),
        ),
        target_vocab_size=kw.pop("tgt_vocab", TGT_VOCAB),
        decoder=DecoderConfig(**{"name": decoder, "num_layers": 2, "num_heads": 2, "dropout": 0.0, **decoder_options}),
        cross_attention=CrossAttentionConfig(window=2, num_heads=2, **CROSS[cross]),
        max_target_len=32,
        **kw,
    )


def batch(generator: torch.Generator, n: int = 3, src_len: int = 9, tgt_len: int = 6):
    """Random source/target ids with source padding in every row but the first."""
    src = torch.randint(3, SRC_VOCAB, (n, src_len), generator=generator)
    lengths = torch.tensor([src_len] + [src_len - 2 - i for i in range(n - 1)])
    source_padding_mask = torch.arange(src_len)[None, :] >= lengths[:, None]
    src = src.masked_fill(source_padding_mask, PAD)
    tgt = torch.randint(3, TGT_VOCAB, (n, tgt_len + 1), generator=generator)
    tgt[:, 0] = BOS
    return src, source_padding_mask, tgt[:, :-1], tgt[:, 1:]


@pytest.mark.parametrize(("decoder", "cross"), list(itertools.product(DECODERS, CROSS)))
def test_every_decoder_and_cross_attention(decoder, cross):
    torch.manual_seed(0)
    model = Seq2SeqModel(config(decoder, cross, encoder="lstm" if decoder == "lstm" else "transformer")).eval()
    src, source_padding_mask, tgt_in, labels = batch(torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, weights = model(src, source_padding_mask, tgt_in, need_weights=True)
        alone, _ = model(src[2:, :6], None, tgt_in[2:])
    assert logits.shape == (3, 6, TGT_VOCAB)
    assert weights.shape == (3, 2, 6, 9)
    assert float(weights[1:, :, :, 7:].abs().max()) == 0.0  # no weight on source padding

    # Row 2 alone (its 6 real source tokens, no padding) gives the same logits as inside the padded batch.
    torch.testing.assert_close(alone[0], logits[2], atol=1e-5, rtol=1e-5)

    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = model.loss(model(src, source_padding_mask, tgt_in)[0], labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


INCREMENTAL = [("transformer", {}), ("gru", {}), ("lstm", {}), ("gru", {"input_feeding": False})]


@pytest.mark.parametrize(("decoder", "options"), INCREMENTAL, ids=["transformer", "gru", "lstm", "gru-no-feeding"])
@pytest.mark.parametrize("cross", ["global-general", "local-m", "local-p", "self"])
def test_incremental_decoding_matches_teacher_forcing(decoder, options, cross):
    torch.manual_seed(0)
    model = Seq2SeqModel(config(decoder, cross, decoder_options=options)).eval()
    src, source_padding_mask, tgt_in, _ = batch(torch.Generator().manual_seed(1), tgt_len=12)
    full, full_weights = model(src, source_padding_mask, tgt_in, need_weights=True)

    memory = model.encode(src, source_padding_mask)
    state, logits, weights, start = None, [], [], 0
    for size in [1, 1, 3, 1, 2, 4]:  # single tokens and chunks: a chunk continues a cached prefix too
        step_logits, step_weights, state = model.decode_step(
            tgt_in[:, start : start + size], memory, source_padding_mask, state, need_weights=True
        )
        logits.append(step_logits)
        weights.append(step_weights)
        start += size
    assert start == tgt_in.shape[1] and state.step == start
    torch.testing.assert_close(torch.cat(logits, 1), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(weights, 2), full_weights, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("decoder", ["transformer", "gru"])
def test_reordered_state_follows_its_rows(decoder):
    torch.manual_seed(0)
    model = Seq2SeqModel(config(decoder, "local-m")).eval()
    src, source_padding_mask, tgt_in, _ = batch(torch.Generator().manual_seed(2))
    memory = model.encode(src, source_padding_mask)
    _, _, state = model.decode_step(tgt_in[:, :3], memory, source_padding_mask)
    index = torch.tensor([2, 0, 0, 1])
    moved = reorder_state(state, index)
    logits, _, _ = model.decode_step(tgt_in[index, 3:], memory[index], source_padding_mask[index], moved)
    torch.testing.assert_close(logits, model(src[index], source_padding_mask[index], tgt_in[index])[0][:, 3:])


def reverse_batch(n: int, generator: torch.Generator, vocab: int = 24):
    """Toy task: targets are the sources (6–10 tokens of 20 symbols, ids 4…23) reversed, then EOS."""
    lengths = torch.randint(6, 11, (n,), generator=generator)
    src = torch.randint(4, vocab, (n, 10), generator=generator)
    source_padding_mask = torch.arange(10)[None, :] >= lengths[:, None]
    src = src.masked_fill(source_padding_mask, PAD)
    tgt = torch.full((n, 12), PAD)
    labels = torch.full((n, 11), -100)
    for i, length in enumerate(lengths.tolist()):
        reversed_ids = src[i, :length].flip(0)
        tgt[i, 0], tgt[i, 1 : length + 1], tgt[i, length + 1] = BOS, reversed_ids, EOS
        labels[i, :length], labels[i, length] = reversed_ids, EOS
    return src, source_padding_mask, tgt[:, :-1], labels


def train_reverse(decoder: str, steps: int, dim: int = 64, batch_size: int = 64) -> Seq2SeqModel:
    torch.manual_seed(0)
    cfg = Seq2SeqConfig(
        encoder=ModelConfig(
            vocab_size=24,
            dim=dim,
            max_len=16,
            encoder=EncoderConfig(name="transformer", num_layers=1, dropout=0.0),
            attention=AttentionConfig(name="self", num_heads=4),
        ),
        target_vocab_size=24,
        decoder=DecoderConfig(name=decoder, num_layers=1, num_heads=4, dropout=0.0),
        cross_attention=CrossAttentionConfig(name="global", score="general"),
        max_target_len=16,
    )
    model = Seq2SeqModel(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / max(steps, 1))
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        src, source_padding_mask, tgt_in, labels = reverse_batch(batch_size, generator)
        loss = model.loss(model(src, source_padding_mask, tgt_in)[0], labels)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    return model.eval()


@pytest.mark.parametrize(("decoder", "steps"), [("gru", 250), ("transformer", 200)])
def test_tiny_model_learns_to_reverse(decoder, steps):
    model = train_reverse(decoder, steps)
    src, source_padding_mask, _, labels = reverse_batch(200, torch.Generator().manual_seed(99))
    out = greedy_decode(model, src, source_padding_mask, BOS, EOS, max_len=12)
    expected = labels.masked_fill(labels == EOS, -100)
    lengths = (expected != -100).sum(1)
    width = out.tokens.shape[1]
    exact = (out.lengths == lengths) & (
        out.tokens == expected[:, :width].masked_fill(expected[:, :width] < 0, PAD)
    ).all(1)
    assert exact.float().mean() >= 0.9, exact.float().mean()


def sequence_logprob(model: Seq2SeqModel, src, source_padding_mask, tokens, lengths, max_len: int) -> torch.Tensor:
    """Teacher-forced log-probability of each hypothesis, EOS included unless it stopped at ``max_len``."""
    scores = []
    for i in range(src.shape[0]):
        n = int(lengths[i])
        ids = tokens[i, :n].tolist() + ([EOS] if n < max_len else [])
        logits, _ = model(src[i : i + 1], source_padding_mask[i : i + 1], torch.tensor([[BOS, *ids[:-1]]]))
        logp = torch.log_softmax(logits[0].double(), -1)
        scores.append(logp[torch.arange(len(ids)), torch.tensor(ids)].sum())
    return torch.stack(scores)


@pytest.mark.parametrize("decoder", ["transformer", "gru"])
@pytest.mark.parametrize("trained", [False, True], ids=["random", "trained"])
def test_beam_search(decoder, trained):
    model = train_reverse(decoder, steps=40, dim=32, batch_size=32) if trained else train_reverse(decoder, 0, 32)
    src, source_padding_mask, _, _ = reverse_batch(6, torch.Generator().manual_seed(5))
    greedy = greedy_decode(model, src, source_padding_mask, BOS, EOS, max_len=12, need_alignments=True)
    one = beam_search(model, src, source_padding_mask, BOS, EOS, max_len=12, beam_size=1, need_alignments=True)
    assert torch.equal(one.tokens, greedy.tokens) and torch.equal(one.lengths, greedy.lengths)
    torch.testing.assert_close(one.alignments, greedy.alignments)
    assert greedy.alignments.shape == (6, greedy.tokens.shape[1], 10)
    # Global attention: each real step's weights sum to 1 over the source; steps past the length are zeros.
    steps = torch.arange(greedy.tokens.shape[1])[None, :] < greedy.lengths[:, None]
    torch.testing.assert_close(greedy.alignments.sum(-1), steps.float())

    beam = beam_search(model, src, source_padding_mask, BOS, EOS, max_len=12, beam_size=4, length_penalty=0.0)
    greedy_scores = sequence_logprob(model, src, source_padding_mask, greedy.tokens, greedy.lengths, 12)
    beam_scores = sequence_logprob(model, src, source_padding_mask, beam.tokens, beam.lengths, 12)
    torch.testing.assert_close(greedy.scores, greedy_scores, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(beam.scores, beam_scores, atol=1e-4, rtol=1e-4)
    assert bool((beam_scores >= greedy_scores - 1e-6).all()), (beam_scores, greedy_scores)
    assert not bool((beam.tokens == EOS).any())  # EOS is never part of the returned tokens


def test_config_errors_and_round_trip():
    with pytest.raises(ConfigError, match=r"unknown decoder 'rnn'.*gru, lstm, transformer"):
        DecoderConfig(name="rnn")
    with pytest.raises(ConfigError, match=r"share_embeddings=true needs one vocabulary.*30.*27"):
        config("gru", "global-dot", share_embeddings=True)
    with pytest.raises(ConfigError, match="causal=true"):
        Seq2SeqConfig(encoder=ModelConfig(vocab_size=10, causal=True), target_vocab_size=10)
    with pytest.raises(ConfigError, match="local_mode"):
        CrossAttentionConfig(name="luong_local", local_mode="q")
    with pytest.raises(ConfigError, match=r"cross_attention.name=local is now luong_local .*attention=local is"):
        CrossAttentionConfig(name="local")  # the old name of Luong's local attention
    with pytest.raises(ConfigError, match="decoder.num_heads=3 does not divide model.dim=16"):
        config("transformer", "self", decoder_options={"num_heads": 3})

    cfg = config("transformer", "local-p")
    assert Seq2SeqConfig.from_dict(cfg.to_dict()) == cfg
    data = cfg.to_dict()
    data["decoder"]["num_layer"] = 2
    with pytest.raises(ConfigError, match=r"did you mean seq2seq.decoder.num_layers"):
        Seq2SeqConfig.from_dict(data)


def test_shared_embeddings_and_pretrained_encoder():
    model = Seq2SeqModel(config("transformer", "global-dot", src_vocab=TGT_VOCAB, share_embeddings=True))
    token = model.encoder.embeddings.token.weight
    assert model.tgt_embeddings.token.weight is token and model.output.weight is token

    lm = LanguageModel(model.config.encoder)
    report = load_pretrained_backbone(model, lm.state_dict())
    assert report.loaded and torch.equal(model.encoder.embeddings.token.weight, lm.backbone.embeddings.token.weight)
    assert model.tgt_embeddings.token.weight is model.encoder.embeddings.token.weight  # still shared


def test_decoding_longer_than_max_target_len_fails_clearly():
    model = Seq2SeqModel(config("gru", "global-dot")).eval()
    src, source_padding_mask, _, _ = batch(torch.Generator().manual_seed(3))
    with pytest.raises(ValueError, match="max_len=33 exceeds the model's max_target_len=32"):
        beam_search(model, src, source_padding_mask, BOS, EOS, max_len=33)
