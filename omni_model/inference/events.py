"""What a streaming reply yields, in order: text deltas and audio chunks as they exist, then done.

`seconds` counts from the moment the reply was asked for, so the first `AudioChunk`'s
`seconds` is the first-audio latency (feature encoding, prefill, 8 steps, one decode).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TextDelta:
    """New reply text: one token's worth, or several when a character spans tokens."""

    text: str
    token_id: int
    step: int
    seconds: float


@dataclass(frozen=True, eq=False)
class AudioChunk:
    """One decoded 80 ms frame of the reply."""

    samples: torch.Tensor  # (1920,) float32 at 24 kHz
    index: int  # frame number within the reply
    step: int  # generation step that completed the frame
    seconds: float


@dataclass(frozen=True)
class ReplyDone:
    """The reply ran to its end (text end token and every codebook stopped, or max steps)."""

    text: str
    frames: int
    steps: int
    seconds: float


ReplyEvent = TextDelta | AudioChunk | ReplyDone
