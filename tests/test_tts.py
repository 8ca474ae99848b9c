"""espeak-ng speech: distinct voices, deterministic samples, clear errors."""

from __future__ import annotations

import pytest
import torch

from omni_model import tts
from omni_model.tts import VOICES, SpeechSynthesisError, synthesize

TEXT = "Seven birds walked past the quiet river."


def test_voices_are_distinct_speakers():
    clips = {voice: synthesize(TEXT, voice) for voice in VOICES}
    assert len(VOICES) >= 8
    distinct = {tuple(clip[::97].tolist()) for clip in clips.values()}
    assert len(distinct) == len(VOICES)  # espeak-ng ignores some variants silently


def test_synthesis_is_deterministic_at_24_khz_and_follows_the_speed():
    audio = synthesize(TEXT, "en-us+f3", 160)
    assert audio.dtype == torch.float32 and audio.ndim == 1
    assert torch.equal(audio, synthesize(TEXT, "en-us+f3", 160))
    assert 1.5 < len(audio) / 24_000 < 4.0
    assert len(synthesize(TEXT, "en-us+f3", 320)) < 0.7 * len(audio)
    assert len(synthesize(TEXT, "en-us+f3", sample_rate=16_000)) == pytest.approx(
        len(audio) * 2 / 3, abs=2
    )


def test_text_starting_with_a_dash_is_spoken_not_parsed_as_an_option():
    assert len(synthesize("-v is not a voice")) > 12_000


@pytest.mark.parametrize(
    ("text", "voice", "speed", "message"),
    [
        ("  ", "en-us", 160, "empty text"),
        (TEXT, "xx-yy", 160, "unknown language 'xx-yy'"),
        (TEXT, "en-us+nobody", 160, "unknown variant 'nobody'"),
        (TEXT, "en-us", 20, "outside espeak-ng's 80..450"),
    ],
)
def test_bad_requests_are_value_errors(text, voice, speed, message):
    with pytest.raises(ValueError, match=message):
        synthesize(text, voice, speed)


def test_missing_espeak_is_reported(monkeypatch):
    monkeypatch.setattr(tts.shutil, "which", lambda name: None)
    tts.installed_voices.cache_clear()
    try:
        with pytest.raises(SpeechSynthesisError, match="espeak-ng is not installed"):
            synthesize(TEXT)
    finally:
        tts.installed_voices.cache_clear()
