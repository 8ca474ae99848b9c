"""Speech augmentation for question audio: speed, reverb, noise, gain and time masking.

The offline corpus speaks every question with a handful of clean espeak voices; without
augmentation the audio encoder learns those recordings rather than speech. Each effect is
applied with its own probability, in the order a real recording would apply them (talking
speed, the room, the microphone's noise and level, dropouts). All randomness comes from the
`numpy.random.Generator` passed in, so the trainer seeds it per (seed, epoch, sample, turn)
and a resumed run sees exactly the same augmented audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve, resample_poly

SPEED_STEP = 20  # speeds are multiples of 1/20: resample_poly needs a small integer ratio


@dataclass(frozen=True)
class AugmentSettings:
    """Ranges are drawn uniformly; each effect fires with its own probability."""

    speed_p: float = 0.5
    speed_range: tuple[float, float] = (0.9, 1.1)
    reverb_p: float = 0.3
    rt60_range: tuple[float, float] = (0.1, 0.5)  # seconds for the tail to fall by 60 dB
    noise_p: float = 0.5
    snr_db_range: tuple[float, float] = (10.0, 40.0)
    gain_p: float = 0.5
    gain_db_range: tuple[float, float] = (-10.0, 6.0)
    mask_p: float = 0.5
    max_masks: int = 2
    max_mask_seconds: float = 0.1


def change_speed(audio: np.ndarray, speed: float) -> np.ndarray:
    """Play `speed` times faster (pitch moves with it, as tape does): length / speed."""
    down = round(speed * SPEED_STEP)
    if down == SPEED_STEP:
        return audio
    return resample_poly(audio, SPEED_STEP, down).astype(np.float32)


def add_reverb(
    audio: np.ndarray, sample_rate: int, rt60: float, rng: np.random.Generator
) -> np.ndarray:
    """Convolve with a synthetic room: a direct path plus exponentially decaying noise."""
    length = max(1, int(rt60 * sample_rate))
    decay = np.exp(-6.9 * np.arange(length) / length)  # -60 dB (ln 1000 = 6.9) at rt60
    response = rng.standard_normal(length) * decay * 0.1
    response[0] = 1.0
    wet = fftconvolve(audio, response)[: len(audio)]
    peak = np.abs(wet).max()
    return (wet * (np.abs(audio).max() / peak if peak > 0 else 1.0)).astype(np.float32)


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White noise at `snr_db` below the clip's own power."""
    power = float(np.mean(audio**2))
    noise_power = power / 10 ** (snr_db / 10)
    noise = rng.standard_normal(len(audio)) * np.sqrt(noise_power)
    return (audio + noise).astype(np.float32)


def mask_spans(
    audio: np.ndarray, sample_rate: int, settings: AugmentSettings, rng: np.random.Generator
) -> np.ndarray:
    """Silence up to `max_masks` spans of up to `max_mask_seconds` each."""
    audio = audio.copy()
    for _ in range(rng.integers(1, settings.max_masks + 1)):
        width = int(rng.uniform(0, settings.max_mask_seconds) * sample_rate)
        start = int(rng.integers(0, max(1, len(audio) - width)))
        audio[start : start + width] = 0.0
    return audio


def augment_speech(
    audio: np.ndarray,
    sample_rate: int,
    rng: np.random.Generator,
    settings: AugmentSettings = AugmentSettings(),
) -> np.ndarray:
    """(samples,) float32 -> augmented (samples',) float32 in [-1, 1]; speed changes length."""

    def uniform(bounds: tuple[float, float]) -> float:
        return float(rng.uniform(*bounds))

    if rng.random() < settings.speed_p:
        audio = change_speed(audio, uniform(settings.speed_range))
    if rng.random() < settings.reverb_p:
        audio = add_reverb(audio, sample_rate, uniform(settings.rt60_range), rng)
    if rng.random() < settings.noise_p:
        audio = add_noise(audio, uniform(settings.snr_db_range), rng)
    if rng.random() < settings.gain_p:
        audio = audio * np.float32(10 ** (uniform(settings.gain_db_range) / 20))
    if rng.random() < settings.mask_p:
        audio = mask_spans(audio, sample_rate, settings, rng)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)
