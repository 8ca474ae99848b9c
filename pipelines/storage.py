"""Atomic writes and content hashes: what makes re-materialization safe and comparable.

A reader never sees a half-written file: everything is written to a temporary name in the
same folder and renamed into place (a rename is atomic on one filesystem). A killed run
leaves at most a `.tmp-*` file, which no reader globs.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def write_parquet(table: pa.Table, path: Path) -> Path:
    """Write a parquet file atomically, without timestamps, so equal tables hash equal."""
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary, compression="zstd", store_schema=True)
    return path


def content_hash(paths: Iterable[Path]) -> str:
    """sha256 over the files' names and bytes, in sorted order: the version of a dataset."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]
