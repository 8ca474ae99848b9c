"""The reference's released parquet files, imported as they are (their codes included).

Rows land beside our own shards as `shards/{task}/reference-NNNNN.parquet`, so training
reads both the same way; the codec id given in config tags their codes (the released files
are Mimi-coded: give the id of the Mimi weights you will decode them with).
"""

import json
from pathlib import Path

import dagster as dg
import pyarrow as pa
from pydantic import Field

from pipelines.assets.common import preview_table
from pipelines.assets.shards import SHARD_SCHEMA, ShardSet
from pipelines.partitions import split_of
from pipelines.quarantine import write_quarantine
from pipelines.records import Rejected
from pipelines.resources import StoreResource
from pipelines.sources.reference_parquet import ImportedRow, read_reference_parquet
from pipelines.storage import content_hash, write_parquet

TASKS = ("t2a", "a2a", "i2t", "text")


class ReferenceImportConfig(dg.Config):
    """Parquet files (or folders of them) in the reference schema; none by default."""

    files: list[str] = Field(default_factory=list)
    codec_id: str = "mimi-reference"
    rows_per_shard: int = 2_000
    validation_fraction: float = 0.05


def shard_row(row: ImportedRow, validation_fraction: float) -> dict:
    frames = sum(row.answer_frames())
    return {
        "conversations": json.dumps(row.conversations, ensure_ascii=False),
        "question_audios": row.question_audio,
        "answer_audios": row.answer_codes,
        "image_bytes": row.image,
        "ref_audios": row.ref_codes,
        "spk_emb": row.spk_emb,
        "sample_id": row.sample_id,
        "source": row.source,
        "task": row.task,
        "voice": None,
        "duration_s": frames / 12.5,
        "frames": frames,
        "codec_id": row.codec_id if frames else "",
        "split": split_of(row.sample_id, validation_fraction),
    }


@dg.asset(group_name="shards", description="Reference-schema parquet files, imported as is.")
def reference_shards(
    context: dg.AssetExecutionContext, config: ReferenceImportConfig, store: StoreResource
) -> ShardSet:
    """One ShardSet over every task's reference files (task `reference`)."""
    rows: dict[str, list[dict]] = {task: [] for task in TASKS}
    rejected: list[Rejected] = []
    if config.files:
        paths = [Path(p) for p in config.files]
        for item in read_reference_parquet(paths, codec_id=config.codec_id):
            if isinstance(item, Rejected):
                rejected.append(item)
            else:
                rows[item.task].append(shard_row(item, config.validation_fraction))
    write_quarantine(store.path("quarantine"), "reference_shards", rejected)
    paths = []
    for task, task_rows in rows.items():
        folder = store.path("shards", task)
        for stale in folder.glob("reference-*.parquet"):
            stale.unlink()
        task_rows.sort(key=lambda r: r["sample_id"])
        for index, start in enumerate(range(0, len(task_rows), config.rows_per_shard)):
            table = pa.Table.from_pylist(
                task_rows[start : start + config.rows_per_shard], schema=SHARD_SCHEMA
            )
            paths.append(write_parquet(table, folder / f"reference-{index:05d}.parquet"))
    total = sum(len(r) for r in rows.values())
    light = [
        {k: r[k] for k in ("sample_id", "task", "frames", "split")}
        for task_rows in rows.values()
        for r in task_rows[:2]
    ]
    context.add_output_metadata(
        {
            "rows": total,
            "quarantined": len(rejected),
            "per_task": dg.MetadataValue.json({t: len(r) for t, r in rows.items()}),
            "preview": preview_table(light, limit=8),
        }
    )
    entered = total + len(rejected)
    return ShardSet(
        "reference",
        [str(p) for p in paths],
        total,
        entered,
        len(rejected),
        content_hash(paths),
        config.codec_id,
    )
