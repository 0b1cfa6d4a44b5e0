"""Encoder-decoder model: a :class:`Backbone` source encoder, target embeddings, an attentional decoder, logits.

Loading a pretrained LM backbone into the encoder: ``load_pretrained_backbone(model, lm_state_dict)``; the
``backbone`` property names ``model.encoder`` the way :mod:`attnfit.models.finetuning` expects, so the LM's
``backbone.*`` tensors land in ``model.encoder`` (``model.config.encoder`` must equal the LM's model config).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from attnfit.models.embeddings import Embeddings
from attnfit.models.language_model import Backbone, init_weights
from attnfit.models.seq2seq.config import Seq2SeqConfig
from attnfit.models.seq2seq.decoders import RNNState, TransformerState, build_decoder


class Seq2SeqModel(nn.Module):
    """``src_ids (B, S)``, ``tgt_in_ids (B, T)`` (BOS-prefixed targets) -> next-token logits ``(B, T, V)``."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = config
        dec = config.decoder
        self.encoder = Backbone(config.encoder)
        # RNN decoders know positions from their recurrence; transformers need learned ones.
        position = "learned" if dec.name == "transformer" else "none"
        # RNN decoders scale their inputs by √dim like RNN encoders (see Backbone): N(0, 0.02) tokens are too faint.
        scale = 1.0 if dec.name == "transformer" else config.dim**0.5
        self.tgt_embeddings = Embeddings(
            config.target_vocab_size, config.dim, config.max_target_len, position, config.pad_id, dec.dropout, scale
        )
        self.decoder = build_decoder(config)
        self.output = nn.Linear(config.dim, config.target_vocab_size)
        for part in (self.encoder, self.tgt_embeddings, self.output):
            part.apply(init_weights)
        if dec.name == "transformer":
            self.decoder.apply(init_weights)
        # RNN decoders keep PyTorch's fan-in init: without LayerNorms to rescale, the chain of N(0, 0.02) matrices
        # (attention projections, W_c, tied output) starts with vanishing signals, and a reverse-copy task that the
        # fan-in init learns in 200 steps stays at chance for 600.
        if config.share_embeddings:
            self.tgt_embeddings.token = self.encoder.embeddings.token
        if config.tie_output:
            self.output.weight = self.tgt_embeddings.token.weight

    @property
    def backbone(self) -> Backbone:
        """The source encoder under the name :func:`~attnfit.models.finetuning.load_pretrained_backbone` uses."""
        return self.encoder

    def encode(self, src_ids: Tensor, source_padding_mask: Tensor | None = None) -> Tensor:
        """``src_ids (B, S)``, ``source_padding_mask (B, S)`` True at padding -> memory ``(B, S, D)``."""
        return self.encoder(src_ids, source_padding_mask)[0]

    def forward(
        self, src_ids: Tensor, source_padding_mask: Tensor | None, tgt_in_ids: Tensor, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Teacher forcing: logits ``(B, T, V)`` and the last layer's cross weights ``(B, H, T, S)`` if asked."""
        memory = self.encode(src_ids, source_padding_mask)
        out, weights, _ = self.decoder(self.tgt_embeddings(tgt_in_ids), memory, source_padding_mask, None, need_weights)
        return self.output(out), weights

    def init_state(self, memory: Tensor, source_padding_mask: Tensor | None) -> RNNState | TransformerState:
        return self.decoder.init_state(memory, source_padding_mask)

    def decode_step(
        self,
        tgt_ids_new: Tensor,
        memory: Tensor,
        source_padding_mask: Tensor | None,
        state: RNNState | TransformerState | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None, RNNState | TransformerState]:
        """Continue decoding with ``tgt_ids_new (B, t')``: logits ``(B, t', V)``, cross weights, the new state."""
        if state is None:
            state = self.init_state(memory, source_padding_mask)
        x = self.tgt_embeddings(tgt_ids_new, offset=state.step)
        out, weights, state = self.decoder(x, memory, source_padding_mask, state, need_weights)
        return self.output(out), weights, state

    def loss(self, logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
        """Mean cross-entropy in float32 over labelled target positions (label -100 is ignored)."""
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            labels.reshape(-1),
            ignore_index=-100,
            label_smoothing=label_smoothing,
        )
