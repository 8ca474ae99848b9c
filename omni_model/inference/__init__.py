"""Talking to a trained model: streaming replies, voices, and the realtime VAD session.

- `engine`: `OmniChat`, one user turn in, text deltas and 24 kHz audio chunks out.
- `loading`: `load` a checkpoint (or a model named in the store) with the tokenizer, codec
  and voices it was trained with, their ids checked.
- `session`: microphone chunks in, speech/reply events out, with barge-in.
- `vad`: Silero VAD windows and the start/end decisions.
- `wav_writer`: a WAV file that is valid after every appended frame.
- `playback`: optional playback on the default sound device.
"""

from omni_model.inference.engine import OmniChat, Prompt, Turn
from omni_model.inference.events import AudioChunk, ReplyDone, ReplyEvent, TextDelta
from omni_model.inference.loading import (
    CompatibilityError,
    Loaded,
    check_compatible,
    find_codec,
    find_tokenizer,
    find_voice,
    load,
    load_chat,
    resolve_model,
)
from omni_model.inference.session import Session, SessionEvent, SessionSettings
from omni_model.inference.vad import VadSettings
from omni_model.inference.wav_writer import GrowingWav

__all__ = [
    "AudioChunk",
    "CompatibilityError",
    "GrowingWav",
    "Loaded",
    "OmniChat",
    "Prompt",
    "ReplyDone",
    "ReplyEvent",
    "Session",
    "SessionEvent",
    "SessionSettings",
    "TextDelta",
    "Turn",
    "VadSettings",
    "check_compatible",
    "find_codec",
    "find_tokenizer",
    "find_voice",
    "load",
    "load_chat",
    "resolve_model",
]
