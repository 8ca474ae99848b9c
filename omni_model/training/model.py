"""The model as trained: OmniModel plus the side encoders that feed its projectors.

The offline encoders (log-mel audio, patch image) start random, so they train with the
model and live in its checkpoints. Whisper, SigLIP and a pretrained patch image encoder
(`EncoderSpec.patch_model`) are frozen and loaded from their own files: their weights are
left out of ours, by name (`frozen_prefixes`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

import torch
from torch import nn

from omni_model.config import OmniConfig
from omni_model.encoders.audio import AudioEncoder, LogMelAudioEncoder, build_audio_encoder
from omni_model.encoders.image import (
    SIGLIP2_MODEL,
    ImageEncoder,
    PatchImageEncoder,
    build_image_encoder,
)
from omni_model.models import OmniModel, OmniOutput

FROZEN_ENCODERS = {"audio_encoder.": "whisper", "image_encoder.": "siglip"}


@dataclass(frozen=True)
class EncoderSpec:
    """Which side encoders feed the projectors; `width` sizes the trainable offline ones."""

    audio: str = "logmel"  # or "whisper" (frozen, from whisper_model)
    image: str = "patch"  # or "siglip" (frozen, from siglip_model)
    width: int = 256
    whisper_model: str | None = None
    siglip_model: str | None = None
    patch_model: str | None = None  # a pretrained patch encoder file: loaded, frozen

    @property
    def frozen(self) -> dict[str, bool]:
        """State-dict prefix -> whether that side encoder is frozen (loaded from its file)."""
        return {
            "audio_encoder.": self.audio == FROZEN_ENCODERS["audio_encoder."],
            "image_encoder.": self.image == FROZEN_ENCODERS["image_encoder."]
            or (self.image == "patch" and self.patch_model is not None),
        }

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EncoderSpec:
        return cls(**data)


def audio_encoder(spec: EncoderSpec, feature_dim: int) -> AudioEncoder:
    if spec.audio == "logmel":
        return LogMelAudioEncoder(feature_dim, channels=spec.width)
    return build_audio_encoder(spec.audio, whisper_model=spec.whisper_model)


def image_encoder(spec: EncoderSpec, feature_dim: int) -> ImageEncoder:
    if spec.image == "patch":
        if spec.patch_model is not None:  # the condition `EncoderSpec.frozen` calls frozen
            return PatchImageEncoder.load(spec.patch_model)
        return PatchImageEncoder(feature_dim, width=spec.width)
    return build_image_encoder(spec.image, siglip_model=spec.siglip_model or SIGLIP2_MODEL)


class TrainModel(nn.Module):
    """OmniModel + audio and image encoders; `forward` takes a batch from the data loader."""

    def __init__(self, config: OmniConfig, encoders: EncoderSpec = EncoderSpec()):
        super().__init__()
        self.encoders = encoders
        self.audio_encoder = audio_encoder(encoders, config.audio_feature_dim)
        self.image_encoder = image_encoder(encoders, config.image_feature_dim)
        # Frozen encoders fix the projector input sizes; trainable ones were built to match.
        self.config = dataclasses.replace(
            config,
            audio_feature_dim=self.audio_encoder.feature_dim,
            image_feature_dim=self.image_encoder.feature_dim,
        )
        self.model = OmniModel(self.config)

    @property
    def frozen_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes of frozen side encoders: never saved, never expected."""
        return tuple(prefix for prefix, frozen in self.encoders.frozen.items() if frozen)

    def set_training_mode(self, mode: str) -> None:
        """OmniModel's modes; a trainable offline encoder trains with its projector."""
        self.model.set_training_mode(mode)
        frozen = self.encoders.frozen
        self.audio_encoder.requires_grad_(
            mode in ("all", "audio_proj") and not frozen["audio_encoder."]
        )
        self.image_encoder.requires_grad_(
            mode in ("all", "vision_proj") and not frozen["image_encoder."]
        )

    def forward(
        self,
        batch: dict[str, torch.Tensor],
        text_only: bool = False,
        audio_positions: torch.Tensor | None = None,
    ) -> OmniOutput:
        """batch from `omni_model.training.data`: input_ids (B, 9, T) and optional
        question_audio (N, S) + question_lengths (N,), pixels (M, 3, 256, 256), speaker (B, D);
        audio_positions as in `OmniModel.forward`.
        """
        audio_features = image_features = None
        if "question_audio" in batch:
            features, frames = self.audio_encoder(
                batch["question_audio"], batch["question_lengths"]
            )
            valid = torch.arange(features.shape[1], device=frames.device) < frames[:, None]
            audio_features = features[valid]  # (sum of frames, feature_dim), clip by clip
        if "pixels" in batch:
            image_features = self.image_encoder(batch["pixels"]).flatten(0, 1)  # (M * 64, dim)
        return self.model(
            batch["input_ids"],
            audio_features,
            image_features,
            batch.get("speaker"),
            text_only=text_only,
            audio_positions=audio_positions,
            letters=batch.get("letters"),
        )
