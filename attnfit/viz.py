"""Attention pictures: heat maps as matplotlib figures / PNG files, and a plain-text rendering for terminals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files and TensorBoard only; never a window
    import matplotlib.pyplot as plt

    return plt


def attention_figure(
    tokens: list[str], pooling: np.ndarray | None = None, attention: np.ndarray | None = None, title: str = ""
):
    """Pooling weights over ``tokens`` (what a classifier reads) above the last layer's attention
    (query × key, averaged over heads). Either part may be omitted."""
    plt = _pyplot()
    panels = [p for p in (pooling, attention) if p is not None]
    if not panels:
        raise ValueError("nothing to draw: give pooling weights, an attention matrix or both")
    n = len(tokens)
    heights = [1.2 if pooling is not None else 0, max(3.0, 0.28 * n) if attention is not None else 0]
    heights = [h for h in heights if h]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(max(5.0, 0.38 * n + 1.5), sum(heights) + 1.0),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    axes = axes[:, 0]
    i = 0
    if pooling is not None:
        ax = axes[i]
        image = ax.imshow(np.asarray(pooling, dtype=float)[None, :n], cmap="viridis", aspect="auto")
        ax.set_yticks([0], ["pooling"])
        ax.set_xticks(range(n), tokens, rotation=90, fontsize=8)
        fig.colorbar(image, ax=ax, fraction=0.03)
        i += 1
    if attention is not None:
        _matrix(fig, axes[i], attention, tokens, tokens, "key", "query")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _matrix(fig, ax, weights: np.ndarray, columns: list[str], rows: list[str], xlabel: str, ylabel: str) -> None:
    """A rows × columns heat map with its token labels and a colour bar."""
    image = ax.imshow(np.asarray(weights, dtype=float)[: len(rows), : len(columns)], cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(image, ax=ax, fraction=0.03)


def alignment_figure(source: list[str], target: list[str], weights: np.ndarray, title: str = ""):
    """A target × source alignment matrix (sequence-to-sequence cross-attention)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.38 * len(source) + 1.5), max(3.0, 0.32 * len(target) + 1.0)))
    _matrix(fig, ax, weights, source, target, "source", "target")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` as PNG and free it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def weights_as_text(tokens: list[str], weights: np.ndarray, width: int = 20) -> str:
    """One line per token: the token, its weight and a bar, for terminals and logs."""
    weights = np.asarray(weights, dtype=float)
    top = float(weights.max()) if weights.size else 1.0
    lines = []
    for token, weight in zip(tokens, weights, strict=False):
        bar = "█" * round(width * weight / top) if top > 0 else ""
        lines.append(f"{token!r:>16} {weight:6.3f} {bar}")
    return "\n".join(lines)


def token_strings(tokenizer: Any, ids: list[int]) -> list[str]:
    """One readable string per token id (the raw token where decoding alone gives nothing, e.g. a space)."""
    return [tokenizer.decode([i]).strip() or tokenizer.id_to_token(i) for i in ids]


def show_attention(tokens: list[str], pooling: Any, attention: Any, title: str, path: Path) -> None:
    """Save an :func:`attention_figure` to ``path`` and print the pooling weights as text."""
    save_figure(attention_figure(tokens, pooling, attention, title=title), path)
    if pooling is not None:
        print(weights_as_text(tokens, pooling))
    print(f"attention heat map: {path}")
