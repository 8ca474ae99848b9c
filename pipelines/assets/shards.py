"""Shards: parquet in the reference schema (DESIGN.md section 6) plus our lineage columns.

Joining records to their codes, dropping duplicates and absurd lengths, and the split are
polars work over Arrow; files are written with pyarrow, atomically, sorted by sample id so
that an unchanged input gives byte-identical shards (and the same content hash).
"""

import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from omni_model.voices import Voice
from pipelines.assets.codes import CodecManifest, CodeFile, code_problems
from pipelines.assets.common import Landed, preview_table
from pipelines.assets.voices import VoiceSet, code_table
from pipelines.partitions import split_of
from pipelines.quarantine import quarantine_rows, write_quarantine
from pipelines.records import RawRecord, Rejected
from pipelines.resources import StoreResource
from pipelines.storage import content_hash, write_parquet

REFERENCE_COLUMNS = {
    "conversations": pa.string(),
    "question_audios": pa.list_(pa.binary()),
    "answer_audios": pa.list_(pa.list_(pa.int64())),
    "image_bytes": pa.binary(),
    "ref_audios": pa.list_(pa.int64()),
    "spk_emb": pa.list_(pa.float32()),
}
LINEAGE_COLUMNS = {
    "sample_id": pa.string(),
    "source": pa.string(),
    "task": pa.string(),
    "voice": pa.string(),
    "duration_s": pa.float64(),  # answer speech, all turns
    "frames": pa.int32(),  # answer codes, all turns
    "codec_id": pa.string(),
    "split": pa.string(),
}
SHARD_SCHEMA = pa.schema(list({**REFERENCE_COLUMNS, **LINEAGE_COLUMNS}.items()))


class ShardConfig(dg.Config):
    rows_per_shard: int = 2_000
    validation_fraction: float = 0.05
    max_answer_seconds: float = 60.0


@dataclass
class ShardSet:
    """One task's shard files and how every input record was accounted for."""

    task: str
    paths: list[str]
    rows: int
    entered: int
    rejected: int
    content_hash: str
    codec_id: str


def base_row(record: RawRecord, split: str) -> dict:
    return {
        "conversations": json.dumps(record.conversations, ensure_ascii=False),
        "question_audios": [],
        "answer_audios": [],
        "image_bytes": None,
        "ref_audios": [],
        "spk_emb": [],
        "sample_id": record.sample_id,
        "source": record.source,
        "task": record.task,
        "voice": record.voice,
        "duration_s": 0.0,
        "frames": 0,
        "codec_id": "",
        "split": split,
    }


def drop_duplicates(rows: list[dict], step: str) -> tuple[list[dict], list[Rejected]]:
    """Keep the first (by sample id) of rows with identical content; quarantine the rest."""
    kept, rejected, seen = [], [], {}
    for row in sorted(rows, key=lambda r: r["sample_id"]):
        key = hashlib.sha256(
            json.dumps(
                [row["conversations"], row["voice"], row["image_bytes"] is not None]
            ).encode()
            + (row["image_bytes"] or b"")
        ).hexdigest()
        if key in seen:
            rejected.append(Rejected(row["source"], row["sample_id"], f"duplicate of {seen[key]}"))
        else:
            seen[key] = row["sample_id"]
            kept.append(row)
    return kept, rejected


def write_shards(
    store: StoreResource, task: str, rows: list[dict], rows_per_shard: int
) -> list[Path]:
    """Rows (sorted by sample id) as `shards/{task}/{split}-NNNNN.parquet`; stale files go."""
    folder = store.path("shards", task)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for split in ("train", "validation"):
        part = [r for r in rows if r["split"] == split]
        for index, start in enumerate(range(0, len(part), rows_per_shard)):
            table = pa.Table.from_pylist(part[start : start + rows_per_shard], schema=SHARD_SCHEMA)
            paths.append(write_parquet(table, folder / f"{split}-{index:05d}.parquet"))
    for stale in folder.glob("*.parquet"):
        if stale not in paths and not stale.name.startswith("reference-"):
            stale.unlink()
    return paths


def finish(
    context: dg.AssetExecutionContext,
    store: StoreResource,
    task: str,
    rows: list[dict],
    rejected: list[Rejected],
    entered: int,
    config: ShardConfig,
    codec_id: str = "",
) -> ShardSet:
    """Deduplicate, write shards and quarantine, report metadata: the end of every shard step."""
    rows, duplicates = drop_duplicates(rows, f"{task}_shards")
    rejected = rejected + duplicates
    paths = write_shards(store, task, rows, config.rows_per_shard)
    write_quarantine(store.path("quarantine"), f"{task}_shards", rejected)
    shard_set = ShardSet(
        task,
        [str(p) for p in paths],
        len(rows),
        entered,
        len(rejected),
        content_hash(paths),
        codec_id,
    )
    splits = {s: sum(r["split"] == s for r in rows) for s in ("train", "validation")}
    preview = [
        {k: r[k] for k in ("sample_id", "voice", "frames", "split", "conversations")}
        for r in rows[:5]
    ]
    context.add_output_metadata(
        {
            "rows": len(rows),
            "quarantined": len(rejected),
            "entered": entered,
            "hours": round(sum(r["duration_s"] for r in rows) / 3600, 4),
            "train_rows": splits["train"],
            "validation_rows": splits["validation"],
            "codec_id": codec_id,
            "content_hash": shard_set.content_hash,
            "shards": dg.MetadataValue.json(shard_set.paths),
            "preview": preview_table(preview),
        }
    )
    return shard_set


def spoken_rows(
    task: str,
    spoken_corpus: dict[str, Landed],
    speech_codes: dict[str, CodeFile],
    voices: VoiceSet,
    config: ShardConfig,
) -> tuple[list[dict], list[Rejected], int]:
    """T2A/A2A rows: each record joined to its answer codes and its voice's prompt."""
    codes = (
        code_table(speech_codes)
        .sort("sample_id", "turn")
        .group_by("sample_id", maintain_order=True)
        .agg(pl.col("codes"), pl.col("turn"), pl.col("frames").sum(), pl.col("seconds").sum())
    )
    by_id = {row["sample_id"]: row for row in codes.iter_rows(named=True)}
    loaded = {name: Voice.load(path, voices.codec_id) for name, path in voices.paths.items()}
    rows, rejected, entered = [], [], 0
    for record in (r for landed in spoken_corpus.values() for r in landed.records()):
        if record.task != task:
            continue
        entered += 1
        coded = by_id.get(record.sample_id)
        turns = len(record.answer_audio)
        if coded is None or coded["turn"] != list(range(turns)):
            rejected.append(Rejected(record.source, record.sample_id, "answer speech not encoded"))
            continue
        if coded["seconds"] > config.max_answer_seconds:
            reason = (
                f"{coded['seconds']:.0f} s of answer speech (limit {config.max_answer_seconds:.0f})"
            )
            rejected.append(Rejected(record.source, record.sample_id, reason))
            continue
        row = base_row(record, split_of(record.sample_id, config.validation_fraction))
        voice = loaded.get(record.voice or "")
        row |= {
            "question_audios": record.question_audio if task == "a2a" else [],
            "answer_audios": [[int(c) for c in turn] for turn in coded["codes"]],
            "duration_s": coded["seconds"],
            "frames": coded["frames"],
            "codec_id": voices.codec_id,
        }
        if voice is not None:
            row["ref_audios"] = voice.codes.T.reshape(-1).tolist()
            row["spk_emb"] = voice.speaker.tolist()
        rows.append(row)
    return rows, rejected, entered


def image_problem(data: bytes | None) -> str | None:
    if not data:
        return "no image"
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if min(image.size) == 0:
                return "empty image"
    except Exception as error:  # Pillow raises many types for bad files
        return f"undecodable image ({type(error).__name__})"
    return None


def plain_rows(
    task: str, corpora: Iterable[Landed], config: ShardConfig
) -> tuple[list[dict], list[Rejected], int]:
    """I2T and text-only rows: no speech, straight from the corpora."""
    rows, rejected, entered = [], [], 0
    for record in (r for landed in corpora for r in landed.records()):
        if record.task != task:
            continue
        entered += 1
        if task == "i2t" and (problem := image_problem(record.image)):
            rejected.append(Rejected(record.source, record.sample_id, problem))
            continue
        row = base_row(record, split_of(record.sample_id, config.validation_fraction))
        row["image_bytes"] = record.image
        rows.append(row)
    return rows, rejected, entered


def spoken_shards(task: str):
    """The T2A or A2A shard asset (same join, different task)."""

    @dg.asset(
        name=f"{task}_shards",
        group_name="shards",
        description=f"{task.upper()} parquet shards: reference schema plus lineage columns.",
    )
    def build(
        context: dg.AssetExecutionContext,
        config: ShardConfig,
        store: StoreResource,
        spoken_corpus: dict[str, Landed],
        speech_codes: dict[str, CodeFile],
        voices: VoiceSet,
        speech_codec: CodecManifest,
    ) -> ShardSet:
        rows, rejected, entered = spoken_rows(task, spoken_corpus, speech_codes, voices, config)
        return finish(context, store, task, rows, rejected, entered, config, speech_codec.codec_id)

    return build


def plain_shards(task: str):
    """The I2T or text-only shard asset."""

    @dg.asset(
        name=f"{task}_shards",
        group_name="shards",
        description=f"{task.upper()} parquet shards: reference schema plus lineage columns.",
    )
    def build(
        context: dg.AssetExecutionContext,
        config: ShardConfig,
        store: StoreResource,
        generated_corpus: Landed,
        local_corpus: Landed,
        webdataset_corpus: Landed,
    ) -> ShardSet:
        corpora = (generated_corpus, local_corpus, webdataset_corpus)
        rows, rejected, entered = plain_rows(task, corpora, config)
        return finish(context, store, task, rows, rejected, entered, config)

    return build


t2a_shards = spoken_shards("t2a")
a2a_shards = spoken_shards("a2a")
i2t_shards = plain_shards("i2t")
text_shards = plain_shards("text")
SHARD_ASSETS = (t2a_shards, a2a_shards, i2t_shards, text_shards)


def shard_problems(shard_set: ShardSet) -> dict[str, list[str]]:
    """Everything wrong with a shard set, by criterion (empty lists when all is well)."""
    tables = [pq.read_table(p) for p in shard_set.paths]
    problems: dict[str, list[str]] = {k: [] for k in ("schema", "codes", "texts", "ids", "images")}
    for path, table in zip(shard_set.paths, tables, strict=True):
        if not table.schema.equals(SHARD_SCHEMA, check_metadata=False):
            problems["schema"].append(f"{path}: {table.schema.names}")
    rows = [row for table in tables for row in table.to_pylist()]
    for row in rows:
        turns = json.loads(row["conversations"])
        if any(not t["content"].strip() for t in turns):
            problems["texts"].append(f"{row['sample_id']}: empty turn")
        if shard_set.task == "i2t" and (problem := image_problem(row["image_bytes"])):
            problems["images"].append(f"{row['sample_id']}: {problem}")
        if shard_set.task in ("t2a", "a2a"):
            flat = [c for turn in row["answer_audios"] for c in turn]
            code_row = {
                "sample_id": row["sample_id"],
                "turn": "all",
                "codes": flat,
                "frames": row["frames"],
                "seconds": row["duration_s"],
                "clips": len(row["answer_audios"]),
            }
            problems["codes"] += code_problems([code_row])
    ids = [row["sample_id"] for row in rows]
    if len(ids) != len(set(ids)):
        problems["ids"].append(f"{len(ids) - len(set(ids))} duplicate sample ids")
    return problems


def check_shards(store: StoreResource, shard_set: ShardSet) -> dg.AssetCheckResult:
    problems = shard_problems(shard_set)
    quarantined = quarantine_rows(store.path("quarantine"), f"{shard_set.task}_shards")
    accounted = shard_set.entered == shard_set.rows + quarantined
    return dg.AssetCheckResult(
        passed=accounted and not any(problems.values()),
        metadata={
            "entered": shard_set.entered,
            "rows": shard_set.rows,
            "quarantined": quarantined,
            **{k: dg.MetadataValue.json(v[:20]) for k, v in problems.items()},
        },
    )


def shard_check(shard_asset: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    """Schema, code range, frames vs durations, texts, ids, images, in = out + quarantined."""
    name = shard_asset.key.path[-1]

    @dg.asset_check(asset=shard_asset, name=f"{name}_are_valid", description=shard_check.__doc__)
    def check(store: StoreResource, shard_set: ShardSet) -> dg.AssetCheckResult:
        return check_shards(store, shard_set)

    return check


SHARD_CHECKS = [shard_check(asset) for asset in SHARD_ASSETS]
