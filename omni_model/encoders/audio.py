"""Question-audio encoders: speech -> features (B, frames, feature_dim) at 12.5 Hz, plus lengths.

Both encoders work at 16 kHz, the rate Whisper's log-mel front end is defined at. They take
16 kHz audio directly (`load_audio(path, sample_rate=encoder.sample_rate)`) or audio at any
other rate, such as the codec's 24 kHz, with `sample_rate=`: it is resampled per clip first.
One feature frame covers 80 ms, the codec's frame, so a clip of s seconds gives
ceil(s * 12.5) frames whichever encoder made them and whatever its rate; padded frames are
zeros. `feature_dim` is what `OmniConfig.audio_feature_dim` must be set to.

- `WhisperAudioEncoder`: the frozen encoder of an openai-whisper checkpoint (DESIGN.md 8).
- `LogMelAudioEncoder`: the small trainable offline default, causal so that padding a clip
  never changes its features.
"""

from __future__ import annotations

import math
import pickle
from abc import ABC, abstractmethod
from pathlib import Path

import torch
import whisper
from torch import nn
from torch.nn import functional as F
from whisper.audio import HOP_LENGTH, N_FFT, log_mel_spectrogram, mel_filters

from omni_model.audio_io import resample
from omni_model.encoders.errors import CheckpointError

SAMPLE_RATE = 16_000
FRAME_RATE = 12.5
SAMPLES_PER_FRAME = 1_280  # 80 ms at 16 kHz: one feature frame per codec frame
WHISPER_POOL = 4  # Whisper's encoder emits one state per 20 ms: 4 of them make 80 ms
WHISPER_MELS = (80, 128)  # the filter banks whisper ships
LOGMEL_BINS = 80
LOG_FLOOR = 1e-10  # Whisper's floor on mel power before the log
AUDIO_ENCODERS = ("whisper", "logmel")


def feature_frames(num_samples: torch.Tensor) -> torch.Tensor:
    """ceil(seconds * 12.5): the feature frames of clips of `num_samples` 16 kHz samples."""
    return (num_samples + SAMPLES_PER_FRAME - 1) // SAMPLES_PER_FRAME


def resample_batch(
    audio: torch.Tensor, lengths: torch.Tensor, source_rate: int, target_rate: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, samples), lengths (B,) at `source_rate` -> the same clips at `target_rate`, padded.

    Each clip is resampled on its own samples only, so padding never leaks into a clip.
    """
    clips = [
        torch.from_numpy(resample(clip[:length].cpu().numpy(), source_rate, target_rate))
        for clip, length in zip(audio.detach(), lengths.tolist(), strict=True)
    ]
    resampled = nn.utils.rnn.pad_sequence(clips, batch_first=True).to(audio.device)
    return resampled, torch.tensor([len(clip) for clip in clips], device=audio.device)


class AudioEncoder(nn.Module, ABC):
    """Shared contract: checks the batch, resamples, counts frames and zeroes padded frames."""

    sample_rate = SAMPLE_RATE
    frame_rate = FRAME_RATE
    feature_dim: int

    def forward(
        self,
        audio: torch.Tensor,
        lengths: torch.Tensor | None = None,
        sample_rate: int = SAMPLE_RATE,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """audio (B, samples), lengths (B,) -> features (B, F, feature_dim), frames (B,)."""
        if audio.ndim != 2 or audio.shape[1] == 0:
            raise ValueError(f"expected audio of shape (batch, samples), got {tuple(audio.shape)}")
        if lengths is None:
            lengths = torch.full((audio.shape[0],), audio.shape[1])
        lengths = lengths.to(audio.device)
        if lengths.min() < 1 or lengths.max() > audio.shape[1]:
            raise ValueError(f"lengths must lie in 1..{audio.shape[1]}, got {lengths.tolist()}")
        if sample_rate != self.sample_rate:
            audio, lengths = resample_batch(audio, lengths, sample_rate, self.sample_rate)
        frames = feature_frames(lengths)
        features = self.encode(audio, lengths, int(frames.max()))  # (B, F, feature_dim)
        valid = torch.arange(features.shape[1], device=audio.device) < frames[:, None]  # (B, F)
        return features * valid[..., None], frames

    @abstractmethod
    def encode(self, audio: torch.Tensor, lengths: torch.Tensor, frames: int) -> torch.Tensor:
        """16 kHz audio (B, samples), lengths (B,) -> (B, frames, feature_dim).

        Frames past a clip's own count may hold anything: `forward` zeroes them.
        """


class WhisperAudioEncoder(AudioEncoder):
    """The frozen encoder of a Whisper checkpoint, average-pooled from 50 Hz to 12.5 Hz.

    Whisper's encoder only takes whole windows of 2 * n_audio_ctx mel frames (30 s for every
    released checkpoint), so a clip is cut into windows, the last padded with silence as
    Whisper itself does, and the pooled windows are joined and trimmed to the clip's frames.
    The log-mel of a clip is computed once over the whole clip, as Whisper's `transcribe` does.
    """

    def __init__(
        self,
        name_or_path: str | Path,
        device: str | torch.device = "cpu",
        download_root: str | None = None,
    ):
        super().__init__()
        label = str(name_or_path)
        model = load_whisper(label, device, download_root)
        dims = model.dims
        if dims.n_audio_ctx % WHISPER_POOL:
            raise CheckpointError(label, f"n_audio_ctx {dims.n_audio_ctx} is not a multiple of 4")
        if dims.n_mels not in WHISPER_MELS:
            raise CheckpointError(label, f"{dims.n_mels} mel bins; whisper has filters for 80, 128")
        self.feature_dim = dims.n_audio_state
        self.n_mels = dims.n_mels
        self.window_mels = 2 * dims.n_audio_ctx  # the encoder's first conv has stride 2
        self.window_samples = self.window_mels * HOP_LENGTH
        self.encoder = model.encoder.requires_grad_(False).eval()

    def encode(self, audio: torch.Tensor, lengths: torch.Tensor, frames: int) -> torch.Tensor:
        device = next(self.encoder.parameters()).device
        windows, counts = [], []
        for clip, length in zip(audio, lengths.tolist(), strict=True):
            count = math.ceil(length / self.window_samples)
            padding = count * self.window_samples - length
            mel = log_mel_spectrogram(clip[:length], self.n_mels, padding, device)  # (n_mels, M)
            windows.append(mel.reshape(self.n_mels, count, self.window_mels).transpose(0, 1))
            counts.append(count)
        with torch.no_grad():
            states = self.encoder(torch.cat(windows))  # (W, n_audio_ctx, dim) at 50 Hz
        pooled = states.unflatten(1, (-1, WHISPER_POOL)).mean(2)  # (W, n_audio_ctx / 4, dim)
        clips = [part.reshape(-1, self.feature_dim)[:frames] for part in pooled.split(counts)]
        return nn.utils.rnn.pad_sequence(clips, batch_first=True).to(audio.device)


def load_whisper(name_or_path: str, device: str | torch.device, download_root: str | None):
    """A Whisper model from a local checkpoint (offline) or an official name (downloads once)."""
    names = whisper.available_models()
    if not Path(name_or_path).is_file() and name_or_path not in names:
        raise CheckpointError(
            name_or_path, f"no such checkpoint file, and not a Whisper model name ({names})"
        )
    try:
        return whisper.load_model(name_or_path, device=device, download_root=download_root)
    except (RuntimeError, KeyError, TypeError, OSError, EOFError, pickle.UnpicklingError) as error:
        raise CheckpointError(
            name_or_path, f"not a loadable Whisper checkpoint ({error})"
        ) from error


class CausalDownsample(nn.Module):
    """Conv1d (kernel 4, stride 2) padded on the left only, then GELU.

    Output t sees inputs up to 2t + 1 and the length halves exactly, so a feature frame never
    depends on audio after its own 80 ms.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size=4, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in, T) -> (B, out, T / 2)."""
        return F.gelu(self.conv(F.pad(x, (2, 0))))


class LogMelAudioEncoder(AudioEncoder):
    """Trainable offline encoder: 80-bin log-mel at 100 Hz -> 3 causal stride-2 convs -> linear.

    Each mel window ends at its own hop (it looks 15 ms back, never ahead) and audio past each
    clip's length is zeroed, so batching and padding leave a clip's features unchanged.
    """

    def __init__(self, feature_dim: int = 512, channels: int = 256):
        super().__init__()
        self.feature_dim = feature_dim
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        filters = mel_filters("cpu", LOGMEL_BINS)  # (80, 201): Whisper's, shipped in the package
        self.register_buffer("filters", filters, persistent=False)
        self.downsample = nn.Sequential(
            CausalDownsample(LOGMEL_BINS, channels),
            CausalDownsample(channels, channels),
            CausalDownsample(channels, channels),
        )
        self.out = nn.Linear(channels, feature_dim)

    def log_mel(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, samples), a multiple of 160 -> (B, 80, samples / 160), roughly in [-1.5, 2]."""
        padded = F.pad(audio, (N_FFT - HOP_LENGTH, 0))
        spectrum = torch.stft(
            padded, N_FFT, HOP_LENGTH, window=self.window, center=False, return_complex=True
        )  # (B, 201, samples / 160)
        mel = self.filters @ spectrum.abs().pow(2)
        return (mel.clamp_min(LOG_FLOOR).log10() + 4.0) / 4.0

    def encode(self, audio: torch.Tensor, lengths: torch.Tensor, frames: int) -> torch.Tensor:
        total = frames * SAMPLES_PER_FRAME
        audio = F.pad(audio[:, :total], (0, max(0, total - audio.shape[1])))  # (B, total)
        audio = audio * (torch.arange(total, device=audio.device) < lengths[:, None])
        hidden = self.downsample(self.log_mel(audio))  # (B, channels, frames)
        return self.out(hidden.transpose(1, 2))


def build_audio_encoder(
    kind: str,
    *,
    feature_dim: int | None = None,
    whisper_model: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> AudioEncoder:
    """The encoder named in config: `logmel` (offline, trainable) or `whisper` (frozen).

    For Whisper, `whisper_model` is a checkpoint path (offline) or an official model name
    (downloaded on first use); its width is fixed by the checkpoint, so a `feature_dim` that
    differs is an error. Leave `feature_dim` out and read the encoder's instead.
    """
    if kind == "logmel":
        return LogMelAudioEncoder(feature_dim=feature_dim or 512).to(device)
    if kind == "whisper":
        if whisper_model is None:
            raise ValueError("the whisper audio encoder needs whisper_model: a path or a name")
        encoder = WhisperAudioEncoder(whisper_model, device=device)
        if feature_dim is not None and feature_dim != encoder.feature_dim:
            raise ValueError(
                f"audio feature dim {feature_dim} does not match {whisper_model}'s width "
                f"{encoder.feature_dim}"
            )
        return encoder
    raise ValueError(f"unknown audio encoder {kind!r}; choose one of {AUDIO_ENCODERS}")
