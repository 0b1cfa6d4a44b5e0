"""Causal-LM generation: the cache changes speed, never tokens; left padding changes nothing; the samplers."""

from __future__ import annotations

import pytest
import torch

from attnfit.errors import ConfigError
from attnfit.models import AttentionConfig, EncoderConfig, LanguageModel, ModelConfig
from attnfit.models.sampling import Sampling, keep_top_k, keep_top_p, next_token, penalise_repeats

ENCODERS = [
    ("transformer", "self", "dot"),
    ("transformer", "global", "general"),
    ("transformer", "local", "concat"),
    ("lstm", "self", "dot"),
    ("gru", "local", "dot"),
    ("cnn", "global", "dot"),
]
PROMPTS = [[3, 4, 5, 6, 7], [8, 9], [10, 11, 12, 13, 14, 15, 16]]


def causal_model(encoder: str, attention: str, score: str, max_len: int = 64) -> LanguageModel:
    """A random causal LM in float64 with weights wide enough that greedy choices are never near-ties."""
    torch.manual_seed(0)
    model = LanguageModel(
        ModelConfig(
            vocab_size=40,
            dim=32,
            max_len=max_len,
            causal=True,
            encoder=EncoderConfig(name=encoder, num_layers=2, dropout=0.0),
            attention=AttentionConfig(name=attention, num_heads=2, score=score, window=3),
        )
    )
    for p in model.parameters():
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.3)
    return model.double().eval()


def left_padded(prompts: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[True] * (width - len(p)) + [False] * len(p) for p in prompts])
    return ids, mask


# max_len=12: prompt (7) + 15 new tokens overflow the positions, so the sliding re-encoding is exercised too.
@pytest.mark.parametrize("max_len", [64, 12])
@pytest.mark.parametrize(("encoder", "attention", "score"), ENCODERS, ids=lambda x: x if isinstance(x, str) else None)
def test_cached_equals_uncached_and_padding_changes_nothing(encoder, attention, score, max_len):
    model = causal_model(encoder, attention, score, max_len)
    ids, mask = left_padded(PROMPTS)
    cached = model.generate(ids, 15, temperature=0, padding_mask=mask, use_cache=True)
    uncached = model.generate(ids, 15, temperature=0, padding_mask=mask, use_cache=False)
    assert torch.equal(cached, uncached)
    width = ids.shape[1]
    for row, prompt in enumerate(PROMPTS):
        alone = model.generate(torch.tensor([prompt]), 15, temperature=0)[0, len(prompt) :]
        assert torch.equal(cached[row, width:], alone), f"row {row} differs when batched with left padding"
    assert len(set(cached[:, width:].flatten().tolist())) > 3  # not a degenerate constant output


def test_cached_sampling_matches_uncached_with_the_same_seed():
    model = causal_model("transformer", "self", "dot")
    ids, mask = left_padded(PROMPTS)
    outs = []
    for use_cache in (True, False):
        generator = torch.Generator().manual_seed(7)
        outs.append(
            model.generate(
                ids,
                12,
                temperature=0.9,
                top_k=10,
                top_p=0.9,
                repetition_penalty=1.3,
                padding_mask=mask,
                generator=generator,
                use_cache=use_cache,
            )
        )
    assert torch.equal(outs[0], outs[1])


def test_eos_and_caller_marked_rows_finish_with_padding():
    model = causal_model("transformer", "self", "dot")
    ids, mask = left_padded(PROMPTS)
    free = model.generate(ids, 10, temperature=0, padding_mask=mask)[:, ids.shape[1] :]
    eos = int(free[0, 2])  # make row 0's third generated token the end of sequence
    out = model.generate(ids, 10, temperature=0, padding_mask=mask, eos_id=eos)[:, ids.shape[1] :]
    first = int((out[0] == eos).nonzero()[0])
    assert first <= 2 and (out[0, first + 1 :] == model.config.pad_id).all()

    finished = torch.zeros(3, dtype=torch.bool)
    steps = []
    for step, token in enumerate(model.stream(ids, 10, Sampling(0), mask, finished=finished)):
        steps.append(token.clone())
        if step == 1:
            finished[:] = True  # e.g. every row hit a stop string: the stream ends after this step
    assert len(steps) == 2


def test_top_p_keeps_the_smallest_nucleus_like_a_loop():
    torch.manual_seed(0)
    logits = torch.randn(4, 30)
    for p in (0.1, 0.5, 0.9, 1.0):
        kept = torch.isfinite(keep_top_p(logits, p))
        for row in range(4):
            probs = logits[row].softmax(-1)
            order = probs.argsort(descending=True).tolist()
            nucleus, total = set(), 0.0
            for token in order:  # add likeliest tokens until their mass reaches p
                nucleus.add(token)
                total += float(probs[token])
                if total >= p - 1e-7:
                    break
            assert set(kept[row].nonzero()[:, 0].tolist()) == nucleus


def test_top_k_repetition_penalty_and_greedy():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    assert torch.isfinite(keep_top_k(logits, 2)).tolist() == [[True, False, False, True]]
    seen = torch.tensor([[False, True, False, True]])
    assert penalise_repeats(logits, seen, 2.0).tolist() == [[2.0, -2.0, 0.5, 1.5]]
    assert next_token(logits, Sampling(0)).item() == 3
    assert next_token(logits, Sampling(0, repetition_penalty=2.0), seen).item() == 0  # the repeat lost its lead
    samples = {next_token(logits, Sampling(1.0, top_k=1)).item() for _ in range(5)}
    assert samples == {3}


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"top_p": 0.0}, "top_p=0.0"),
        ({"top_k": 0}, "top_k=0"),
        ({"temperature": -1}, "temperature=-1"),
        ({"repetition_penalty": 0}, "repetition_penalty=0"),
    ],
)
def test_bad_sampling_settings_are_named(kwargs, named):
    with pytest.raises(ConfigError, match=named):
        Sampling(**kwargs)


def test_stream_text_cuts_at_stop_strings_and_streams_what_it_returns():
    from attnfit.data.tokenizer import train_tokenizer
    from attnfit.tasks.language_modeling import sampling_from, stream_text

    texts = ["the dog runs . the cat sleeps . a bird sings ."] * 30
    tokenizer = train_tokenizer("bpe", texts, vocab_size=300)
    torch.manual_seed(1)
    model = LanguageModel(
        ModelConfig(
            vocab_size=tokenizer.get_vocab_size(),
            dim=32,
            max_len=64,
            causal=True,
            encoder=EncoderConfig(name="transformer", num_layers=1, dropout=0.0),
            attention=AttentionConfig(name="self", num_heads=2),
        )
    ).eval()
    greedy = sampling_from({"temperature": 0})
    prompts = ["the dog", "a bird sings"]
    free = ["", ""]
    pieces_per_row = [0, 0]
    for row, delta in stream_text(model, tokenizer, prompts, 12, greedy):
        free[row] += delta
        pieces_per_row[row] += 1
    assert min(pieces_per_row) >= 2  # text arrives piece by piece
    for prompt, text in zip(prompts, free, strict=True):  # batched streaming = the model's own greedy tokens
        ids = torch.tensor([[3, *tokenizer.encode(prompt, add_special_tokens=False).ids]])  # <eos> starts a document
        alone = model.generate(ids, 12, temperature=0, eos_id=3)[0, ids.shape[1] :].tolist()
        alone = alone[: alone.index(3)] if 3 in alone else alone  # up to <eos>
        assert text == tokenizer.decode(alone)
    # A stop string taken from the free text: the text ends just before it, nothing of it is ever streamed.
    stop = free[0][len(free[0]) // 2 : len(free[0]) // 2 + 2]
    cut = "".join(d for row, d in stream_text(model, tokenizer, prompts[:1], 12, greedy, stop=(stop,)) if row == 0)
    assert cut == free[0][: free[0].find(stop)]
