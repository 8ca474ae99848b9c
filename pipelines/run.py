"""Materialize the pipeline end to end from the command line (what `make demo` runs).

Same definitions, same instance as `dagster dev`: every run shows up in the UI afterwards.
Bucketed steps run one run per bucket, `--workers` of them at a time (as a backfill does);
then every stage of the training plan trains on the shards (`--plan none` stops before).

    python -m pipelines.run [--size tiny|small|large] [--workers N] [--plan tiny|reference|none]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import dagster as dg

from pipelines.assets.training import TrainerResource
from pipelines.definitions import make_definitions
from pipelines.partitions import BUCKETS
from pipelines.resources import REPO_ROOT, StoreResource


def instance() -> dg.DagsterInstance:
    """The instance under DAGSTER_HOME, defaulting to the repository's `dagster_home/`."""
    os.environ.setdefault("DAGSTER_HOME", str(REPO_ROOT / "dagster_home"))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    return dg.DagsterInstance.get()


def run_job(
    store_root: str,
    job_name: str,
    asset_config: dict[str, dict] | None = None,
    partition_key: str | None = None,
    trainer: TrainerResource | None = None,
) -> dg.ExecuteInProcessResult:
    """Execute one job (one bucket of it) on the shared instance; fail loudly on failed checks.

    `asset_config` maps asset names to their config; entries for assets outside the job
    are left out.
    """
    definitions = make_definitions(StoreResource(root=store_root), trainer=trainer)
    job = definitions.resolve_job_def(job_name)
    ops = {
        name: {"config": config}
        for name, config in (asset_config or {}).items()
        if name in job.graph.node_dict
    }
    # The console shows INFO and up (training progress, checks); every DEBUG event is
    # still in the run's event log in `dagster dev`.
    loggers = {"console": {"config": {"log_level": os.environ.get("OMNI_LOG_LEVEL", "INFO")}}}
    result = job.execute_in_process(
        run_config={"ops": ops, "loggers": loggers},
        instance=instance(),
        partition_key=partition_key,
    )
    if not result.success:
        raise SystemExit(f"{job_name} ({partition_key or 'all'}) failed: see `dagster dev`")
    failed = [c for c in result.get_asset_check_evaluations() if not c.passed]
    errors = [c.check_name for c in failed if c.severity == dg.AssetCheckSeverity.ERROR]
    if errors:
        raise SystemExit(f"{job_name} ({partition_key or 'all'}): checks failed: {errors}")
    for check in failed:  # WARN severity: a quality shortfall the run goes on with
        figures = {key: value.value for key, value in check.metadata.items()}
        print(f"warning: check {check.check_name} failed: {figures}", flush=True)
    return result


def run_bucket(store_root: str, job_name: str, bucket: str) -> None:
    """One bucket's run; returns nothing, so that it can run in a worker process."""
    run_job(store_root, job_name, partition_key=bucket)


def run_buckets(store_root: str, job_name: str, workers: int) -> None:
    """One run per bucket; with workers > 1, in parallel processes."""
    keys = BUCKETS.get_partition_keys()
    if workers <= 1:
        for key in keys:
            run_bucket(store_root, job_name, key)
        return
    # spawn, not fork: a forked child of a process that already ran torch can deadlock in
    # OpenMP (the codec fit runs in this process before the code buckets do).
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(run_bucket, [store_root] * len(keys), [job_name] * len(keys), keys))


# Image encoder pretraining per corpus size (others: the asset's defaults). `tiny` only
# checks the wiring, in seconds.
ENCODER_PRETRAINING = {"tiny": {"pictures": 64, "test_pictures": 16, "steps": 20}}


def default_workers() -> int:
    """One bucket run per 4 cores: each run's torch already keeps 2 or more threads busy, and
    a worker process pays seconds of imports. On 2 cores one at a time is fastest
    (`benchmarks/pipeline.py`, size small: 38 s serial against 53 s with two)."""
    return max(1, (os.cpu_count() or 1) // 4)


def run_pipeline(
    store_root: str,
    workers: int = 1,
    asset_config: dict[str, dict] | None = None,
    trainer: TrainerResource | None = None,
) -> dict[str, float]:
    """Every data job in order, then training when a `trainer` is given; returns each step's
    wall time in seconds (training stages, indented, within the training step's)."""
    steps = [
        ("corpora", lambda: run_job(store_root, "corpora_job", asset_config)),
        ("speech", lambda: run_buckets(store_root, "speech_job", workers)),
        ("codec", lambda: run_job(store_root, "codec_job", asset_config)),
        ("codes", lambda: run_buckets(store_root, "codes_job", workers)),
        ("shards + catalog", lambda: run_job(store_root, "shards_job", asset_config)),
    ]
    if trainer is not None:
        jobs = [(f"training ({trainer.plan})", "training_job"), ("evaluation", "evaluation_job")]
        if trainer.uses_pretrained_patch_encoder():
            jobs.insert(0, ("image encoder", "image_encoder_job"))
        for name, job in jobs:
            steps.append((name, partial(run_job, store_root, job, asset_config, trainer=trainer)))
    durations = {}
    for name, step in steps:
        started = time.perf_counter()
        print(f"== {name}", flush=True)
        result = step()
        durations[name] = time.perf_counter() - started
        durations |= stage_seconds(result)
    return durations


def evaluation_table() -> str:
    """The targets and metrics of the newest evaluation on the instance."""
    event = instance().get_latest_materialization_event(dg.AssetKey("model_evaluation"))
    if event is None or event.asset_materialization is None:
        return "(no evaluation yet)"
    metadata = event.asset_materialization.metadata
    return f"{metadata['targets'].value}\n\nall metrics:\n{metadata['metrics'].value}"


def stage_seconds(result: dg.ExecuteInProcessResult | None) -> dict[str, float]:
    """Each training stage's own wall time, from the training assets' metadata."""
    if result is None:
        return {}
    seconds = {}
    for event in result.get_asset_materialization_events():
        entry = event.materialization.metadata.get("stage_seconds")
        if entry is not None:
            seconds |= {f"  stage {stage}": value for stage, value in entry.value.items()}
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="small", choices=["tiny", "small", "large"])
    parser.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="bucket runs at a time (default: one per 4 cores)",
    )
    parser.add_argument("--store", default=StoreResource().root, help="the assets_store folder")
    parser.add_argument("--plan", default="tiny", help="training plan, or `none` for data only")
    parser.add_argument("--max-steps", type=int, help="cap every training stage (smoke runs)")
    args = parser.parse_args(argv)
    config = {
        "generated_corpus": {"size": args.size},
        "patch_image_encoder": ENCODER_PRETRAINING.get(args.size, {}),
    }
    trainer = None
    if args.plan != "none":
        trainer = TrainerResource(plan=args.plan, max_steps=args.max_steps)
    durations = run_pipeline(args.store, args.workers, config, trainer)
    print("\nstep durations:")
    for name, seconds in durations.items():
        print(f"  {name:<18} {seconds:7.1f} s")
    total = sum(seconds for name, seconds in durations.items() if not name.startswith(" "))
    print(f"  {'total':<18} {total:7.1f} s")
    if trainer is not None:
        print(f"\nevaluation of the {trainer.plan} model:\n{evaluation_table()}")
    print(
        f"\nshards, catalog and checkpoints under {args.store}\n"
        "  runs and asset metadata: `make dagster`, then http://localhost:3000\n"
        "  training runs, metrics, dataset inputs: `make mlflow`, then http://localhost:5000"
    )


if __name__ == "__main__":
    main()
