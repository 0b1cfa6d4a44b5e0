"""Tiny random BERT and GPT-2 checkpoints in Hugging Face's format, built offline with ``transformers`` and saved
with ``save_pretrained`` once per session (the Hub cannot be reached from the tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Café déjà vu: naïve résumé!",
    "東京は日本の首都です。",
    "a",
    "Ünïcödé and  spaces\tand tabs",
]
CORPUS = TEXTS * 4 + [
    "the cat sat on the mat and the dog sat on the log",
    "attention is all you need, they said, and it was mostly true",
    "positive words: great good fine excellent; negative words: bad awful poor",
]


def _wordpiece() -> object:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=150, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tok.decoder = decoders.WordPiece()
    from transformers import BertTokenizerFast

    return BertTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]",
    )  # fmt: skip


def _byte_bpe() -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=290, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    from transformers import GPT2TokenizerFast

    return GPT2TokenizerFast(
        tokenizer_object=tok, unk_token="<|endoftext|>", bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )


def _roberta_bpe() -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    trainer = trainers.BpeTrainer(
        vocab_size=290, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    from transformers import RobertaTokenizerFast

    return RobertaTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
    )  # fmt: skip


def _scramble(model: torch.nn.Module) -> None:
    """Every weight random and of order one (norms, biases included): a mapping error cannot hide behind the
    default init's zeros and ones."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3 + (1.0 if param.dim() == 1 else 0.0))


def _saved(model_class: type, config: object, tokenizer: object, out: Path) -> Path:
    """A scrambled ``model_class(config)`` saved with its tokenizer in ``out``, as a Hub download would be."""
    torch.manual_seed(0)
    model = model_class(config).eval()
    _scramble(model)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import BertConfig, BertForPreTraining

    tokenizer = _wordpiece()
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    # with the pooler, as published BERT checkpoints are
    return _saved(BertForPreTraining, config, tokenizer, tmp_path_factory.mktemp("hf-bert"))


@pytest.fixture(scope="session")
def distilbert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    tokenizer = _wordpiece()
    config = DistilBertConfig(
        vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    return _saved(DistilBertForMaskedLM, config, tokenizer, tmp_path_factory.mktemp("hf-distilbert"))


@pytest.fixture(scope="session")
def roberta_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import RobertaConfig, RobertaForMaskedLM

    tokenizer = _roberta_bpe()
    config = RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=66, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=0, eos_token_id=2,
    )  # fmt: skip
    return _saved(RobertaForMaskedLM, config, tokenizer, tmp_path_factory.mktemp("hf-roberta"))


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = _byte_bpe()
    eos = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=eos, eos_token_id=eos
    )
    return _saved(GPT2LMHeadModel, config, tokenizer, tmp_path_factory.mktemp("hf-gpt2"))


FT = [
    "data.seq_len=32",
    "data.batch_size=16",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "scheduler.warmup_steps=1",
    "callbacks.progress_bar=none",
    "callbacks.heatmaps=0",
]


def _finetune(run_dir: Path, source: Path, cache_dir: Path, *overrides: str) -> tuple[Path, str]:
    """``attnfit-finetune pretrained=SOURCE`` on the embedded classification data, a few steps: (run, stdout)."""
    from tests.conftest import cli_env, python_m

    args = [f"pretrained={source}", *FT, *overrides, f"hydra.run.dir={run_dir}"]
    proc = python_m("attnfit.finetune", args, run_dir.parent, cli_env(cache_dir))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir, proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def bert_finetuned(tmp_path_factory: pytest.TempPathFactory, bert_dir: Path, cache_dir: Path) -> tuple[Path, str]:
    return _finetune(tmp_path_factory.mktemp("hf-finetuned") / "run", bert_dir, cache_dir)


@pytest.fixture(scope="session")
def gpt2_finetuned(tmp_path_factory: pytest.TempPathFactory, gpt2_dir: Path, cache_dir: Path) -> tuple[Path, str]:
    """A classifier fine-tuned from the GPT-2 import with the defaults (task.pooling=last, no head bias)."""
    return _finetune(tmp_path_factory.mktemp("hf-gpt2-finetuned") / "run", gpt2_dir, cache_dir)
