"""The normalised record every source yields, and the rejection every bad input becomes.

Sources differ (generated corpus, local folders, webdataset tars); after normalisation
they are one thing: a `RawRecord`. Whatever a source cannot turn into a record becomes a
`Rejected` with the source, the key and the reason, so that every input leaves a step
either as output or in quarantine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import webdataset as wds

from pipelines.storage import atomic_path

TASKS = ("t2a", "a2a", "i2t", "text")
ROLES = ("system", "user", "assistant")
MAX_TEXT_CHARS = 4_000  # longer turns are absurd for a 1,024-position model


@dataclass
class RawRecord:
    """One conversation, as every source normalises it.

    `conversations` is a list of {"role", "content"} turns, an image referenced by the
    literal `<image>` in a user turn. Audio is kept encoded (wav/flac/mp3 bytes): one entry
    per user turn in `question_audio` (A2A), one per assistant turn in `answer_audio`;
    empty lists mean "synthesize from the text". `voice` names the speaker of given audio
    or the voice to synthesize with.
    """

    sample_id: str
    source: str
    task: str
    conversations: list[dict[str, str]]
    question_audio: list[bytes] = field(default_factory=list)
    answer_audio: list[bytes] = field(default_factory=list)
    image: bytes | None = None
    voice: str | None = None

    def turns(self, role: str) -> list[str]:
        return [turn["content"] for turn in self.conversations if turn["role"] == role]


@dataclass
class Rejected:
    """An input that could not become a record: where it came from and why."""

    source: str
    key: str
    reason: str


def validate(record: RawRecord) -> str | None:
    """The reason a record is unusable, or None. Shared by every source."""
    if record.task not in TASKS:
        return f"unknown task {record.task!r}"
    if not record.conversations:
        return "no turns"
    for index, turn in enumerate(record.conversations):
        if turn.get("role") not in ROLES:
            return f"turn {index}: unknown role {turn.get('role')!r}"
        content = turn.get("content")
        if not isinstance(content, str) or not content.strip():
            return f"turn {index}: empty text"
        if len(content) > MAX_TEXT_CHARS:
            return f"turn {index}: {len(content)} characters (limit {MAX_TEXT_CHARS})"
    if record.conversations[-1]["role"] != "assistant":
        return "last turn is not an assistant reply"
    users, assistants = record.turns("user"), record.turns("assistant")
    if record.question_audio and len(record.question_audio) != len(users):
        return f"{len(record.question_audio)} question clips for {len(users)} user turns"
    if record.answer_audio and len(record.answer_audio) != len(assistants):
        return f"{len(record.answer_audio)} answer clips for {len(assistants)} assistant turns"
    has_marker = any("<image>" in text for text in users)
    if record.task == "i2t" and (record.image is None or not has_marker):
        return "i2t record needs an image and an <image> marker in a user turn"
    if record.image is not None and not has_marker:
        return "image without an <image> marker in any user turn"
    return None


def checked(items: Iterable[RawRecord | Rejected]) -> Iterator[RawRecord | Rejected]:
    """Pass rejections through; turn records that fail `validate` into rejections."""
    for item in items:
        if isinstance(item, RawRecord) and (reason := validate(item)) is not None:
            key = item.sample_id.removeprefix(f"{item.source}/")  # as readers key rejections
            yield Rejected(item.source, key, reason)
        else:
            yield item


def tar_sample(record: RawRecord) -> dict[str, bytes | str]:
    """The webdataset sample of a record: key.json plus one file per clip and the image."""
    meta = {
        "sample_id": record.sample_id,
        "source": record.source,
        "task": record.task,
        "conversations": record.conversations,
        "voice": record.voice,
        "question_clips": len(record.question_audio),
        "answer_clips": len(record.answer_audio),
    }
    sample: dict[str, bytes | str] = {
        "__key__": hashlib.sha1(record.sample_id.encode()).hexdigest()[:16],
        "json": json.dumps(meta, ensure_ascii=False),
    }
    for index, clip in enumerate(record.question_audio):
        sample[f"q{index}.audio"] = clip
    for index, clip in enumerate(record.answer_audio):
        sample[f"a{index}.audio"] = clip
    if record.image is not None:
        sample["image"] = record.image
    return sample


def from_tar_sample(sample: dict[str, bytes]) -> RawRecord:
    """Inverse of `tar_sample` (webdataset hands every member back as bytes)."""
    meta = json.loads(sample["json"])
    return RawRecord(
        sample_id=meta["sample_id"],
        source=meta["source"],
        task=meta["task"],
        conversations=meta["conversations"],
        question_audio=[sample[f"q{i}.audio"] for i in range(meta["question_clips"])],
        answer_audio=[sample[f"a{i}.audio"] for i in range(meta["answer_clips"])],
        image=sample.get("image"),
        voice=meta["voice"],
    )


def write_tars(records: Iterable[RawRecord], folder: Path, per_tar: int = 1_000) -> list[Path]:
    """Write records as webdataset tars `folder/shard-NNNNNN.tar`, each one atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    batch: list[RawRecord] = []

    def flush() -> None:
        path = folder / f"shard-{len(paths):06d}.tar"
        with atomic_path(path) as temporary, wds.TarWriter(str(temporary)) as sink:
            for record in batch:
                sink.write(tar_sample(record))
        paths.append(path)
        batch.clear()

    for record in records:
        batch.append(record)
        if len(batch) == per_tar:
            flush()
    if batch or not paths:
        flush()
    for stale in folder.glob("shard-*.tar"):
        if stale not in paths:
            stale.unlink()
    return paths


def read_tars(paths: Iterable[Path]) -> Iterator[RawRecord]:
    """Records back from tars written by `write_tars`, in order."""
    for path in paths:
        for sample in wds.WebDataset(str(path), shardshuffle=False, empty_check=False):
            yield from_tar_sample(sample)
