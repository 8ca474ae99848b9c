"""Shared fixtures: espeak-ng speech of templated sentences, and a small fitted offline codec."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import pytest
import torch

from omni_model.quantization import OfflineCodec
from omni_model.tts import synthesize

# Sentences are one phrase from each slot: 8^4 = 4,096 of them, every word in the grammar
# that the codec's quality gate recognises them with.
SENTENCE_SLOTS = (
    ("the red fox", "a small boat", "my old teacher", "the green train", "seven birds",
     "her little brother", "the tall tower", "a yellow kite"),
    ("jumped over", "looked at", "walked past", "carried", "painted", "found", "followed",
     "cleaned"),
    ("the wooden fence", "a blue house", "the quiet river", "four apples", "the morning paper",
     "a bright window", "the stone bridge", "two black cats"),
    ("before noon", "in the rain", "after dinner", "at the market", "on sunday",
     "near the school", "without a sound", "every morning"),
)  # fmt: skip
# The variants pocketsphinx recognises best (DESIGN.md section 8).
CLEAR_VOICES = ("en-us+f2", "en-us+f3", "en-us+f4", "en-us+f5", "en-us+m6")


@dataclass(frozen=True)
class Utterance:
    text: str
    voice: str
    audio: torch.Tensor  # (samples,) float32 at 24 kHz


@dataclass(frozen=True)
class SpeechCorpus:
    """Disjoint training and held-out sentences, each spoken by the next of CLEAR_VOICES."""

    slots: tuple[tuple[str, ...], ...]
    train: list[Utterance]
    held_out: list[Utterance]


def speak(texts: list[str]) -> list[Utterance]:
    return [
        Utterance(text, voice, synthesize(text, voice))
        for text, voice in zip(texts, itertools.cycle(CLEAR_VOICES))
    ]


@pytest.fixture(scope="session")
def speech_corpus() -> SpeechCorpus:
    """150 training and 20 held-out sentences (about 8 and 1 minutes of speech)."""
    sentences = [" ".join(words) for words in itertools.product(*SENTENCE_SLOTS)]
    random.Random(0).shuffle(sentences)
    return SpeechCorpus(SENTENCE_SLOTS, speak(sentences[:150]), speak(sentences[150:170]))


@pytest.fixture(scope="session")
def small_codec(speech_corpus: SpeechCorpus) -> OfflineCodec:
    """An offline codec fitted on 12 training sentences (~450 frames: the tiny-corpus path)."""
    clips = [utterance.audio for utterance in speech_corpus.train[:12]]
    return OfflineCodec.fit(clips, progress=False)
