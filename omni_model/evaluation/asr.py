"""Speech recognition for evaluation: what did the generated speech actually say?

- `WhisperTranscriber`: openai-whisper from a local checkpoint file or an official name
  whose weights are already in Whisper's cache; it downloads only when allowed.
- `PocketsphinxTranscriber`: the offline default (DESIGN.md section 8). pocketsphinx ships
  an English acoustic model and dictionary; recognition is constrained by a grammar whose
  sentences are the evaluation texts (`from_sentences`, the default), a trigram model of
  them (`from_texts`: any of their words may follow any other), or any JSGF grammar
  (`from_grammar`).
  The decoder's dictionary is cut down to the words those allow: pocketsphinx takes about
  15 s to load even a tiny language model against its full 130k-word dictionary. A word
  its dictionary lacks is pronounced by espeak-ng's rules (`phones`).

`build_transcriber` picks Whisper when its weights are at hand, else pocketsphinx.
ASR_CONSTRAINTS names the ways pocketsphinx may be constrained.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

import torch
import whisper
from pocketsphinx import Decoder
from pocketsphinx.lm import ArpaBoLM

from omni_model.audio_io import padded_pcm16, resample
from omni_model.encoders.audio import load_whisper
from omni_model.encoders.errors import CheckpointError
from omni_model.text.normalize import normalize_text
from omni_model.text.pronunciation import espeak_pronunciations

log = logging.getLogger(__name__)

ASR_RATE = 16_000  # both backends work at 16 kHz
PAD_SECONDS = 0.3  # pocketsphinx needs silence around the speech to find its edges
JSGF_RULE_NAME = re.compile(r"<[^<>]*>")
JSGF_WORD = re.compile(r"[a-z][a-z']*")
LISTED_WORDS = 12  # words a description names before it only counts them
AsrConstraint = Literal["sentences", "trigram"]
ASR_CONSTRAINTS: tuple[str, ...] = get_args(AsrConstraint)


class AsrUnavailableError(CheckpointError):
    """An ASR model whose weights are not on this machine (and may not be downloaded)."""


class Transcriber(ABC):
    """Audio -> text. `name` says which backend, so reports show what the CER was read by."""

    name: str

    @abstractmethod
    def transcribe(self, audio: torch.Tensor, sample_rate: int) -> str:
        """audio (samples,) mono float at `sample_rate` -> the words heard."""

    def describe(self) -> str:
        """`name`, plus what a reader of the scores it gave should know."""
        return self.name


def whisper_weights_path(name: str, download_root: str | None = None) -> Path:
    """Where `whisper.load_model(name)` keeps an official model's weights."""
    default = os.path.join(os.getenv("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "whisper")
    url = whisper._MODELS[name]  # the file name is the URL's last segment
    return Path(download_root or default) / url.rsplit("/", 1)[-1]


def whisper_available(name_or_path: str, download_root: str | None = None) -> bool:
    """Whether a checkpoint file, or an official model already downloaded, is at hand."""
    if Path(name_or_path).is_file():
        return True
    return (
        name_or_path in whisper.available_models()
        and whisper_weights_path(name_or_path, download_root).is_file()
    )


class WhisperTranscriber(Transcriber):
    """Greedy Whisper decoding in English, one pass, no conditioning on earlier windows."""

    def __init__(
        self,
        name_or_path: str,
        device: str | torch.device = "cpu",
        download_root: str | None = None,
        allow_download: bool = False,
    ):
        if not allow_download and not whisper_available(name_or_path, download_root):
            raise AsrUnavailableError(
                name_or_path,
                "no such checkpoint file, and no downloaded Whisper weights of that name "
                "(pass a local .pt file, or allow_download=True where a hub is reachable)",
            )
        self.name = f"whisper-{Path(name_or_path).name.removesuffix('.pt')}"
        self.model = load_whisper(name_or_path, device, download_root).eval()

    def transcribe(self, audio: torch.Tensor, sample_rate: int) -> str:
        pcm = resample(audio.detach().float().cpu().numpy(), sample_rate, ASR_RATE)
        result = whisper.transcribe(
            self.model,
            pcm,
            language="en",
            temperature=0.0,
            condition_on_previous_text=False,
            fp16=False,
            verbose=None,
        )
        return str(result["text"]).strip()


def trigram_model(texts: Sequence[str]) -> str:
    """ARPA text of a trigram model over the normalised texts (pocketsphinx's own builder)."""
    sentences = [normalize_text(text) for text in texts]
    builder = ArpaBoLM(text="\n".join(s for s in sentences if s), add_start=True)
    builder.compute()
    buffer = io.StringIO()
    builder.write(buffer)
    return buffer.getvalue()


def sentence_grammar(sentences: Sequence[str]) -> str:
    """JSGF text whose only sentences are the given normalised ones."""
    return (
        "#JSGF V1.0;\ngrammar evaluation;\n"
        f"public <sentence> = {' | '.join(sorted(set(sentences)))};\n"
    )


@functools.cache
def full_dictionary() -> Decoder:
    """A decoder holding pocketsphinx's whole dictionary, loaded once: it takes seconds, and
    building a sentence transcriber looks words up twice."""
    return Decoder(samprate=ASR_RATE, lm=None, loglevel="FATAL")


def dictionary_pronunciations(words: set[str]) -> dict[str, str | None]:
    """Each word's phones in pocketsphinx's full dictionary, None for a word it lacks."""
    lookup = full_dictionary()
    return {word: lookup.lookup_word(word) or None for word in sorted(words)}


def pronunciations(words: set[str]) -> tuple[dict[str, str | None], list[str]]:
    """Each word's phones: pocketsphinx's dictionary, else espeak-ng's rules (so a made-up
    word in a reply can be heard as itself), None for a word neither gives; and the words
    whose phones came from the rules."""
    phones_of = dictionary_pronunciations(words)
    ruled = espeak_pronunciations({word for word, phones in phones_of.items() if not phones})
    return phones_of | ruled, sorted(word for word, phones in ruled.items() if phones)


class PocketsphinxTranscriber(Transcriber):
    """pocketsphinx at 16 kHz under a language model or grammar; build with a classmethod.

    `rule_words` lists the words the dictionary lacks, pronounced by espeak-ng's rules instead;
    `unknown_words` those neither gives: they can never be recognised, so every occurrence
    counts as an error.
    """

    def __init__(
        self,
        phones_of: dict[str, str | None],
        rule_words: list[str],
        *,
        arpa: str | None = None,
        jsgf: str | None = None,
    ):
        """`phones_of` and `rule_words` as `pronunciations` gives them for the words of `arpa`
        or `jsgf`."""
        if (arpa is None) == (jsgf is None):
            raise ValueError("give exactly one of a language model (arpa) or a grammar (jsgf)")
        self.rule_words = rule_words
        self.name = "pocketsphinx-trigram" if arpa is not None else "pocketsphinx-grammar"
        self.unknown_words = sorted(word for word, phones in phones_of.items() if not phones)
        known = [f"{word} {phones}" for word, phones in phones_of.items() if phones]
        if not known:
            raise ValueError(f"no pronunciation for any of the words: {sorted(phones_of)}")
        if jsgf is not None and self.unknown_words:
            raise ValueError(
                f"grammar words with no pronunciation (not in pocketsphinx's dictionary, "
                f"and espeak-ng gave none): {self.unknown_words}"
            )
        with tempfile.TemporaryDirectory() as folder:  # the decoder reads both files at once
            dictionary, model = os.path.join(folder, "words.dict"), None
            Path(dictionary).write_text("\n".join(known) + "\n")
            if arpa is not None:
                model = os.path.join(folder, "model.arpa")
                Path(model).write_text(arpa)
            self.decoder = Decoder(samprate=ASR_RATE, dict=dictionary, lm=model, loglevel="FATAL")
        if jsgf is not None:
            self.decoder.add_jsgf_string("grammar", jsgf)
            self.decoder.activate_search("grammar")

    @classmethod
    def from_texts(cls, texts: Sequence[str]) -> PocketsphinxTranscriber:
        """Constrained by a trigram model of `texts`: it hears their word sequences best,
        yet any word of theirs may follow any other, so a deviation is heard as one."""
        words = {word for text in texts for word in normalize_text(text).split()}
        if not words:
            raise ValueError("no words in the evaluation texts to build a language model from")
        return cls(*pronunciations(words), arpa=trigram_model(texts))

    @classmethod
    def from_grammar(cls, jsgf: str) -> PocketsphinxTranscriber:
        """Constrained by a JSGF grammar (lower-case words); only its sentences are heard."""
        bodies = [line.split("=", 1)[1] for line in jsgf.splitlines() if "=" in line]
        words = {w for body in bodies for w in JSGF_WORD.findall(JSGF_RULE_NAME.sub(" ", body))}
        return cls(*pronunciations(words), jsgf=jsgf)

    @classmethod
    def from_sentences(cls, texts: Sequence[str]) -> PocketsphinxTranscriber:
        """Constrained to hear one of `texts` (normalised), or nothing: the closest sentence
        wins, so a reply is scored on whether its speech picks out its own text among all the
        evaluated ones. A text with a word that has no pronunciation could never be heard; it
        is left out and its words are listed in `unknown_words`."""
        sentences = {normalize_text(text) for text in texts} - {""}
        words = {word for sentence in sentences for word in sentence.split()}
        phones_of, rule_words = pronunciations(words)
        unknown = {word for word, phones in phones_of.items() if not phones}
        heard = [sentence for sentence in sentences if not unknown & set(sentence.split())]
        if not heard:
            raise ValueError(f"no evaluation text has only pronounceable words: {sorted(unknown)}")
        kept = {word for sentence in heard for word in sentence.split()}
        transcriber = cls(
            {word: phones_of[word] for word in kept},
            [word for word in rule_words if word in kept],
            jsgf=sentence_grammar(heard),
        )
        transcriber.name = "pocketsphinx-sentences"
        transcriber.unknown_words = sorted(unknown)
        return transcriber

    def describe(self) -> str:
        """The name, and the words heard by espeak-ng's rules or never heard, if any."""
        notes = [
            f"{label}: {', '.join(words[:LISTED_WORDS])}"
            + (f" and {len(words) - LISTED_WORDS} more" if len(words) > LISTED_WORDS else "")
            for label, words in (
                ("pronounced by espeak-ng's rules", self.rule_words),
                ("no pronunciation, never heard", self.unknown_words),
            )
            if words
        ]
        return f"{self.name} ({'; '.join(notes)})" if notes else self.name

    def transcribe(self, audio: torch.Tensor, sample_rate: int) -> str:
        self.decoder.start_utt()
        self.decoder.process_raw(
            padded_pcm16(audio, sample_rate, ASR_RATE, PAD_SECONDS), full_utt=True
        )
        self.decoder.end_utt()
        hypothesis = self.decoder.hyp()
        return hypothesis.hypstr if hypothesis else ""


def build_transcriber(
    texts: Sequence[str],
    whisper_model: str | None = None,
    device: str | torch.device = "cpu",
    download_root: str | None = None,
    constraint: AsrConstraint = "sentences",
) -> Transcriber:
    """Whisper when `whisper_model` is given and its weights are here, else pocketsphinx
    constrained by `texts` (the evaluated replies and their reference answers) as whole
    sentences or as a trigram model (`constraint`, one of ASR_CONSTRAINTS)."""
    if constraint not in ASR_CONSTRAINTS:
        raise ValueError(f"unknown ASR constraint {constraint!r}: choose one of {ASR_CONSTRAINTS}")
    if whisper_model is not None:
        if whisper_available(whisper_model, download_root):
            return WhisperTranscriber(whisper_model, device, download_root)
        log.warning("Whisper %s has no local weights: using pocketsphinx instead", whisper_model)
    if constraint == "trigram":
        return PocketsphinxTranscriber.from_texts(texts)
    return PocketsphinxTranscriber.from_sentences(texts)
