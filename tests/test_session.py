"""The realtime session, driven by synthetic microphone timelines of espeak-ng speech.

Timing is asserted on the microphone's own clock (samples fed), which makes it exact: the
same windows through a fresh Silero VAD give the same probabilities, so the window where
speech interrupts a reply can be computed independently of the session.
"""

from __future__ import annotations

import itertools
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from talk_support import (
    build_store,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    speech16k,
)

from omni_model.generation import SamplingSettings
from omni_model.inference import AudioChunk, VadSettings
from omni_model.inference.loading import load
from omni_model.inference.session import (
    MIC_SAMPLES_PER_FRAME,
    Interrupted,
    ReplyAudio,
    ReplyFailed,
    ReplyFinished,
    ReplyStarted,
    ReplyText,
    Session,
    SessionSettings,
    SpeechEnded,
    SpeechStarted,
)
from omni_model.inference.vad import Decision, SileroVad, SpeechDetector

RATE = 16_000
WINDOW = 1024
STEPS = 24
FRAMES = STEPS - 8  # the model never stops speaking early, so every reply has 16 frames
SETTINGS = SamplingSettings(max_steps=STEPS)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, small_codec):
    root = tmp_path_factory.mktemp("store")
    checkpoint, codec = build_store(root, small_codec)
    return load(checkpoint, store=root, codec=codec)


def trimmed(audio: np.ndarray, floor: float = 0.01) -> np.ndarray:
    """Without espeak-ng's leading and trailing silence, so spans mark the speech itself."""
    loud = np.flatnonzero(np.abs(audio) > floor)
    return audio[loud[0] : loud[-1] + 1]


@pytest.fixture(scope="module")
def speech():
    return SimpleNamespace(
        question=trimmed(speech16k("What colour is the red ball on the table?")),
        stop=trimmed(speech16k("Wait, stop, I have another question.", "en-us+m6")),
    )


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), dtype=np.float32)


class Timeline:
    """Microphone audio built piece by piece, remembering where each speech starts/ends."""

    def __init__(self):
        self.parts: list[np.ndarray] = []
        self.spans: list[tuple[int, int]] = []
        self.length = 0

    def add(self, audio: np.ndarray, is_speech: bool = False) -> Timeline:
        if is_speech:
            self.spans.append((self.length, self.length + len(audio)))
        self.parts.append(audio)
        self.length += len(audio)
        return self

    def pause(self, seconds: float) -> Timeline:
        return self.add(silence(seconds))

    def say(self, audio: np.ndarray) -> Timeline:
        return self.add(audio, is_speech=True)

    @property
    def audio(self) -> np.ndarray:
        return np.concatenate(self.parts)


def feed(session: Session, audio: np.ndarray, chunk: int = 700) -> None:
    """Irregular chunks, as a sound card delivers them."""
    for start in range(0, len(audio), chunk):
        session.feed(audio[start : start + chunk])


def first_speech_window_end(audio: np.ndarray, after: int, threshold: float = 0.8) -> int:
    """End sample of the first whole VAD window at or after `after` with speech probability
    >= threshold, from a fresh VAD over the same windows the session saw."""
    vad = SileroVad(WINDOW)
    for end in range(WINDOW, len(audio) + 1, WINDOW):
        probability = vad.probability(torch.from_numpy(audio[end - WINDOW : end]))
        if end - WINDOW >= after - WINDOW and probability >= threshold:
            return end
    raise AssertionError("no speech window found")


def kinds(events) -> list[str]:
    """Event kinds with runs of reply text/audio collapsed to one entry."""
    out: list[str] = []
    for event in events:
        if event.kind in ("reply_text", "reply_audio") and out and out[-1] == "reply":
            continue
        out.append("reply" if event.kind in ("reply_text", "reply_audio") else event.kind)
    return out


def of(events, kind):
    return [event for event in events if isinstance(event, kind)]


def test_an_utterance_ending_in_silence_gets_a_streamed_reply(loaded, speech):
    session = Session(loaded.chat(settings=SETTINGS, seed=0))
    line = Timeline().pause(0.5).say(speech.question).pause(1.2)
    feed(session, line.audio)
    assert session.wait(timeout=120)
    events = session.poll()
    assert kinds(events) == ["speech_start", "speech_end", "reply_start", "reply", "reply_end"]
    (started,), (ended,) = of(events, SpeechStarted), of(events, SpeechEnded)
    onset, offset = line.spans[0]
    assert onset - WINDOW <= started.start <= onset + 3 * WINDOW
    # 800 ms of silence ends it (13 windows), after Silero's probability has decayed.
    assert 13 * WINDOW <= ended.sample - offset <= 13 * WINDOW + 5 * WINDOW
    assert ended.start <= onset and offset <= ended.end <= offset + 4 * WINDOW
    audio = of(events, ReplyAudio)
    (done,) = of(events, ReplyFinished)
    assert [a.index for a in audio] == list(range(FRAMES)) == list(range(done.frames))
    assert "".join(e.text for e in of(events, ReplyText)) == done.text
    assert all(a.time <= b.time for a, b in itertools.pairwise(events))
    heard = session.chat.history[0].audio_features
    assert len(heard) == -(-(ended.end - ended.start) // 1280)

    # Silence while the reply plays (16 frames, 1.28 s), then a new question: no barge-in.
    later = Timeline().pause(FRAMES * 0.08 + 0.2).say(speech.question).pause(1.2)
    feed(session, later.audio)
    session.wait(timeout=120)
    events = session.poll()
    assert kinds(events) == ["speech_start", "speech_end", "reply_start", "reply", "reply_end"]
    assert of(events, ReplyStarted)[0].turn == 2
    assert [t.role for t in session.chat.history] == ["user", "assistant"] * 2
    session.close()


def test_speech_while_the_reply_plays_interrupts_it_within_one_window(loaded, speech):
    session = Session(loaded.chat(settings=SETTINGS, seed=1))
    line = Timeline().pause(0.3).say(speech.question).pause(1.0)
    feed(session, line.audio)
    assert session.wait(timeout=120)  # generated; its 1.28 s of audio has just begun playing
    line.pause(0.3).say(speech.stop).pause(1.2)
    feed(session, line.audio[session.fed + len(session.pending) :])
    session.wait(timeout=120)
    events = session.poll()
    assert kinds(events) == [
        "speech_start", "speech_end", "reply_start", "reply", "reply_end",
        "interrupted", "speech_start", "speech_end", "reply_start", "reply", "reply_end",
    ]  # fmt: skip
    (interrupted,) = of(events, Interrupted)
    first = of(events, ReplyFinished)[0]
    assert interrupted.frames == FRAMES and interrupted.text == first.text
    onset = line.spans[1][0]
    assert interrupted.sample == first_speech_window_end(line.audio, onset)
    assert interrupted.sample - onset <= 3 * WINDOW
    second_start = of(events, SpeechStarted)[1]
    assert onset - WINDOW <= second_start.start <= interrupted.sample
    assert of(events, SpeechEnded)[1].start <= onset  # heard from its start
    session.close()


class GatedChat:
    """An OmniChat whose reply pauses after its first frame until `go` is set: a reply that
    is still being generated when the user speaks."""

    def __init__(self, chat):
        self.chat = chat
        self.paused, self.go = threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self.chat, name)

    def reply(self, **turn):
        stream = self.chat.reply(**turn)

        def gated():
            try:
                for event in stream:
                    yield event
                    if isinstance(event, AudioChunk) and not self.go.is_set():
                        self.paused.set()
                        self.go.wait()
            finally:
                stream.close()

        return gated()


def test_speech_during_generation_stops_it_and_history_keeps_the_partial_turn(loaded, speech):
    chat = GatedChat(loaded.chat(settings=SETTINGS, seed=2))
    session = Session(chat)
    line = Timeline().pause(0.3).say(speech.question).pause(1.0)
    feed(session, line.audio)
    assert chat.paused.wait(timeout=120)
    line.say(speech.stop)
    feed(session, line.audio[session.fed + len(session.pending) :])
    cut = session.poll()
    assert kinds(cut)[-2:] == ["interrupted", "speech_start"]
    chat.go.set()  # the worker resumes, sees the interruption and stops
    line.pause(1.2)
    feed(session, line.audio[session.fed + len(session.pending) :])
    session.wait(timeout=120)
    events = cut + session.poll()
    interrupted = of(events, Interrupted)[0]
    after = events[events.index(interrupted) + 1 :]
    resumed = next(i for i, e in enumerate(after) if isinstance(e, ReplyStarted))
    assert not [e for e in after[:resumed] if isinstance(e, ReplyText | ReplyAudio)]
    assert interrupted.frames == 1
    partial = chat.history[1].text
    assert chat.history[1].role == "assistant" and partial.startswith(interrupted.text)
    assert len(of(after, ReplyAudio)) == FRAMES  # the next reply runs in full
    session.close()


def test_push_to_talk_spans_pauses_and_ends_on_release(loaded, speech):
    session = Session(loaded.chat(settings=SETTINGS, seed=3))
    feed(session, silence(0.4))
    session.press()
    pressed = session.fed
    held = Timeline().say(speech.question).pause(1.5).say(speech.stop)
    feed(session, held.audio)
    session.release()
    session.wait(timeout=120)
    events = session.poll()
    assert kinds(events) == ["speech_start", "speech_end", "reply_start", "reply", "reply_end"]
    (ended,) = of(events, SpeechEnded)
    assert of(events, SpeechStarted)[0].start == pressed == ended.start
    assert ended.end == session.fed  # everything fed while held, in whole windows

    session.press()  # pressing during playback interrupts, like speech
    assert kinds(session.poll()) == ["interrupted", "speech_start"]
    session.release()  # nothing said: no reply
    assert kinds(session.poll()) == ["speech_end"]
    session.close()


def test_typed_turns_interrupt_and_a_failed_reply_leaves_the_session_listening(loaded, speech):
    session = Session(loaded.chat(settings=SETTINGS, seed=4))
    session.say("What colour is the ball?")
    session.wait(timeout=120)
    feed(session, silence(0.2))
    session.say("   ")  # empty: the reply fails, the session carries on
    session.wait(timeout=120)
    session.say("And the boat?")
    session.wait(timeout=120)
    events = session.poll()
    assert kinds(events) == [
        "reply_start", "reply", "reply_end", "interrupted",
        "reply_start", "reply_error", "reply_start", "reply", "reply_end",
    ]  # fmt: skip
    assert [e.source for e in of(events, ReplyStarted)] == ["text"] * 3
    assert "empty user turn" in of(events, ReplyFailed)[0].message
    assert [t.text for t in session.chat.history if t.role == "user"] == [
        "What colour is the ball?", "And the boat?",
    ]  # fmt: skip
    session.close()


def test_noise_and_clicks_start_nothing_and_long_speech_is_cut(loaded, speech):
    session = Session(loaded.chat(settings=SETTINGS), SessionSettings(max_speech_s=1.0))
    rng = np.random.default_rng(0)
    noise = (0.003 * rng.standard_normal(2 * RATE)).astype(np.float32)
    click = speech.question[RATE // 2 : RATE // 2 + 600]  # 40 ms of speech
    feed(session, np.concatenate([noise, click, silence(1.0)]))
    assert session.poll() == []
    feed(session, np.concatenate([speech.question, speech.question]))  # ~5 s, no pause
    session.wait(timeout=120)
    ended = of(session.poll(), SpeechEnded)[0]
    assert ended.end - ended.start <= 1.0 * RATE + 3 * WINDOW
    session.close()


def test_detector_hysteresis_and_window_rounding():
    settings = VadSettings()
    assert (settings.windows(128), settings.windows(800)) == (2, 13)
    detector = SpeechDetector(settings)
    assert [detector.update(p) for p in (0.9, 0.5, 0.9, 0.85)] == [None, None, None, Decision.START]
    # Between threshold - 0.15 and threshold does not begin a silence run ...
    assert all(detector.update(0.7) is None for _ in range(20))
    # ... but continues one begun below it; 13 windows of silence end the utterance.
    decisions = [detector.update(p) for p in [0.5] + [0.7] * 11 + [0.1]]
    assert decisions[:-1] == [None] * 12 and decisions[-1] is Decision.END
    with pytest.raises(ValueError, match="multiple of 512"):
        VadSettings(window=1000)
    with pytest.raises(ValueError, match="barge_in_windows"):
        SessionSettings(barge_in_windows=0)


def test_bad_microphone_chunks_are_refused(loaded):
    session = Session(loaded.chat(settings=SETTINGS))
    with pytest.raises(ValueError, match="mono float"):
        session.feed(np.zeros(100, dtype=np.int16))
    with pytest.raises(ValueError, match="NaN"):
        session.feed(np.full(100, np.nan, dtype=np.float32))
    assert MIC_SAMPLES_PER_FRAME == 1280
