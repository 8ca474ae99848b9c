"""The training loss of DESIGN.md section 3.

total = text CE on the last reply + mean over codebooks of the audio CE (stop targets
weighted x stop_weight; codebook 0 counted x first_codebook_weight, as Moshi weights its
semantic codebook: it carries what is said) + MoE auxiliary loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from omni_model.config import AUDIO_STOP_ID
from omni_model.data.sample import IGNORE_INDEX


@dataclass
class LossBreakdown:
    total: torch.Tensor
    text: torch.Tensor
    audio: torch.Tensor
    per_codebook: torch.Tensor  # (8,)
    aux: torch.Tensor


def omni_loss(
    text_logits: torch.Tensor,
    audio_logits: torch.Tensor | None,
    text_labels: torch.Tensor,
    audio_labels: torch.Tensor,
    aux_loss: torch.Tensor,
    stop_weight: float = 10.0,
    first_codebook_weight: float = 1.0,
) -> LossBreakdown:
    """text_logits (B, T, V), audio_logits (B, 8, T, A), labels (B, T) and (B, 8, T)."""
    text_loss = _mean_ce(text_logits, text_labels)
    num_codebooks = audio_labels.shape[1]
    per_codebook = torch.zeros(num_codebooks, device=text_logits.device)
    if audio_logits is not None:
        targets = audio_labels.clamp_min(0)
        ce = F.cross_entropy(
            audio_logits.float().flatten(0, 2), targets.flatten(), reduction="none"
        ).view_as(audio_labels)  # (B, 8, T)
        weights = torch.where(audio_labels == AUDIO_STOP_ID, stop_weight, 1.0)
        weights = weights * (audio_labels != IGNORE_INDEX)
        denominators = weights.sum(dim=(0, 2))  # (8,)
        per_codebook = (ce * weights).sum(dim=(0, 2)) / denominators.clamp_min(1e-9)
    has_audio = audio_labels.ne(IGNORE_INDEX).any(dim=(0, 2))  # (8,)
    codebook_weights = torch.ones(num_codebooks, device=per_codebook.device)
    codebook_weights[0] = first_codebook_weight
    # Zero weights rather than dropping codebooks keep the graph intact without audio targets.
    codebook_weights = codebook_weights * has_audio
    audio_loss = (per_codebook * codebook_weights).sum() / codebook_weights.sum().clamp_min(1e-9)
    aux = aux_loss.to(text_loss.device)
    return LossBreakdown(text_loss + audio_loss + aux, text_loss, audio_loss, per_codebook, aux)


def audio_targets(audio_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the Talker has targets and what they are: labels (B, 8, T) -> positions (B, T)
    bool and their labels (1, 8, N), laid out like its logits at those positions."""
    positions = audio_labels.ne(IGNORE_INDEX).any(dim=1)  # (B, T)
    return positions, audio_labels.transpose(0, 1)[:, positions].unsqueeze(0)


def _mean_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if not labels.ne(IGNORE_INDEX).any():
        return logits.sum() * 0.0  # keeps the graph, contributes nothing
    return F.cross_entropy(
        logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX
    )
