"""Speaker vectors: one 256-d unit vector per clip, from resemblyzer's GE2E voice encoder.

resemblyzer ships its pretrained weights inside the pip package (`pretrained.pt`), so this
works offline. Vectors condition the Talker on a voice and, through `cosine_similarity`,
score voice cloning in evaluation. The reference uses 192-d CAM++ vectors; any fixed size
works, so the pipeline sets `OmniConfig.speaker_dim` from `SpeakerEncoder.dim`.
"""

from __future__ import annotations

import numpy as np
import torch
from resemblyzer import VoiceEncoder
from resemblyzer.audio import normalize_volume, trim_long_silences
from resemblyzer.hparams import audio_norm_target_dBFS, model_embedding_size, sampling_rate
from torch.nn import functional as F

from omni_model.audio_io import SILENCE_PEAK, resample
from omni_model.errors import LabelledError

MIN_SECONDS = 0.5  # shorter clips are mostly padding inside resemblyzer's 1.6 s windows
MIN_VOICED_SECONDS = 0.5  # speech resemblyzer's VAD must find: a vector of hiss is no voice


class SpeakerError(LabelledError):
    """A clip that has no voice to embed; the message names the clip and the reason."""


class SpeakerEncoder:
    """resemblyzer's VoiceEncoder at 16 kHz; clips at any other rate are resampled."""

    sample_rate = sampling_rate  # 16 kHz
    dim = model_embedding_size  # 256

    def __init__(self, device: str | torch.device = "cpu"):
        self.model = VoiceEncoder(device, verbose=False).eval()

    def embed(self, audio: torch.Tensor, sample_rate: int, name: str = "<audio>") -> torch.Tensor:
        """audio (samples,) mono float at `sample_rate` -> (256,) float32 unit vector.

        Preprocessing is resemblyzer's own: raise quiet clips to -30 dBFS, then cut pauses
        found by its VAD. Clips under 0.5 s, digital silence and clips with under 0.5 s of
        speech raise `SpeakerError` naming the clip (`name`).
        """
        if audio.ndim != 1:
            raise SpeakerError(name, f"expected mono samples (samples,), got {tuple(audio.shape)}")
        seconds = audio.numel() / sample_rate
        if seconds < MIN_SECONDS:
            raise SpeakerError(name, f"too short ({seconds:.2f} s; need {MIN_SECONDS} s)")
        wav = resample(audio.detach().float().cpu().numpy(), sample_rate, self.sample_rate)
        if np.abs(wav).max() < SILENCE_PEAK:
            raise SpeakerError(name, "all samples are silent: there is no voice to embed")
        voiced = trim_long_silences(
            normalize_volume(wav, audio_norm_target_dBFS, increase_only=True)
        )
        voiced_seconds = len(voiced) / self.sample_rate
        if voiced_seconds < MIN_VOICED_SECONDS:
            raise SpeakerError(
                name,
                f"the voice activity detector found {voiced_seconds:.2f} s of speech "
                f"(need {MIN_VOICED_SECONDS} s): is it silence or background noise?",
            )
        return torch.from_numpy(self.model.embed_utterance(voiced)).float()


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Speaker vectors (..., D), (..., D) -> (...): 1 for the same direction, ~0 unrelated."""
    return F.cosine_similarity(a.float(), b.float(), dim=-1)
