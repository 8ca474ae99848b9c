"""Hash buckets: the partitions that let speech synthesis and encoding run in parallel.

A sample's bucket depends on its id only, so adding data re-encodes only the buckets
that changed (each bucket's output records the hash of its input and is skipped when
that hash is unchanged).
"""

from __future__ import annotations

import hashlib

import dagster as dg

NUM_BUCKETS = 4
BUCKETS = dg.StaticPartitionsDefinition([f"bucket-{i}" for i in range(NUM_BUCKETS)])


def bucket_of(sample_id: str) -> str:
    index = int.from_bytes(hashlib.sha1(sample_id.encode()).digest()[:4], "big") % NUM_BUCKETS
    return f"bucket-{index}"


def split_of(sample_id: str, validation_fraction: float = 0.05) -> str:
    """`train` or `validation`, fixed by the id alone so that splits never leak."""
    digest = hashlib.sha256(f"split:{sample_id}".encode()).digest()
    return (
        "validation" if int.from_bytes(digest[:4], "big") / 2**32 < validation_fraction else "train"
    )
