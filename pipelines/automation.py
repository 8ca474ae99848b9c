"""Retraining on a clock and on new data; both off until switched on in the UI.

Turn either on under Automation in `dagster dev` (or `dagster schedule start
nightly_retraining` / `dagster sensor start retrain_on_new_shards`); `dagster dev` must keep
running, since its daemon launches the runs.
"""

import json

import dagster as dg

from pipelines.jobs import training_job

SHARD_ASSETS = ["text_shards", "t2a_shards", "a2a_shards", "i2t_shards"]

nightly_retraining = dg.ScheduleDefinition(
    name="nightly_retraining",
    job=training_job,
    cron_schedule="0 2 * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Retrain every stage at 02:00 from whatever shards are current.",
)


def shard_hashes(instance: dg.DagsterInstance) -> dict[str, str]:
    """The content hash of each shard asset's latest materialization (absent: never built)."""
    hashes = {}
    for name in SHARD_ASSETS:
        event = instance.get_latest_materialization_event(dg.AssetKey(name))
        if event is not None and event.asset_materialization is not None:
            value = event.asset_materialization.metadata.get("content_hash")
            if value is not None:
                hashes[name] = str(value.value)
    return hashes


@dg.sensor(
    job=training_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Retrain when any shard set's content changes (re-built but identical: no run).",
)
def retrain_on_new_shards(context: dg.SensorEvaluationContext):
    hashes = shard_hashes(context.instance)
    seen = json.loads(context.cursor) if context.cursor else {}
    changed = sorted(name for name, digest in hashes.items() if seen.get(name) != digest)
    if not changed:
        return dg.SkipReason("no shard set changed since the last training run request")
    context.update_cursor(json.dumps(hashes))
    run_key = "-".join(hashes[name][:12] for name in sorted(hashes))
    return dg.RunRequest(run_key=run_key, tags={"changed_shards": ",".join(changed)})
