"""Predictions from a saved model: labels and probabilities, generated text, filled masks or translations;
attention (or, for seq2seq, target × source alignment) heat maps on request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from attnfit.errors import ConfigError, DataError
from attnfit.pretrained import Artifact, build_model, load_artifact


def read_inputs(cfg: DictConfig) -> list[str]:
    """``text=`` or ``file=`` (one input a line; a tab separates the two texts of a pair)."""
    if cfg.get("text") is not None and cfg.get("file"):
        raise ConfigError("give text=... or file=..., not both")
    if cfg.get("text") is not None:
        return [str(cfg.text)]
    if cfg.get("file"):
        path = Path(cfg.file)
        if not path.is_file():
            raise DataError(f"input file {path} does not exist")
        try:
            lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError as error:
            raise DataError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
        if not lines:
            raise DataError(f"{path} has no non-blank line to predict on")
        return lines
    raise ConfigError('nothing to predict: give text="..." or file=inputs.txt')


def predict(cfg: DictConfig) -> list[dict[str, Any]]:
    """Print and write ``predictions.jsonl`` (and heat maps when ``heatmap=true``) to ``cfg.out``."""
    from tokenizers import Tokenizer

    if not cfg.get("checkpoint"):
        raise ConfigError("checkpoint=PATH is required: a run directory, a .ckpt file or an exported model")
    check_beam_size(cfg.get("beam_size"))
    inputs = read_inputs(cfg)
    artifact = load_artifact(cfg.checkpoint)
    tokenizer = Tokenizer.from_str(artifact.tokenizer_json)
    model = build_model(artifact).eval()
    if artifact.task == "seq2seq":
        model.target_tokenizer = Tokenizer.from_str(artifact.extra.get("target_tokenizer") or artifact.tokenizer_json)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(int(cfg.seed))
    handler = {"classification": classify, "clm": generate, "mlm": fill_masks, "seq2seq": translate}[artifact.task]
    results = [handler(model, tokenizer, artifact, text, cfg, out, i) for i, text in enumerate(inputs)]
    with open(out / "predictions.jsonl", "w", encoding="utf-8") as f:
        for result in results:
            f.write(json.dumps(result, ensure_ascii=False) + "\n")
    print(f"predictions written to {out / 'predictions.jsonl'}")
    return results


def _tokens(tokenizer: Any, ids: list[int]) -> list[str]:
    return [tokenizer.decode([i]).strip() or tokenizer.id_to_token(i) for i in ids]


def _show_attention(tokens: list[str], pooling: Any, attention: Any, title: str, path: Path) -> None:
    from attnfit.viz import attention_figure, save_figure, weights_as_text

    save_figure(attention_figure(tokens, pooling, attention, title=title), path)
    if pooling is not None:
        print(weights_as_text(tokens, pooling))
    print(f"attention heat map: {path}")


@torch.no_grad()
def classify(model, tokenizer, artifact: Artifact, text: str, cfg: DictConfig, out: Path, index: int) -> dict:
    from datasets import Dataset

    from attnfit.data.classification import tokenize_for_classification

    first, _, second = text.partition("\t")
    rows = {"text": [first], "label": [artifact.label_names[0]]}
    if second:
        rows["text_pair"] = [second]
    max_len = int(cfg.get("max_len") or artifact.model_config["max_len"])
    ids = tokenize_for_classification(
        Dataset.from_dict(rows), tokenizer, max_len, artifact.label_names, split="predict"
    )[0]["input_ids"]
    output = model(torch.tensor([ids]), need_weights=bool(cfg.heatmap))
    probs = output.logits[0].float().softmax(-1)
    label = artifact.label_names[int(probs.argmax())]
    result = {
        "text": text,
        "label": label,
        "probabilities": {name: round(float(p), 6) for name, p in zip(artifact.label_names, probs, strict=True)},
    }
    print(f"{label}  " + "  ".join(f"{k}={v:.3f}" for k, v in result["probabilities"].items()) + f"  | {text}")
    if cfg.heatmap:
        tokens = _tokens(tokenizer, ids)
        last = output.attentions[-1][0].mean(0).numpy() if output.attentions else None
        path = out / f"attention_{index}.png"
        _show_attention(tokens, output.pooling_weights[0].numpy(), last, f"{label} ({float(probs.max()):.2f})", path)
        result["attention"] = {
            "tokens": tokens,
            "pooling": [round(float(w), 6) for w in output.pooling_weights[0]],
            "heatmap": str(path),
        }
    return result


@torch.no_grad()
def generate(model, tokenizer, artifact: Artifact, text: str, cfg: DictConfig, out: Path, index: int) -> dict:
    from attnfit.data import special_token_id

    prompt = [special_token_id(tokenizer, "eos"), *tokenizer.encode(text, add_special_tokens=False).ids]
    ids = model.generate(
        torch.tensor([prompt]),
        int(cfg.max_new_tokens),
        temperature=float(cfg.temperature),
        top_k=cfg.get("top_k"),
        eos_id=special_token_id(tokenizer, "eos"),
    )[0].tolist()
    continuation = tokenizer.decode(ids[len(prompt) :])
    print(f"{text}\033[1m{continuation}\033[0m")
    result = {"prompt": text, "generated": continuation}
    if cfg.heatmap:
        ids = ids[: artifact.model_config["max_len"]]
        _, attentions = model.backbone(torch.tensor([ids]), need_weights=True)
        path = out / f"attention_{index}.png"
        _show_attention(_tokens(tokenizer, ids), None, attentions[-1][0].mean(0).numpy(), "last layer", path)
        result["attention"] = {"heatmap": str(path)}
    return result


@torch.no_grad()
def fill_masks(model, tokenizer, artifact: Artifact, text: str, cfg: DictConfig, out: Path, index: int) -> dict:
    from attnfit.data import special_token_id

    mask_id = special_token_id(tokenizer, "mask")
    mask_token = tokenizer.id_to_token(mask_id)
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    positions = [i for i, t in enumerate(ids) if t == mask_id]
    if not positions:
        raise DataError(f"a masked LM fills {mask_token} tokens; the text has none: {text!r}")
    probs = model(torch.tensor([ids]))[0].float().softmax(-1)
    fills = []
    for position in positions:
        top = torch.topk(probs[position], 5)
        fills.append(
            [
                {"token": tokenizer.decode([int(i)]).strip(), "p": round(float(p), 6)}
                for p, i in zip(top.values, top.indices, strict=True)
            ]
        )
        print(f"{mask_token} @ {position}: " + ", ".join(f"{f['token']!r} {f['p']:.3f}" for f in fills[-1]))
    return {"text": text, "fills": fills}


def check_beam_size(beam_size: Any) -> None:
    if beam_size is not None and (isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1):
        raise ConfigError(f"beam_size={beam_size!r} must be an integer ≥ 1 (1 = greedy), or null for the checkpoint's")


@torch.no_grad()
def translate(model, tokenizer, artifact: Artifact, text: str, cfg: DictConfig, out: Path, index: int) -> dict:
    """Beam search (the checkpoint's width unless ``beam_size=``); with ``heatmap=true`` the cross-attention
    alignment (target × source, averaged over heads) as a PNG and as a matrix in the JSON record."""
    from attnfit.data import special_token_id
    from attnfit.models.seq2seq import beam_search, greedy_decode

    target_tokenizer = model.target_tokenizer
    decode = artifact.extra.get("decode") or {}
    beam = int(cfg.get("beam_size") or decode.get("beam_size", 4))
    max_len = min(int(decode.get("max_len", 64)), model.config.max_target_len)
    max_source = int(cfg.get("max_len") or artifact.model_config["encoder"]["max_len"])
    words = tokenizer.encode(text, add_special_tokens=False).ids[: max_source - 1]
    ids = [*words, special_token_id(tokenizer, "eos")]  # as in training: source [eos]
    common = dict(
        bos_id=special_token_id(target_tokenizer, "bos"),
        eos_id=special_token_id(target_tokenizer, "eos"),
        max_len=max_len,
        need_alignments=bool(cfg.heatmap),
    )
    source = torch.tensor([ids])
    if beam == 1:
        output = greedy_decode(model, source, None, **common)
    else:
        output = beam_search(
            model, source, None, beam_size=beam, length_penalty=float(decode.get("length_penalty", 1.0)), **common
        )
    n = int(output.lengths[0])
    target_ids = output.tokens[0, :n].tolist()
    translation = target_tokenizer.decode(target_ids)
    print(f"{text}  →  \033[1m{translation}\033[0m")
    result = {"source": text, "translation": translation, "score": round(float(output.scores[0]), 6), "beam_size": beam}
    if cfg.heatmap:
        from attnfit.viz import alignment_figure, save_figure

        source_tokens, target_tokens = _tokens(tokenizer, ids), _tokens(target_tokenizer, target_ids)
        weights = output.alignments[0, :n].float().numpy()  # (target, source)
        path = out / f"alignment_{index}.png"
        save_figure(alignment_figure(source_tokens, target_tokens, weights, title=translation), path)
        links = [f"{t}←{source_tokens[int(row.argmax())]}" for t, row in zip(target_tokens, weights, strict=True)]
        print("alignment (strongest source token): " + " ".join(links))
        print(f"alignment heat map: {path}")
        result["alignment"] = {
            "source_tokens": source_tokens,
            "target_tokens": target_tokens,
            "weights": [[round(float(w), 6) for w in row] for row in weights],
            "heatmap": str(path),
        }
    return result
