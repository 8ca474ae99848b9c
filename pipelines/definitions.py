"""The one `Definitions` object `dagster dev` loads (see `[tool.dagster]` in pyproject.toml)."""

from __future__ import annotations

import dagster as dg

from pipelines.assets import catalog, codes, corpora, reference, shards, speech, text, voices
from pipelines.resources import CodecResource, StoreResource

ASSET_MODULES = [corpora, speech, codes, text, voices, shards, reference, catalog]
ASSETS = dg.load_assets_from_modules(ASSET_MODULES)
CHECKS = dg.load_asset_checks_from_modules(ASSET_MODULES)

corpora_job = dg.define_asset_job(
    "corpora_job", selection=dg.AssetSelection.groups("corpora"), description="Land every source."
)
speech_job = dg.define_asset_job(
    "speech_job",
    selection=dg.AssetSelection.assets("spoken_corpus"),
    description="Synthesize missing speech, one bucket per run.",
)
codec_job = dg.define_asset_job(
    "codec_job",
    selection=dg.AssetSelection.assets("speech_codec"),
    description="Fit/load the codec.",
)
codes_job = dg.define_asset_job(
    "codes_job",
    selection=dg.AssetSelection.assets("speech_codes"),
    description="Encode answer speech, one bucket per run (unchanged buckets are skipped).",
)
shards_job = dg.define_asset_job(
    "shards_job",
    selection=dg.AssetSelection.groups("text", "voices", "shards", "catalog"),
    description="Tokenizer, voices, T2A/A2A/I2T/text shards and the DuckDB catalog.",
)
DATA_JOBS = (corpora_job, speech_job, codec_job, codes_job, shards_job)


def io_manager(store: StoreResource) -> dg.FilesystemIOManager:
    """Small step outputs (paths, counts, hashes) live beside the artefacts they describe."""
    return dg.FilesystemIOManager(base_dir=str(store.path("dagster_io")))


def make_definitions(store: StoreResource | None = None, codec: CodecResource | None = None):
    """The definitions over a given store and codec (tests and benchmarks use a temp store)."""
    store = store or StoreResource()
    resources = {"store": store, "codec": codec or CodecResource(), "io_manager": io_manager(store)}
    return dg.Definitions(assets=ASSETS, asset_checks=CHECKS, jobs=DATA_JOBS, resources=resources)


defs = make_definitions()
