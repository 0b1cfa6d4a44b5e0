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


PUBLISHED = {  # parameters of the published models (Devlin et al. 2019; Radford et al. 2019)
    "bert-base": ("mlm", 110e6),
    "gpt2-small": ("clm", 124e6),
    "gpt2-medium": ("clm", 355e6),
}


def _preset(name: str, task: str, *overrides: str):
    from hydra import compose, initialize_config_dir

    from attnfit.cli import CONFIG_DIR

    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose("train", [f"model={name}", f"task={task}", *overrides])


def _meta_model(cfg) -> LanguageModel:
    from attnfit.tasks.language_modeling import model_config_dict

    config = ModelConfig.from_dict(model_config_dict(cfg, vocab_size=int(cfg.tokenizer.vocab_size)))
    with torch.device("meta"):  # shapes only: no memory, no time
        return LanguageModel(config)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_presets_have_the_published_parameter_counts(name):
    task, published = PUBLISHED[name]
    model = _meta_model(_preset(name, task))
    count = sum(p.numel() for p in model.parameters())  # the tied output layer once
    assert abs(count - published) / published < 0.01, (name, count)


def test_memory_estimate_of_a_preset_under_fsdp_divides_the_state():
    from attnfit.training.memory import run_estimate

    cfg = _preset("gpt2-small", "clm", "data.batch_size=8", "data.seq_len=1024")
    model = _meta_model(cfg)
    one = run_estimate(model, cfg, 1, "SingleDeviceStrategy", "bf16-mixed")
    four = run_estimate(model, cfg, 4, "FSDPStrategy", "bf16-mixed")
    assert one.weights == 4 * one.parameters and one.optimizer == 2 * one.weights  # float32 master + AdamW
    assert four.weights == one.weights // 4 and four.optimizer == one.optimizer // 4
    assert four.activations == one.activations  # per device: each holds its own batch's
    checkpointed = _meta_model(_preset("gpt2-small", "clm", "data.batch_size=8", "model.activation_checkpointing=true"))
    # 12 layers × 8192 tokens × (8·768 + 2·3072) bf16 values: 2.25 GiB; checkpointed, their inputs (0.14 GiB).
    # The head's logits (8192 × 50257, 4.6 GiB in float32) stay, whichever.
    saved = one.activations - run_estimate(checkpointed, cfg, 1, "SingleDeviceStrategy", "bf16-mixed").activations
    assert 2.0 * 2**30 < saved < 2.25 * 2**30


def test_a_run_that_will_not_fit_is_warned_about(monkeypatch):
    from attnfit.training import memory

    estimate = memory.MemoryEstimate(10, 2**30, 2**30, 2**31, 2**31)  # 6 GiB
    monkeypatch.setattr(memory, "available_memory", lambda accelerator: (2**33, "CPU RAM"))
    assert memory.check_fits(estimate, "cpu", 1) is None
    warning = memory.check_fits(estimate, "cpu", 2)  # CPU ranks share one RAM: 12 GiB of 8
    assert warning and "12.00 GiB" in warning and "activation_checkpointing=true" in warning
    monkeypatch.setattr(memory, "available_memory", lambda accelerator: (2**33, "NVIDIA H200"))
    assert memory.check_fits(estimate, "cuda", 2) is None  # a GPU each


@pytest.mark.parametrize("options", [[], ["--checkpointing"]])
def test_memory_estimate_is_within_a_quarter_of_the_measured_peak(options):
    """scripts/bench/memory.py trains a 5M-parameter LM for three AdamW steps in a fresh process and measures its
    peak resident memory above the baseline before the model was built (see the script for why that is robust)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "bench" / "memory.py"
    args = ["--dim", "256", "--layers", "4", "--vocab", "8000", "--batch", "8", "--seq-len", "128", *options]
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert abs(result["estimate_mib"] - result["measured_peak_mib"]) <= 0.25 * result["measured_peak_mib"], result


def test_flexattention_sliding_window_gives_the_blocked_local_attentions_outputs():
    """The sliding-window block mask scripts/gpu_check.py times on the GPU: eager FlexAttention on the CPU (forward
    only there) against attnfit's blocked path, window ±16 over 100 positions (a ragged last block)."""
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    from attnfit.models.attention.local_attention import LocalAttention

    window, n = 16, 100
    q, k, v = torch.randn(3, 1, 2, n, 8, generator=torch.Generator().manual_seed(0)).unbind(0)
    mask = flex.create_block_mask(lambda b, h, i, j: (i - j).abs() <= window, None, None, n, n, device="cpu")
    expected = LocalAttention(16, 2, window).attend(q, k, v, None, False, False)[0]
    torch.testing.assert_close(flex.flex_attention(q, k, v, block_mask=mask), expected, rtol=1e-5, atol=1e-5)


def test_activation_checkpointing_of_a_seq2seq_model_gives_the_same_gradients():
    """Transformer encoder and decoder blocks both checkpointed (the flag is the encoder config's), float64."""
    from attnfit.models.seq2seq import Seq2SeqModel
    from attnfit.models.seq2seq.config import Seq2SeqConfig

    def build(checkpointing: bool) -> Seq2SeqModel:
        encoder = {"vocab_size": 30, "dim": 16, "max_len": 10, "activation_checkpointing": checkpointing}
        encoder |= {"encoder": {"num_layers": 2}, "attention": {"num_heads": 2}}
        config = Seq2SeqConfig.from_dict(
            {
                "encoder": encoder,
                "target_vocab_size": 30,
                "decoder": {"name": "transformer", "num_layers": 2, "num_heads": 2, "dropout": 0.1},
                "cross_attention": {"name": "self", "num_heads": 2},
                "max_target_len": 10,
            }
        )
        torch.manual_seed(0)
        return Seq2SeqModel(config).double().train()

    generator = torch.Generator().manual_seed(2)
    src, tgt = torch.randint(1, 30, (3, 10), generator=generator), torch.randint(1, 30, (3, 8), generator=generator)
    mask = torch.zeros(3, 10, dtype=torch.bool)
    mask[2, 6:] = True
    grads = []
    for checkpointing in (False, True):
        model = build(checkpointing)
        assert model.decoder.checkpointing is checkpointing
        torch.manual_seed(5)
        model(src, mask, tgt)[0].logsumexp(-1).mean().backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-10, atol=1e-12, msg=name)


# cnn: its 3 conv blocks and the self-attention layer on top; lstm: no blocks, the whole model
@pytest.mark.parametrize(("encoder", "blocks"), [("transformer", 3), ("cnn", 3 + 1), ("lstm", 1)])
def test_compile_blocks_compiles_each_block_in_place(encoder, blocks):
    """``compile=true``: each repeated block compiled (the whole model where there is none), the same outputs and
    the same checkpoint keys. Dynamo traces for real; the eager backend keeps the test free of a C++ compiler."""
    from attnfit.training.module import compile_blocks

    config = ModelConfig.from_dict(
        {"vocab_size": 50, "dim": 16, "max_len": 12, "causal": True, "encoder": {"name": encoder, "num_layers": 3}}
    )
    torch.manual_seed(0)
    model = LanguageModel(config).eval()
    ids = torch.randint(1, 50, (2, 12), generator=torch.Generator().manual_seed(1))
    keys, expected = list(model.state_dict()), model(ids)
    torch._dynamo.reset()
    assert compile_blocks(model, backend="eager") == blocks
    compiled = [m for m in model.modules() if getattr(m, "_compiled_call_impl", None) is not None]
    assert len(compiled) == blocks
    torch.testing.assert_close(model(ids), expected)
    assert list(model.state_dict()) == keys
