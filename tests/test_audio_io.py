"""Audio input: every format and rate converts to 24 kHz mono, every bad file is named."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile as sf
import torch

from omni_model.audio_io import AudioError, encode_wav_bytes, load_audio, save_wav

RATE = 24_000


def tone(hertz: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * hertz * np.arange(round(seconds * rate)) / rate)).astype(
        np.float32
    )


def encode(audio: np.ndarray, rate: int, format: str, subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format=format, subtype=subtype)
    return buffer.getvalue()


def peak_hertz(audio: torch.Tensor, rate: int = RATE) -> float:
    """Frequency of the strongest FFT bin."""
    spectrum = np.abs(np.fft.rfft(audio.numpy() * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize(
    ("format", "subtype"),
    [
        ("WAV", "PCM_16"),
        ("WAV", "PCM_U8"),
        ("WAV", "PCM_24"),
        ("WAV", "FLOAT"),
        ("FLAC", "PCM_16"),
        ("OGG", "VORBIS"),
        ("MP3", "MPEG_LAYER_III"),
    ],
)
def test_every_format_and_sample_width_decodes_to_the_same_tone(format, subtype):
    data = encode(tone(440, 1.0, RATE), RATE, format, subtype)
    audio = load_audio(data, name=f"tone.{format.lower()}")
    assert audio.dtype == torch.float32 and audio.shape == (RATE,)
    assert abs(peak_hertz(audio) - 440) <= 2
    assert 0.45 < audio.abs().max() < 0.56  # lossy codecs overshoot a little


@pytest.mark.parametrize("rate", [8_000, 16_000, 22_050, 44_100, 48_000, 96_000])
def test_resampling_keeps_duration_and_pitch(rate):
    audio = load_audio(encode(tone(1_000, 0.5, rate), rate, "WAV", "PCM_16"), name="tone.wav")
    assert audio.shape == (RATE // 2,)
    assert abs(peak_hertz(audio) - 1_000) <= 2
    middle = audio[2_000:-2_000]  # away from the filter's edge transients
    assert 0.48 < middle.abs().max() < 0.52


def test_resampling_removes_what_the_target_rate_cannot_hold():
    """A 10 kHz tone at 48 kHz has no place at 16 kHz: band-limited resampling drops it
    instead of folding it down to 6 kHz."""
    mix = tone(1_000, 0.5, 48_000) + tone(10_000, 0.5, 48_000)
    audio = load_audio(encode(mix / 2, 48_000, "WAV", "FLOAT"), name="mix.wav", sample_rate=16_000)
    spectrum = np.abs(np.fft.rfft(audio.numpy() * np.hanning(len(audio))))
    freqs = np.fft.rfftfreq(len(audio), 1 / 16_000)
    assert spectrum[np.abs(freqs - 6_000) < 50].max() < 1e-2 * spectrum.max()  # folded: ~1
    assert abs(peak_hertz(audio, 16_000) - 1_000) <= 2


def test_stereo_is_averaged_to_mono():
    left, right = tone(300, 0.5, RATE), tone(1_200, 0.5, RATE, amplitude=0.25)
    audio = load_audio(encode(np.stack([left, right], axis=1), RATE, "WAV", "FLOAT"), name="s")
    assert torch.allclose(audio, torch.from_numpy((left + right) / 2), atol=1e-6)


def test_wav_bytes_round_trip_within_16_bit_precision(tmp_path):
    audio = torch.from_numpy(tone(220, 0.3, RATE))
    assert torch.allclose(load_audio(encode_wav_bytes(audio)), audio, atol=2.0**-15)
    save_wav(tmp_path / "out.wav", audio)
    assert torch.allclose(load_audio(tmp_path / "out.wav"), audio, atol=2.0**-15)
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]  # no temporary file left
    with pytest.raises(ValueError, match="mono audio"):
        encode_wav_bytes(audio[None])


def test_streamed_wav_with_placeholder_sizes_is_read_whole():
    """Pipes (espeak-ng --stdout) write 0xFFFFFFFF-like sizes: not truncation."""
    data = bytearray(encode(tone(440, 0.5, RATE), RATE, "WAV", "PCM_16"))
    data[4:8] = struct.pack("<I", 0xFFFFFFFF)
    data[40:44] = struct.pack("<I", 0x7FFFFFFF)
    assert load_audio(bytes(data)).shape == (RATE // 2,)


def wav_with_nan() -> bytes:
    audio = tone(440, 0.1, RATE)
    audio[100] = np.nan
    return encode(audio, RATE, "WAV", "FLOAT")


BAD_AUDIO = {
    "empty": (lambda: b"", "empty file"),
    "silent": (lambda: encode(np.zeros(RATE, np.float32), RATE, "WAV", "PCM_16"), "silence"),
    "truncated wav": (
        lambda: encode(tone(440, 1.0, RATE), RATE, "WAV", "PCM_16")[:20_000],
        "truncated: WAV data chunk declares 48000 bytes",
    ),
    "truncated flac": (
        lambda: encode(tone(440, 1.0, RATE), RATE, "FLAC")[:3_000],
        "not readable as audio",
    ),
    "no samples": (
        lambda: encode(np.zeros(0, np.float32), RATE, "WAV", "PCM_16"),
        "contains no audio samples",
    ),
    "not audio": (lambda: b"<html><body>404 not found</body></html>" * 20, "not readable"),
    "rate too low": (
        lambda: encode(tone(100, 1.0, 1_000), 1_000, "WAV", "PCM_16"),
        "sample rate 1000 Hz is below the minimum 4000 Hz",
    ),
    "nan": (wav_with_nan, "NaN or infinite"),
}


@pytest.mark.parametrize("kind", list(BAD_AUDIO))
def test_bad_audio_is_refused_naming_the_file_and_the_reason(kind, tmp_path):
    make, reason = BAD_AUDIO[kind]
    path = tmp_path / f"{kind.replace(' ', '_')}.wav"
    path.write_bytes(make())
    with pytest.raises(AudioError) as caught:
        load_audio(path)
    assert str(caught.value).startswith(f"{path}: ") and reason in str(caught.value)
    assert isinstance(caught.value, ValueError) and caught.value.reason in str(caught.value)
    with pytest.raises(AudioError, match=f"^clip 7: .*{reason}"):
        load_audio(path.read_bytes(), name="clip 7")


def test_too_long_is_refused_from_the_header_with_a_configurable_limit(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(601 * 4_000), 4_000, subtype="PCM_U8")  # 10 min 1 s, 8-bit 4 kHz
    with pytest.raises(AudioError, match=r"long\.wav: 601\.0 s long, over the limit of 600 s"):
        load_audio(path)
    short = tmp_path / "short.wav"
    sf.write(short, tone(440, 3.0, 8_000), 8_000)
    with pytest.raises(AudioError, match=r"3\.0 s long, over the limit of 2 s"):
        load_audio(short, max_seconds=2)
    assert load_audio(short, max_seconds=3).shape == (3 * RATE,)


def test_silence_is_accepted_when_asked_and_missing_files_are_named(tmp_path):
    silent = encode(np.zeros(800, np.float32), 8_000, "WAV", "PCM_16")
    assert torch.equal(load_audio(silent, allow_silent=True), torch.zeros(2_400))
    with pytest.raises(AudioError, match=r"nope\.wav: no such file"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match="is a directory"):
        load_audio(tmp_path)
