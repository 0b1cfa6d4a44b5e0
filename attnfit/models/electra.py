"""ELECTRA pretraining (Clark et al. 2020): a small MLM generator fills the masked positions with samples, and the
discriminator learns, at every position, whether its token was replaced.

The discriminator learns from all tokens instead of the ~15% masked ones, which is why it pays off at small
compute. ``ElectraModel.backbone`` is the discriminator, so a checkpoint's ``backbone.*`` tensors fine-tune like
an MLM's (``attnfit.models.load_pretrained_backbone``); the generator is thrown away after pretraining.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnfit.errors import ConfigError
from attnfit.models.config import ModelConfig, _at_least, from_dict
from attnfit.models.embeddings import Embeddings
from attnfit.models.language_model import Backbone, LMHead, init_weights

IGNORE_INDEX = -100


@dataclass
class ElectraConfig:
    generator_dim_ratio: float = 0.25  # generator width / discriminator width (the paper: 1/4 to 1/2 is best)
    generator_layers: int | None = None  # None: as many as the discriminator
    discriminator_weight: float = 50.0  # λ in gen_loss + λ·disc_loss (the BCE is ~50× smaller than the MLM loss)
    temperature: float = 1.0  # of the generator's sampling softmax

    def __post_init__(self) -> None:
        if not 0.0 < self.generator_dim_ratio <= 1.0:
            raise ConfigError(f"electra.generator_dim_ratio={self.generator_dim_ratio} must be in (0, 1]")
        if self.generator_layers is not None:
            _at_least("electra.generator_layers", self.generator_layers, 1)
        if self.discriminator_weight < 0:
            raise ConfigError(f"electra.discriminator_weight={self.discriminator_weight} must be ≥ 0")
        if self.temperature <= 0:
            raise ConfigError(f"electra.temperature={self.temperature} must be > 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ElectraConfig:
        return from_dict(cls, data, "electra")


def generator_config(config: ModelConfig, electra: ElectraConfig) -> ModelConfig:
    """The generator's ModelConfig: ``ratio × dim`` rounded to a multiple of the head count (≥ 1 head)."""
    heads = config.attention.num_heads
    unit = 2 * heads if config.encoder.name in ("lstm", "gru") and config.bidirectional else heads  # even for biRNN
    dim = max(unit, round(electra.generator_dim_ratio * config.dim / unit) * unit)
    layers = electra.generator_layers or config.encoder.num_layers
    return dataclasses.replace(config, dim=dim, encoder=dataclasses.replace(config.encoder, num_layers=layers))


class SharedEmbeddings(nn.Module):
    """The discriminator's token + position embeddings, projected ``D → d_gen`` when the generator is narrower."""

    def __init__(self, shared: Embeddings, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.shared = shared  # the same module (and Parameters) as the discriminator's
        self.project = nn.Linear(dim_in, dim_out) if dim_in != dim_out else nn.Identity()

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.project(self.shared(input_ids))  # (B, T, D) → (B, T, d_gen)


class Generator(nn.Module):
    """A small masked LM on the discriminator's embeddings; its output layer is tied to the shared token table."""

    def __init__(self, config: ModelConfig, shared: Embeddings, dim: int) -> None:
        super().__init__()
        self.config = config
        self.backbone = Backbone(config)
        self.backbone.embeddings = SharedEmbeddings(shared, dim, config.dim)  # replaces its own, unused table
        # BERT's transform widened back to D (as ELECTRA's small generators do), so the decoder can share the
        # (V, D) token table: the MLM's softmax then trains every token embedding the discriminator reads.
        self.head = LMHead(dim, config.vocab_size, transform=True)
        self.head.transform[0] = nn.Linear(config.dim, dim)

    def forward(self, input_ids: Tensor, padding_mask: Tensor | None, selected: Tensor) -> Tensor:
        """Logits ``(N, V)`` at the ``N`` positions where ``selected (B, T)`` is True (the masked ones)."""
        hidden = self.backbone(input_ids, padding_mask)[0]  # (B, T, d_gen)
        return self.head(hidden[selected])  # the vocabulary projection only where it is needed


class ElectraOutput(NamedTuple):
    loss: Tensor  # () generator_loss + λ · discriminator_loss
    generator_loss: Tensor  # () MLM cross-entropy at the masked positions
    discriminator_loss: Tensor  # () replaced-token BCE over non-padding positions
    replaced: Tensor  # (B, T) bool: the discriminator's labels (token differs from the original)
    disc_accuracy: Tensor  # () share of non-padding positions the discriminator gets right (no gradient)


class ElectraModel(nn.Module):
    """Generator + discriminator; ``.backbone`` is the discriminator, the part that is fine-tuned later."""

    def __init__(self, config: ModelConfig, electra: ElectraConfig | None = None) -> None:
        super().__init__()
        if config.causal:
            raise ConfigError("ELECTRA pretrains a bidirectional encoder; set model.causal=false")
        if config.adaptive_cutoffs:
            raise ConfigError(
                f"model.adaptive_cutoffs={config.adaptive_cutoffs} is for task=mlm and task=clm; ELECTRA's generator "
                "samples from a full softmax: set model.adaptive_cutoffs=null"
            )
        self.config, self.electra = config, electra or ElectraConfig()
        self.backbone = Backbone(config)  # the discriminator
        self.generator = Generator(generator_config(config, self.electra), self.backbone.embeddings, config.dim)
        self.rtd_head = nn.Sequential(nn.Linear(config.dim, config.dim), nn.GELU(), nn.Linear(config.dim, 1))
        self.apply(init_weights)
        if config.tie_embeddings:
            self.generator.head.decoder.weight = self.backbone.embeddings.token.weight

    def discriminate(self, input_ids: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """Replaced-token logits ``(B, T)``: > 0 means "replaced"."""
        return self.rtd_head(self.backbone(input_ids, padding_mask)[0]).squeeze(-1)

    @torch.no_grad()
    def sample(self, logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One token per row of ``logits (N, V)`` from ``softmax(logits / temperature)``."""
        probs = torch.softmax(logits.float() / self.electra.temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (N,)

    def forward(
        self, input_ids: Tensor, padding_mask: Tensor | None, labels: Tensor, generator: torch.Generator | None = None
    ) -> ElectraOutput:
        """``input_ids (B, T)`` as the MLM collator masked them; ``labels (B, T)``: original ids there, else -100.

        ``generator`` (on the model's device) makes the replacement samples reproducible.
        """
        if padding_mask is None:
            padding_mask = torch.zeros_like(input_ids, dtype=torch.bool)
        masked = labels != IGNORE_INDEX  # (B, T)
        logits = self.generator(input_ids, padding_mask, masked)  # (N, V)
        # A batch without masked tokens has nothing to predict: a zero loss that keeps the graph (for DDP).
        generator_loss = F.cross_entropy(logits.float(), labels[masked]) if len(logits) else logits.sum() * 0.0

        original = torch.where(masked, labels, input_ids)  # (B, T)
        corrupted = original.clone()
        corrupted[masked] = self.sample(logits.detach(), generator)  # no gradient through the discrete sample
        replaced = corrupted != original  # a sample equal to the original counts as original, as in the paper

        disc_logits = self.discriminate(corrupted, padding_mask)  # (B, T)
        real = ~padding_mask
        discriminator_loss = F.binary_cross_entropy_with_logits(disc_logits[real].float(), replaced[real].float())
        loss = generator_loss + self.electra.discriminator_weight * discriminator_loss
        with torch.no_grad():
            disc_accuracy = ((disc_logits[real] > 0) == replaced[real]).float().mean()
        return ElectraOutput(loss, generator_loss, discriminator_loss, replaced, disc_accuracy)
