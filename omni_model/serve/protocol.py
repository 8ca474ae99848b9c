"""The WebSocket protocol between the demo page and the server, and its validation.

Every message a client sends is checked here before anything acts on it; a bad one raises
`ProtocolError` (a ValueError) saying what is wrong, and the server answers with an `error`
message (or closes the socket, when the message is too big or the greeting is wrong).

Client -> server
- first, text: `{"type": "hello", "sample_rate": 16000, "format": "s16le" | "f32le",
  "voice": NAME | null}`. Microphone audio must be 16 kHz mono: the page asks its
  AudioContext for 16 kHz, and the browser resamples the microphone.
- binary: microphone samples in the greeting's format, at most `MAX_AUDIO_SECONDS`.
- text: `{"type": "ptt", "down": true | false}` push to talk; `{"type": "text", "text": ...}`
  a typed turn; `{"type": "image", "data": BASE64}` an image for the next turn;
  `{"type": "voice", "name": NAME}`; `{"type": "interrupt"}`; `{"type": "reset"}`.

Server -> client
- text: `{"type": "ready", ...}` after the greeting, then one message per session event
  (`speech_start`, `speech_end`, `reply_start`, `reply_text`, `reply_end`, `interrupted`,
  `reply_error`; see `omni_model.inference.session`), and `{"type": "error", "message": ...}`.
  `reply_end` comes when generation ends; its audio may still be playing, and speech until
  it has played still interrupts it: the page stops playback on `interrupted`.
- binary: one reply frame each: uint32 frame index, then 1,920 float32 samples at 24 kHz,
  little-endian, decoded by the codec's streaming decoder the moment its codes exist.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import struct

import numpy as np
import torch

MIC_SAMPLE_RATE = 16_000
AUDIO_FORMATS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}
MAX_AUDIO_SECONDS = 1.0  # per binary message
MAX_TEXT_CHARS = 2_000
MAX_IMAGE_BYTES = 4 * 2**20
MAX_NAME_CHARS = 100
# Base64 of the largest image plus a little JSON: the largest text message accepted.
MAX_CONTROL_BYTES = MAX_IMAGE_BYTES * 4 // 3 + 1_024
MAX_AUDIO_SAMPLES = int(MAX_AUDIO_SECONDS * MIC_SAMPLE_RATE)
MAX_MESSAGE_BYTES = max(MAX_CONTROL_BYTES, MAX_AUDIO_SAMPLES * 4)
FRAME_HEADER = struct.Struct("<I")
CONTROL_TYPES = ("ptt", "text", "image", "voice", "interrupt", "reset")


class ProtocolError(ValueError):
    """A client message the server refuses; the message says why."""


@dataclasses.dataclass(frozen=True)
class Hello:
    format: str
    voice: str | None


def parse_json(text: str) -> dict:
    if len(text.encode()) > MAX_CONTROL_BYTES:
        raise ProtocolError(f"text message of {len(text)} characters is over the limit")
    try:
        message = json.loads(text)
    except json.JSONDecodeError as error:
        raise ProtocolError(f"not JSON ({error.msg})") from error
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("a text message must be a JSON object with a string `type`")
    return message


def parse_hello(text: str) -> Hello:
    message = parse_json(text)
    if message["type"] != "hello":
        raise ProtocolError(f"the first message must be `hello`, got {message['type']!r}")
    rate = message.get("sample_rate")
    if rate != MIC_SAMPLE_RATE:
        raise ProtocolError(f"microphone audio must be {MIC_SAMPLE_RATE} Hz mono, got {rate!r}")
    audio_format = message.get("format", "s16le")
    if audio_format not in AUDIO_FORMATS:
        raise ProtocolError(f"audio format must be one of {sorted(AUDIO_FORMATS)}")
    voice = message.get("voice")
    if voice is not None:
        voice = _name(voice)
    return Hello(audio_format, voice)


def parse_control(text: str) -> dict:
    """A control message with its fields checked and converted (image data decoded)."""
    message = parse_json(text)
    kind = message["type"]
    if kind == "ptt":
        if not isinstance(message.get("down"), bool):
            raise ProtocolError("`ptt` needs a boolean `down`")
    elif kind == "text":
        text = message.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ProtocolError("`text` needs non-empty `text`")
        if len(text) > MAX_TEXT_CHARS:
            raise ProtocolError(f"text of {len(text)} characters; at most {MAX_TEXT_CHARS}")
    elif kind == "image":
        message["data"] = _image_bytes(message.get("data"))
    elif kind == "voice":
        message["name"] = _name(message.get("name"))
    elif kind not in CONTROL_TYPES:
        raise ProtocolError(f"unknown message type {kind!r}; expected one of {CONTROL_TYPES}")
    return message


def parse_audio(data: bytes, audio_format: str) -> np.ndarray:
    """A binary message -> (N,) float32 samples in [-1, 1]."""
    dtype = AUDIO_FORMATS[audio_format]
    if len(data) > MAX_AUDIO_SAMPLES * dtype.itemsize:
        raise ProtocolError(f"audio message of {len(data)} bytes: at most {MAX_AUDIO_SECONDS} s")
    if not data or len(data) % dtype.itemsize:
        raise ProtocolError(f"audio message of {len(data)} bytes is not whole {audio_format}")
    samples = np.frombuffer(data, dtype=dtype)
    if audio_format == "s16le":
        return samples.astype(np.float32) / 32768.0
    if not np.isfinite(samples).all() or np.abs(samples).max() > 1.0:
        raise ProtocolError("f32le samples must be finite and within [-1, 1]")
    return samples.astype(np.float32)


def encode_frame(index: int, samples: torch.Tensor) -> bytes:
    """One reply frame as a binary message (see the module docstring)."""
    pcm = samples.detach().float().cpu().numpy().astype("<f4")
    return FRAME_HEADER.pack(index) + pcm.tobytes()


def _name(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS:
        raise ProtocolError(f"a voice name must be a string of 1..{MAX_NAME_CHARS} characters")
    return value


def _image_bytes(value: object) -> bytes:
    if not isinstance(value, str):
        raise ProtocolError("`image` needs base64 `data`")
    if "," in value[:100] and value.startswith("data:"):  # a data: URL from FileReader
        value = value.split(",", 1)[1]
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ProtocolError(f"image data is not base64 ({error})") from error
    if not data or len(data) > MAX_IMAGE_BYTES:
        raise ProtocolError(f"image of {len(data)} bytes; 1..{MAX_IMAGE_BYTES} allowed")
    return data
