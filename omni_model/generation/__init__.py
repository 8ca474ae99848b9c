"""Streaming generation of text tokens and complete audio frames."""

from omni_model.generation.sampling import penalize_repeats, sample
from omni_model.generation.stream import AudioFrame, SamplingSettings, TextToken, generate_stream

__all__ = [
    "AudioFrame",
    "SamplingSettings",
    "TextToken",
    "generate_stream",
    "penalize_repeats",
    "sample",
]
