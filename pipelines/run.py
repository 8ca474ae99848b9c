"""Materialize the data pipeline end to end from the command line (what `make demo` runs).

Same definitions, same instance as `dagster dev`: every run shows up in the UI afterwards.
Bucketed steps run one run per bucket, `--workers` of them at a time (as a backfill does).

    python -m pipelines.run [--size tiny|small|large] [--workers 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import dagster as dg

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
) -> dg.ExecuteInProcessResult:
    """Execute one job (one bucket of it) on the shared instance; fail loudly on failed checks.

    `asset_config` maps asset names to their config; entries for assets outside the job
    are left out.
    """
    job = make_definitions(StoreResource(root=store_root)).resolve_job_def(job_name)
    ops = {
        name: {"config": config}
        for name, config in (asset_config or {}).items()
        if name in job.graph.node_dict
    }
    result = job.execute_in_process(
        run_config={"ops": ops}, instance=instance(), partition_key=partition_key
    )
    if not result.success:
        raise SystemExit(f"{job_name} ({partition_key or 'all'}) failed: see `dagster dev`")
    failed = [c.check_name for c in result.get_asset_check_evaluations() if not c.passed]
    if failed:
        raise SystemExit(f"{job_name} ({partition_key or 'all'}): checks failed: {failed}")
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


def run_pipeline(
    store_root: str, workers: int = 2, asset_config: dict[str, dict] | None = None
) -> dict[str, float]:
    """Every data job in order; returns each step's wall time in seconds."""
    steps = [
        ("corpora", lambda: run_job(store_root, "corpora_job", asset_config)),
        ("speech", lambda: run_buckets(store_root, "speech_job", workers)),
        ("codec", lambda: run_job(store_root, "codec_job", asset_config)),
        ("codes", lambda: run_buckets(store_root, "codes_job", workers)),
        ("shards + catalog", lambda: run_job(store_root, "shards_job", asset_config)),
    ]
    durations = {}
    for name, step in steps:
        started = time.perf_counter()
        print(f"== {name}", flush=True)
        step()
        durations[name] = time.perf_counter() - started
    return durations


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="small", choices=["tiny", "small", "large"])
    parser.add_argument("--workers", type=int, default=2, help="bucket runs at a time")
    parser.add_argument("--store", default=StoreResource().root, help="the assets_store folder")
    args = parser.parse_args(argv)
    config = {"generated_corpus": {"size": args.size}}
    durations = run_pipeline(args.store, args.workers, config)
    print("\nstep durations:")
    for name, seconds in durations.items():
        print(f"  {name:<18} {seconds:7.1f} s")
    print(
        f"\nshards and catalog under {args.store}; browse the runs with "
        "`make dagster` (http://localhost:3000)"
    )


if __name__ == "__main__":
    main()
