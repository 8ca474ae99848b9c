"""Audio codecs: the shared interface and its implementations."""

from omni_model.quantization.base import (
    CODEBOOK_SIZE,
    FRAME_RATE,
    NUM_CODEBOOKS,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    Codec,
    StreamingDecoder,
    frames_for_samples,
)

__all__ = [
    "CODEBOOK_SIZE",
    "FRAME_RATE",
    "NUM_CODEBOOKS",
    "SAMPLES_PER_FRAME",
    "SAMPLE_RATE",
    "Codec",
    "StreamingDecoder",
    "frames_for_samples",
]
