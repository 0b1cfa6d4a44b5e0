"""Hugging Face interop: import BERT / GPT-2 checkpoints as attnfit models, export attnfit models that
``transformers`` loads.

An import reads the checkpoint's ``config.json``, weights and ``tokenizer.json`` directly (no ``transformers``
model is built) and maps them onto options of attnfit's own transformer encoder; the result is an ordinary
:class:`~attnfit.pretrained.Artifact`, so fine-tuning, evaluation, heat maps and export treat it like any
attnfit checkpoint. ``transformers`` and ``huggingface_hub`` are imported only when needed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attnfit.errors import CheckpointError, ConfigError

log = logging.getLogger("attnfit")

PREFIX = "hf:"
# RoBERTa: BERT's layers, positions offset by its padding id, other names; DistilBERT: BERT's layers renamed, no
# token types or pooler.
BERT_FAMILY = ("bert", "roberta", "distilbert")
GPT2_FAMILY = ("gpt2",)
SUPPORTED = (*BERT_FAMILY, *GPT2_FAMILY)
# Only what an import reads: weights, config, tokenizer (older repos also hold TF/Flax weights, skipped).
_DOWNLOAD = [
    "config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
]
_HEAD_PREFIXES = (
    "bert.",
    "roberta.",
    "distilbert.",
    "transformer.",
)  # the base model's prefix inside a model-with-head checkpoint
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}


# ---- import ---------------------------------------------------------------------------------------------------
def is_hf_source(path: str | Path) -> bool:
    """``hf:NAME``, or a directory in Hugging Face's format (a ``config.json`` with a ``model_type``, not attnfit's)."""
    text = str(path)
    if text.startswith(PREFIX):
        return True
    config = Path(text).expanduser() / "config.json"
    if not config.is_file():
        return False
    try:
        meta = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "model_type" in meta and "task" not in meta


def resolve_source(path: str | Path) -> tuple[Path, str, bool]:
    """The local directory of ``hf:NAME`` (downloaded through the user's Hugging Face cache) or of a local
    directory, the name to show for it, and whether it came from the Hub."""
    text = str(path)
    name = text.removeprefix(PREFIX)
    local = Path(name).expanduser()
    if local.is_dir():
        return local, name, False
    if not text.startswith(PREFIX):
        raise CheckpointError(f"{text} does not exist")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ConfigError(f"{text} needs huggingface_hub: pip install 'attnfit[hf]'") from None
    try:
        directory = Path(snapshot_download(repo_id=name, allow_patterns=_DOWNLOAD))
        if not any(directory.glob("*.safetensors")):  # an older repository: PyTorch weights only
            directory = Path(snapshot_download(repo_id=name, allow_patterns=["pytorch_model.bin"]))
        return directory, name, True
    except Exception as error:  # offline, unknown repository, gated model: one line, not a traceback
        raise CheckpointError(f"cannot download {name} from the Hugging Face Hub: {_first_line(error)}") from None


def import_hf(path: str | Path) -> Any:
    """An :class:`~attnfit.pretrained.Artifact` for a BERT or GPT-2 checkpoint (``hf:NAME`` or a local directory).

    ``*ForMaskedLM`` / plain BERT become task ``mlm``, GPT-2 task ``clm``; ``*ForSequenceClassification``
    becomes task ``classification`` with its labels. BERT's pooler, when the checkpoint has one, travels in
    ``artifact.extra`` for a classifier fine-tuned from it."""
    from attnfit.pretrained import Artifact, ModelRecord

    directory, name, from_hub = resolve_source(path)
    config = _read_config(directory)
    model_type = config.get("model_type")
    if model_type not in SUPPORTED:
        raise ConfigError(
            f"{name}: model_type={model_type!r} cannot be imported; supported model types: {', '.join(SUPPORTED)}"
        )
    weights = _read_weights(directory)
    tokenizer_json = _read_tokenizer(directory)
    if model_type == "distilbert":
        config = _distilbert_as_bert(config, name)
    architecture = (config.get("architectures") or [""])[0]
    classifier = architecture.endswith("ForSequenceClassification")
    if model_type in BERT_FAMILY:
        model_config, state, extra = _bert_config(config, name), *_bert_from_hf(weights, config)
        task = "mlm"
        if model_config["type_vocab_size"] > 1:  # pairs: the second segment is type 1, as the tokenizer marks it
            model_config["segment_sep_id"] = _special_id(tokenizer_json, ("[SEP]", "</s>"))
    else:
        model_config, state, extra = _gpt2_config(config, name), *_gpt2_from_hf(weights, config)
        task = "clm"
    head_config, label_names = None, None
    if classifier:
        task, state, head_config, label_names = _as_classifier(config, model_type, state, extra)
    else:
        _complete_lm_head(model_config, state, name)
    record = ModelRecord(
        task,
        model_config,
        tokenizer_json,
        head_config=head_config,
        label_names=label_names,
        hf={"model_type": model_type, "source": name, "architecture": architecture, "from_hub": from_hub},
    )
    log.info("imported %s (%s, %s) as an attnfit %s model", name, model_type, architecture or "base model", task)
    return Artifact(record, state, directory, extra=extra)


def _special_id(tokenizer_json: str, names: tuple[str, ...]) -> int | None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)
    return next((i for i in map(tok.token_to_id, names) if i is not None), None)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _read_config(directory: Path) -> dict[str, Any]:
    try:
        config = json.loads((directory / "config.json").read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{directory} has no config.json: not a Hugging Face model directory") from None
    except ValueError as error:
        raise CheckpointError(f"{directory / 'config.json'} is not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{directory / 'config.json'} is not a JSON object")
    return config


def _read_weights(directory: Path) -> dict[str, Tensor]:
    """``model.safetensors`` (or its shards), else ``pytorch_model.bin`` read as plain tensors only."""
    from safetensors.torch import load_file

    files = sorted(directory.glob("*.safetensors"))
    if files:
        weights: dict[str, Tensor] = {}
        for file in files:
            weights.update(load_file(file))
        return weights
    legacy = directory / "pytorch_model.bin"
    if legacy.exists():
        return torch.load(legacy, map_location="cpu", weights_only=True)
    raise CheckpointError(f"{directory} holds no model.safetensors or pytorch_model.bin")


def _read_tokenizer(directory: Path) -> str:
    """``tokenizer.json`` as it is, so ids equal the Hugging Face fast tokenizer's; a repository with only the
    slow tokenizer's files is converted once through ``transformers``."""
    path = directory / "tokenizer.json"
    if path.exists():
        return path.read_text(encoding="utf-8")
    try:
        from transformers import AutoTokenizer

        fast = AutoTokenizer.from_pretrained(str(directory), use_fast=True)
        return fast.backend_tokenizer.to_str()
    except Exception as error:
        raise CheckpointError(
            f"{directory} has no tokenizer.json and its tokenizer cannot be converted: {error}"
        ) from None


def _need(config: dict[str, Any], key: str, name: str) -> Any:
    if key not in config:
        raise CheckpointError(f"{name}: config.json has no {key}")
    return config[key]


def _ffn_mult(hidden: int, inner: int, name: str) -> int:
    if inner % hidden:
        raise ConfigError(f"{name}: feed-forward width {inner} is not a multiple of the hidden size {hidden}")
    return inner // hidden


def _activation(act: str, name: str) -> str:
    if act not in _ACTIVATIONS:
        raise ConfigError(f"{name}: activation {act!r} has no attnfit equivalent; supported: {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[act]


_DISTILBERT_CONFIG = {
    "dim": "hidden_size",
    "n_layers": "num_hidden_layers",
    "n_heads": "num_attention_heads",
    "hidden_dim": "intermediate_size",
    "activation": "hidden_act",
    "dropout": "hidden_dropout_prob",
    "attention_dropout": "attention_probs_dropout_prob",
    "seq_classif_dropout": "classifier_dropout",
}
_DISTILBERT_NAMES = (  # DistilBERT's tensor names → BERT's (after the distilbert. prefix is gone)
    ("transformer.layer.", "encoder.layer."),
    (".attention.q_lin.", ".attention.self.query."),
    (".attention.k_lin.", ".attention.self.key."),
    (".attention.v_lin.", ".attention.self.value."),
    (".attention.out_lin.", ".attention.output.dense."),
    (".sa_layer_norm.", ".attention.output.LayerNorm."),
    (".ffn.lin1.", ".intermediate.dense."),
    (".ffn.lin2.", ".output.dense."),
    (".output_layer_norm.", ".output.LayerNorm."),
    ("vocab_transform.", "cls.predictions.transform.dense."),
    ("vocab_layer_norm.", "cls.predictions.transform.LayerNorm."),
    ("vocab_projector.weight", "cls.predictions.decoder.weight"),
    ("vocab_projector.bias", "cls.predictions.bias"),
)


def _distilbert_as_bert(config: dict[str, Any], name: str) -> dict[str, Any]:
    """DistilBERT's config in BERT's keys: the same post-norm layers, no token types, LayerNorm eps 1e-12."""
    if (config.get("architectures") or [""])[0].endswith("ForSequenceClassification"):
        raise ConfigError(
            f"{name}: DistilBertForSequenceClassification's ReLU pre-classifier has no attnfit equivalent; "
            "fine-tune its base model instead (a DistilBERT masked LM or DistilBertModel checkpoint)"
        )
    renamed = {_DISTILBERT_CONFIG.get(key, key): value for key, value in config.items()}
    return {**renamed, "type_vocab_size": 0, "layer_norm_eps": 1e-12}


def _position_offset(config: dict[str, Any]) -> int:
    """RoBERTa numbers real tokens from ``pad_token_id + 1`` (right padding; the rows below serve padding only):
    its table from there on is attnfit's positions 0, 1, …"""
    return int(config.get("pad_token_id") or 0) + 1 if config.get("model_type") == "roberta" else 0


def _bert_config(config: dict[str, Any], name: str) -> dict[str, Any]:
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ConfigError(f"{name}: position_embedding_type={config['position_embedding_type']!r}; only absolute")
    if config.get("is_decoder"):
        raise ConfigError(f"{name}: a BERT decoder (is_decoder=true) cannot be imported; only encoders")
    dim = int(_need(config, "hidden_size", name))
    return {
        "vocab_size": int(_need(config, "vocab_size", name)),
        "dim": dim,
        "max_len": int(config.get("max_position_embeddings", 512)) - _position_offset(config),
        "position": "learned",
        "causal": False,
        "tie_embeddings": bool(config.get("tie_word_embeddings", True)),
        "pad_id": int(config.get("pad_token_id") or 0),
        "type_vocab_size": int(config.get("type_vocab_size", 2)),
        "embed_norm": True,
        "head_bias": True,
        "encoder": {
            "name": "transformer",
            "num_layers": int(_need(config, "num_hidden_layers", name)),
            "ffn_mult": _ffn_mult(dim, int(config.get("intermediate_size", 4 * dim)), name),
            "dropout": float(config.get("hidden_dropout_prob", 0.1)),
            "norm": "post",
            "activation": _activation(config.get("hidden_act", "gelu"), name),
            "norm_eps": float(config.get("layer_norm_eps", 1e-12)),
            "final_norm": False,
            "bias": True,
        },
        "attention": {
            "name": "self",
            "num_heads": int(_need(config, "num_attention_heads", name)),
            "dropout": float(config.get("attention_probs_dropout_prob", 0.1)),
        },
    }


def _gpt2_config(config: dict[str, Any], name: str) -> dict[str, Any]:
    if not config.get("scale_attn_weights", True) or config.get("scale_attn_by_inverse_layer_idx"):
        raise ConfigError(f"{name}: GPT-2 attention scaling other than 1/√d (scale_attn_*) cannot be imported")
    dim = int(_need(config, "n_embd", name))
    eos = config.get("eos_token_id")
    pad = config.get("pad_token_id")
    return {
        "vocab_size": int(_need(config, "vocab_size", name)),
        "dim": dim,
        "max_len": int(config.get("n_positions", 1024)),
        "position": "learned",
        "causal": True,
        "tie_embeddings": bool(config.get("tie_word_embeddings", True)),
        # GPT-2 has no padding token; its end-of-text token pads (it is never attended to under the mask).
        "pad_id": int(pad if pad is not None else eos if eos is not None else 0),
        "head_bias": False,
        "encoder": {
            "name": "transformer",
            "num_layers": int(_need(config, "n_layer", name)),
            "ffn_mult": _ffn_mult(dim, int(config.get("n_inner") or 4 * dim), name),
            "dropout": float(config.get("resid_pdrop", 0.1)),
            "norm": "pre",
            "activation": _activation(config.get("activation_function", "gelu_new"), name),
            "norm_eps": float(config.get("layer_norm_epsilon", 1e-5)),
            "final_norm": True,
            "bias": True,
        },
        "attention": {
            "name": "self",
            "num_heads": int(_need(config, "n_head", name)),
            "dropout": float(config.get("attn_pdrop", 0.1)),
        },
    }


def _strip(weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """Base-model keys without the ``bert.`` / ``transformer.`` prefix; old LayerNorm names (gamma/beta) renamed."""
    out = {}
    for key, value in weights.items():
        for prefix in _HEAD_PREFIXES:
            if key.startswith(prefix):
                key = key.removeprefix(prefix)
                break
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        out[key] = value
    return out


def _bert_pairs(num_layers: int) -> Iterator[tuple[str, str]]:
    """``(Hugging Face key without prefix, attnfit key)`` for BERT's base model; weight and bias both."""
    yield "embeddings.word_embeddings.weight", "backbone.embeddings.token.weight"
    yield "embeddings.position_embeddings.weight", "backbone.embeddings.position.weight"
    yield "embeddings.token_type_embeddings.weight", "backbone.embeddings.token_type.weight"
    for p in ("weight", "bias"):
        yield f"embeddings.LayerNorm.{p}", f"backbone.embeddings.norm.{p}"
    for i in range(num_layers):
        hf, ours = f"encoder.layer.{i}.", f"backbone.encoder.stack.layers.{i}."
        for theirs, mine in (
            ("attention.self.query", "attention.q_proj"),
            ("attention.self.key", "attention.k_proj"),
            ("attention.self.value", "attention.v_proj"),
            ("attention.output.dense", "attention.out_proj"),
            ("attention.output.LayerNorm", "attn_norm"),
            ("intermediate.dense", "ffn.0"),
            ("output.dense", "ffn.3"),
            ("output.LayerNorm", "ffn_norm"),
        ):
            for p in ("weight", "bias"):
                yield f"{hf}{theirs}.{p}", f"{ours}{mine}.{p}"


_BERT_MLM_HEAD = (
    ("cls.predictions.transform.dense.weight", "head.transform.0.weight"),
    ("cls.predictions.transform.dense.bias", "head.transform.0.bias"),
    ("cls.predictions.transform.LayerNorm.weight", "head.transform.2.weight"),
    ("cls.predictions.transform.LayerNorm.bias", "head.transform.2.bias"),
    ("cls.predictions.decoder.weight", "head.decoder.weight"),
    ("cls.predictions.bias", "head.decoder.bias"),
)
_BERT_POOLER = (("pooler.dense.weight", "pooler.dense.weight"), ("pooler.dense.bias", "pooler.dense.bias"))
# RoBERTa's names for the same tensors: its classifier's dense + tanh on <s> is BERT's pooler under another name.
_ROBERTA_NAMES = {
    "lm_head.dense.": "cls.predictions.transform.dense.",
    "lm_head.layer_norm.": "cls.predictions.transform.LayerNorm.",
    "lm_head.decoder.": "cls.predictions.decoder.",
    "lm_head.bias": "cls.predictions.bias",
    "classifier.dense.": "pooler.dense.",
    "classifier.out_proj.": "classifier.",
}


def _take(weights: dict[str, Tensor], key: str, name: str = "checkpoint") -> Tensor:
    if key not in weights:
        raise CheckpointError(f"the {name} lacks {key}: its weights do not fit a BERT/GPT-2 of its config.json")
    return weights[key]


def _renamed(key: str) -> str:
    for theirs, ours in _ROBERTA_NAMES.items():
        if key.startswith(theirs):
            return ours + key.removeprefix(theirs)
    return key


def _bert_from_hf(raw: dict[str, Tensor], config: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(state dict of a LanguageModel, extra: BERT's pooler and classifier when present)``."""
    weights = _strip(raw)
    if config.get("model_type") == "roberta":
        weights = {_renamed(key): value for key, value in weights.items()}
    if config.get("model_type") == "distilbert":
        for theirs, ours in _DISTILBERT_NAMES:
            weights = {key.replace(theirs, ours): value for key, value in weights.items()}
    pairs = _bert_pairs(int(config["num_hidden_layers"]))
    if not config.get("type_vocab_size", 2):
        pairs = (pair for pair in pairs if "token_type" not in pair[1])
    state = {ours: _take(weights, theirs) for theirs, ours in pairs}
    key = "backbone.embeddings.position.weight"
    state[key] = state[key][_position_offset(config) :]
    for theirs, ours in _BERT_MLM_HEAD:
        if theirs in weights:
            state[ours] = weights[theirs]
    if "head.decoder.bias" not in state and "cls.predictions.decoder.bias" in weights:
        state["head.decoder.bias"] = weights["cls.predictions.decoder.bias"]
    extra = {ours: weights[theirs] for theirs, ours in _BERT_POOLER if theirs in weights}
    for p in ("weight", "bias"):
        if f"classifier.{p}" in weights:
            extra[f"head.{p}"] = weights[f"classifier.{p}"]
    return state, extra


def _gpt2_from_hf(raw: dict[str, Tensor], config: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """GPT-2's ``Conv1D`` keeps weights as ``(in, out)``: transposed here; the fused ``c_attn`` split in three."""
    weights = _strip(raw)
    state = {
        "backbone.embeddings.token.weight": _take(weights, "wte.weight"),
        "backbone.embeddings.position.weight": _take(weights, "wpe.weight"),
        "backbone.encoder.stack.norm.weight": _take(weights, "ln_f.weight"),
        "backbone.encoder.stack.norm.bias": _take(weights, "ln_f.bias"),
    }
    for i in range(int(config["n_layer"])):
        hf, ours = f"h.{i}.", f"backbone.encoder.stack.layers.{i}."
        for theirs, mine in (("ln_1", "attn_norm"), ("ln_2", "ffn_norm")):
            for p in ("weight", "bias"):
                state[f"{ours}{mine}.{p}"] = _take(weights, f"{hf}{theirs}.{p}")
        qkv_w = _take(weights, f"{hf}attn.c_attn.weight").t()  # (3D, D)
        qkv_b = _take(weights, f"{hf}attn.c_attn.bias")
        for j, proj in enumerate(("q_proj", "k_proj", "v_proj")):
            state[f"{ours}attention.{proj}.weight"] = qkv_w.chunk(3, 0)[j].contiguous()
            state[f"{ours}attention.{proj}.bias"] = qkv_b.chunk(3, 0)[j].contiguous()
        for theirs, mine in (("attn.c_proj", "attention.out_proj"), ("mlp.c_fc", "ffn.0"), ("mlp.c_proj", "ffn.3")):
            state[f"{ours}{mine}.weight"] = _take(weights, f"{hf}{theirs}.weight").t().contiguous()
            state[f"{ours}{mine}.bias"] = _take(weights, f"{hf}{theirs}.bias")
    extra = {}
    if "lm_head.weight" in raw:
        state["head.decoder.weight"] = raw["lm_head.weight"]
    if "score.weight" in raw:  # GPT2ForSequenceClassification: Linear(d, num_labels, bias=False)
        extra["head.weight"] = raw["score.weight"]
    return state, extra


def _complete_lm_head(model_config: dict[str, Any], state: dict[str, Tensor], name: str) -> None:
    """A base-model checkpoint (``BertModel``, ``GPT2Model``) has no LM head: the missing tensors start fresh, as
    an attnfit LanguageModel initialises them, so the import still builds (fine-tuning replaces the head)."""
    from attnfit.models import LanguageModel, ModelConfig

    if model_config["tie_embeddings"]:
        state.setdefault("head.decoder.weight", state["backbone.embeddings.token.weight"])
    fresh = LanguageModel(ModelConfig.from_dict(model_config)).state_dict()
    missing = [key for key in fresh if key.startswith("head.") and key not in state]
    for key in missing:
        state[key] = fresh[key]
    if missing:
        log.warning("%s has no language-model head (%s): newly initialised", name, ", ".join(missing))


def _as_classifier(
    config: dict[str, Any], model_type: str, state: dict[str, Tensor], extra: dict[str, Tensor]
) -> tuple[str, dict[str, Tensor], dict[str, Any], list[str]]:
    """A ``*ForSequenceClassification`` checkpoint: backbone + head (+ BERT's pooler), labels from ``id2label``."""
    id2label = config.get("id2label") or {}
    num_labels = len(id2label) or int(config.get("num_labels", 2))
    labels = [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(num_labels)]
    if model_type in GPT2_FAMILY:
        # GPT-2 scores the last token that is not its pad token: with right padding, the last real position (a
        # text that itself ends in the pad token is the exception: transformers skips it, attnfit does not).
        needed, head = ("head.weight",), {"pooling": "last", "dropout": 0.0, "bias": False}
    else:
        dropout = config.get("classifier_dropout")
        dropout = float(dropout if dropout is not None else config.get("hidden_dropout_prob", 0.1))
        needed = ("head.weight", "head.bias", "pooler.dense.weight", "pooler.dense.bias")
        head = {"pooling": "pooler", "dropout": dropout}
    if any(key not in extra for key in needed):
        raise CheckpointError("a sequence-classification checkpoint without its pooler or classifier weights")
    backbone = {key: value for key, value in state.items() if key.startswith("backbone.")}
    return "classification", {**backbone, **extra}, {"num_labels": num_labels, **head}, labels


# ---- export ---------------------------------------------------------------------------------------------------
_EXPORT_TASKS = ("mlm", "clm", "classification")


def transformers_target(record: Any) -> tuple[str, str]:
    """``(model_type, architecture)`` that an attnfit model maps onto exactly, or ConfigError naming the first
    option that prevents it."""
    from attnfit.models import ModelConfig

    if record.task not in _EXPORT_TASKS:
        raise ConfigError(
            f"format=transformers: task={record.task} has no transformers equivalent here; "
            f"supported: {', '.join(_EXPORT_TASKS)}"
        )
    config = ModelConfig.from_dict(record.model_config)
    enc = config.encoder
    checks = [
        (enc.name != "transformer", f"encoder={enc.name} (BERT and GPT-2 are transformer encoders)"),
        (config.attention.name != "self", f"attention={config.attention.name} (only attention=self maps)"),
        (config.position_kind != "learned", f"model.position={config.position} (BERT and GPT-2 learn positions)"),
        (not enc.bias, "encoder.bias=false (BERT and GPT-2 have biases)"),
        (
            record.task in ("mlm", "clm") and bool(config.adaptive_cutoffs),
            f"model.adaptive_cutoffs={config.adaptive_cutoffs} (BERT and GPT-2 heads are one softmax)",
        ),
    ]
    head = record.head_config or {}
    classifier = record.task == "classification"
    if config.causal:
        model_type = "gpt2"
        checks += [
            (enc.norm != "pre", "encoder.norm=post (GPT-2 is pre-norm)"),
            (not enc.final_norm, "encoder.final_norm=false (GPT-2 has a final norm)"),
            (config.embed_norm, "model.embed_norm=true (GPT-2 has no embedding norm)"),
            (config.type_vocab_size > 0, "model.type_vocab_size>0 (GPT-2 has no token types)"),
            (record.task == "clm" and config.head_bias, "model.head_bias=true (GPT-2's LM head has no bias)"),
            (
                classifier and head.get("pooling") != "last",
                f"task.pooling={head.get('pooling')} (GPT2ForSequenceClassification uses task.pooling=last)",
            ),
            (
                classifier and head.get("bias", True),
                "task.head_bias=true (GPT2ForSequenceClassification's score has no bias: task.head_bias=false)",
            ),
        ]
    else:
        model_type = "bert"
        checks += [
            (enc.norm != "post", "encoder.norm=pre (BERT is post-norm)"),
            (enc.final_norm, "encoder.final_norm=true (BERT has no final norm)"),
            (not config.embed_norm, "model.embed_norm=false (BERT normalises its embeddings)"),
            (
                classifier and head.get("pooling") != "pooler",
                f"task.pooling={head.get('pooling')} (BertForSequenceClassification uses task.pooling=pooler)",
            ),
        ]
    for failed, option in checks:
        if failed:
            raise ConfigError(f"format=transformers: cannot export this model: {option}")
    head = {"mlm": "ForMaskedLM", "clm": "LMHeadModel", "classification": "ForSequenceClassification"}[record.task]
    return model_type, ("Bert" if model_type == "bert" else "GPT2") + head


def _bert_hf_config(config: Any, record: Any) -> dict[str, Any]:
    enc = config.encoder
    return {
        "vocab_size": config.vocab_size,
        "hidden_size": config.dim,
        "num_hidden_layers": enc.num_layers,
        "num_attention_heads": config.attention.num_heads,
        "intermediate_size": enc.ffn_mult * config.dim,
        "hidden_act": {"gelu": "gelu", "gelu_tanh": "gelu_new"}[enc.activation],
        "hidden_dropout_prob": enc.dropout,
        "attention_probs_dropout_prob": config.attention.dropout,
        "max_position_embeddings": config.max_len,
        "type_vocab_size": max(1, config.type_vocab_size),  # none (DistilBERT): one row of zeros adds nothing
        "layer_norm_eps": enc.norm_eps,
        "pad_token_id": config.pad_id,
        "tie_word_embeddings": config.tie_embeddings,
    }


def _gpt2_hf_config(config: Any, record: Any) -> dict[str, Any]:
    enc = config.encoder
    return {
        "vocab_size": config.vocab_size,
        "n_embd": config.dim,
        "n_layer": enc.num_layers,
        "n_head": config.attention.num_heads,
        "n_inner": enc.ffn_mult * config.dim,
        "n_positions": config.max_len,
        "activation_function": {"gelu": "gelu", "gelu_tanh": "gelu_new"}[enc.activation],
        "resid_pdrop": enc.dropout,
        "embd_pdrop": enc.dropout,
        "attn_pdrop": config.attention.dropout,
        "layer_norm_epsilon": enc.norm_eps,
        "tie_word_embeddings": config.tie_embeddings,
    }


def _bert_to_hf(state: dict[str, Tensor], config: Any, task: str) -> dict[str, Tensor]:
    zeros = {"backbone.embeddings.token_type.weight": torch.zeros(1, config.dim)}
    out = {
        f"bert.{theirs}": state.get(ours, zeros.get(ours)) for theirs, ours in _bert_pairs(config.encoder.num_layers)
    }
    if task == "mlm":
        for theirs, ours in _BERT_MLM_HEAD:
            if ours in state:
                out[theirs] = state[ours]
        out.setdefault("cls.predictions.decoder.weight", state["backbone.embeddings.token.weight"])
        bias = state.get("head.decoder.bias", torch.zeros(config.vocab_size))
        out["cls.predictions.bias"] = out["cls.predictions.decoder.bias"] = bias
    else:
        for theirs, ours in _BERT_POOLER:
            out[f"bert.{theirs}"] = state[ours]
        out["classifier.weight"], out["classifier.bias"] = state["head.weight"], state["head.bias"]
    return out


def _gpt2_to_hf(state: dict[str, Tensor], config: Any, task: str) -> dict[str, Tensor]:
    out = {
        "transformer.wte.weight": state["backbone.embeddings.token.weight"],
        "transformer.wpe.weight": state["backbone.embeddings.position.weight"],
        "transformer.ln_f.weight": state["backbone.encoder.stack.norm.weight"],
        "transformer.ln_f.bias": state["backbone.encoder.stack.norm.bias"],
    }
    if task == "clm":
        out["lm_head.weight"] = state.get("head.decoder.weight", state["backbone.embeddings.token.weight"])
    else:
        out["score.weight"] = state["head.weight"]  # (num_labels, D)
    for i in range(config.encoder.num_layers):
        hf, ours = f"transformer.h.{i}.", f"backbone.encoder.stack.layers.{i}."
        for theirs, mine in (("ln_1", "attn_norm"), ("ln_2", "ffn_norm")):
            for p in ("weight", "bias"):
                out[f"{hf}{theirs}.{p}"] = state[f"{ours}{mine}.{p}"]
        projections = [f"{ours}attention.{proj}" for proj in ("q_proj", "k_proj", "v_proj")]
        out[f"{hf}attn.c_attn.weight"] = torch.cat([state[f"{p}.weight"] for p in projections]).t().contiguous()
        out[f"{hf}attn.c_attn.bias"] = torch.cat([state[f"{p}.bias"] for p in projections])
        for theirs, mine in (("attn.c_proj", "attention.out_proj"), ("mlp.c_fc", "ffn.0"), ("mlp.c_proj", "ffn.3")):
            out[f"{hf}{theirs}.weight"] = state[f"{ours}{mine}.weight"].t().contiguous()
            out[f"{hf}{theirs}.bias"] = state[f"{ours}{mine}.bias"]
    return out


def export_transformers(artifact: Any, out: Path, merge_lora: bool = True) -> Path:
    """Write ``out`` as a Hugging Face model directory (``config.json``, ``model.safetensors``, tokenizer files)
    that ``transformers.AutoModelFor…`` and ``AutoTokenizer`` load with the same outputs as the attnfit model."""
    from attnfit.models import ModelConfig
    from attnfit.pretrained import build_model

    model_type, architecture = transformers_target(artifact.record)
    if artifact.record.lora and not merge_lora:
        raise ConfigError("format=transformers needs merge_lora=true: transformers has no attnfit LoRA adapters")
    try:
        import transformers
    except ImportError:
        raise ConfigError("format=transformers needs transformers: pip install 'attnfit[hf]'") from None
    model = build_model(artifact)
    if artifact.record.lora:
        from attnfit.models.lora import merge_lora as merge

        merge(model)
    config = ModelConfig.from_dict(artifact.record.model_config)
    state = {key: value.detach().float() for key, value in model.state_dict().items()}
    record = artifact.record
    tok = record.tokenizers()[0]
    if model_type == "bert":
        hf_config, weights = _bert_hf_config(config, record), _bert_to_hf(state, config, record.task)
        config_class = transformers.BertConfig
    else:
        hf_config, weights = _gpt2_hf_config(config, record), _gpt2_to_hf(state, config, record.task)
        config_class = transformers.GPT2Config
        if record.task == "classification":
            _gpt2_classifier_io(tok, config.pad_id, hf_config, weights)
    tokenizer = _hf_tokenizer(tok, config.max_len)
    if model_type == "gpt2":
        hf_config["bos_token_id"] = hf_config["eos_token_id"] = tokenizer.eos_token_id
    if record.task == "classification":
        labels = list(record.label_names or [])
        hf_config["id2label"] = dict(enumerate(labels))
        hf_config["label2id"] = {label: i for i, label in enumerate(labels)}
        hf_config["classifier_dropout"] = float((record.head_config or {}).get("dropout", 0.1))
    hf_model_class = getattr(transformers, architecture)
    transformers.utils.logging.disable_progress_bar()  # a bar for writing one small file is noise in a CLI run
    hf_model = hf_model_class(config_class(**hf_config))
    missing, unexpected = hf_model.load_state_dict(weights, strict=False)
    if missing or unexpected:  # a mapping bug, never a user error: say exactly which tensor
        raise CheckpointError(
            f"format=transformers: mapping incomplete: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    hf_model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def _gpt2_classifier_io(tok: Any, pad_id: int, hf_config: dict[str, Any], weights: dict[str, Tensor]) -> None:
    """Make a GPT2ForSequenceClassification and its tokenizer see and pool what the attnfit classifier does.

    attnfit's rows are ``<cls> a <eos>`` (``<|endoftext|> a <|endoftext|>`` for GPT-2) and it pools the last real
    position, that ``<eos>``. The tokenizer gets the same template. transformers pools the rightmost token that is
    not ``pad_token_id``: were that ``<|endoftext|>``, it would skip the ``<eos>``, so padding then gets a token of
    its own (``<pad>``, one more embedding row that real tokens never attend to under the mask)."""
    from tokenizers import AddedToken, processors

    from attnfit.data.classification import pair_separator
    from attnfit.data.tokenizer import special_token_id

    cls, eos = special_token_id(tok, "cls"), special_token_id(tok, "eos")
    sep_ids = pair_separator(tok, special_token_id(tok, "sep"))
    names = {i: tok.id_to_token(i) for i in (cls, eos, *sep_ids)}
    seps = " ".join(names[i] for i in sep_ids)
    template = processors.TemplateProcessing(
        single=f"{names[cls]} $A {names[eos]}",
        pair=f"{names[cls]} $A {seps} $B {names[eos]}",
        special_tokens=list((name, i) for i, name in names.items()),
    )
    tok.post_processor = template  # GPT-2's own adds nothing, and offsets are no part of the export
    if pad_id == eos:
        tok.add_special_tokens([AddedToken("<pad>", special=True)])
        pad_id = tok.token_to_id("<pad>")
        wte = weights["transformer.wte.weight"]  # (V, D)
        if pad_id >= len(wte):  # padding's row: any will do (never attended to), the <eos> row as HF's GPT-2 pads
            wte = torch.cat([wte, wte[eos].expand(pad_id + 1 - len(wte), -1)])
        weights["transformer.wte.weight"] = wte
        hf_config["vocab_size"] = len(wte)
    hf_config["pad_token_id"] = pad_id


def _hf_tokenizer(tok: Any, max_len: int) -> Any:
    """The attnfit tokenizer (a ``tokenizers.Tokenizer``) as a ``transformers`` fast tokenizer, its special tokens
    named by their roles."""
    from transformers import PreTrainedTokenizerFast

    from attnfit.data.tokenizer import special_token_ids

    roles = {
        role: tok.id_to_token(token_id) for role, token_id in special_token_ids(tok).items() if token_id is not None
    }
    kwargs = {f"{role}_token": token for role, token in roles.items()}
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=max_len, **kwargs)


# ---- the Hub ---------------------------------------------------------------------------------------------------
def check_repo_id(repo_id: str) -> None:
    owner, slash, name = repo_id.partition("/")
    if not slash or not owner or not name or "/" in name:
        raise ConfigError(f"push_to_hub={repo_id!r} must be USER/REPO (or ORG/REPO)")


def _reachable(endpoint: str, timeout: float = 5.0) -> str | None:
    """None when the Hub's host accepts a connection within ``timeout`` seconds, else why not: an upload to an
    unreachable Hub would otherwise sit in the HTTP client's retries."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return None
    except OSError as error:
        return error.strerror or type(error).__name__


def push_to_hub(out: Path, repo_id: str, private: bool = False) -> str:
    """Upload the export directory ``out`` to the Hub repository ``repo_id`` (created if missing); returns its
    URL. Without network or a login, one ConfigError line says which."""
    check_repo_id(repo_id)
    try:
        from huggingface_hub import HfApi, constants
    except ImportError:
        raise ConfigError("push_to_hub needs huggingface_hub: pip install 'attnfit[hf]'") from None
    if constants.HF_HUB_OFFLINE:
        raise ConfigError(f"push_to_hub={repo_id}: HF_HUB_OFFLINE is set; unset it to upload (the export is in {out})")
    endpoint = constants.ENDPOINT
    why = _reachable(endpoint)
    if why is not None:
        raise ConfigError(f"push_to_hub={repo_id}: cannot reach {endpoint} ({why}); the export is in {out}")
    api = HfApi(endpoint=endpoint)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(out), repo_id=repo_id, commit_message="Upload from attnfit-export")
    except Exception as error:  # no token, no write access, network dropped: one line, not a traceback
        hint = " (log in with `hf auth login` or set HF_TOKEN)" if "401" in str(error) or "403" in str(error) else ""
        raise ConfigError(f"push_to_hub={repo_id} failed: {_first_line(error)}{hint}") from None
    return f"{endpoint}/{repo_id}"
