"""Evaluation: does the trained model listen, see and speak correctly?

`model_evaluation` asks the plan's final checkpoint the fixed probe set (T2A questions, A2A
questions in unseen voices, I2T pictures of held-out colour/shape pairs) and the pipeline's
held-out validation rows, scores every reply (text match, speech CER/WER through the ASR
beside the ASR's own floor, MCD, voice similarity) and logs the metrics to the checkpoint's
MLflow run. `evaluation_report` turns that into a markdown/HTML report with plots.
"""

import dataclasses
import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import dagster as dg
import mlflow
import pyarrow as pa
import pyarrow.parquet as pq

from omni_model.evaluation.asr import AsrConstraint, build_transcriber
from omni_model.evaluation.evaluate import EVAL_SAMPLING, Evaluation, evaluate_checkpoint
from omni_model.evaluation.probes import ProbeItem, item_from_row
from omni_model.text.tokenizer import ChatTokenizer
from omni_model.training.plans import get_plan
from pipelines.assets.common import markdown_table
from pipelines.assets.shards import ShardSet
from pipelines.assets.text import TokenizerFile
from pipelines.assets.training import TrainerResource
from pipelines.report import write_report
from pipelines.resources import CodecResource, StoreResource
from pipelines.sources.probes import probe_set
from pipelines.storage import write_parquet
from pipelines.tracking import LINEAGE_FILE, use_store

EVALUATED_SHARDS = ("t2a_shards", "a2a_shards", "i2t_shards")
# Issue 7's targets for the demo model, on the fixed probe sets
TARGETS = {"t2a/probe_exact_match": 0.80, "i2t/probe_exact_match": 0.70}  # at least
SPEECH_CER_TARGET = 0.25  # at most


class EvaluationConfig(dg.Config):
    """How much to ask beyond the probes, and which ASR reads the speech."""

    probes_per_task: int | None = None  # None: the whole probe set (smoke runs ask fewer)
    held_out_per_task: int = 10  # validation rows per task asked beside the probe set
    # Each question is asked under sampling seeds 0..n-1 and the metrics pool the replies:
    # one seed's speech CER over the 16 T2A probes varies by about 0.1 from seed to seed.
    sampling_seeds: int = 3
    # Codebooks 1..7 decode as their expected entries at this temperature (offline codec;
    # `SamplingSettings.acoustic_expectation_temperature`); 0: the sampled codes.
    acoustic_expectation: float = EVAL_SAMPLING.acoustic_expectation_temperature or 0.0
    whisper_model: str | None = None  # a local Whisper checkpoint; None: offline pocketsphinx
    # pocketsphinx hears the evaluated texts as whole sentences, or as a trigram model of them
    asr_constraint: AsrConstraint = "sentences"
    device: str | None = None


@dataclass
class EvaluationResult:
    checkpoint: str
    mlflow_run_id: str
    items_path: str
    metrics: dict[str, float]
    transcriber: str


def held_out_items(shard_sets: list[ShardSet], per_task: int) -> list[ProbeItem]:
    """The first `per_task` single-turn validation rows of each task, as probe items."""
    items: list[ProbeItem] = []
    for shard_set in shard_sets:
        taken = 0
        for path in shard_set.paths:
            if taken == per_task or not Path(path).name.startswith("validation"):
                continue
            for row in pq.read_table(path).to_pylist():
                item = item_from_row(row)
                if item is not None and taken < per_task:
                    items.append(item)
                    taken += 1
    return items


def first_per_task(items: list[ProbeItem], limit: int | None) -> list[ProbeItem]:
    """The first `limit` items of each task, in order (all of them when `limit` is None)."""
    taken: dict[str, int] = {}
    kept = []
    for item in items:
        if limit is None or taken.get(item.task, 0) < limit:
            kept.append(item)
            taken[item.task] = taken.get(item.task, 0) + 1
    return kept


def final_checkpoint(store: StoreResource, trainer: TrainerResource) -> Path:
    """The plan's last stage's final checkpoint, which every ability has gone through."""
    last = get_plan(trainer.plan).stage_names[-1]
    path = store.path("training", trainer.variant_name(), last, "final")
    if not (path / LINEAGE_FILE).is_file():
        raise dg.Failure(f"{path}: no trained checkpoint with lineage; materialize training first")
    return path


def log_evaluation(run_id: str, evaluation: Evaluation, items_path: Path) -> None:
    """Metrics into the checkpoint's run (and its plan's parent run), items as an artifact."""
    run = mlflow.get_run(run_id)
    for target in (run_id, run.data.tags.get("mlflow.parentRunId")):
        if target is None:
            continue
        with mlflow.start_run(run_id=target):
            mlflow.log_metrics({f"eval/{key}": value for key, value in evaluation.metrics.items()})
            mlflow.set_tags(
                {
                    "eval.transcriber": evaluation.transcriber,
                    "eval.acoustic_expectation": str(
                        evaluation.sampling.acoustic_expectation_temperature
                    ),
                }
            )
    with mlflow.start_run(run_id=run_id):
        mlflow.log_artifact(str(items_path), artifact_path="evaluation")


def target_rows(metrics: dict[str, float]) -> list[dict]:
    """The demo's targets beside the measured values."""
    rows = [
        {"metric": key, "value": metrics.get(key), "target": f">= {goal}"}
        for key, goal in TARGETS.items()
    ]
    rows.append(
        {
            "metric": "speech/cer",
            "value": metrics.get("speech/cer"),
            "target": f"<= {SPEECH_CER_TARGET}",
        }
    )
    return rows


@dg.asset(
    group_name="evaluation",
    deps=["omni_i2t"],
    ins={name: dg.AssetIn() for name in ["chat_tokenizer", *EVALUATED_SHARDS]},
    kinds={"pytorch", "mlflow"},
    description="Probe set + held-out rows: text match, speech CER vs ASR floor, MCD, voices.",
)
def model_evaluation(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    store: StoreResource,
    codec: CodecResource,
    trainer: TrainerResource,
    chat_tokenizer: TokenizerFile,
    **shards: ShardSet,
) -> EvaluationResult:
    if config.sampling_seeds < 1:
        raise dg.Failure(f"sampling_seeds {config.sampling_seeds}: ask each question at least once")
    checkpoint = final_checkpoint(store, trainer)
    lineage = json.loads((checkpoint / LINEAGE_FILE).read_text())
    items = first_per_task(probe_set(), config.probes_per_task)
    items += held_out_items(list(shards.values()), config.held_out_per_task)
    asr = partial(
        build_transcriber, whisper_model=config.whisper_model, constraint=config.asr_constraint
    )
    context.log.info(
        f"evaluating {checkpoint} on {len(items)} items x {config.sampling_seeds} sampling seeds"
    )
    evaluation = evaluate_checkpoint(
        checkpoint,
        items,
        ChatTokenizer.load(chat_tokenizer.path),
        codec.load(store),
        asr=asr,
        sampling=dataclasses.replace(
            EVAL_SAMPLING, acoustic_expectation_temperature=config.acoustic_expectation or None
        ),
        seeds=range(config.sampling_seeds),
        device=config.device or "cpu",
    )
    folder = store.path("evaluation", trainer.variant_name(), lineage["mlflow_run_id"])
    items_path = write_parquet(pa.Table.from_pylist(evaluation.rows()), folder / "items.parquet")
    (folder / "metrics.json").write_text(json.dumps(evaluation.metrics, indent=2))
    use_store(store.path())
    log_evaluation(lineage["mlflow_run_id"], evaluation, items_path)
    metrics = evaluation.metrics
    context.add_output_metadata(
        {
            "checkpoint": dg.MetadataValue.path(str(checkpoint)),
            "mlflow_run_id": lineage["mlflow_run_id"],
            "items": len(items),
            "sampling_seeds": config.sampling_seeds,
            "acoustic_expectation": config.acoustic_expectation,
            "transcriber": evaluation.transcriber,
            "targets": dg.MetadataValue.md(markdown_table(target_rows(metrics))),
            "metrics": dg.MetadataValue.md(
                markdown_table([{"metric": k, "value": v} for k, v in metrics.items()])
            ),
        }
    )
    return EvaluationResult(
        str(checkpoint), lineage["mlflow_run_id"], str(items_path), metrics, evaluation.transcriber
    )


@dg.asset(
    group_name="evaluation",
    kinds={"mlflow"},
    description="Markdown/HTML report: metrics vs targets, loss curves, CER by length, voices.",
)
def evaluation_report(
    context: dg.AssetExecutionContext, store: StoreResource, model_evaluation: EvaluationResult
) -> str:
    use_store(store.path())
    folder = Path(model_evaluation.items_path).parent / "report"
    markdown = write_report(model_evaluation, folder)
    with mlflow.start_run(run_id=model_evaluation.mlflow_run_id):
        mlflow.log_artifacts(str(folder), artifact_path="evaluation/report")
    context.add_output_metadata(
        {
            "report": dg.MetadataValue.path(str(folder / "report.html")),
            "summary": dg.MetadataValue.md(markdown),
        }
    )
    return str(folder / "report.html")
