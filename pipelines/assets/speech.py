"""Speech: spoken questions and answers for every T2A/A2A record, synthesized where missing.

Partitioned by hash bucket so that synthesis runs in parallel, one run per bucket.
"""

from collections.abc import Iterator

import dagster as dg

from pipelines.assets.common import Landed, accounting_check, land_records
from pipelines.partitions import BUCKETS, bucket_of
from pipelines.records import RawRecord, Rejected
from pipelines.resources import StoreResource
from pipelines.speech import synthesize_missing

SPOKEN_TASKS = ("t2a", "a2a")


def bucket_records(corpora: list[Landed], bucket: str) -> Iterator[RawRecord]:
    """The spoken-task records of every corpus that fall in `bucket`."""
    for landed in corpora:
        for record in landed.records():
            if record.task in SPOKEN_TASKS and bucket_of(record.sample_id) == bucket:
                yield record


def spoken(records: Iterator[RawRecord]) -> Iterator[RawRecord | Rejected]:
    for record in records:
        yield synthesize_missing(record)


@dg.asset(
    partitions_def=BUCKETS,
    group_name="speech",
    check_specs=[dg.AssetCheckSpec("accounts_for_every_record", asset="spoken_corpus")],
    description="T2A/A2A records with every question and answer clip present (espeak fills gaps).",
)
def spoken_corpus(
    context: dg.AssetExecutionContext,
    store: StoreResource,
    generated_corpus: Landed,
    local_corpus: Landed,
    webdataset_corpus: Landed,
):
    """Checked in the same step: a check of one partition cannot load the asset's value."""
    bucket = context.partition_key
    records = bucket_records([generated_corpus, local_corpus, webdataset_corpus], bucket)
    landed = land_records(
        context, store, f"spoken_corpus.{bucket}", store.path("speech", bucket), spoken(records)
    )
    yield dg.Output(landed)
    yield accounting_check(store, landed, "accounts_for_every_record")
