"""The training process a Dagster training asset launches through dagster-pipes.

Running out of the Dagster process means the same asset can hand this command to a GPU host
or a cluster launcher (swap the Pipes client, not the asset). Everything arrives as Pipes
extras; logs stream back into the Dagster run every `log_every` steps, and the stages'
results come back as the asset's materialization metadata. Each stage is a nested MLflow run
under the launch's parent run; with `register`, the plan's last stage registers a model version.

    python -m pipelines.launch_training    (started by the assets, never by hand)
"""

import json
import time
from dataclasses import dataclass, field
from logging import Logger
from typing import Any

import mlflow
from dagster_pipes import PipesContext, open_dagster_pipes

from omni_model.training.plans import Plan, get_plan
from omni_model.training.trainer import Callback, StageResult, TrainSettings, train_stage
from pipelines.assets.common import markdown_table
from pipelines.tracking import (
    MlflowStageLogger,
    log_shard_inputs,
    plan_run,
    register_plan_model,
    use_store,
)


@dataclass
class TrainingRequest:
    """What one launch trains: the plan variant, its stages, and where everything lives."""

    store_root: str
    shards: str
    tokenizer: str
    out: str
    launch_id: str
    stages: list[str]
    plan: str = "tiny"
    # Keyword arguments of `Plan.variant`: Talker width, MoE, side encoders (None: the plan's).
    variant: dict[str, Any] = field(default_factory=dict)
    max_steps: int | None = None
    device: str | None = None
    resume: bool = False
    register: bool = False
    log_every: int = 25
    inputs: list[dict] = field(default_factory=list)  # per task: folder, hash, rows, codec id
    tags: dict[str, str] = field(default_factory=dict)

    def plan_variant(self) -> Plan:
        return get_plan(self.plan).variant(**self.variant)


class PipesProgress(Callback):
    """A log line into the Dagster run every `every` steps (and on each stage's last step)."""

    def __init__(self, log: Logger, every: int):
        self.log, self.every = log, every
        self.total = 0
        self.stage = ""

    def on_stage_start(self, plan, stage, info: dict) -> None:
        self.total, self.stage = info["total_steps"], stage.name
        data = info["data"]
        self.log.info(
            f"{plan.name}/{stage.name}: {info['total_steps']} steps on {data.get('rows')} rows "
            f"({info['device']}, {info['trainable_parameters']:,} trainable parameters)"
        )

    def on_step(self, metrics: dict[str, float]) -> None:
        step = int(metrics["step"])
        if step % self.every and step != self.total:
            return
        self.log.info(
            f"{self.stage} step {step}/{self.total}: loss {metrics['loss']:.3f} "
            f"text {metrics['text_loss']:.3f} audio {metrics['audio_loss']:.3f} "
            f"lr {metrics['lr']:.2e} {metrics['tokens_per_s']:.0f} tokens/s"
        )


def run_request(request: TrainingRequest, log: Logger) -> dict:
    """Train the request's stages in order, each in a nested MLflow run; returns a summary."""
    plan = request.plan_variant()
    experiment_id = use_store(request.store_root)
    parent = plan_run(experiment_id, plan, request.launch_id, request.tags)
    settings = TrainSettings(
        device=request.device, max_steps=request.max_steps, progress=False, num_workers=0
    )
    summary: dict = {"plan": plan.name, "parent_run_id": parent, "stages": {}}
    for name in request.stages:
        stage = plan.stage(name)
        inputs = [item for item in request.inputs if item["task"] in (stage.task, "reference")]
        tags = {"role": "stage", "stage": name, **request.tags}
        with mlflow.start_run(parent_run_id=parent, run_name=f"{plan.name}/{name}", tags=tags):
            run_id = mlflow.active_run().info.run_id
            log_shard_inputs(inputs)
            lineage = {"mlflow_run_id": run_id, "mlflow_parent_run_id": parent, "inputs": inputs}
            result: StageResult = train_stage(
                plan,
                name,
                shards=request.shards,
                tokenizer=request.tokenizer,
                out=request.out,
                settings=settings,
                callbacks=[MlflowStageLogger(lineage), PipesProgress(log, request.log_every)],
                resume=request.resume,
            )
        summary["stages"][name] = {"mlflow_run_id": run_id, **result.to_dict()}
        if request.register and name == plan.stage_names[-1]:
            summary["model_version"] = register_plan_model(run_id, plan, result.checkpoint)
    return summary


def materialization_metadata(summary: dict) -> dict:
    """Dagster metadata: run ids, final losses, checkpoint path and durations per stage."""
    stages = summary["stages"]
    last = stages[list(stages)[-1]]
    metadata: dict = {
        "mlflow_run_id": last["mlflow_run_id"],
        "mlflow_parent_run_id": summary["parent_run_id"],
        "checkpoint": {"raw_value": last["checkpoint"], "type": "path"},
        "stage_results": {"raw_value": stages_table(stages), "type": "md"},
        "stage_seconds": {
            "raw_value": {name: result["seconds"] for name, result in stages.items()},
            "type": "json",
        },
    }
    for key, value in last["final_losses"].items():
        metadata[f"final_{key}"] = value
    if "model_version" in summary:
        metadata["model_version"] = summary["model_version"]
    return metadata


def stages_table(stages: dict) -> str:
    rows = [
        {
            "stage": name,
            "steps": result["steps"],
            "seconds": round(result["seconds"], 1),
            "first loss": result["first_losses"]["loss"],
            **{f"final {k}": v for k, v in result["final_losses"].items()},
        }
        for name, result in stages.items()
    ]
    return markdown_table(rows)


def main() -> None:
    with open_dagster_pipes() as pipes:
        request = TrainingRequest(**pipes.extras["request"])
        started = time.perf_counter()
        summary = run_request(request, pipes.log)
        seconds = time.perf_counter() - started
        pipes.log.info(f"trained {', '.join(request.stages)} in {seconds:.0f} s")
        report(pipes, summary)


def report(pipes: PipesContext, summary: dict) -> None:
    """The materialization for asset launches; sweep launches pass the summary back as a log."""
    if pipes.extras.get("report_materialization", True):
        pipes.report_asset_materialization(metadata=materialization_metadata(summary))
    else:
        pipes.report_custom_message(json.dumps(summary))


if __name__ == "__main__":
    main()
