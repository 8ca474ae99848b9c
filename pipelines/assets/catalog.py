"""The dataset catalog: one DuckDB file over every shard and quarantine file, read in place.

Views, not copies: `samples` and `quarantine` read the parquet files where they lie, so the
catalog is small and always agrees with the shards. `shard_files` pins each file's content
hash, the version MLflow records when a training run reads the shards.
"""

from pathlib import Path

import dagster as dg
import duckdb

from pipelines.assets.common import Landed, preview_table
from pipelines.assets.shards import SHARD_ASSETS, ShardSet
from pipelines.resources import StoreResource
from pipelines.storage import atomic_path, content_hash

LIGHT_COLUMNS = "sample_id, source, task, voice, duration_s, frames, codec_id, split"
SUMMARY_SQL = """
    SELECT task, split, source, count(*) AS rows, round(sum(duration_s) / 3600, 4) AS hours,
           count(DISTINCT voice) AS voices, any_value(codec_id) AS codec_id
    FROM samples GROUP BY ALL ORDER BY ALL
"""
CORPORA = ("generated_corpus", "local_corpus", "webdataset_corpus")
SHARD_SETS = [asset.key.path[-1] for asset in SHARD_ASSETS] + ["reference_shards"]


def build_catalog(path, store: StoreResource, shard_sets: list[ShardSet]) -> None:
    """Create the DuckDB file from scratch (atomically: readers see the old or the new one)."""
    shard_glob = store.path("shards", "*", "*.parquet")
    quarantine_glob = store.path("quarantine", "*.parquet")
    with atomic_path(path) as temporary:
        temporary.unlink()  # DuckDB creates the file itself
        with duckdb.connect(str(temporary)) as db:
            db.execute(
                f"CREATE VIEW samples AS SELECT {LIGHT_COLUMNS}, filename AS shard "
                f"FROM read_parquet('{shard_glob}', union_by_name = true, filename = true)"
            )
            db.execute(
                "CREATE VIEW quarantine AS SELECT * "
                f"FROM read_parquet('{quarantine_glob}', union_by_name = true)"
            )
            db.execute(f"CREATE VIEW summary AS {SUMMARY_SQL}")
            db.execute(
                "CREATE TABLE shard_files (task VARCHAR, path VARCHAR, content_hash VARCHAR)"
            )
            for shard_set in shard_sets:
                for shard in shard_set.paths:
                    db.execute(
                        "INSERT INTO shard_files VALUES (?, ?, ?)",
                        [Path(shard).parent.name, shard, content_hash([Path(shard)])],
                    )


@dg.asset(
    group_name="catalog",
    ins={name: dg.AssetIn(name) for name in SHARD_SETS},
    description="DuckDB catalog: samples, per-source/voice statistics, splits, quarantine.",
)
def dataset_catalog(context: dg.AssetExecutionContext, store: StoreResource, **shards: ShardSet):
    path = store.path("catalog.duckdb")
    build_catalog(path, store, list(shards.values()))
    with duckdb.connect(str(path), read_only=True) as db:
        summary = db.sql(SUMMARY_SQL).pl()
        quarantined = db.execute("SELECT count(*) FROM quarantine").fetchone()[0]
    context.add_output_metadata(
        {
            "path": str(path),
            "rows": int(summary["rows"].sum()) if len(summary) else 0,
            "hours": float(summary["hours"].sum()) if len(summary) else 0.0,
            "quarantined": quarantined,
            "summary": preview_table(summary.to_dicts(), limit=50),
        }
    )
    return str(path)


@dg.asset_check(
    asset=dataset_catalog,
    additional_ins={name: dg.AssetIn(name) for name in CORPORA},
    description="splits are disjoint and every corpus record is a shard row or quarantined",
)
def catalog_accounts_for_every_record(
    dataset_catalog: str,
    generated_corpus: Landed,
    local_corpus: Landed,
    webdataset_corpus: Landed,
) -> dg.AssetCheckResult:
    with duckdb.connect(dataset_catalog, read_only=True) as db:
        leaked = db.execute(
            "SELECT count(*) FROM (SELECT sample_id FROM samples "
            "GROUP BY sample_id HAVING count(DISTINCT split) > 1)"
        ).fetchone()[0]
        rows = db.execute("SELECT count(*) FROM samples WHERE source != 'reference'").fetchone()[0]
        record_level = db.execute(
            "SELECT count(*) FROM quarantine WHERE step NOT LIKE 'speech_codes.%' "
            "AND step NOT LIKE 'reference%'"
        ).fetchone()[0]
    entered = sum(c.entered for c in (generated_corpus, local_corpus, webdataset_corpus))
    return dg.AssetCheckResult(
        passed=leaked == 0 and entered == rows + record_level,
        metadata={
            "ids_in_both_splits": leaked,
            "corpus_inputs": entered,
            "shard_rows": rows,
            "quarantined_records": record_level,
        },
    )
