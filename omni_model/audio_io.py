"""Reading and writing audio: every clip the project touches enters through `load_audio`.

`load_audio` accepts a path or encoded bytes (wav/flac/ogg/mp3), and returns mono float32 at
the requested rate, or raises `AudioError` naming the input and what is wrong with it, so
that a bad file in a corpus is reported by name instead of surfacing as a libsndfile error.
"""

from __future__ import annotations

import io
import math
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from scipy.signal import resample_poly

from omni_model.errors import LabelledError

# Peak below one 16-bit step: nothing but digital silence (or dither-free near-silence).
SILENCE_PEAK = 2.0**-15
# WAV writers that stream (espeak-ng --stdout, pipes) store a placeholder data size.
WAV_UNKNOWN_SIZES = (0, 0xFFFFFFFF)
WAV_PLACEHOLDER_MIN = 0x7FFF0000
# Below telephone band (8 kHz) halved: such a rate is a broken header, not speech.
MIN_SAMPLE_RATE = 4_000


class AudioError(LabelledError):
    """An audio input that cannot be used; the message names the input and the reason."""


def load_audio(
    source: str | Path | bytes,
    *,
    name: str | None = None,
    sample_rate: int = 24_000,
    max_seconds: float = 600.0,
    allow_silent: bool = False,
) -> torch.Tensor:
    """Decode `source` to a mono float32 tensor (samples,) at `sample_rate`.

    `name` labels bytes (or overrides the path) in error messages. The duration limit is
    checked from the header, before the samples are decoded.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "<audio bytes>")
    data = _read_bytes(source, label)
    if not data:
        raise AudioError(label, "empty file (0 bytes)")
    _check_wav_not_truncated(data, label)
    try:
        with sf.SoundFile(io.BytesIO(data)) as file:
            declared, source_rate = file.frames, file.samplerate
            if declared <= 0:
                raise AudioError(label, "contains no audio samples")
            if source_rate < MIN_SAMPLE_RATE:
                raise AudioError(
                    label, f"sample rate {source_rate} Hz is below the minimum {MIN_SAMPLE_RATE} Hz"
                )
            seconds = declared / source_rate
            if seconds > max_seconds:
                raise AudioError(
                    label, f"{seconds:.1f} s long, over the limit of {max_seconds:.0f} s"
                )
            samples = file.read(dtype="float32", always_2d=True)  # (samples, channels)
    except sf.LibsndfileError as error:
        raise AudioError(label, f"not readable as audio ({error.error_string})") from error
    if len(samples) < declared:
        raise AudioError(
            label, f"truncated: header declares {declared} samples, only {len(samples)} decode"
        )
    if not np.isfinite(samples).all():
        raise AudioError(label, "contains NaN or infinite samples")
    mono = samples.mean(axis=1)
    if not allow_silent and np.abs(mono).max() < SILENCE_PEAK:
        raise AudioError(label, "all samples are digital silence")
    return torch.from_numpy(resample(mono, source_rate, sample_rate))


def resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited polyphase resampling (anti-aliasing FIR built into resample_poly)."""
    if source_rate == target_rate:
        return np.ascontiguousarray(audio, dtype=np.float32)
    common = math.gcd(source_rate, target_rate)
    out = resample_poly(audio, target_rate // common, source_rate // common)
    return out.astype(np.float32)


def padded_pcm16(audio: torch.Tensor, sample_rate: int, rate: int, pad_seconds: float) -> bytes:
    """audio (samples,) float -> 16-bit little-endian PCM at `rate` with `pad_seconds` of
    silence either side: what pocketsphinx reads, and needs to find where speech starts."""
    pcm = resample(audio.detach().float().cpu().numpy(), sample_rate, rate)
    silence = np.zeros(round(pad_seconds * rate), dtype=np.float32)
    pcm = np.concatenate([silence, pcm, silence])
    return (np.clip(pcm, -1, 1) * 32_767).astype("<i2").tobytes()


def encode_wav_bytes(audio: torch.Tensor, sample_rate: int = 24_000) -> bytes:
    """(samples,) float in [-1, 1] -> 16-bit PCM WAV bytes (values outside are clipped)."""
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio of shape (samples,), got {tuple(audio.shape)}")
    buffer = io.BytesIO()
    samples = audio.detach().float().clamp(-1.0, 1.0).cpu().numpy()
    sf.write(buffer, samples, sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def save_wav(path: str | Path, audio: torch.Tensor, sample_rate: int = 24_000) -> None:
    """Write a 16-bit WAV atomically: readers never see a half-written file."""
    path = Path(path)
    data = encode_wav_bytes(audio, sample_rate)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _read_bytes(source: str | Path | bytes, label: str) -> bytes:
    if isinstance(source, bytes):
        return source
    try:
        return Path(source).read_bytes()
    except FileNotFoundError as error:
        raise AudioError(label, "no such file") from error
    except IsADirectoryError as error:
        raise AudioError(label, "is a directory, not an audio file") from error


def _check_wav_not_truncated(data: bytes, label: str) -> None:
    """libsndfile quietly shortens a WAV whose data chunk is cut off; we refuse it instead."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return
    offset = 12
    while offset + 8 <= len(data):
        chunk_id, size = (
            data[offset : offset + 4],
            struct.unpack("<I", data[offset + 4 : offset + 8])[0],
        )
        if chunk_id == b"data":
            present = len(data) - offset - 8
            known = size not in WAV_UNKNOWN_SIZES and size < WAV_PLACEHOLDER_MIN
            if known and present < size:
                raise AudioError(
                    label, f"truncated: WAV data chunk declares {size} bytes, {present} present"
                )
            return
        offset += 8 + size + (size & 1)
