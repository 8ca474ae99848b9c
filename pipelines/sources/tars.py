"""Reader for webdataset tar shards, in the layout webdataset writes.

A sample is the tar members sharing a key: `key.wav|.flac|.mp3` with its transcript in
`key.txt` or `key.json` ("text" or "transcript", optional "speaker"), or `key.jpg|.png|.webp`
with `key.txt` (a caption) or `key.json` ("question"/"answer" or "caption"), or a lone
`key.json` holding a chat. A damaged tar is rejected by name after the samples read before the
damage, which are kept.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import webdataset as wds

from pipelines.records import RawRecord, Rejected
from pipelines.sources.checks import (
    AUDIO_SUFFIXES,
    DEFAULT_LIMITS,
    IMAGE_SUFFIXES,
    InvalidInput,
    Limits,
    chat_record,
    finish,
    guarded,
    image_record,
    json_object,
    source_files,
    speech_record,
)

AUDIO_MEMBERS = tuple(suffix.lstrip(".") for suffix in AUDIO_SUFFIXES)
IMAGE_MEMBERS = tuple(suffix.lstrip(".") for suffix in IMAGE_SUFFIXES)


def read_webdataset(
    paths: Path | Sequence[Path], source: str = "webdataset", limits: Limits = DEFAULT_LIMITS
) -> Iterator[RawRecord | Rejected]:
    """Records from tar shards (files, or folders searched for `*.tar`), keyed `tar/key`.

    `tar` is the shard's path relative to the folder given. The voice of a clip is
    `{source}/{speaker}` when its JSON names a speaker, else `source`.
    """
    yield from finish(
        sample
        if isinstance(sample, Rejected)
        else guarded(source, _key(sample), _record, source, _key(sample), sample, limits)
        for tar, name in source_files(paths, ".tar")
        for sample in _samples(tar, name, source)
    )


def _samples(tar: Path, name: str, source: str) -> Iterator[dict[str, bytes | str] | Rejected]:
    """The tar's samples in order, then a rejection of the tar if it ended in damage."""
    samples = iter(wds.WebDataset(str(tar), shardshuffle=False, empty_check=False))
    count = 0
    while True:
        try:
            sample = next(samples)
        except StopIteration:
            return
        except (tarfile.TarError, OSError, EOFError, ValueError) as error:
            reason = str(error.args[0]) if error.args else type(error).__name__
            reason = reason.partition(" @ ")[0]  # webdataset appends the stream's repr
            yield Rejected(source, name, f"damaged tar after {count} samples: {reason}")
            return
        sample["__tar__"] = name
        count += 1
        yield sample


def _key(sample: dict[str, bytes | str]) -> str:
    return f"{sample['__tar__']}/{sample['__key__']}"


def _record(source: str, key: str, sample: dict[str, bytes | str], limits: Limits) -> RawRecord:
    members = {name: data for name, data in sample.items() if not name.startswith("__")}
    clips = [name for name in members if name in AUDIO_MEMBERS]
    pictures = [name for name in members if name in IMAGE_MEMBERS]
    fields = json_object(members["json"], f"{key}.json") if "json" in members else {}
    if clips and pictures:
        raise InvalidInput(f"both audio and image members: {', '.join(clips + pictures)}")
    if len(clips) > 1 or len(pictures) > 1:
        raise InvalidInput(f"several audio or image members: {', '.join(clips + pictures)}")
    if clips:
        transcript = members.get("txt", fields.get("text", fields.get("transcript")))
        speaker = fields.get("speaker")
        voice = f"{source}/{speaker}" if isinstance(speaker, (str, int)) else source
        return speech_record(source, key, transcript, members[clips[0]], voice, limits)
    if pictures:
        if "txt" in members:
            fields = {"caption": members["txt"]}
        return image_record(source, key, members[pictures[0]], fields, limits)
    if fields:
        return chat_record(source, key, fields, limits)
    raise InvalidInput(f"no audio, image or chat JSON members (has {', '.join(members)})")
