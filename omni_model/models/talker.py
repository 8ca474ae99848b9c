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
from omni_model.text.letters import LETTER_VOCAB, NONE


class CodebookEmbedding(nn.Module):
    """Mean over codebooks of (shared embedding + codebook k's low-rank adapter).

    Adapter k is an embedding of rank r -> GELU -> linear to hidden. Summing the 8 linear
    maps is one matmul over the concatenated low-rank vectors, so `adapter_proj` holds
    [W_0 ... W_7] and one bias (the sum of the 8 biases).
    """

    def __init__(self, num_codebooks: int, vocab: int, rank: int, hidden: int):
        super().__init__()
        self.num_codebooks, self.vocab = num_codebooks, vocab
        self.shared = nn.Embedding(vocab, hidden)
        self.adapter_tables = nn.Embedding(num_codebooks * vocab, rank)  # codebook k at k*vocab
        self.adapter_proj = nn.Linear(num_codebooks * rank, hidden)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, K, T) -> (B, T, hidden)."""
        batch, codebooks, length = ids.shape
        offsets = torch.arange(codebooks, device=ids.device).view(1, -1, 1) * self.vocab
        low = F.gelu(self.adapter_tables(ids + offsets))  # (B, K, T, r)
        low = low.transpose(1, 2).reshape(batch, length, -1)  # (B, T, K * r)
        return (self.shared(ids).sum(dim=1) + self.adapter_proj(low)) / codebooks


class MultiCodebookHead(nn.Module):
    """Multi-token prediction: logits_k = shared(x) + up_k(GELU(down_k(x))) for every k.

    The 8 down-projections run as one linear; the 8 up-projections as one batched matmul.
    """

    def __init__(self, num_codebooks: int, hidden: int, rank: int, vocab: int):
        super().__init__()
        self.num_codebooks, self.rank = num_codebooks, rank
        self.shared = nn.Linear(hidden, vocab)
        self.down = nn.Linear(hidden, num_codebooks * rank)
        self.up_weight = nn.Parameter(torch.randn(num_codebooks, rank, vocab) * 0.02)
        self.up_bias = nn.Parameter(torch.zeros(num_codebooks, 1, vocab))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, hidden) -> (B, K, T, vocab)."""
        batch, length, _ = x.shape
        low = F.gelu(self.down(x)).view(batch, length, self.num_codebooks, self.rank)
        logits = torch.matmul(low.transpose(1, 2), self.up_weight)  # (B, K, T, vocab)
        # In place is safe: the matmul's backward needs its inputs, not its output.
        return logits.add_(self.up_bias).add_(self.shared(x).unsqueeze(1))


class LetterReader(nn.Module):
    """Sum over the window of (letter embedding at that offset) -> RMSNorm, zero where a
    column reads nothing (NONE): (B, W, T) letter ids -> (B, T, hidden)."""

    def __init__(self, width: int, hidden: int, eps: float):
        super().__init__()
        self.table = nn.Embedding(width * LETTER_VOCAB, hidden)  # offset w at w * LETTER_VOCAB
        self.norm = RMSNorm(hidden, eps)

    def forward(self, letters: torch.Tensor) -> torch.Tensor:
        offsets = torch.arange(letters.shape[1], device=letters.device).view(1, -1, 1)
        summed = self.table(letters + offsets * LETTER_VOCAB).sum(dim=1)  # (B, T, hidden)
        reads = (letters[:, letters.shape[1] // 2] != NONE).unsqueeze(-1)  # (B, T, 1)
        return self.norm(summed) * reads


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
        self.embedding = CodebookEmbedding(config.num_codebooks, vocab, rank, hidden)
        self.speaker_proj = nn.Linear(config.speaker_dim, hidden, bias=False)
        # Middle-layer bridge: Thinker state and audio embedding mixed by learned scales.
        self.embed_proj = TwoLayerProjection(config.thinker.hidden, hidden, eps)
        self.codec_proj = TwoLayerProjection(hidden, hidden, eps)
        self.text_scale = nn.Parameter(torch.tensor(config.text_scale_init))
        self.audio_scale = nn.Parameter(torch.tensor(config.audio_scale_init))
        self.reader = None
        if config.letter_window:  # the reply's letters around the one being said
            self.reader = LetterReader(config.letter_window, hidden, eps)
        self.stack = Stack(config.talker, config.max_seq_len)
        self.norm = RMSNorm(hidden, eps)
        self.head = MultiCodebookHead(config.num_codebooks, hidden, rank, vocab)

    def embed_audio(self, audio_ids: torch.Tensor, speaker: torch.Tensor | None) -> torch.Tensor:
        """audio_ids: (B, 8, T), speaker: (B, speaker_dim) or None -> (B, T, hidden)."""
        embedded = self.embedding(audio_ids)  # (B, T, hidden)
        if speaker is not None:
            slot = (audio_ids[:, 0] == SPEAKER_MARKER_ID).unsqueeze(-1)  # (B, T, 1)
            speaker = speaker.to(self.speaker_proj.weight.dtype)
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
        positions: torch.Tensor | None = None,
        letters: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """bridge: (B, T, thinker hidden), audio_ids: (B, 8, T) -> logits (B, 8, T, vocab).

        With `positions` (B, T) bool, the head runs only there: logits (1, 8, N, vocab) for
        the N chosen positions in row-major order. Training asks for its target positions
        alone, since 8 x 2,112 logits per position are most of a tiny model's step.
        letters: (B, W, T) the letter window each column reads (with `letter_window`).
        """
        audio = self.embed_audio(audio_ids, speaker)
        x = self.embed_proj(bridge) * self.text_scale + self.codec_proj(audio) * self.audio_scale
        if self.reader is not None and letters is not None:
            x = x + self.reader(letters)
        x, _ = self.stack(x, start, cache)
        if positions is not None:
            x = x[positions].unsqueeze(0)  # (1, N, hidden)
        return self.head(self.norm(x))
