"""What every pipeline step shares: landing records as tars, and reporting what it did."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from tqdm import tqdm

from pipelines.quarantine import quarantine_rows, write_quarantine
from pipelines.records import RawRecord, Rejected, read_tars, write_tars
from pipelines.resources import StoreResource
from pipelines.storage import content_hash


@dataclass
class Landed:
    """What a step handed downstream: its files and its accounting (inputs = kept + rejected)."""

    step: str
    paths: list[str]
    entered: int
    kept: int
    rejected: int
    content_hash: str

    def records(self) -> Iterable[RawRecord]:
        return read_tars(Path(p) for p in self.paths)


def accounting_check(
    store: StoreResource, landed: Landed, check_name: str | None = None
) -> dg.AssetCheckResult:
    """Re-count what is on disk: every input is a record in the tars or a quarantine row."""
    on_disk = sum(1 for _ in landed.records())
    quarantined = quarantine_rows(store.path("quarantine"), landed.step)
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=on_disk == landed.kept
        and quarantined == landed.rejected
        and landed.entered == on_disk + quarantined,
        metadata={"entered": landed.entered, "records": on_disk, "quarantined": quarantined},
    )


def markdown_table(rows: Sequence[dict]) -> str:
    """Rows as a markdown table (cells shortened to one line of at most 80 characters)."""
    if not rows:
        return "*(no rows)*"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = (format_cell(row[c]).replace("|", "/").replace("\n", " ")[:80] for c in columns)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_cell(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def preview_table(rows: Sequence[dict], limit: int = 5) -> dg.MetadataValue:
    """A small markdown table of the first rows, as Dagster shows it in the UI."""
    return dg.MetadataValue.md(markdown_table(list(rows)[:limit]))


def record_preview(record: RawRecord) -> dict:
    users, replies = record.turns("user"), record.turns("assistant")
    return {
        "sample_id": record.sample_id,
        "task": record.task,
        "voice": record.voice,
        "question": users[0] if users else "",
        "answer": replies[-1] if replies else "",
    }


def land_records(
    context: dg.AssetExecutionContext,
    store: StoreResource,
    step: str,
    folder: Path,
    items: Iterable[RawRecord | Rejected],
    per_tar: int = 500,
) -> Landed:
    """Write records as tars under `folder`, rejections to the quarantine, and report both."""
    rejected: list[Rejected] = []
    previews: list[dict] = []

    def kept_records(items: Iterable[RawRecord | Rejected]) -> Iterable[RawRecord]:
        for item in tqdm(items, desc=step, unit=" records", mininterval=2.0):
            if isinstance(item, Rejected):
                rejected.append(item)
                continue
            if len(previews) < 5:
                previews.append(record_preview(item))
            yield item

    entered = _Counter(items)
    kept = _Counter(kept_records(entered))
    paths = write_tars(kept, folder, per_tar=per_tar)
    write_quarantine(store.path("quarantine"), step, rejected)
    landed = Landed(
        step=step,
        paths=[str(p) for p in paths],
        entered=entered.count,
        kept=kept.count,
        rejected=len(rejected),
        content_hash=content_hash(paths),
    )
    context.add_output_metadata(
        output_name="result",
        metadata={
            "records": landed.kept,
            "quarantined": landed.rejected,
            "entered": landed.entered,
            "tars": dg.MetadataValue.json(landed.paths),
            "content_hash": landed.content_hash,
            "preview": preview_table(previews),
        },
    )
    if rejected:
        context.log.warning(
            f"{step}: {len(rejected)} inputs quarantined, e.g. {rejected[0].key}: "
            f"{rejected[0].reason}"
        )
    return landed


class _Counter:
    """Counts the items of an iterable as they are consumed."""

    def __init__(self, items: Iterable):
        self.items = items
        self.count = 0

    def __iter__(self):
        for item in self.items:
            self.count += 1
            yield item
