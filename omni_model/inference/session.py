"""The realtime session: microphone chunks in, speech and reply events out, with barge-in.

Feed 16 kHz mono chunks of any length with `feed`; the session cuts them into VAD windows
(1,024 samples, 64 ms) and runs Silero VAD on each (see `vad.py`). When an utterance ends
(800 ms of silence by default) its audio, with a little context on both sides, becomes a
spoken user turn: a worker thread prefills it and streams the reply, frame by frame, as
events. Push to talk (`press`/`release`) and typed turns (`say`) start replies too.

A reply lasts until its audio has been heard, not only until it is generated: generation
runs faster than real time, so the session keeps a playback clock on the microphone's
samples (each 80 ms frame plays after the one before, from when it was sent). Speech while
a reply is generated or still playing interrupts it at the end of the first VAD window that
holds speech, so within one window of the speech reaching the session; the session is then
listening again, the dialogue history keeps the interrupted turn, and the new utterance is
heard from its start.

Events go to `on_event` (default: a queue read by `poll`), from the feeding thread (VAD
events, `Interrupted`) and from the reply worker (reply events), one at a time under the
session's lock: no event of a reply follows its `Interrupted`. Every event carries `sample`,
the number of microphone samples fed when it happened, and `time`, seconds on the session's
clock. `feed`, `press`, `release`, `say` and `interrupt` must be called from one thread at a
time; `on_event` must not block (a server hands events to its own loop).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar

import numpy as np
import torch

from omni_model.inference.engine import ImageInput, OmniChat
from omni_model.inference.events import AudioChunk, ReplyDone, TextDelta
from omni_model.inference.vad import SAMPLE_RATE, Decision, SileroVad, SpeechDetector, VadSettings
from omni_model.quantization import FRAME_RATE

MIC_SAMPLES_PER_FRAME = round(SAMPLE_RATE / FRAME_RATE)  # one 80 ms reply frame: 1,280


@dataclass(frozen=True)
class SessionSettings:
    vad: VadSettings = field(default_factory=VadSettings)
    pad_ms: float = 128.0  # audio kept before the first and after the last speech window
    barge_in_windows: int = 1  # consecutive speech windows during a reply that interrupt it
    max_speech_s: float = 30.0  # an utterance this long ends even without a pause

    def __post_init__(self) -> None:
        if self.barge_in_windows < 1:
            raise ValueError(f"barge_in_windows must be >= 1, got {self.barge_in_windows}")
        if self.pad_ms < 0 or self.max_speech_s <= 0:
            raise ValueError("pad_ms must be >= 0 and max_speech_s > 0")


class State(Enum):
    LISTENING = "listening"
    HEARING = "hearing"  # inside an utterance
    REPLYING = "replying"  # generating a reply, or its audio is still playing


@dataclass(frozen=True)
class SessionEvent:
    kind: ClassVar[str]
    sample: int  # microphone samples fed when it happened (16 kHz)
    time: float  # seconds on the session's clock


@dataclass(frozen=True)
class SpeechStarted(SessionEvent):
    kind: ClassVar[str] = "speech_start"
    start: int  # sample where the speech began (first window of the run that started it)


@dataclass(frozen=True)
class SpeechEnded(SessionEvent):
    kind: ClassVar[str] = "speech_end"
    start: int  # the utterance audio handed to the model: samples [start, end)
    end: int


@dataclass(frozen=True)
class ReplyStarted(SessionEvent):
    kind: ClassVar[str] = "reply_start"
    turn: int  # number of replies started in this session, this one included
    source: str  # "speech" or "text"


@dataclass(frozen=True)
class ReplyText(SessionEvent):
    kind: ClassVar[str] = "reply_text"
    text: str


@dataclass(frozen=True, eq=False)
class ReplyAudio(SessionEvent):
    kind: ClassVar[str] = "reply_audio"
    samples: torch.Tensor  # (1920,) float32 at 24 kHz
    index: int
    seconds: float  # since the reply was asked for: the first one's is the first-audio latency


@dataclass(frozen=True)
class ReplyFinished(SessionEvent):
    kind: ClassVar[str] = "reply_end"
    text: str
    frames: int


@dataclass(frozen=True)
class Interrupted(SessionEvent):
    kind: ClassVar[str] = "interrupted"
    text: str  # reply text sent before the interruption
    frames: int  # audio frames sent before it


@dataclass(frozen=True)
class ReplyFailed(SessionEvent):
    kind: ClassVar[str] = "reply_error"
    message: str


class Session:
    def __init__(
        self,
        chat: OmniChat,
        settings: SessionSettings | None = None,
        on_event: Callable[[SessionEvent], None] | None = None,
        vad: SileroVad | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.chat = chat
        self.settings = settings or SessionSettings()
        self.window = self.settings.vad.window
        self.vad = vad or SileroVad(self.window)
        self.detector = SpeechDetector(self.settings.vad)
        self.pad_windows = self.settings.vad.windows(self.settings.pad_ms)
        self.max_windows = self.settings.vad.windows(1000 * self.settings.max_speech_s)
        self.events: queue.Queue[SessionEvent] = queue.Queue()
        self.on_event = on_event or self.events.put
        self.clock = clock
        self.started = clock()
        self.state = State.LISTENING
        self.fed = 0  # samples fed so far
        self.replies = 0
        self.pending = np.zeros(0, dtype=np.float32)  # fed samples not yet in a window
        # Windows before an utterance: the speech run that starts it plus the padding.
        self.recent: deque[np.ndarray] = deque(
            maxlen=self.detector.start_windows + self.pad_windows
        )
        self.utterance: list[np.ndarray] = []  # windows of the utterance being heard
        self.utterance_start = 0
        self.held = False  # push to talk: the utterance lasts while held, whatever the VAD says
        self.image: ImageInput | None = None  # joins the next spoken turn
        self.speech_windows = 0  # consecutive speech windows while replying (barge-in)
        self.lock = threading.Lock()
        self.cancel = threading.Event()
        self.worker: threading.Thread | None = None
        self.generating = False
        self.playback_end = 0  # microphone sample at which the reply's audio has played
        self.sent_text, self.sent_frames = "", 0

    def feed(self, chunk: np.ndarray | torch.Tensor) -> None:
        """chunk: (N,) float samples at 16 kHz in [-1, 1]; any N."""
        samples = _as_samples(chunk)
        self.pending = np.concatenate([self.pending, samples])
        whole = len(self.pending) // self.window * self.window
        windows, self.pending = self.pending[:whole], self.pending[whole:]
        for window in windows.reshape(-1, self.window):
            self._window(window)

    def press(self) -> None:
        """Push to talk: an utterance starts now (interrupting any reply) and lasts until
        `release`, whatever the VAD hears."""
        with self.lock:
            if self.state is State.REPLYING:
                self._interrupt()
        if self.state is not State.HEARING:
            self.utterance, self.utterance_start = [], self.fed
            with self.lock:
                self.state = State.HEARING
                self._emit(SpeechStarted, start=self.fed)
        self.held = True

    def release(self) -> None:
        """Push to talk: the utterance ends now and is answered (partial windows are dropped)."""
        if not self.held:
            return
        self.held = False
        if self.state is State.HEARING:
            self._end_utterance(trailing_silence=0)

    def say(self, text: str, image: ImageInput | None = None) -> None:
        """A typed turn: interrupts any reply and is answered. Its image is `image`, else
        the one attached for the next turn."""
        with self.lock:
            if self.state is State.REPLYING:
                self._interrupt()
        self.held, self.utterance = False, []
        self.detector.force_end()
        image, self.image = (self.image if image is None else image), None
        self._start_reply({"text": text, "image": image}, span=None)

    def attach_image(self, image: ImageInput | None) -> None:
        """An image (path, bytes or PIL image) for the next turn; None drops it."""
        self.image = image

    def interrupt(self) -> None:
        """Stop the reply now, as speech would."""
        with self.lock:
            if self.state is State.REPLYING:
                self._interrupt()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the reply being generated is done; False on timeout."""
        worker = self.worker
        if worker is not None:
            worker.join(timeout)
            return not worker.is_alive()
        return True

    def poll(self) -> list[SessionEvent]:
        """Events waiting in the default queue (empty when `on_event` was given)."""
        events = []
        while not self.events.empty():
            events.append(self.events.get_nowait())
        return events

    def close(self) -> None:
        """Stop any reply and wait for its worker."""
        self.cancel.set()
        if self.worker is not None:
            self.worker.join()

    def _window(self, window: np.ndarray) -> None:
        probability = self.vad.probability(torch.from_numpy(window))
        self.fed += self.window
        decision = self.detector.update(probability)
        if self.state is State.HEARING:
            self.utterance.append(window)
            if len(self.utterance) >= self.max_windows:
                self._end_utterance(trailing_silence=self.detector.silence_run)
            elif decision is Decision.END and not self.held:
                self._end_utterance(trailing_silence=self.detector.end_windows)
            return
        self.recent.append(window)
        with self.lock:
            if self.state is State.REPLYING:
                if not self.generating and self.fed >= self.playback_end:
                    self.state = State.LISTENING  # heard to the end
                else:
                    is_speech = probability >= self.settings.vad.threshold
                    self.speech_windows = self.speech_windows + 1 if is_speech else 0
                    if self.speech_windows >= self.settings.barge_in_windows or decision:
                        self._interrupt()
        if decision is Decision.START:
            self._start_utterance()

    def _interrupt(self) -> None:
        """Under the lock: stop the reply (its worker sees `cancel` before its next event)."""
        self.cancel.set()
        self.state = State.LISTENING
        self.generating = False
        self._emit(Interrupted, text=self.sent_text, frames=self.sent_frames)

    def _start_utterance(self) -> None:
        self.utterance = list(self.recent)
        self.utterance_start = self.fed - len(self.utterance) * self.window
        self.recent.clear()
        with self.lock:
            self.state = State.HEARING
            self._emit(SpeechStarted, start=self.fed - self.detector.start_windows * self.window)

    def _end_utterance(self, trailing_silence: int) -> None:
        """Answer the utterance, its trailing silence cut to the padding."""
        keep = len(self.utterance) - max(0, trailing_silence - self.pad_windows)
        windows, self.utterance = self.utterance[:keep], []
        self.detector.force_end()
        end = self.utterance_start + len(windows) * self.window
        if not windows:  # push to talk released before a whole window
            with self.lock:
                self.state = State.LISTENING
                self._emit(SpeechEnded, start=self.utterance_start, end=end)
            return
        audio = torch.from_numpy(np.concatenate(windows))
        inputs = {"audio": audio, "sample_rate": SAMPLE_RATE, "image": self.image}
        self.image = None
        self._start_reply(inputs, span=(self.utterance_start, end))

    def _start_reply(self, inputs: dict, span: tuple[int, int] | None) -> None:
        """Hand a user turn to a fresh worker (an interrupted one finishes first, so the
        dialogue history holds its turn before the next prompt is built)."""
        if self.worker is not None:
            self.worker.join()
        with self.lock:
            self.replies += 1
            self.state = State.REPLYING
            self.speech_windows = 0
            self.cancel = threading.Event()
            self.generating = True
            self.playback_end = self.fed
            self.sent_text, self.sent_frames = "", 0
            if span is not None:
                self._emit(SpeechEnded, start=span[0], end=span[1])
            source = "text" if span is None else "speech"
            self._emit(ReplyStarted, turn=self.replies, source=source)
        self.worker = threading.Thread(target=self._reply, args=(inputs, self.cancel), daemon=True)
        self.worker.start()

    def _reply(self, inputs: dict, cancel: threading.Event) -> None:
        """Worker thread: stream one reply, emitting its events until done or cancelled."""
        stream = None
        try:
            stream = self.chat.reply(**inputs)
            for event in stream:
                with self.lock:
                    if cancel.is_set():
                        return
                    if isinstance(event, TextDelta):
                        self.sent_text += event.text
                        self._emit(ReplyText, text=event.text)
                    elif isinstance(event, AudioChunk):
                        self.sent_frames += 1
                        self.playback_end = max(self.playback_end, self.fed)
                        self.playback_end += MIC_SAMPLES_PER_FRAME
                        self._emit(
                            ReplyAudio,
                            samples=event.samples,
                            index=event.index,
                            seconds=event.seconds,
                        )
                    elif isinstance(event, ReplyDone):
                        self.generating = False
                        self._emit(ReplyFinished, text=event.text, frames=event.frames)
        except Exception as error:  # the session outlives a failed reply
            with self.lock:
                if not cancel.is_set():
                    self.state = State.LISTENING
                    self.generating = False
                    self._emit(ReplyFailed, message=f"{type(error).__name__}: {error}")
        finally:
            if stream is not None:
                stream.close()  # records the reply so far in the dialogue history

    def _emit(self, kind: type[SessionEvent], **fields) -> None:
        self.on_event(kind(sample=self.fed, time=self.clock() - self.started, **fields))


def _as_samples(chunk: np.ndarray | torch.Tensor) -> np.ndarray:
    samples = chunk.detach().cpu().numpy() if isinstance(chunk, torch.Tensor) else chunk
    samples = np.asarray(samples)
    if samples.ndim != 1 or not np.issubdtype(samples.dtype, np.floating):
        raise ValueError(f"expected mono float samples (N,), got {samples.dtype} {samples.shape}")
    if not np.isfinite(samples).all():
        raise ValueError("audio chunk holds NaN or infinite samples")
    return samples.astype(np.float32)
