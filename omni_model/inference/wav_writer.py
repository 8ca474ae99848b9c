"""A WAV file that grows frame by frame and is a valid, complete file after every frame.

Samples are appended as 16-bit PCM and the 44-byte header is rewritten with the new sizes
after each append, so a player or another process can open the file mid-reply and hear
everything generated so far.
"""

from __future__ import annotations

import struct
from pathlib import Path

import torch

HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")  # RIFF header, 16-byte PCM fmt chunk, data header
BYTES_PER_SAMPLE = 2


class GrowingWav:
    def __init__(self, path: str | Path, sample_rate: int = 24_000):
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.data_bytes = 0
        self.file = self.path.open("wb")
        self._write_header()

    @property
    def samples(self) -> int:
        return self.data_bytes // BYTES_PER_SAMPLE

    def append(self, samples: torch.Tensor) -> None:
        """samples: (N,) float in [-1, 1] (clipped outside) -> appended 16-bit PCM."""
        if samples.ndim != 1:
            raise ValueError(f"expected mono samples (N,), got {tuple(samples.shape)}")
        pcm = (samples.detach().float().cpu().clamp(-1.0, 1.0) * 32767).round().to(torch.int16)
        data = pcm.numpy().astype("<i2").tobytes()
        self.file.seek(0, 2)
        self.file.write(data)
        self.data_bytes += len(data)
        self._write_header()

    def _write_header(self) -> None:
        rate = self.sample_rate
        header = HEADER.pack(
            b"RIFF", 36 + self.data_bytes, b"WAVE",
            b"fmt ", 16, 1, 1, rate, rate * BYTES_PER_SAMPLE, BYTES_PER_SAMPLE, 16,
            b"data", self.data_bytes,
        )  # fmt: skip
        self.file.seek(0)
        self.file.write(header)
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> GrowingWav:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
