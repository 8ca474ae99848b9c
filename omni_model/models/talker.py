"""The Talker: turns Thinker states into 8 Mimi codebooks per step.

Input side: each codebook's id is embedded by a shared table plus a per-codebook
low-rank adapter, and the 8 embeddings are averaged. Output side (multi-token
prediction): a shared linear plus per-codebook low-rank adapters give 8 sets of logits
from the same hidden state, so one step predicts a whole (delayed) frame.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from omni_model.config import SPEAKER_MARKER_ID, OmniConfig
from omni_model.modules import KVCache, RMSNorm, Stack


class LowRankEmbedding(nn.Module):
    """Embedding of rank r -> GELU -> Linear to hidden."""

    def __init__(self, vocab: int, rank: int, hidden: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, rank)
        self.proj = nn.Linear(rank, hidden)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.embed(ids)))


class LowRankHead(nn.Module):
    """Linear to rank r -> GELU -> Linear to vocab."""

    def __init__(self, hidden: int, rank: int, vocab: int):
        super().__init__()
        self.down = nn.Linear(hidden, rank)
        self.up = nn.Linear(rank, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(F.gelu(self.down(x)))


class TwoLayerProjection(nn.Sequential):
    """Linear -> GELU -> Linear -> RMSNorm: the bridge's embed_proj and codec_proj."""

    def __init__(self, in_dim: int, out_dim: int, eps: float):
        super().__init__(
            nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim), RMSNorm(out_dim, eps)
        )


class Talker(nn.Module):
    def __init__(self, config: OmniConfig):
        super().__init__()
        hidden, eps = config.talker.hidden, config.talker.norm_eps
        vocab, rank = config.audio_vocab_size, config.adapter_rank
        self.num_codebooks = config.num_codebooks
        self.shared_embedding = nn.Embedding(vocab, hidden)
        self.embedding_adapters = nn.ModuleList(
            LowRankEmbedding(vocab, rank, hidden) for _ in range(config.num_codebooks)
        )
        self.speaker_proj = nn.Linear(config.speaker_dim, hidden, bias=False)
        # Middle-layer bridge: Thinker state and audio embedding mixed by learned scales.
        self.embed_proj = TwoLayerProjection(config.thinker.hidden, hidden, eps)
        self.codec_proj = TwoLayerProjection(hidden, hidden, eps)
        self.text_scale = nn.Parameter(torch.tensor(config.text_scale_init))
        self.audio_scale = nn.Parameter(torch.tensor(config.audio_scale_init))
        self.stack = Stack(config.talker, config.max_seq_len)
        self.norm = RMSNorm(hidden, eps)
        self.shared_head = nn.Linear(hidden, vocab)
        self.head_adapters = nn.ModuleList(
            LowRankHead(hidden, rank, vocab) for _ in range(config.num_codebooks)
        )

    def embed_audio(self, audio_ids: torch.Tensor, speaker: torch.Tensor | None) -> torch.Tensor:
        """audio_ids: (B, 8, T), speaker: (B, speaker_dim) or None -> (B, T, hidden)."""
        per_codebook = [
            self.shared_embedding(audio_ids[:, k]) + adapter(audio_ids[:, k])
            for k, adapter in enumerate(self.embedding_adapters)
        ]
        embedded = torch.stack(per_codebook).mean(dim=0)  # (B, T, hidden)
        if speaker is not None:
            slot = (audio_ids[:, 0] == SPEAKER_MARKER_ID).unsqueeze(-1)  # (B, T, 1)
            speaker_embedding = self.speaker_proj(speaker).unsqueeze(1)  # (B, 1, hidden)
            embedded = torch.where(slot, speaker_embedding.to(embedded.dtype), embedded)
        return embedded

    def forward(
        self,
        bridge: torch.Tensor,
        audio_ids: torch.Tensor,
        speaker: torch.Tensor | None = None,
        start: int = 0,
        cache: list[KVCache] | None = None,
    ) -> torch.Tensor:
        """bridge: (B, T, thinker hidden), audio_ids: (B, 8, T) -> logits (B, 8, T, vocab)."""
        audio = self.embed_audio(audio_ids, speaker)
        x = self.embed_proj(bridge) * self.text_scale + self.codec_proj(audio) * self.audio_scale
        x, _ = self.stack(x, start, cache)
        x = self.norm(x)
        shared = self.shared_head(x)  # (B, T, vocab)
        return torch.stack([shared + adapter(x) for adapter in self.head_adapters], dim=1)
