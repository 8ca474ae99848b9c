"""OmniChat: a loaded model ready to talk, streaming each reply and keeping the dialogue.

One object holds what a reply needs: the model, the tokenizer, the codec (for its
streaming decoder), the side encoders and the chosen voice. `reply` encodes the user's
turn (text, question audio, an image) into the prompt layout of DESIGN.md section 3,
prefills it and yields text deltas and decoded 24 kHz audio chunks frame by frame, each
frame through the codec's streaming decoder the moment its 8 codes exist. When the
stream ends, or the caller stops it early (barge-in), the user turn and the reply text
generated so far join the history that the next prompt is built from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from omni_model.audio_io import load_audio
from omni_model.data import build_prompt
from omni_model.encoders.audio import AudioEncoder
from omni_model.encoders.image import ImageEncoder, load_image, preprocess
from omni_model.generation import AudioFrame, SamplingSettings, generate_stream
from omni_model.inference.events import AudioChunk, ReplyDone, ReplyEvent, TextDelta
from omni_model.models import OmniModel
from omni_model.quantization import Codec
from omni_model.text.tokenizer import IMAGE_MARKER, ChatTokenizer
from omni_model.voices import Voice, VoiceError

AudioInput = torch.Tensor | str | Path | bytes
ImageInput = Image.Image | str | Path | bytes


@dataclass(eq=False)
class Turn:
    """One turn of the dialogue; a user turn keeps its encoded features for later prompts."""

    role: str
    text: str
    audio_features: torch.Tensor | None = None  # (frames, audio_feature_dim)
    image_features: torch.Tensor | None = None  # (64, image_feature_dim)


@dataclass(eq=False)
class Prompt:
    """Everything `generate_stream` is prefilled with."""

    streams: torch.Tensor  # (9, P) long
    audio_features: torch.Tensor | None  # (N, audio_feature_dim), placeholder order
    image_features: torch.Tensor | None  # (64 * images, image_feature_dim)
    speaker: torch.Tensor | None  # (speaker_dim,)
    turns: int  # dialogue turns it holds (the oldest are dropped to fit the context)

    @property
    def length(self) -> int:
        return self.streams.shape[1]


class IncrementalText:
    """Token ids -> text deltas. A byte-level BPE token can end inside a UTF-8 character,
    which decodes as U+FFFD; such a tail is held back until the next token completes it."""

    def __init__(self, tokenizer: ChatTokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.emitted = ""

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        decoded = self.tokenizer.decode(self.ids)
        if decoded.endswith("\ufffd") or not decoded.startswith(self.emitted):
            return ""
        delta, self.emitted = decoded[len(self.emitted) :], decoded
        return delta

    @property
    def text(self) -> str:
        """What has been streamed: a character still incomplete when the reply stops is
        left out, so the history holds exactly what the listener was shown."""
        return self.emitted


class OmniChat:
    def __init__(
        self,
        model: OmniModel,
        tokenizer: ChatTokenizer,
        codec: Codec,
        *,
        audio_encoder: AudioEncoder | None = None,
        image_encoder: ImageEncoder | None = None,
        voice: Voice | None = None,
        settings: SamplingSettings | None = None,
        system: str | None = None,
        seed: int | None = None,
        compute_lock: threading.Lock | None = None,
    ):
        """`compute_lock`, when several chats share one model and codec (the web server),
        serialises their generation steps and frame decodes: Mimi's streaming decoder swaps
        its state into the shared codec model, so two decodes must never overlap."""
        if tokenizer.vocab_size > model.config.vocab_size:
            raise ValueError(
                f"tokenizer of {tokenizer.vocab_size} tokens does not fit the model's text "
                f"vocabulary of {model.config.vocab_size}"
            )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.codec = codec
        self.audio_encoder = None if audio_encoder is None else audio_encoder.eval()
        self.image_encoder = None if image_encoder is None else image_encoder.eval()
        self.settings = settings or SamplingSettings()
        self.system = system
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)
        self.compute_lock = compute_lock or contextlib.nullcontext()
        self.history: list[Turn] = []
        self.voice: Voice | None = None
        self.set_voice(voice)

    @property
    def device(self) -> torch.device:
        return self.model.thinker.embed_tokens.weight.device

    def set_voice(self, voice: Voice | None) -> None:
        """Speak in `voice` from the next reply on (None: no voice prompt)."""
        if voice is not None:
            voice.check_codec(self.codec.codec_id)
            if voice.speaker.numel() != self.model.config.speaker_dim:
                raise VoiceError(
                    f"voice {voice.name!r}",
                    f"speaker vector of {voice.speaker.numel()} values; the model takes "
                    f"{self.model.config.speaker_dim}",
                )
        self.voice = voice

    def clone_voice(self, clip: str | Path, speaker_encoder=None) -> Voice:
        """Speak like any clip: its first seconds as reference codes plus its speaker vector."""
        from omni_model.encoders.speaker import SpeakerEncoder  # resemblyzer: load on demand
        from omni_model.voices import build_voice

        voice = build_voice(clip, self.codec, speaker_encoder or SpeakerEncoder())
        self.set_voice(voice)
        return voice

    def reset(self) -> None:
        self.history = []

    @torch.no_grad()
    def user_turn(
        self,
        text: str = "",
        *,
        audio: AudioInput | None = None,
        sample_rate: int = 16_000,
        image: ImageInput | None = None,
    ) -> Turn:
        """Encode a user turn's audio and image now, once, for this and every later prompt.

        audio: (samples,) at `sample_rate`, or a file path / encoded bytes. An image is
        referenced by the `<image>` marker, put in front of the text when missing.
        """
        if audio is None and image is None and not text.strip():
            raise ValueError("empty user turn: give text, audio or an image")
        markers = text.count(IMAGE_MARKER)
        if markers > (image is not None):
            raise ValueError(f"{markers} {IMAGE_MARKER} markers in the text but one image at most")
        audio_features = image_features = None
        if audio is not None:
            audio_features = self._encode_audio(audio, sample_rate)
        if image is not None:
            text = text if markers else f"{IMAGE_MARKER}\n{text}"
            image_features = self._encode_image(image)
        return Turn("user", text, audio_features, image_features)

    def _encode_audio(self, audio: AudioInput, sample_rate: int) -> torch.Tensor:
        if self.audio_encoder is None:
            raise ValueError("this model has no audio encoder: it cannot take spoken questions")
        if not isinstance(audio, torch.Tensor):
            sample_rate = self.audio_encoder.sample_rate
            audio = load_audio(audio, sample_rate=sample_rate)
        if audio.ndim != 1 or audio.numel() == 0:
            raise ValueError(f"question audio must be mono samples, got {tuple(audio.shape)}")
        batch = audio[None].float().to(self.device)  # (1, samples)
        features, frames = self.audio_encoder(batch, None, sample_rate)
        return features[0, : int(frames[0])]  # (frames, audio_feature_dim)

    def _encode_image(self, image: ImageInput) -> torch.Tensor:
        if self.image_encoder is None:
            raise ValueError("this model has no image encoder: it cannot take images")
        if not isinstance(image, Image.Image):
            image = load_image(image)
        return self.image_encoder(preprocess(image).to(self.device))[0]  # (64, dim)

    def prompt(self, turns: list[Turn]) -> Prompt:
        """The (9, P) streams of `turns` ending in the assistant header, with the voice prompt."""
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages += [{"role": turn.role, "content": turn.text} for turn in turns]
        frames = [
            0 if turn.audio_features is None else len(turn.audio_features)
            for turn in turns
            if turn.role == "user"
        ]
        conversation = self.tokenizer.encode_chat(
            messages, frames, self.model.config.image_tokens, add_generation_prompt=True
        )
        voice = self.voice
        streams = build_prompt(
            conversation.ids, None if voice is None else voice.codes, with_speaker=voice is not None
        )
        return Prompt(
            streams,
            _joined([turn.audio_features for turn in turns]),
            _joined([turn.image_features for turn in turns]),
            None if voice is None else voice.speaker,
            len(turns),
        )

    def fit_prompt(self, turn: Turn) -> tuple[Prompt, int]:
        """The prompt of `turn` after as much history as leaves room to reply, and the
        step budget. Whole exchanges are dropped, oldest first; at least half the context
        (or `max_steps`, when smaller) stays free for the reply."""
        limit = self.model.config.max_seq_len
        reserve = min(self.settings.max_steps, limit // 2)
        turns = [*self.history, turn]
        while True:
            prompt = self.prompt(turns)
            if prompt.length + reserve <= limit:
                return prompt, min(self.settings.max_steps, limit - prompt.length)
            if len(turns) == 1:
                raise ValueError(
                    f"the question takes {prompt.length} positions: the model's context of "
                    f"{limit} must keep {reserve} for the reply (shorten the audio or text)"
                )
            turns = turns[2:]  # one user turn and its reply

    def reply(
        self,
        text: str = "",
        *,
        audio: AudioInput | None = None,
        sample_rate: int = 16_000,
        image: ImageInput | None = None,
    ) -> Iterator[ReplyEvent]:
        """Stream the reply to one user turn. Inputs are encoded and the prompt is built
        before this returns, so bad input fails here; generation starts on iteration."""
        started = time.perf_counter()
        turn = self.user_turn(text, audio=audio, sample_rate=sample_rate, image=image)
        prompt, max_steps = self.fit_prompt(turn)
        return self._stream(turn, prompt, max_steps, started)

    def _stream(
        self, turn: Turn, prompt: Prompt, max_steps: int, started: float
    ) -> Iterator[ReplyEvent]:
        settings = dataclasses.replace(self.settings, max_steps=max_steps)
        decoder = self.codec.streaming_decoder()
        text = IncrementalText(self.tokenizer)
        events = generate_stream(
            self.model,
            prompt.streams,
            prompt.audio_features,
            prompt.image_features,
            prompt.speaker,
            settings,
            self.generator,
            self.tokenizer.piece,
        )
        frames = steps = 0
        try:
            while True:
                with self.compute_lock:  # one generation step (or the prefill), one decode
                    event = next(events, None)
                    if isinstance(event, AudioFrame):
                        samples = decoder.decode_frame(event.codes, event.distributions)
                if event is None:
                    break
                steps = event.step + 1
                if isinstance(event, AudioFrame):
                    frames += 1
                    yield AudioChunk(samples, event.index, event.step, _since(started))
                elif not event.is_end and (delta := text.push(event.token_id)):
                    yield TextDelta(delta, event.token_id, event.step, _since(started))
            yield ReplyDone(text.text, frames, steps, _since(started))
        finally:  # also when the caller stops early: the dialogue keeps what was said
            events.close()
            self.history += [turn, Turn("assistant", text.text)]


def _joined(parts: list[torch.Tensor | None]) -> torch.Tensor | None:
    present = [part for part in parts if part is not None]
    return torch.cat(present) if present else None


def _since(started: float) -> float:
    return time.perf_counter() - started
