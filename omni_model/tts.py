"""Speech synthesis with espeak-ng: the offline stand-in for a real TTS, and a test-audio source.

Each English voice below is an espeak-ng language plus a variant (pitch, formants, breath),
so one synthesizer gives many distinct speakers. espeak-ng is deterministic: the same text,
voice and speed always give the same samples. The en-us female variants f2-f5 and m6 come
first because pocketsphinx recognises them far better than the male defaults (DESIGN.md 8).
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from collections.abc import Sequence

import torch

from omni_model.audio_io import AudioError, load_audio

VOICES = (
    "en-us+f2",
    "en-us+f3",
    "en-us+f4",
    "en-us+f5",
    "en-us+m6",
    "en-us+m3",
    "en+f3",  # British; "en-gb+VARIANT" ignores the variant in espeak-ng 1.51
    "en+m2",
    "en-gb-x-rp+f4",
    "en-gb-scotland+m1",
    "en-us-nyc+m1",
    "en-029+f1",
)
DEFAULT_VOICE = VOICES[1]
DEFAULT_WPM = 160
MIN_WPM, MAX_WPM = 80, 450  # espeak-ng's own range for -s
TIMEOUT_S = 120
OTHER_LANGUAGE = re.compile(r"\(([\w-]+) \d+\)")


class SpeechSynthesisError(RuntimeError):
    """espeak-ng is missing, or it failed on an input that passed validation."""


def espeak_binary() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise SpeechSynthesisError(
            "espeak-ng is not installed: install the Debian package (apt-get install espeak-ng)"
        )
    return path


@functools.cache
def installed_voices() -> tuple[frozenset[str], frozenset[str]]:
    """(languages, variants) espeak-ng knows; unknown variants would silently fall back.

    A language is a voice's own (column 2 of `espeak-ng --voices`) or one of the other
    languages it answers to, listed as "(en 2)" at the end of its line.
    """

    def listing(*args: str) -> list[str]:
        result = subprocess.run(
            [espeak_binary(), *args], capture_output=True, text=True, check=True
        )
        return [line for line in result.stdout.splitlines()[1:] if line.strip()]

    languages = set()
    for line in listing("--voices"):
        languages.add(line.split()[1])
        languages.update(OTHER_LANGUAGE.findall(line))
    variants = {line.split()[4].removeprefix("!v/") for line in listing("--voices=variant")}
    return frozenset(languages), frozenset(variants)


def check_voice(voice: str) -> None:
    """Raise ValueError unless `voice` is `language` or `language+variant` known to espeak-ng."""
    language, _, variant = voice.partition("+")
    languages, variants = installed_voices()
    if language not in languages:
        raise ValueError(f"espeak-ng voice {voice!r}: unknown language {language!r}")
    if variant and variant not in variants:
        raise ValueError(f"espeak-ng voice {voice!r}: unknown variant {variant!r}")


def synthesize(
    text: str,
    voice: str = DEFAULT_VOICE,
    speed_wpm: int = DEFAULT_WPM,
    sample_rate: int = 24_000,
) -> torch.Tensor:
    """Speak `text` -> (samples,) float32 at `sample_rate` (espeak-ng's 22,050 Hz resampled)."""
    if not text.strip():
        raise ValueError("cannot synthesize empty text")
    if not MIN_WPM <= speed_wpm <= MAX_WPM:
        raise ValueError(f"speed {speed_wpm} wpm outside espeak-ng's {MIN_WPM}..{MAX_WPM}")
    check_voice(voice)
    wav = run_espeak(["--stdout", "-v", voice, "-s", str(speed_wpm)], text, voice)
    if not wav:
        raise SpeechSynthesisError(f"espeak-ng ({voice}) failed: no audio written")
    try:
        return load_audio(wav, name=f"espeak-ng {voice}", sample_rate=sample_rate)
    except AudioError as error:
        raise SpeechSynthesisError(f"espeak-ng ({voice}) gave unusable audio: {error}") from error


def ipa_pronunciations(words: Sequence[str], language: str = "en-us") -> list[str]:
    """Each word as espeak-ng would say it, in IPA with stress marks (e.g. "cat" -> "kˈæt").

    The same letter-to-sound rules that render a word give its phones to an ASR dictionary
    that lacks it, so a made-up or rare word in a reply can still be heard.
    """
    if not words:
        return []
    if any(not word.strip() or "\n" in word for word in words):
        raise ValueError("each word must be non-empty text on one line")
    check_voice(language)
    text = "".join(f"{word}.\n" for word in words)  # one clause, so one output line, per word
    output = run_espeak(["-q", "--ipa", "-v", language], text, f"--ipa {language}")
    lines = [line.strip() for line in output.decode().splitlines() if line.strip()]
    if len(lines) != len(words):
        found = f"{len(lines)} pronunciations for {len(words)} words"
        raise SpeechSynthesisError(f"espeak-ng (--ipa {language}) failed: {found}")
    return lines


def run_espeak(options: list[str], text: str, what: str) -> bytes:
    """espeak-ng with `options` and `text` on stdin -> its stdout, or SpeechSynthesisError
    naming `what` (the voice, or the mode) when it times out or fails."""
    command = [espeak_binary(), "--stdin", *options]
    try:
        result = subprocess.run(
            command, input=text.encode(), capture_output=True, timeout=TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise SpeechSynthesisError(f"espeak-ng ({what}) timed out after {TIMEOUT_S} s") from error
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip() or f"exit {result.returncode}"
        raise SpeechSynthesisError(f"espeak-ng ({what}) failed: {message}")
    return result.stdout
