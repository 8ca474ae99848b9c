"""The one `Definitions` object `dagster dev` loads (see `[tool.dagster]` in pyproject.toml)."""

import dagster as dg

from pipelines.assets import (
    catalog,
    codes,
    corpora,
    evaluation,
    reference,
    shards,
    speech,
    text,
    training,
    variants,
    vision,
    voices,
)
from pipelines.assets.training import TrainerResource
from pipelines.automation import nightly_retraining, retrain_on_new_shards
from pipelines.jobs import JOBS
from pipelines.resources import REPO_ROOT, CodecResource, StoreResource

DATA_MODULES = [corpora, speech, codes, text, voices, shards, reference, catalog]
ASSET_MODULES = [*DATA_MODULES, vision, training, variants, evaluation]
ASSETS = dg.load_assets_from_modules(ASSET_MODULES)
CHECKS = dg.load_asset_checks_from_modules(ASSET_MODULES)


def io_manager(store: StoreResource) -> dg.FilesystemIOManager:
    """Small step outputs (paths, counts, hashes) live beside the artefacts they describe."""
    return dg.FilesystemIOManager(base_dir=str(store.path("dagster_io")))


def make_definitions(
    store: StoreResource | None = None,
    codec: CodecResource | None = None,
    trainer: TrainerResource | None = None,
) -> dg.Definitions:
    """The definitions over a given store, codec and plan (tests and benchmarks use temp ones)."""
    store = store or StoreResource()
    resources = {
        "store": store,
        "codec": codec or CodecResource(),
        "trainer": trainer or TrainerResource(),
        "io_manager": io_manager(store),
        # The training process starts from the repository root, whatever the caller's folder.
        "pipes_subprocess_client": dg.PipesSubprocessClient(cwd=str(REPO_ROOT)),
    }
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=CHECKS,
        jobs=JOBS,
        schedules=[nightly_retraining],
        sensors=[retrain_on_new_shards],
        resources=resources,
    )


defs = make_definitions()
