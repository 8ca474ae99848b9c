"""Answer and question speech for records that come as text only, spoken by espeak-ng.

The conversation text stays the transcript: only what espeak-ng would read aloud badly
(markup, the `<image>` marker) is dropped from what it is given. Voices and speaking rates
are chosen from the sample id, so re-running synthesis gives the same bytes. In A2A the
questions are spoken by a second voice, so that each conversation has two speakers.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace

from omni_model.audio_io import encode_wav_bytes
from omni_model.tts import (
    MAX_WPM,
    MIN_WPM,
    VOICES,
    SpeechSynthesisError,
    espeak_binary,
    synthesize,
)
from pipelines.records import RawRecord, Rejected, validate

SAMPLE_RATE = 24_000
SPEEDS_WPM = (140, 190)  # inclusive range of speaking rates, words per minute
MARKUP = re.compile(r"<[^<>\n]*>|[*_`#~|]+|\[\[|\]\]")


def stable_choice(sample_id: str, purpose: str, count: int) -> int:
    """An index in 0..count-1 fixed by the sample id (unlike hash(), stable across runs)."""
    digest = hashlib.sha256(f"{sample_id}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


def answer_voice(record: RawRecord) -> str:
    """The record's voice if espeak-ng speaks it, else one chosen by sample id."""
    if record.voice in VOICES:
        return record.voice
    return VOICES[stable_choice(record.sample_id, "answer voice", len(VOICES))]


def question_voice(record: RawRecord) -> str:
    """A voice other than the answer voice, chosen by sample id."""
    shift = 1 + stable_choice(record.sample_id, "question voice", len(VOICES) - 1)
    return VOICES[(VOICES.index(answer_voice(record)) + shift) % len(VOICES)]


def speaking_rate(sample_id: str, role: str, speeds: tuple[int, int] = SPEEDS_WPM) -> int:
    """Words per minute for one speaker of one record, in the inclusive range `speeds`."""
    low, high = speeds
    return low + stable_choice(sample_id, f"{role} speed", high - low + 1)


def speakable(text: str) -> str:
    """`text` without tags and markdown symbols, whitespace collapsed: what espeak-ng reads."""
    return " ".join(MARKUP.sub(" ", text).split())


def speak_turns(texts: list[str], voice: str, speed_wpm: int, role: str) -> list[bytes]:
    """One 24 kHz 16-bit mono WAV per text; raises ValueError naming the turn that failed."""
    clips = []
    for index, text in enumerate(texts):
        spoken = speakable(text)
        if not spoken:
            raise ValueError(f"{role} turn {index}: nothing speakable in {text[:40]!r}")
        try:
            audio = synthesize(spoken, voice, speed_wpm, sample_rate=SAMPLE_RATE)  # (samples,)
        except (SpeechSynthesisError, ValueError) as error:
            raise ValueError(f"{role} turn {index}: {error}") from error
        clips.append(encode_wav_bytes(audio, SAMPLE_RATE))
    return clips


def synthesize_missing(
    record: RawRecord, speeds: tuple[int, int] = SPEEDS_WPM
) -> RawRecord | Rejected:
    """Fill empty `answer_audio` (T2A, A2A) and `question_audio` (A2A) with espeak-ng speech.

    Other tasks and records that already have their clips come back unchanged. A turn that
    cannot be spoken rejects the record; a missing espeak-ng is a setup error and raises.
    """
    low, high = speeds
    if not MIN_WPM <= low <= high <= MAX_WPM:
        raise ValueError(f"speech speeds {speeds}: need {MIN_WPM} <= low <= high <= {MAX_WPM}")
    needs_answers = record.task in ("t2a", "a2a") and not record.answer_audio
    needs_questions = record.task == "a2a" and not record.question_audio
    if not (needs_answers or needs_questions):
        return record
    espeak_binary()
    updates: dict[str, object] = {}
    try:
        if needs_answers:
            voice = answer_voice(record)
            rate = speaking_rate(record.sample_id, "assistant", speeds)
            updates["answer_audio"] = speak_turns(record.turns("assistant"), voice, rate, "answer")
            updates["voice"] = voice
        if needs_questions:
            rate = speaking_rate(record.sample_id, "user", speeds)
            texts = record.turns("user")
            updates["question_audio"] = speak_turns(texts, question_voice(record), rate, "question")
    except ValueError as error:
        return Rejected(record.source, record.sample_id, str(error))
    spoken = replace(record, **updates)
    reason = validate(spoken)
    return spoken if reason is None else Rejected(record.source, record.sample_id, reason)
