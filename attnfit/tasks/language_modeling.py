"""Masked- and causal-LM pretraining (``task=mlm``, ``task=clm``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch import nn

from attnfit.errors import ConfigError, DataError, check_choice
from attnfit.options import container, run_config
from attnfit.pretrained import Artifact, ModelRecord
from attnfit.tasks.base import Prepared, Task, datamodule_for, timed


def model_config_dict(cfg: DictConfig, vocab_size: int, pad_id: int = 0) -> dict[str, Any]:
    """The backbone's plain config: ``model`` + ``encoder`` + ``attention`` groups, vocabulary and causality."""
    return {
        **container(cfg.model),
        "vocab_size": vocab_size,
        "pad_id": pad_id,
        "causal": cfg.task.name == "clm",
        "encoder": container(cfg.encoder),
        "attention": container(cfg.attention),
    }


def check_backbone_config(cfg: DictConfig, seq_len: int) -> None:
    """The ``model``/``encoder``/``attention`` groups against the sequence length a task feeds them."""
    from attnfit.models import ModelConfig

    ModelConfig.from_dict(model_config_dict(cfg, vocab_size=1))
    if cfg.model.max_len < seq_len:
        raise ConfigError(f"model.max_len={cfg.model.max_len} is shorter than data.seq_len={seq_len}")
    if cfg.attention.name == "local" and cfg.attention.window >= seq_len:
        raise ConfigError(
            f"attention.window={cfg.attention.window} is not smaller than data.seq_len={seq_len}: the window would "
            f"cover the whole sequence; choose attention.window < {seq_len} or attention=global"
        )


MASKINGS = ("token", "whole_word", "span")


def masking_collators(cfg: DictConfig, tokenizer: Any) -> tuple[Any, Any]:
    """Training and validation collators of ``task.masking``; validation masks repeat on every pass."""
    from attnfit.data import special_token_id

    masking, prob = str(cfg.task.get("masking", "token")), float(cfg.task.mask_prob)
    short_row_prob = float(cfg.task.get("short_row_prob", 0.0))
    framing = {}  # training rows only: validation stays packed text, comparable across runs
    if cfg.task.get("cls_rows", False) or short_row_prob:
        framing = dict(
            cls_id=special_token_id(tokenizer, "cls"),
            eos_id=special_token_id(tokenizer, "eos"),
            short_row_prob=short_row_prob,
        )
    return (
        masking_collator(masking, prob, tokenizer, cfg.seed, **framing),
        masking_collator(masking, prob, tokenizer, cfg.seed + 1, repeat_masks=True),
    )


def masking_collator(
    masking: str,
    prob: float,
    tokenizer: Any,
    seed: int,
    repeat_masks: bool = False,
    key: str = "task.masking",
    **framing: Any,
) -> Any:
    """A masked-LM collator: BERT's token masking, whole words, or SpanBERT's whole-word spans. ``framing``:
    ``cls_id``, ``eos_id`` and ``short_row_prob`` of :class:`attnfit.data.MLMCollator`."""
    from attnfit.data import MLMCollator, special_token_id, special_token_ids
    from attnfit.data.masking import SpanMLMCollator, WholeWordMLMCollator

    check_choice(key, masking, MASKINGS)
    if masking == "token":
        ids = special_token_id(tokenizer, "pad"), special_token_id(tokenizer, "mask"), tokenizer.get_vocab_size()
        specials = tuple(i for i in special_token_ids(tokenizer).values() if i is not None)
        return MLMCollator(*ids, specials, prob, seed=seed, repeat_masks=repeat_masks, **framing)
    cls = WholeWordMLMCollator if masking == "whole_word" else SpanMLMCollator
    return cls.from_tokenizer(tokenizer, mask_prob=prob, seed=seed, repeat_masks=repeat_masks, **framing)


def prepare_lm_data(cfg: DictConfig, tokenizer: Any = None) -> Prepared:
    """Load the splits, get the tokenizer (trained on train unless given), tokenize and pack, build loaders."""
    from attnfit.data import (
        CLMCollator,
        load_text_splits,
        special_token_id,
        tokenize_for_lm,
        tokenizer_from_config,
    )

    if cfg.data.source == "shards":
        return prepare_shard_data(cfg, tokenizer)
    data, cache_dir, timings = cfg.data, Path(cfg.paths.cache_dir), {}
    files = {split: data.get(split) for split in ("train", "validation", "test") if data.get(split)}
    with timed(timings, "load_s"):
        splits = load_text_splits(
            data.source,
            files=files,
            hub_path=data.get("path"),
            hub_subset=data.get("subset"),
            hub_splits=container(data.get("splits")) if data.get("splits") else None,
            text_column=data.get("text_column", "text"),
            file_format=data.get("format"),
            val_fraction=data.get("val_fraction", 0.05),
            seed=cfg.seed,
            cache_dir=cache_dir / "datasets",
            embedded_dir=cache_dir / "embedded",
            num_train_docs=data.get("num_train_docs", 20000),
            num_val_docs=data.get("num_val_docs", 1000),
            val_split=str(data.get("val_split", "random")),
        )
    if tokenizer is None:
        tok = cfg.tokenizer
        with timed(timings, "tokenizer_s"):
            tokenizer = tokenizer_from_config(
                tok, lambda: iter(splits["train"]["text"]), splits["train"]._fingerprint, cache_dir
            )
    seq_len, packing = int(data.seq_len), bool(data.packing)
    with timed(timings, "tokenize_pack_s"):
        encoded = {name: tokenize_for_lm(ds, tokenizer, seq_len, packing=packing) for name, ds in splits.items()}
    vocab_size = tokenizer.get_vocab_size()
    with timed(timings, "unigram_baseline_s"):
        train_ids, val_ids = (encoded[s].with_format("arrow")["input_ids"] for s in ("train", "validation"))
        facts = corpus_facts(train_ids, val_ids, vocab_size)
    pad_id = special_token_id(tokenizer, "pad")
    if "mask_prob" in cfg.task:  # masked objectives (mlm, electra)
        train_collator, val_collator = masking_collators(cfg, tokenizer)
    else:
        train_collator = val_collator = CLMCollator(pad_id)
    datamodule = datamodule_for(cfg, encoded, train_collator, val_collator)
    extra = {"train_ids": train_ids}  # for the head share of an adaptive softmax, once the model is known
    return Prepared(datamodule, tokenizer, num_train=len(encoded["train"]), facts=facts, extra=extra, timings=timings)


def prepare_shard_data(cfg: DictConfig, tokenizer: Any = None) -> Prepared:
    """``data=shards``: rows of ``data.seq_len`` tokens read from memory-mapped token shards (attnfit.data.shards);
    the last ``data.val_fraction`` of the rows is the validation split. The tokenizer is the shards' own."""
    from tokenizers import Tokenizer

    from attnfit.data import CLMCollator, special_token_id
    from attnfit.data.shards import TOKENIZER, TokenWindows

    data, seq_len = cfg.data, int(cfg.data.seq_len)
    directory = Path(str(data.path)).expanduser()
    windows = TokenWindows(directory, seq_len)
    own = Tokenizer.from_file(str(directory / TOKENIZER))
    if tokenizer is not None and tokenizer.get_vocab() != own.get_vocab():
        raise DataError(f"the shards in {directory} were tokenized with another vocabulary than this model's")
    tokenizer = tokenizer or own
    rows = len(windows)
    val_rows = max(1, int(rows * float(data.get("val_fraction", 0.01))))
    if rows - val_rows < 1:
        raise DataError(f"{directory} holds {windows.num_tokens} tokens: not two rows of data.seq_len={seq_len}")
    encoded = {
        "train": TokenWindows(directory, seq_len, 0, rows - val_rows),
        "validation": TokenWindows(directory, seq_len, rows - val_rows),
    }
    if "mask_prob" in cfg.task:
        train_collator, val_collator = masking_collators(cfg, tokenizer)
    else:
        train_collator = val_collator = CLMCollator(special_token_id(tokenizer, "pad"))
    datamodule = datamodule_for(cfg, encoded, train_collator, val_collator)
    # The unigram baseline from the first rows of each split: reading the whole corpus would defeat streaming.
    sample = {name: [rows[i]["input_ids"] for i in range(min(len(rows), 2000))] for name, rows in encoded.items()}
    facts = corpus_facts(sample["train"], sample["validation"], tokenizer.get_vocab_size())
    extra = {"train_ids": sample["train"]}
    return Prepared(datamodule, tokenizer, num_train=len(encoded["train"]), facts=facts, extra=extra)


def corpus_facts(train_ids: Any, val_ids: Any, vocab_size: int) -> dict[str, float]:
    """What a run reports about its token ids before a model exists: the unigram baseline a model must beat."""
    from attnfit.data import unigram_cross_entropy

    return {"unigram_baseline": unigram_cross_entropy(train_ids, val_ids, vocab_size)}


class LanguageModeling(Task):
    """Pretraining a backbone with a language-model head; ``pretrained=`` continues another LM's weights."""

    is_pretraining = True

    def check(self, cfg: DictConfig, pretrained: Artifact | None) -> None:
        seq_len = int(cfg.data.seq_len)
        if seq_len < 2:
            raise ConfigError(f"data.seq_len={seq_len} must be ≥ 2")
        if pretrained is not None:
            self._check_continuation(cfg, pretrained)
        else:
            check_backbone_config(cfg, seq_len)
        if "mask_prob" in cfg.task and not 0.0 < float(cfg.task.mask_prob) < 1.0:
            raise ConfigError(f"task.mask_prob={cfg.task.mask_prob} must be in (0, 1)")
        check_choice("task.masking", str(cfg.task.get("masking", "token")), MASKINGS)

    def _check_continuation(self, cfg: DictConfig, pretrained: Artifact) -> None:
        from attnfit.tasks import get_task

        if not get_task(pretrained.task).is_pretraining:
            raise ConfigError(
                f"{pretrained.source} is a {pretrained.task} model; task={cfg.task.name} continues a pretrained one"
            )
        if int(cfg.data.seq_len) > int(pretrained.model_config["max_len"]):
            raise ConfigError(
                f"data.seq_len={cfg.data.seq_len} exceeds the pretrained model's max_len="
                f"{pretrained.model_config['max_len']}"
            )

    def prepare(self, cfg: DictConfig, tokenizers: tuple[Any, Any] | None) -> Prepared:
        return prepare_lm_data(cfg, tokenizers[0] if tokenizers else None)

    def _model_config(self, cfg: DictConfig, prepared: Prepared, pretrained: Artifact | None) -> dict[str, Any]:
        from attnfit.data import special_token_id

        if pretrained is not None:  # continued pretraining keeps the architecture; the objective may change
            return {**pretrained.model_config, "causal": cfg.task.name == "clm"}
        return model_config_dict(cfg, prepared.tokenizer.get_vocab_size(), special_token_id(prepared.tokenizer, "pad"))

    def build_module(self, cfg: DictConfig, prepared: Prepared, total_steps: int, pretrained: Artifact | None) -> Any:
        from attnfit.models import LanguageModel, ModelConfig, load_pretrained_backbone
        from attnfit.training.lm_module import LanguageModelingModule
        from attnfit.training.module import Optimization

        config = ModelConfig.from_dict(self._model_config(cfg, prepared, pretrained))
        if config.adaptive_cutoffs and prepared.extra:  # the model's own cutoffs: a continued LM keeps its head
            from attnfit.data import id_share_below

            share = id_share_below(prepared.extra["train_ids"], config.adaptive_cutoffs[0])
            prepared.facts["adaptive_head_share"] = share
        model = LanguageModel(config)
        if pretrained is not None:
            load_pretrained_backbone(model, pretrained.state_dict, source=str(pretrained.source))
        record = ModelRecord(cfg.task.name, config.to_dict(), prepared.tokenizer.to_str(), run_config=run_config(cfg))
        optimization = Optimization(container(cfg.optimizer), container(cfg.scheduler), total_steps)
        return LanguageModelingModule(model, record, optimization)

    def summarise(self, metrics: dict[str, float], module: Any, prepared: Prepared) -> list[str]:
        lines = []
        loss, baseline = metrics.get("val/loss"), metrics["unigram_baseline"]
        if loss is not None:
            if loss < 0.8 * baseline:
                verdict = f"{100 * (1 - loss / baseline):.0f}% lower: the model learned context"
            elif loss < baseline:
                verdict = f"only {100 * (1 - loss / baseline):.0f}% lower: train longer"
            else:
                verdict = "not better yet: train longer, or check the data and learning rate"
            lines.append(
                f"[bold]validation loss {loss:.3f} nats/token[/] (perplexity {math.exp(min(loss, 50)):.1f}) "
                f"vs unigram baseline {baseline:.3f}: {verdict}"
            )
        if module.model.config.causal:
            lines.append(f"sample: {sample(module.model, prepared.tokenizer)}")
        return lines

    def next_steps(self, run_dir: Path) -> list[str]:
        return [
            f"attnfit-finetune pretrained={run_dir}   # fine-tune it (embedded task without data=)",
            f"tensorboard --logdir {run_dir / 'tensorboard'}",
        ]

    def build_model(self, record: ModelRecord) -> nn.Module:
        from attnfit.models import LanguageModel, ModelConfig

        return LanguageModel(ModelConfig.from_dict(record.model_config))

    def evaluation_module(self, artifact: Artifact, cfg: DictConfig) -> Any:
        from attnfit.pretrained import build_model
        from attnfit.training.lm_module import LanguageModelingModule

        return LanguageModelingModule(build_model(artifact), artifact.record)


def sample(model: Any, tokenizer: Any, max_new_tokens: int = 48) -> str:
    """What a causal LM learned: a continuation of a document boundary, sampled with top-k."""
    import torch

    from attnfit.data import special_token_id

    model = model.eval()
    device = next(model.parameters()).device
    prompt = torch.tensor([[special_token_id(tokenizer, "eos")]], device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    ids = model.generate(prompt, max_new_tokens, temperature=0.8, top_k=20, generator=generator)
    return tokenizer.decode(ids[0, 1:].tolist()).strip()


class MaskedLM(LanguageModeling):
    name = "mlm"
    endpoint = "fill-mask"

    def infer(self, model: nn.Module, artifact: Artifact, inputs: list[str], options: Any, need_weights: bool) -> list:
        """The ``top_k`` likeliest tokens at every mask of every input (inputs without a mask: DataError)."""
        import torch

        from attnfit.data import special_token_id
        from attnfit.tasks.base import attention_maps, pad_right
        from attnfit.viz import token_strings

        tokenizer = artifact.record.tokenizers()[0]
        mask_id = special_token_id(tokenizer, "mask")
        max_len, top = int(artifact.model_config["max_len"]), int(options.get("top_k") or 5)
        # An imported BERT was pretrained on [CLS] … [SEP]: its tokenizer's own template adds them.
        special = bool(artifact.record.hf)
        rows = [tokenizer.encode(text, add_special_tokens=special).ids for text in inputs]
        for text, ids in zip(inputs, rows, strict=True):
            if len(ids) > max_len:
                raise DataError(
                    f"the text is {len(ids)} tokens, longer than this model's {max_len} positions; shorten it"
                )
            if mask_id not in ids:
                token = tokenizer.id_to_token(mask_id)
                raise DataError(f"a masked LM fills {token} tokens; the text has none: {text!r}")
        ids, padding = pad_right(rows, int(artifact.model_config.get("pad_id", 0)))
        with torch.no_grad():
            hidden, attentions = model.backbone(ids, padding if bool(padding.any()) else None, need_weights)
            probs = model.head(hidden).float().softmax(-1)  # (B, T, V)
        results = []
        for i, (text, row) in enumerate(zip(inputs, rows, strict=True)):
            fills = []
            for position in (p for p, t in enumerate(row) if t == mask_id):
                best = torch.topk(probs[i, position], min(top, probs.shape[-1]))
                fills.append(
                    {
                        "position": position,
                        "candidates": [
                            {"token": tokenizer.decode([int(t)]).strip(), "p": round(float(p), 6)}
                            for p, t in zip(best.values, best.indices, strict=True)
                        ],
                    }
                )
            record: dict[str, Any] = {"text": text, "fills": fills}
            if need_weights:
                maps = attention_maps(attentions, i, len(row))
                record["attention"] = {"tokens": token_strings(tokenizer, row), "layers": maps}
            results.append(record)
        return results

    def predict(self, model: nn.Module, artifact: Artifact, text: str, cfg: DictConfig, out: Path, index: int) -> dict:
        """The five likeliest tokens at every mask, printed (the same inference as attnfit-serve's fill-mask)."""
        from attnfit.data import special_token_id

        tokenizer = artifact.record.tokenizers()[0]
        mask_token = tokenizer.id_to_token(special_token_id(tokenizer, "mask"))
        result = self.infer(model, artifact, [text], {"top_k": 5}, need_weights=False)[0]
        for fill in result["fills"]:
            shown = ", ".join(f"{c['token']!r} {c['p']:.3f}" for c in fill["candidates"])
            print(f"{mask_token} @ {fill['position']}: {shown}")
        return {"text": text, "fills": [fill["candidates"] for fill in result["fills"]]}


def sampling_from(cfg: Any) -> Any:
    """The :class:`~attnfit.models.sampling.Sampling` that ``temperature``/``top_k``/``top_p``/
    ``repetition_penalty`` of a config (or request) ask for."""
    from attnfit.models.sampling import Sampling

    return Sampling(
        float(cfg.get("temperature", 1.0)),
        cfg.get("top_k"),
        cfg.get("top_p"),
        float(cfg.get("repetition_penalty") or 1.0),
    )


def stream_text(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    max_new_tokens: int,
    sampling: Any,
    stop: tuple[str, ...] = (),
    generator: Any = None,
    cancelled: Any = None,
) -> Any:
    """Continue every prompt at once (left-padded into one batch), yielding ``(row, new text)`` as tokens come.

    A row ends at ``<eos>`` or at its first stop string (the text is cut before it). Text that might be the start
    of a stop string, or half a UTF-8 character, is held back until it is known. ``cancelled()`` → rows to drop
    (e.g. a closed connection), checked between steps. Each prompt starts after an ``<eos>``, as documents did in
    training."""
    import torch

    from attnfit.data import special_token_id

    eos, pad = special_token_id(tokenizer, "eos"), model.config.pad_id
    encoded = [[eos, *tokenizer.encode(p, add_special_tokens=False).ids] for p in prompts]
    width = max(map(len, encoded))
    ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
    mask = torch.tensor([[True] * (width - len(e)) + [False] * len(e) for e in encoded])
    finished = torch.zeros(len(prompts), dtype=torch.bool)  # shared with the model's stream: rows it pads
    generated: list[list[int]] = [[] for _ in prompts]
    shown, done = [""] * len(prompts), [False] * len(prompts)
    hold = max((len(s) for s in stop), default=1) - 1

    def release(row: int, final: bool) -> str:
        """The row's text not yet shown, up to what is certain."""
        text = tokenizer.decode(generated[row])
        cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
        if cut >= 0:
            text, final = text[:cut], True
        if final:
            done[row] = finished[row] = True
        else:
            text = text[: max(len(shown[row]), len(text) - hold)].rstrip("\ufffd")
        delta = text[len(shown[row]) :] if text.startswith(shown[row]) else ""
        shown[row] += delta
        return delta

    steps = model.stream(ids, max_new_tokens, sampling, mask if bool(mask.any()) else None, eos, finished, generator)
    for tokens in steps:
        for row, token in enumerate(tokens.tolist()):
            if done[row]:
                continue
            if token != eos:
                generated[row].append(token)
            delta = release(row, final=token == eos)
            if delta:
                yield row, delta
        for row in cancelled() if cancelled else ():
            done[row] = finished[row] = True
    for row in range(len(prompts)):  # rows that ran out of tokens: their held-back tail
        if not done[row] and (delta := release(row, final=True)):
            yield row, delta


class CausalLM(LanguageModeling):
    name = "clm"
    endpoint = "generate"

    def infer(self, model: nn.Module, artifact: Artifact, inputs: list[str], options: Any, need_weights: bool) -> list:
        """Continuations of every prompt in one left-padded batch (``max_new_tokens``, sampling options, ``stop``);
        weights: every layer and head over the prompt and its continuation."""
        import torch

        from attnfit.data import special_token_id
        from attnfit.tasks.base import attention_maps
        from attnfit.viz import token_strings

        tokenizer = artifact.record.tokenizers()[0]
        stop = tuple(options.get("stop") or ())
        generator = None if options.get("seed") is None else torch.Generator().manual_seed(int(options.get("seed")))
        texts = [""] * len(inputs)
        steps = stream_text(
            model, tokenizer, inputs, int(options.get("max_new_tokens") or 50), sampling_from(options), stop, generator
        )
        for row, delta in steps:
            texts[row] += delta
        results = []
        for prompt, continuation in zip(inputs, texts, strict=True):
            record: dict[str, Any] = {"prompt": prompt, "generated": continuation}
            if need_weights:
                text_ids = tokenizer.encode(prompt + continuation, add_special_tokens=False).ids
                ids = [special_token_id(tokenizer, "eos"), *text_ids][: int(artifact.model_config["max_len"])]
                with torch.no_grad():
                    _, attentions = model.backbone(torch.tensor([ids]), need_weights=True)
                maps = attention_maps(attentions, 0, len(ids))
                record["attention"] = {"tokens": token_strings(tokenizer, ids), "layers": maps}
            results.append(record)
        return results

    def predict(self, model: nn.Module, artifact: Artifact, text: str, cfg: DictConfig, out: Path, index: int) -> dict:
        """Streams the continuation to the terminal token by token (sampling options and ``stop=`` strings from
        ``cfg``)."""
        import sys

        import torch

        from attnfit.viz import show_attention, token_strings

        tokenizer = artifact.record.tokenizers()[0]
        stop = cfg.get("stop") or ()
        stop = (stop,) if isinstance(stop, str) else tuple(str(s) for s in stop)
        print(f"{text}\033[1m", end="", flush=True)  # the continuation in bold, as it comes
        pieces = []
        for _, delta in stream_text(model, tokenizer, [text], int(cfg.max_new_tokens), sampling_from(cfg), stop):
            pieces.append(delta)
            sys.stdout.write(delta)
            sys.stdout.flush()
        print("\033[0m")
        continuation = "".join(pieces)
        result: dict[str, Any] = {"prompt": text, "generated": continuation}
        if cfg.heatmap:
            ids = tokenizer.encode(text + continuation, add_special_tokens=False).ids
            ids = ids[: artifact.model_config["max_len"]]
            with torch.no_grad():
                _, attentions = model.backbone(torch.tensor([ids]), need_weights=True)
            path = out / f"attention_{index}.png"
            show_attention(token_strings(tokenizer, ids), None, attentions[-1][0].mean(0).numpy(), "last layer", path)
            result["attention"] = {"heatmap": str(path)}
        return result
