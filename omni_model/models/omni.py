"""OmniModel: Thinker + Talker joined by the middle-layer bridge, plus the projectors.

Input is the 9-stream tensor of DESIGN.md section 3: rows 0..7 audio codebooks, row 8
text. The Thinker reads the text row (with projected audio/image features written over
placeholder tokens); the Talker reads the audio rows plus the Thinker's layer-3 state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from omni_model.config import OmniConfig
from omni_model.models.projector import Projector
from omni_model.models.talker import Talker
from omni_model.models.thinker import Thinker
from omni_model.modules import KVCache
from omni_model.text.special_tokens import AUDIO_PLACEHOLDER_ID, IMAGE_PLACEHOLDER_ID

TRAINING_MODES = ("all", "audio_proj", "vision_proj")


@dataclass
class OmniOutput:
    text_logits: torch.Tensor  # (B, T, text vocab)
    # (B, 8, T, audio vocab), or (1, 8, N, audio vocab) at N chosen `audio_positions`;
    # None when text_only
    audio_logits: torch.Tensor | None
    aux_loss: torch.Tensor  # MoE balancing loss, already scaled by moe_aux_coef


@dataclass
class OmniCache:
    """KV caches of both stacks; `length` positions have been fed so far."""

    thinker: list[KVCache]
    talker: list[KVCache]
    length: int = 0


class OmniModel(nn.Module):
    def __init__(self, config: OmniConfig):
        super().__init__()
        self.config = config
        self.thinker = Thinker(config)
        self.talker = Talker(config)
        self.audio_projector = Projector(config.audio_feature_dim, config.thinker.hidden)
        self.vision_projector = Projector(config.image_feature_dim, config.thinker.hidden)
        self.apply(_init_weights)

    def new_cache(self, batch: int = 1, max_len: int | None = None) -> OmniCache:
        max_len = max_len or self.config.max_seq_len
        weight = self.thinker.embed_tokens.weight
        return OmniCache(
            self.thinker.stack.new_cache(batch, max_len, weight.device, weight.dtype),
            self.talker.stack.new_cache(batch, max_len, weight.device, weight.dtype),
        )

    def embed_text(
        self,
        text_ids: torch.Tensor,
        audio_features: torch.Tensor | None,
        image_features: torch.Tensor | None,
    ) -> torch.Tensor:
        """text_ids: (B, T) -> (B, T, hidden), projected features over placeholder tokens.

        audio_features: (N_audio, audio_feature_dim) and image_features:
        (N_image, image_feature_dim), one row per placeholder in row-major order.
        """
        embeddings = self.thinker.embed_tokens(text_ids)
        for placeholder, features, projector, name in (
            (AUDIO_PLACEHOLDER_ID, audio_features, self.audio_projector, "audio"),
            (IMAGE_PLACEHOLDER_ID, image_features, self.vision_projector, "image"),
        ):
            slots = text_ids == placeholder
            count = int(slots.sum())
            given = 0 if features is None else features.shape[0]
            if count != given:
                raise ValueError(
                    f"{count} {name} placeholder tokens but {given} {name} feature rows"
                )
            if count:
                embeddings = embeddings.masked_scatter(
                    slots.unsqueeze(-1), projector(features).to(embeddings.dtype)
                )
        return embeddings

    def forward(
        self,
        input_ids: torch.Tensor,
        audio_features: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        speaker: torch.Tensor | None = None,
        cache: OmniCache | None = None,
        text_only: bool = False,
        audio_positions: torch.Tensor | None = None,
        letters: torch.Tensor | None = None,
    ) -> OmniOutput:
        """input_ids: (B, 9, T) at positions cache.length.. (0 without a cache);
        audio_positions: (B, T) bool, where audio logits are wanted (None: everywhere);
        letters: (B, W, T), the Talker's letter window (models with `letter_window`)."""
        start = 0 if cache is None else cache.length
        thinker_cache = None if cache is None else cache.thinker
        talker_cache = None if cache is None else cache.talker
        embeddings = self.embed_text(input_ids[:, -1], audio_features, image_features)
        text_logits, bridge = self.thinker(embeddings, start, thinker_cache)
        audio_logits = None
        if not text_only:
            audio_ids = input_ids[:, : self.config.num_codebooks]
            audio_logits = self.talker(
                bridge, audio_ids, speaker, start, talker_cache, audio_positions, letters
            )
        if cache is not None:
            cache.length += input_ids.shape[-1]
        aux = self.thinker.stack.aux_loss()
        if not text_only:
            aux = aux + self.talker.stack.aux_loss()
        return OmniOutput(text_logits, audio_logits, aux * self.config.moe_aux_coef)

    def init_talker_from_thinker(self) -> None:
        """Copy the Thinker's last blocks into the Talker (same width required)."""
        thinker_layers, talker_layers = self.thinker.stack.layers, self.talker.stack.layers
        if self.config.thinker.hidden != self.config.talker.hidden:
            raise ValueError(
                f"Talker width {self.config.talker.hidden} differs from the Thinker's "
                f"{self.config.thinker.hidden}; cannot copy blocks"
            )
        sources = thinker_layers[-len(talker_layers) :]
        for source, target in zip(sources, talker_layers, strict=True):
            target.load_state_dict(source.state_dict())

    def set_training_mode(self, mode: str) -> None:
        """`all` trains everything; `audio_proj`/`vision_proj` train only that projector."""
        if mode not in TRAINING_MODES:
            raise ValueError(f"unknown training mode {mode!r}; choose one of {TRAINING_MODES}")
        trainable = {"audio_proj": self.audio_projector, "vision_proj": self.vision_projector}
        self.requires_grad_(mode == "all")
        if mode in trainable:
            trainable[mode].requires_grad_(True)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
