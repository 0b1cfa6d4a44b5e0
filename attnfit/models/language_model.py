"""Backbone (embeddings + encoder) and the masked / causal language model on top of it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnfit.models.config import ModelConfig
from attnfit.models.embeddings import Embeddings
from attnfit.models.encoders import build_encoder


def init_weights(module: nn.Module) -> None:
    """BERT/GPT-style N(0, 0.02) for linear and embedding weights: small logits at the start, even when tied."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            nn.init.zeros_(module.weight[module.padding_idx])


class Backbone(nn.Module):
    """``ids (B, T) → hidden (B, T, D)``; the part that pretraining learns and fine-tuning reuses."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        # RNN inputs are scaled by √dim (as Vaswani et al. scale transformer embeddings): with N(0, 0.02) tokens an
        # LSTM/GRU barely sees its input at first, which stalls seq2seq encoders; LayerNorm spares transformers this.
        rnn = config.encoder.name in ("lstm", "gru")
        self.embeddings = Embeddings(
            config.vocab_size,
            config.dim,
            config.max_len,
            config.position_kind,
            config.pad_id,
            config.encoder.dropout,
            scale=config.dim**0.5 if rnn else 1.0,
        )
        self.encoder = build_encoder(config)

    def forward(
        self, input_ids: Tensor, padding_mask: Tensor | None = None, need_weights: bool = False
    ) -> tuple[Tensor, list[Tensor]]:
        """Returns hidden states and, when ``need_weights``, one ``(B, H, T, T)`` map per attention layer."""
        x = self.embeddings(input_ids)
        return self.encoder(x, padding_mask, self.config.causal, need_weights)


class LMHead(nn.Module):
    """Vocabulary logits. The MLM head adds BERT's ``Linear → GELU → LayerNorm`` transform first."""

    def __init__(self, dim: int, vocab_size: int, transform: bool) -> None:
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim)) if transform else None
        self.decoder = nn.Linear(dim, vocab_size)

    def forward(self, hidden: Tensor) -> Tensor:
        if self.transform is not None:
            hidden = self.transform(hidden)
        return self.decoder(hidden)


class LanguageModel(nn.Module):
    """Masked LM (``config.causal=False``) or causal LM (``config.causal=True``) over any encoder × attention."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = Backbone(config)
        self.head = LMHead(config.dim, config.vocab_size, transform=not config.causal)
        self.apply(init_weights)
        if config.tie_embeddings:
            self.head.decoder.weight = self.backbone.embeddings.token.weight

    def forward(self, input_ids: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """``(B, T) → logits (B, T, V)``; for a causal model position ``t`` predicts token ``t + 1``."""
        return self.head(self.backbone(input_ids, padding_mask)[0])

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Mean cross-entropy over labelled positions (label -100 is ignored); shifted for causal models."""
        if self.config.causal:
            logits, labels = logits[:, :-1], labels[:, 1:]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)

    def labelled_loss(self, input_ids: Tensor, padding_mask: Tensor | None, labels: Tensor) -> tuple[Tensor, ...]:
        """``(loss, logits (N, V), labels (N,))`` over the labelled positions only.

        The vocabulary projection, the costliest layer, runs only where a label is: every position but the last
        for a causal LM, the masked ~15% for a masked LM."""
        hidden = self.backbone(input_ids, padding_mask)[0]  # (B, T, D)
        if self.config.causal:
            hidden, labels = hidden[:, :-1], labels[:, 1:]  # position t predicts token t + 1
        else:
            selected = labels != -100
            hidden, labels = hidden[selected], labels[selected]
        logits = self.head(hidden)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)
        return loss, logits, labels

    @torch.no_grad()
    def generate(
        self,
        input_ids: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        eos_id: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Sample ``max_new_tokens`` continuations of ``input_ids (B, T)``; temperature 0 means greedy."""
        if not self.config.causal:
            raise ValueError("generate() needs a causal LM (task=clm); this model is a masked LM")
        ids = input_ids
        finished = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        for _ in range(max_new_tokens):
            logits = self(ids[:, -self.config.max_len :])[:, -1].float()  # (B, V)
            if temperature <= 0:
                next_id = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                next_id = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
            if eos_id is not None:
                next_id = next_id.masked_fill(finished[:, None], self.config.pad_id)
                finished |= next_id.squeeze(1) == eos_id
            ids = torch.cat([ids, next_id], dim=1)
            if eos_id is not None and bool(finished.all()):
                break
        return ids
