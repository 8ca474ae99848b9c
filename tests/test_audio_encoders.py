"""Question-audio encoders: frame counts, padding invariance, and Whisper's real loading path."""

import math

import pytest
import torch
import whisper
from conftest import TINY_WHISPER_DIMS, save_tiny_whisper

from omni_model.audio_io import resample
from omni_model.config import OmniConfig
from omni_model.encoders.audio import (
    LogMelAudioEncoder,
    WhisperAudioEncoder,
    build_audio_encoder,
)
from omni_model.encoders.errors import CheckpointError

RATE = 16_000


@pytest.fixture(scope="module")
def whisper_checkpoint(tmp_path_factory) -> str:
    return save_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny.pt")


def speechlike(seconds: float, seed: int) -> torch.Tensor:
    """(samples,) at 16 kHz: a few harmonics with a wandering pitch plus a little noise."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(round(seconds * RATE)) / RATE
    pitch = 140 + 40 * torch.sin(2 * math.pi * 1.5 * t)
    phase = 2 * math.pi * torch.cumsum(pitch, 0) / RATE
    voiced = sum(torch.sin(k * phase) / k for k in range(1, 6))
    return 0.2 * voiced + 0.01 * torch.randn(len(t), generator=generator)


def pad_batch(clips: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(clip) for clip in clips])
    return torch.nn.utils.rnn.pad_sequence(clips, batch_first=True), lengths


def test_whisper_loads_the_saved_checkpoint_frozen(whisper_checkpoint):
    encoder = build_audio_encoder("whisper", whisper_model=whisper_checkpoint)
    saved = torch.load(whisper_checkpoint)["model_state_dict"]
    assert encoder.feature_dim == TINY_WHISPER_DIMS.n_audio_state
    for name, value in encoder.encoder.state_dict().items():
        assert torch.equal(value, saved[f"encoder.{name}"]), name
    assert not any(parameter.requires_grad for parameter in encoder.parameters())


def test_whisper_features_are_encoder_states_pooled_to_12_5_hz(whisper_checkpoint):
    encoder = WhisperAudioEncoder(whisper_checkpoint)
    clip = speechlike(0.32, seed=1)  # exactly one 0.32 s window: 16 states -> 4 frames
    features, frames = encoder(clip[None])
    reference = whisper.load_model(whisper_checkpoint)
    with torch.no_grad():
        states = reference.embed_audio(whisper.log_mel_spectrogram(clip)[None])  # (1, 16, 32)
    expected = states.reshape(1, 4, 4, TINY_WHISPER_DIMS.n_audio_state).mean(2)
    assert frames.tolist() == [4]
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["whisper", "logmel"])
def test_frame_counts_padding_and_batching(kind, whisper_checkpoint):
    torch.manual_seed(0)
    encoder = build_audio_encoder(kind, whisper_model=whisper_checkpoint).eval()
    seconds = [1.0, 0.3, 0.71, 0.05]  # several Whisper windows; a partial last frame
    clips = [speechlike(s, seed) for seed, s in enumerate(seconds)]
    features, frames = encoder(*pad_batch(clips))
    assert frames.tolist() == [math.ceil(s * 12.5) for s in seconds]
    assert features.shape == (4, 13, encoder.feature_dim)
    for index, clip in enumerate(clips):
        alone, _ = encoder(clip[None])
        count = int(frames[index])
        torch.testing.assert_close(features[index, :count], alone[0], atol=1e-4, rtol=1e-4)
        assert features[index, count:].abs().sum() == 0  # padded frames are zeros
    assert not torch.allclose(features[0, :4], features[1, :4], atol=1e-3)


@pytest.mark.parametrize("kind", ["whisper", "logmel"])
def test_24khz_input_is_resampled_to_the_same_frames(kind, whisper_checkpoint):
    torch.manual_seed(0)
    encoder = build_audio_encoder(kind, whisper_model=whisper_checkpoint).eval()
    clip_24k = torch.from_numpy(resample(speechlike(0.9, seed=5).numpy(), RATE, 24_000))
    features, frames = encoder(clip_24k[None], sample_rate=24_000)
    assert frames.tolist() == [math.ceil(len(clip_24k) / 1_920)]  # the codec's frame count
    by_hand = torch.from_numpy(resample(clip_24k.numpy(), 24_000, RATE))
    expected, _ = encoder(by_hand[None])
    torch.testing.assert_close(features, expected)


def test_logmel_is_causal_and_trainable():
    torch.manual_seed(0)
    encoder = LogMelAudioEncoder(feature_dim=64)
    clip = speechlike(1.2, seed=3)
    short, _ = encoder(clip[None, :6_400])  # the first 0.4 s: 5 frames
    full, _ = encoder(clip[None])
    torch.testing.assert_close(full[:, :5], short, atol=1e-5, rtol=1e-5)
    full.pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())


def test_default_dims_match_the_config():
    assert build_audio_encoder("logmel").feature_dim == OmniConfig().audio_feature_dim


def test_bad_checkpoints_and_choices_raise_clear_errors(tmp_path, whisper_checkpoint):
    missing = tmp_path / "missing.pt"
    with pytest.raises(CheckpointError, match=r"missing\.pt: no such checkpoint file"):
        WhisperAudioEncoder(missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"garbage\.pt: not a loadable Whisper checkpoint"):
        WhisperAudioEncoder(garbage)
    with pytest.raises(ValueError, match="does not match"):
        build_audio_encoder("whisper", whisper_model=whisper_checkpoint, feature_dim=512)
    with pytest.raises(ValueError, match="needs whisper_model"):
        build_audio_encoder("whisper")
    with pytest.raises(ValueError, match="unknown audio encoder"):
        build_audio_encoder("sensevoice")
    with pytest.raises(ValueError, match="lengths must lie"):
        LogMelAudioEncoder()(torch.zeros(1, 100), torch.tensor([0]))
