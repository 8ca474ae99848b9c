"""Data pipeline throughput, serial vs parallel bucket runs, and the catalog's query time.

(a) The whole shard build on the generated corpus, bucket runs one at a time vs two at a
    time: rows/s and audio-hours per wall-hour, ratio parallel/serial.
(b) The catalog summary query on 100k synthetic shard rows (target < 1 s).

    python benchmarks/pipeline.py [--size small|tiny] [--rows 100000]

At `tiny` size starting the worker processes (each imports torch and Dagster) costs more
than the work, so the default is `small`, the size `make demo` builds.
"""

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow as pa

from pipelines.assets.catalog import SUMMARY_SQL, build_catalog
from pipelines.assets.shards import SHARD_SCHEMA, ShardSet
from pipelines.resources import StoreResource
from pipelines.run import run_pipeline
from pipelines.storage import write_parquet


def shard_build(size: str, workers: int) -> dict[str, float]:
    """Wall time, rows and hours of one full pipeline run into a fresh store."""
    with tempfile.TemporaryDirectory() as folder:
        os.environ["DAGSTER_HOME"] = str(Path(folder) / "dagster_home")
        Path(os.environ["DAGSTER_HOME"]).mkdir()
        started = time.perf_counter()
        run_pipeline(f"{folder}/store", workers, {"generated_corpus": {"size": size}})
        seconds = time.perf_counter() - started
        with duckdb.connect(f"{folder}/store/catalog.duckdb", read_only=True) as db:
            totals = "SELECT count(*), sum(duration_s) / 3600 FROM samples"
            rows, hours = db.execute(totals).fetchone()
    return {"seconds": seconds, "rows": rows, "hours": hours}


def synthetic_rows(count: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        frames = rng.randint(10, 300)
        rows.append(
            {
                "conversations": "[]",
                "question_audios": [],
                "answer_audios": [],
                "image_bytes": None,
                "ref_audios": [],
                "spk_emb": [],
                "sample_id": f"synthetic/{index:07d}",
                "source": rng.choice(["generated", "librispeech", "webdataset"]),
                "task": rng.choice(["t2a", "a2a", "i2t", "text"]),
                "voice": f"voice-{rng.randrange(40)}",
                "duration_s": frames / 12.5,
                "frames": frames,
                "codec_id": "offline-synthetic",
                "split": "validation" if rng.random() < 0.05 else "train",
            }
        )
    return rows


def catalog_query(count: int) -> dict[str, float]:
    """Best-of-5 time of the summary query over `count` rows in 10 shard files."""
    with tempfile.TemporaryDirectory() as folder:
        store = StoreResource(root=folder)
        rows = synthetic_rows(count)
        paths = []
        for index in range(10):
            table = pa.Table.from_pylist(rows[index::10], schema=SHARD_SCHEMA)
            paths.append(
                write_parquet(table, store.path("shards", "t2a", f"train-{index:05d}.parquet"))
            )
        store.path("quarantine").mkdir()
        write_parquet(
            pa.table({"step": ["x"], "source": ["x"], "key": ["x"], "reason": ["x"]}),
            store.path("quarantine", "x.parquet"),
        )
        shard_set = ShardSet("t2a", [str(p) for p in paths], count, count, 0, "", "")
        build_catalog(store.path("catalog.duckdb"), store, [shard_set])
        times = []
        with duckdb.connect(str(store.path("catalog.duckdb")), read_only=True) as db:
            for _ in range(5):
                started = time.perf_counter()
                summary = db.execute(SUMMARY_SQL).fetchall()
                times.append(time.perf_counter() - started)
        assert sum(r[3] for r in summary) == count
    return {"seconds": min(times), "rows": count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="small", choices=["tiny", "small"])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    figures: dict[str, float] = {}
    for label, workers in (("serial", 1), ("parallel", 2)):
        result = shard_build(args.size, workers)
        figures[f"{label}_seconds"] = result["seconds"]
        figures[f"{label}_rows_per_s"] = result["rows"] / result["seconds"]
        figures[f"{label}_audio_hours_per_hour"] = result["hours"] / (result["seconds"] / 3600)
        print(
            f"{label:>8} ({workers} bucket run(s) at a time): {result['rows']} rows in "
            f"{result['seconds']:.1f} s = {figures[f'{label}_rows_per_s']:.2f} rows/s, "
            f"{figures[f'{label}_audio_hours_per_hour']:.2f} audio-hours/hour"
        )
    figures["parallel_over_serial"] = figures["serial_seconds"] / figures["parallel_seconds"]
    print(f"judged ratio: parallel / serial throughput = {figures['parallel_over_serial']:.2f}")
    query = catalog_query(args.rows)
    figures["catalog_rows"] = query["rows"]
    figures["catalog_summary_s"] = query["seconds"]
    print(
        f"catalog summary over {query['rows']:,} rows: {query['seconds'] * 1000:.1f} ms "
        f"(target < 1000 ms)"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
