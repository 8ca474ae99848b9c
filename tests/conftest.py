"""Shared fixtures: espeak-ng speech of templated sentences, a small fitted offline codec,
and the tiny pipeline (data, then a few training steps) built once per session."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from whisper.model import ModelDimensions, Whisper

from omni_model.quantization import OfflineCodec
from omni_model.tts import synthesize
from pipelines.assets.training import TrainerResource
from pipelines.run import ENCODER_PRETRAINING, run_job, run_pipeline

# A Whisper small enough to build in milliseconds: 16 encoder positions = 0.32 s windows.
TINY_WHISPER_DIMS = ModelDimensions(
    n_mels=80,
    n_audio_ctx=16,
    n_audio_state=32,
    n_audio_head=2,
    n_audio_layer=2,
    n_vocab=64,
    n_text_ctx=8,
    n_text_state=32,
    n_text_head=2,
    n_text_layer=1,
)


def save_tiny_whisper(path: Path) -> str:
    """A random-weight Whisper saved in Whisper's own checkpoint format; returns its path."""
    torch.manual_seed(0)
    model = Whisper(TINY_WHISPER_DIMS)
    model.decoder.positional_embedding.data.normal_()  # torch.empty: may hold NaN
    torch.save({"dims": vars(TINY_WHISPER_DIMS), "model_state_dict": model.state_dict()}, path)
    return str(path)


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


@pytest.fixture(scope="session")
def phonetic_codec(speech_corpus: SpeechCorpus) -> OfflineCodec:
    """An offline codec with a phonetic first stage, fitted on the training sentences and
    their texts (a short tagger training: most frames named right, not all)."""
    train = speech_corpus.train
    return OfflineCodec.fit(
        [u.audio for u in train],
        texts=[u.text for u in train],
        iterations=2,
        tagger_steps=600,
        progress=False,
    )


# The tiny pipeline, built once per session for the pipeline and notebook tests.
TINY = {
    "generated_corpus": {"size": "tiny"},
    # the phonetic first stage, so the asset's forced alignment and tagger run here too
    "speech_codec": {
        "fit_minutes": 1.0,
        "kmeans_iterations": 2,
        "first_stage": "phones",
        "tagger_steps": 200,
    },
}
GOOD_CLIPS = ("the cat sat on the mat", "two plus two is four")


def seeded_local_corpus(root: Path) -> dict:
    """Two good clips and three bad inputs of each kind the local readers see."""
    speech = root / "speech"
    speech.mkdir(parents=True)
    for index, text in enumerate(GOOD_CLIPS):
        sf.write(speech / f"good{index}.wav", synthesize(text, "en-us+f3", 160).numpy(), 24_000)
        (speech / f"good{index}.txt").write_text(text)
    (speech / "corrupt.wav").write_bytes(b"RIFF\x00\x00not audio at all")
    (speech / "corrupt.txt").write_text("this clip is broken")
    sf.write(speech / "orphan.wav", np.zeros(24_000, dtype=np.float32) + 0.1, 24_000)
    (speech / "empty.txt").write_text("")
    chat = root / "chat.jsonl"
    lines = [
        json.dumps({"instruction": "Say hello.", "output": "Hello there!"}),
        "{not json",
        json.dumps({"messages": [{"role": "user", "content": "Hi"}]}),
    ]
    chat.write_text("\n".join(lines) + "\n")
    return {"speech_dirs": [str(speech)], "chat_jsonl": [str(chat)]}


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Iterator[Path]:
    """The tiny pipeline's store; runs are recorded on a throwaway Dagster instance."""
    root = tmp_path_factory.mktemp("pipeline")
    local = seeded_local_corpus(root / "local")
    config = {**TINY, "local_corpus": local}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(root / "dagster_home"))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        run_pipeline(str(root / "store"), workers=1, asset_config=config)
        yield root / "store"


STEPS = 3  # per stage: enough to log, checkpoint and register, not to learn


@pytest.fixture(scope="session")
def trained(store) -> dict:
    """The training job over the tiny shards, each stage capped at a few steps, around an
    image encoder pretrained for a few steps."""
    encoder = {"patch_image_encoder": ENCODER_PRETRAINING["tiny"]}
    run_job(str(store), "image_encoder_job", encoder)
    result = run_job(str(store), "training_job", trainer=TrainerResource(max_steps=STEPS))
    return {
        event.asset_key.to_user_string(): event.materialization.metadata
        for event in result.get_asset_materialization_events()
    }
