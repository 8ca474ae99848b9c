"""The Thinker: a decoder-only text transformer with tied input/output embeddings."""

from __future__ import annotations

import torch
from torch import nn

from omni_model.config import OmniConfig
from omni_model.modules import KVCache, RMSNorm, Stack


class Thinker(nn.Module):
    def __init__(self, config: OmniConfig):
        super().__init__()
        self.bridge_layer = config.bridge_layer
        self.embed_tokens = nn.Embedding(config.vocab_size, config.thinker.hidden)
        self.stack = Stack(config.thinker, config.max_seq_len)
        self.norm = RMSNorm(config.thinker.hidden, config.thinker.norm_eps)

    def forward(
        self, embeddings: torch.Tensor, start: int = 0, cache: list[KVCache] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """embeddings: (B, T, hidden) -> (text logits (B, T, vocab), bridge (B, T, hidden))."""
        x, bridge = self.stack(embeddings, start, cache, tap_layer=self.bridge_layer)
        logits = self.norm(x) @ self.embed_tokens.weight.T  # tied output head
        return logits, bridge
