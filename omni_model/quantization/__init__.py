"""Audio codecs: the shared interface, its implementations, and `load_codec` to pick one."""

from pathlib import Path

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
from omni_model.quantization.offline import OfflineCodec

CODEC_KINDS = ("mimi", "offline")


def load_codec(kind: str, weights: str | Path | None = None, allow_download: bool = False) -> Codec:
    """The codec named by config (`mimi` | `offline`) from its weights file.

    Mimi is imported only when asked for (moshi is heavy), and only Mimi can download its
    weights, when `allow_download` is set; the offline codec is always a fitted local file.
    """
    if kind == "mimi":
        from omni_model.quantization.mimi import load_mimi

        return load_mimi(weights, allow_download=allow_download)
    if kind == "offline":
        if weights is None:
            raise ValueError("the offline codec needs its weights file (fit one: omni codec fit)")
        return OfflineCodec.load(weights)
    raise ValueError(f"unknown codec {kind!r}: expected one of {', '.join(CODEC_KINDS)}")


__all__ = [
    "CODEBOOK_SIZE",
    "CODEC_KINDS",
    "FRAME_RATE",
    "NUM_CODEBOOKS",
    "SAMPLES_PER_FRAME",
    "SAMPLE_RATE",
    "Codec",
    "OfflineCodec",
    "StreamingDecoder",
    "frames_for_samples",
    "load_codec",
]
