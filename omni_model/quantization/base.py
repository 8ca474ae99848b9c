"""The codec interface: 24 kHz mono audio <-> (8, frames) codes at 12.5 Hz, values 0..2047.

Two implementations share it: Mimi (moshi) and the offline codec fitted on a corpus.
Every artefact stores `codec_id` so that codes from different codecs are never mixed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

SAMPLE_RATE = 24_000
FRAME_RATE = 12.5
SAMPLES_PER_FRAME = 1_920  # 80 ms at 24 kHz
NUM_CODEBOOKS = 8
CODEBOOK_SIZE = 2_048


def frames_for_samples(num_samples: int) -> int:
    """ceil(seconds * 12.5): a partial trailing frame still becomes one frame."""
    return -(-num_samples // SAMPLES_PER_FRAME)


class StreamingDecoder(ABC):
    """Decodes one frame at a time, keeping whatever state the codec needs between frames."""

    @abstractmethod
    def decode_frame(
        self, codes: torch.Tensor, distributions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """codes: (8,) -> (1920,) float32 samples of this frame; distributions (8, 2048) as
        in `Codec.decode`."""


class Codec(ABC):
    sample_rate = SAMPLE_RATE
    frame_rate = FRAME_RATE
    samples_per_frame = SAMPLES_PER_FRAME
    num_codebooks = NUM_CODEBOOKS
    codebook_size = CODEBOOK_SIZE

    @property
    @abstractmethod
    def codec_id(self) -> str:
        """Codec kind plus a hash of its weights, e.g. `offline-3fa2c1d0e9b87a65`."""

    @abstractmethod
    def encode(
        self, audio: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """audio (B, samples) float at 24 kHz, lengths (B,) -> codes (B, 8, F) long, frames (B,)."""

    @abstractmethod
    def decode(
        self,
        codes: torch.Tensor,
        frames: torch.Tensor | None = None,
        distributions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """codes (B, 8, F), frames (B,) -> audio (B, F * 1920) float, sample lengths (B,).

        distributions (B, 8, F, 2048): what the model that chose the codes thought of each
        code (rows sum to 1). A codec that can (the offline one) decodes codebooks 1..7 as
        the entries expected under them; Mimi decodes the codes."""

    @abstractmethod
    def streaming_decoder(self) -> StreamingDecoder:
        """A fresh decoder for one stream of frames."""
