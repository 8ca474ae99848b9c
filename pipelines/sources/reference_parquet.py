"""Import parquet files in the reference schema (DESIGN.md section 6), row by row.

These rows already carry answer codes, so they skip speech synthesis and encoding; the codes
are kept as given and tagged with the codec that made them (Mimi for the reference's released
files). Each row is checked like any other input: its turns, its code lists (a multiple of 8
codebooks, values 0..2047, one list per assistant turn), its question clips (one per user turn)
and its image; a bad row is rejected as `file#rowN`, an unreadable file by its name.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from omni_model.quantization.base import CODEBOOK_SIZE, FRAME_RATE, NUM_CODEBOOKS
from pipelines.records import RawRecord, Rejected, validate
from pipelines.sources.checks import (
    DEFAULT_LIMITS,
    InvalidInput,
    Limits,
    audio,
    guarded,
    image,
    parse_json,
    sample_id,
    source_files,
    turns,
    unique,
)

COLUMNS = (
    "conversations",
    "question_audios",
    "answer_audios",
    "image_bytes",
    "ref_audios",
    "spk_emb",
)


@dataclass
class ImportedRow:
    """One checked reference row, its codes as given.

    `answer_codes` holds one list per assistant turn and `ref_codes` the voice prompt, both
    flattened frame-major: frame 0's 8 codebooks, then frame 1's, and so on.
    """

    sample_id: str
    source: str
    task: str
    conversations: list[dict[str, str]]
    codec_id: str
    answer_codes: list[list[int]]
    question_audio: list[bytes] = field(default_factory=list)
    image: bytes | None = None
    ref_codes: list[int] = field(default_factory=list)
    spk_emb: list[float] = field(default_factory=list)

    def answer_frames(self) -> list[int]:
        return [len(codes) // NUM_CODEBOOKS for codes in self.answer_codes]


def read_reference_parquet(
    paths: Path | Sequence[Path],
    codec_id: str,
    source: str = "reference",
    limits: Limits = DEFAULT_LIMITS,
    batch_rows: int = 256,
) -> Iterator[ImportedRow | Rejected]:
    """Rows of every parquet file (files, or folders searched for `*.parquet`), in order.

    `codec_id` names the codec that made the codes: for the reference's released files, the
    `codec_id` of the Mimi codec loaded from the reference checkpoint. Files are read
    `batch_rows` at a time, so a file larger than memory streams through.
    """
    yield from unique(
        item
        for path, name in source_files(paths, ".parquet")
        for item in _file_rows(path, name, source, codec_id, limits, batch_rows)
    )


def _file_rows(
    path: Path, name: str, source: str, codec_id: str, limits: Limits, batch_rows: int
) -> Iterator[ImportedRow | Rejected]:
    number = 0
    try:
        parquet = pq.ParquetFile(path)
        present = [column for column in COLUMNS if column in parquet.schema_arrow.names]
        if "conversations" not in present:
            yield Rejected(source, name, "no conversations column")
            return
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=present):
            for row in batch.to_pylist():
                key = f"{name}#row{number}"
                yield guarded(source, key, _row, source, key, row, codec_id, limits)
                number += 1
    except (pa.ArrowException, OSError) as error:
        reason = str(error).replace(str(path), name)  # the same on every machine
        yield Rejected(source, name, f"unreadable parquet after {number} rows: {reason}")


def _row(source: str, key: str, row: dict, codec_id: str, limits: Limits) -> ImportedRow:
    conversations = turns(
        parse_json(row["conversations"], "conversations"), limits, image_marker=True
    )
    questions = [
        audio(clip, f"question audio {index}", limits)
        for index, clip in enumerate(_list(row.get("question_audios"), "question_audios"))
    ]
    answers = [
        _codes(codes, f"answer codes {index}", limits)
        for index, codes in enumerate(_list(row.get("answer_audios"), "answer_audios"))
    ]
    picture = _image(row.get("image_bytes"), limits)
    task = "i2t" if picture is not None else "a2a" if questions else "t2a" if answers else "text"
    reason = validate(
        RawRecord(
            sample_id=sample_id(source, key),
            source=source,
            task=task,
            conversations=conversations,
            question_audio=questions,
            image=picture,
        )
    )
    if reason is not None:
        raise InvalidInput(reason)
    replies = sum(turn["role"] == "assistant" for turn in conversations)
    if answers and len(answers) != replies:
        raise InvalidInput(f"{len(answers)} answer code lists for {replies} assistant turns")
    if task == "a2a" and not answers:
        raise InvalidInput("a2a row without answer codes")
    if any(not codes for codes in answers):
        raise InvalidInput("an answer code list is empty")
    spk_emb = _list(row.get("spk_emb"), "spk_emb")
    if not all(isinstance(value, float) and math.isfinite(value) for value in spk_emb):
        raise InvalidInput("spk_emb holds a null or non-finite value")
    return ImportedRow(
        sample_id=sample_id(source, key),
        source=source,
        task=task,
        conversations=conversations,
        codec_id=codec_id,
        answer_codes=answers,
        question_audio=questions,
        image=picture,
        ref_codes=_codes(row.get("ref_audios"), "ref_audios", limits),
        spk_emb=spk_emb,
    )


def _list(value: object, what: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInput(f"{what} is {type(value).__name__}, not a list")
    return value


def _codes(value: object, what: str, limits: Limits) -> list[int]:
    """A frame-major code list: whole frames of 8 codebooks, values 0..2047, bounded length."""
    codes = _list(value, what)
    if len(codes) % NUM_CODEBOOKS:
        raise InvalidInput(f"{what}: {len(codes)} codes, not a multiple of {NUM_CODEBOOKS}")
    if any(not isinstance(code, int) for code in codes):
        raise InvalidInput(f"{what}: holds a null or non-integer code")
    seconds = len(codes) / NUM_CODEBOOKS / FRAME_RATE
    if seconds > limits.max_audio_seconds:
        raise InvalidInput(
            f"{what}: {seconds:.1f} s of frames, over the limit of {limits.max_audio_seconds:.0f} s"
        )
    values = np.asarray(codes, dtype=np.int64)
    outside = values[(values < 0) | (values >= CODEBOOK_SIZE)]
    if outside.size:
        raise InvalidInput(f"{what}: code {outside[0]} outside 0..{CODEBOOK_SIZE - 1}")
    return codes


def _image(value: object, limits: Limits) -> bytes | None:
    """`image_bytes` is binary or list<binary> in the reference files; one image a row."""
    pictures = value if isinstance(value, list) else [] if value is None else [value]
    if len(pictures) > 1:
        raise InvalidInput(f"{len(pictures)} images in one row (one is supported)")
    if pictures and not isinstance(pictures[0], bytes):
        raise InvalidInput(f"image_bytes is {type(pictures[0]).__name__}, not binary")
    return image(pictures[0], "image", limits) if pictures else None
