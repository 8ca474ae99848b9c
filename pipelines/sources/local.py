"""Readers for corpora in local folders: speech with transcripts, image Q&A, chat text.

Every input item leaves as a record or a rejection: each audio file, each transcript line or
file, each non-blank JSONL line. Keys are paths relative to the root (an audio file's without
its suffix, shared with its transcript) or `file.jsonl#lineN`, so sample ids are the same in
every run and on every machine.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from pipelines.records import RawRecord, Rejected
from pipelines.sources.checks import (
    AUDIO_SUFFIXES,
    DEFAULT_LIMITS,
    InvalidInput,
    Limits,
    chat_record,
    existing_folder,
    finish,
    guarded,
    image_record,
    json_object,
    read_file,
    source_files,
    speech_record,
)

UTTERANCE_ID = re.compile(rb"[A-Za-z0-9_-]+")  # LibriSpeech: speaker-chapter-utterance


def read_librispeech(
    root: Path, source: str = "librispeech", limits: Limits = DEFAULT_LIMITS
) -> Iterator[RawRecord | Rejected]:
    """`speaker/chapter/speaker-chapter-utt.flac` beside `speaker-chapter.trans.txt` lines.

    The voice is `{source}/{speaker}`, the speaker being the utterance id's first field.
    """
    root = existing_folder(root)
    transcripts: dict[str, bytes] = {}
    malformed: list[Rejected] = []
    for listing in sorted(root.rglob("*.trans.txt")):
        folder = listing.parent.relative_to(root)
        try:
            lines = read_file(listing, "transcript file").splitlines()
        except InvalidInput as error:
            malformed.append(Rejected(source, listing.relative_to(root).as_posix(), str(error)))
            continue
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{listing.relative_to(root).as_posix()}#line{number}"
            utterance, _, said = line.strip().partition(b" ")
            key = (folder / utterance.decode("ascii", "replace")).as_posix()
            if not UTTERANCE_ID.fullmatch(utterance):
                malformed.append(Rejected(source, where, "malformed utterance id"))
            elif key in transcripts:
                malformed.append(Rejected(source, where, f"duplicate utterance id {key}"))
            else:
                transcripts[key] = said

    def speaker(key: str) -> str:
        return f"{source}/{key.rsplit('/', 1)[-1].split('-', 1)[0]}"

    yield from malformed
    yield from finish(_paired(source, root, transcripts, speaker, limits))


def read_audio_folder(
    root: Path, source: str = "speech", limits: Limits = DEFAULT_LIMITS
) -> Iterator[RawRecord | Rejected]:
    """`name.wav|.flac|.mp3` beside `name.txt`, in any folder under `root`.

    The voice is `{source}/{folder}` for files in a sub-folder (one folder per speaker),
    `source` for files at the top.
    """
    root = existing_folder(root)
    transcripts: dict[str, bytes | Path] = {
        _key(root, path): path for path in _files(root, (".txt",))
    }

    def speaker(key: str) -> str:
        folder, _, _ = key.rpartition("/")
        return f"{source}/{folder}" if folder else source

    yield from finish(_paired(source, root, transcripts, speaker, limits))


def read_image_jsonl(
    path: Path, source: str = "images", limits: Limits = DEFAULT_LIMITS
) -> Iterator[RawRecord | Rejected]:
    """JSONL lines `{"image": "relative/path.png", "question", "answer"}` or `{..., "caption"}`.

    `path` is one JSONL file or a folder of them; an image path is relative to its JSONL file
    and must stay inside the corpus folder.
    """
    base = path if path.is_dir() else path.parent
    yield from finish(
        guarded(source, key, _image_line, source, key, line, file, base, limits)
        for file, key, line in _jsonl_lines(path)
    )


def read_chat_jsonl(
    path: Path, source: str = "chat", limits: Limits = DEFAULT_LIMITS
) -> Iterator[RawRecord | Rejected]:
    """JSONL lines `{"conversations"|"messages": [...]}` or `{"instruction", "input", "output"}`."""
    yield from finish(
        guarded(source, key, _chat_line, source, key, line, limits)
        for _, key, line in _jsonl_lines(path)
    )


def _paired(
    source: str,
    root: Path,
    transcripts: Mapping[str, bytes | Path],
    voice: Callable[[str], str],
    limits: Limits,
) -> Iterator[RawRecord | Rejected]:
    """Join audio files to transcripts by key; either one alone is rejected."""
    clips: dict[str, list[Path]] = {}
    for path in _files(root, AUDIO_SUFFIXES):
        clips.setdefault(_key(root, path), []).append(path)
    for key in sorted(clips.keys() | transcripts.keys()):
        files, transcript = clips.get(key, []), transcripts.get(key)
        names = ", ".join(path.name for path in files)
        if transcript is None:
            yield Rejected(source, key, f"no transcript for audio file {names}")
        elif not files:
            yield Rejected(source, key, "no audio file for transcript")
        elif len(files) > 1:
            yield Rejected(source, key, f"several audio files for one transcript: {names}")
        else:
            yield guarded(
                source, key, _utterance, source, key, transcript, files[0], voice(key), limits
            )


def _utterance(
    source: str, key: str, transcript: bytes | Path, clip: Path, voice: str, limits: Limits
) -> RawRecord:
    if isinstance(transcript, Path):
        transcript = read_file(transcript, "transcript")
    return speech_record(source, key, transcript, read_file(clip, "audio"), voice, limits)


def _image_line(
    source: str, key: str, line: bytes, file: Path, base: Path, limits: Limits
) -> RawRecord:
    fields = json_object(line, key)
    relative = fields.get("image")
    if not isinstance(relative, str) or not relative.strip():
        raise InvalidInput("no image path")
    picture = (file.parent / relative).resolve()
    if not picture.is_relative_to(base.resolve()):
        raise InvalidInput(f"image path {relative!r} leaves the corpus folder")
    if not picture.is_file():
        raise InvalidInput(f"missing image file {relative}")
    return image_record(source, key, read_file(picture, "image"), fields, limits)


def _chat_line(source: str, key: str, line: bytes, limits: Limits) -> RawRecord:
    return chat_record(source, key, json_object(line, key), limits)


def _jsonl_lines(path: Path) -> Iterator[tuple[Path, str, bytes]]:
    """(file, `relative/file.jsonl#lineN`, line) for every non-blank line, in order."""
    for file, name in source_files(path, ".jsonl"):
        with file.open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield file, f"{name}#line{number}", line


def _files(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Files under `root` with one of `suffixes` (any case), hidden and temporary ones aside."""
    return sorted(
        path
        for path in root.rglob("*")
        if path.suffix.lower() in suffixes and not path.name.startswith(".") and path.is_file()
    )


def _key(root: Path, path: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()
