"""Voices: reference codes plus a speaker vector, saved as one small file.

A voice is chosen at generation time by writing its reference codes (the voice prompt) and
its speaker vector into the prompt's audio rows (DESIGN.md sections 3 and 4); no weights
change. Codes only mean something to the codec that made them, so a voice records its
`codec_id` and refuses any other codec. None ship with the project: the pipeline builds them
from its corpus with `build_voice`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from omni_model.audio_io import load_audio
from omni_model.errors import LabelledError
from omni_model.quantization.base import CODEBOOK_SIZE, NUM_CODEBOOKS, Codec

if TYPE_CHECKING:
    from omni_model.encoders.speaker import SpeakerEncoder

FORMAT_NAME = "tiny-omni-voice"
FORMAT_VERSION = 1
REFERENCE_SECONDS = 3.0


class VoiceError(LabelledError):
    """A voice that cannot be used; the message names the voice (or its file) and the reason."""


@dataclass(eq=False)
class Voice:
    """One voice prompt; construction validates shapes, dtypes and code range."""

    name: str
    codes: torch.Tensor  # (8, R) long in 0..2047: the voice prompt
    speaker: torch.Tensor  # (D,) float32 speaker vector
    codec_id: str  # the codec that made `codes`
    source: dict[str, object] = field(default_factory=dict)  # clip and durations, for lineage

    def __post_init__(self) -> None:
        reason = _invalid_reason(self.codes, self.speaker)
        if reason:
            raise VoiceError(f"voice {self.name!r}", reason)

    @property
    def reference_frames(self) -> int:
        return self.codes.shape[1]

    def check_codec(self, codec_id: str) -> None:
        """Refuse to pair these codes with a codec other than the one that made them."""
        if codec_id != self.codec_id:
            raise VoiceError(
                f"voice {self.name!r}",
                f"its codes were made by codec {self.codec_id}, not {codec_id}; "
                "rebuild the voice with this codec",
            )

    def save(self, path: str | Path) -> None:
        """One safetensors file: codes and speaker tensors, everything else in its metadata."""
        header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "name": self.name}
        header |= {"codec_id": self.codec_id, "source": self.source}
        tensors = {"codes": self.codes.contiguous(), "speaker": self.speaker.contiguous()}
        save_file(tensors, str(path), metadata={"voice": json.dumps(header)})

    @classmethod
    def load(cls, path: str | Path, codec_id: str | None = None) -> Voice:
        """Read a voice; with `codec_id`, also check it was made by that codec."""
        label = str(path)
        if not Path(path).is_file():
            raise VoiceError(label, "no such voice file")
        try:
            with safe_open(str(path), framework="pt") as file:
                header = json.loads((file.metadata() or {}).get("voice", "null"))
                names = file.keys()
                tensors = {key: file.get_tensor(key) for key in names}
        except (SafetensorError, json.JSONDecodeError) as error:
            raise VoiceError(label, f"unreadable voice file ({error})") from error
        if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
            raise VoiceError(label, "not a voice file (no voice metadata)")
        if header.get("version") != FORMAT_VERSION:
            raise VoiceError(label, f"unknown voice format version {header.get('version')}")
        try:
            voice = cls(
                header["name"],
                tensors["codes"],
                tensors["speaker"],
                header["codec_id"],
                header["source"],
            )
            if codec_id is not None:
                voice.check_codec(codec_id)
        except KeyError as error:
            raise VoiceError(label, f"voice file lacks {error}") from error
        except VoiceError as error:
            raise VoiceError(label, error.reason) from error
        return voice


def _invalid_reason(codes: torch.Tensor, speaker: torch.Tensor) -> str | None:
    if codes.ndim != 2 or codes.shape[0] != NUM_CODEBOOKS or codes.shape[1] == 0:
        return f"codes must have shape ({NUM_CODEBOOKS}, frames > 0), got {tuple(codes.shape)}"
    if codes.dtype != torch.long:
        return f"codes must be int64, got {codes.dtype}"
    if codes.min() < 0 or codes.max() >= CODEBOOK_SIZE:
        return f"codes must lie in 0..{CODEBOOK_SIZE - 1}"
    if speaker.ndim != 1 or speaker.numel() == 0 or speaker.dtype != torch.float32:
        return f"speaker must be a float32 vector, got {speaker.dtype} {tuple(speaker.shape)}"
    if not speaker.isfinite().all():
        return "speaker vector holds NaN or infinite values"
    return None


def build_voice(
    clip: str | Path,
    codec: Codec,
    speaker_encoder: SpeakerEncoder,
    *,
    name: str | None = None,
    max_seconds: float = REFERENCE_SECONDS,
) -> Voice:
    """A voice from any wav/flac/ogg/mp3 clip at any rate, named after the file by default.

    The clip is resampled to the codec's rate (and again to the speaker encoder's). The
    reference codes cover its first `max_seconds`: enough to show the voice without
    crowding the context. The speaker vector uses the whole clip, since resemblyzer
    averages 1.6 s windows and steadies with more speech.
    """
    if max_seconds <= 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    label = str(clip)
    name = name or Path(clip).stem
    audio = load_audio(clip, name=label, sample_rate=codec.sample_rate)  # (samples,)
    reference = audio[: round(max_seconds * codec.sample_rate)]
    codes, frames = codec.encode(reference[None], torch.tensor([len(reference)]))  # (1, 8, F)
    speaker = speaker_encoder.embed(audio, codec.sample_rate, name=label)
    source = {
        "clip": label,
        "clip_seconds": len(audio) / codec.sample_rate,
        "reference_seconds": len(reference) / codec.sample_rate,
    }
    return Voice(name, codes[0, :, : int(frames[0])].long(), speaker, codec.codec_id, source)
