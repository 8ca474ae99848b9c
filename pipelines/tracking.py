"""MLflow: where runs are recorded, and what every training run records.

The default store is embedded (SQLite under `assets_store/mlflow/`, artifacts beside it), so
nothing needs a server; `MLFLOW_TRACKING_URI` points everything at one instead.

One launch of a plan is a parent run; each stage is a nested run holding the stage's params
(plan, stage, full model config), per-step metrics, its dataset inputs (one per shard set:
content hash, rows, codec id) and its final checkpoint as artifacts. A completed plan becomes a
version of the registered model `tiny-omni-{plan}`.
"""

import json
import os
from collections.abc import Mapping
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.data.dataset_source_registry import _dataset_source_registry, resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset

from omni_model.training.plans import Plan, Stage
from omni_model.training.trainer import Callback, StageResult

EXPERIMENT = "tiny-omni"
# MLflow registers its local-folder source class twice and warns that a path is ambiguous.
LOCAL_SOURCE = next(
    source
    for source in _dataset_source_registry.sources
    if source.__name__ == "LocalArtifactDatasetSource"
)
LINEAGE_FILE = "lineage.json"  # written into each final checkpoint folder


def tracking_uri(store_root: str | Path) -> str:
    """`MLFLOW_TRACKING_URI` if set, else the embedded SQLite store under the asset store."""
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        return uri
    folder = Path(store_root, "mlflow").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def use_store(store_root: str | Path, experiment: str = EXPERIMENT) -> str:
    """Point MLflow at the store's tracking database; returns the experiment id."""
    mlflow.set_tracking_uri(tracking_uri(store_root))
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        experiment_id = found.experiment_id
    else:
        artifacts = Path(store_root, "mlflow", "artifacts").resolve().as_uri()
        experiment_id = mlflow.create_experiment(experiment, artifact_location=artifacts)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def flatten(values: Mapping, prefix: str = "") -> dict[str, str]:
    """Nested dicts as dotted MLflow params (lists and scalars as their JSON text)."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return flat


def plan_run(experiment_id: str, plan: Plan, launch_id: str, tags: Mapping[str, str]) -> str:
    """The parent run of this launch of `plan`, created by the first stage that asks."""
    found = mlflow.search_runs(
        [experiment_id],
        filter_string=f"tags.role = 'plan' and tags.launch_id = '{launch_id}'",
        output_format="list",
    )
    if found:
        return found[0].info.run_id
    run_tags = {"role": "plan", "launch_id": launch_id, "plan": plan.name, **tags}
    client = MlflowClient()
    run = client.create_run(experiment_id, tags=run_tags, run_name=plan.name)
    params = {"plan": plan.name, **plan.variant_params}
    for key, value in params.items():
        client.log_param(run.info.run_id, key, str(value))
    return run.info.run_id


def log_shard_inputs(inputs: list[dict], context: str = "training") -> None:
    """One MLflow dataset input per shard set: its folder, content hash, rows and codec id."""
    for item in inputs:
        dataset = MetaDataset(
            resolve_dataset_source(item["folder"], candidate_sources=[LOCAL_SOURCE]),
            name=f"{item['task']}_shards",
            digest=item["content_hash"],
        )
        tags = {"rows": str(item["rows"]), "codec_id": item["codec_id"] or "none"}
        mlflow.log_input(dataset, context=context, tags=tags)


class MlflowStageLogger(Callback):
    """Logs one stage into the active MLflow run (the trainer knows nothing of MLflow)."""

    def __init__(self, lineage: Mapping, log_checkpoint: bool = True):
        self.lineage = lineage  # written beside the final weights, so a checkpoint names its run
        self.log_checkpoint = log_checkpoint
        self.config_logged = False

    def on_stage_start(self, plan: Plan, stage: Stage, info: dict) -> None:
        stage_params = {k: v for k, v in stage.__dict__.items() if k != "name"}
        mlflow.log_params(
            flatten({"plan": plan.name, "preset": plan.preset, "stage": stage.name})
            | flatten(stage_params, "stage.")
            | flatten(plan.variant_params)
            | flatten({k: info[k] for k in ("total_steps", "device", "world_size")})
            | {"trainable_parameters": str(info["trainable_parameters"])}
        )

    def on_step(self, metrics: dict[str, float]) -> None:
        step = int(metrics["step"])
        mlflow.log_metrics({k: v for k, v in metrics.items() if k != "step"}, step=step)

    def on_checkpoint(self, path: Path) -> None:
        if self.config_logged:
            return
        meta = json.loads((path / "checkpoint.json").read_text())
        mlflow.log_params(flatten(meta["config"], "config."))
        mlflow.set_tags({"tokenizer_id": meta["tokenizer_id"], "codec_id": meta["codec_id"]})
        self.config_logged = True

    def on_stage_end(self, result: StageResult) -> None:
        summary = {f"final_{k}": v for k, v in result.final_losses.items()}
        summary |= {f"first_{k}": v for k, v in result.first_losses.items()}
        summary |= {f"validation_{k}": v for k, v in result.validation.items()}
        mlflow.log_metrics(summary | {"stage_seconds": result.seconds})
        write_lineage(result.checkpoint, self.lineage)
        if self.log_checkpoint:
            mlflow.log_artifacts(result.checkpoint, artifact_path="checkpoint")


def write_lineage(checkpoint: str | Path, lineage: Mapping) -> None:
    """Beside the weights: the MLflow run and the datasets they were trained on."""
    Path(checkpoint, LINEAGE_FILE).write_text(json.dumps(dict(lineage), indent=2))


def register_plan_model(run_id: str, plan: Plan, checkpoint: str) -> int:
    """A version of `tiny-omni-{plan}` pointing at the last stage's logged checkpoint."""
    client = MlflowClient()
    name = f"tiny-omni-{plan.name}"
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name, description=f"Completed `{plan.name}` plans.")
    source = f"{mlflow.get_run(run_id).info.artifact_uri}/checkpoint"
    tags = {"checkpoint": checkpoint, **plan.variant_params}
    return int(client.create_model_version(name, source, run_id=run_id, tags=flatten(tags)).version)
