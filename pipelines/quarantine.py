"""The quarantine: every input a step could not use, with where it came from and why.

One parquet file per step under `assets_store/quarantine/`; the catalog exposes them all
as one DuckDB table, and each step's asset check asserts inputs = outputs + quarantined.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.records import Rejected
from pipelines.storage import write_parquet

SCHEMA = pa.schema(
    [("step", pa.string()), ("source", pa.string()), ("key", pa.string()), ("reason", pa.string())]
)


def write_quarantine(folder: Path, step: str, rejected: Iterable[Rejected]) -> Path:
    """Write (or replace) the step's quarantine file; an empty file when nothing was rejected."""
    rows = [{"step": step, "source": r.source, "key": r.key, "reason": r.reason} for r in rejected]
    return write_parquet(pa.Table.from_pylist(rows, schema=SCHEMA), folder / f"{step}.parquet")


def quarantine_rows(folder: Path, step: str) -> int:
    """How many inputs the step quarantined, read back from its file (0 if it has none)."""
    path = folder / f"{step}.parquet"
    return pq.read_metadata(path).num_rows if path.exists() else 0
