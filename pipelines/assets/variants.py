"""The variant sweep: each Talker width and dense/MoE choice trained on the same shards.

Every variant runs the same stages through the same launcher as the training assets (its own
MLflow parent run, tagged with the sweep), and the comparison table is an MLflow search over
the sweep's runs, so it shows exactly what MLflow recorded.
"""

import dataclasses
import json
from pathlib import Path

import dagster as dg
import mlflow
import polars as pl
import pyarrow as pa

from omni_model.evaluation.evaluate import evaluate_checkpoint
from omni_model.evaluation.probes import ProbeItem
from omni_model.quantization import Codec
from omni_model.text.tokenizer import ChatTokenizer
from pipelines.assets.common import preview_table
from pipelines.assets.evaluation import log_evaluation
from pipelines.assets.shards import ShardSet
from pipelines.assets.text import TokenizerFile
from pipelines.assets.training import TrainerResource, launch
from pipelines.resources import CodecResource, StoreResource
from pipelines.sources.probes import t2a_probes
from pipelines.storage import write_parquet
from pipelines.tracking import LINEAGE_FILE, use_store

SHARD_ASSETS = ["text_shards", "t2a_shards", "a2a_shards", "i2t_shards", "reference_shards"]
COMPARED_METRICS = [
    "final_loss",
    "final_text_loss",
    "final_audio_loss",
    "validation_loss",
    "validation_text_loss",
    "validation_audio_loss",
    "stage_seconds",
    "eval/t2a/exact_match",
    "eval/t2a/probe_exact_match",
    "eval/t2a/token_accuracy",
    "eval/speech/cer",
    "eval/speech/asr_floor_cer",
    "eval/speech/codec_floor_cer",
    "eval/speech/heard_whole",
    "eval/voice/similarity_seen",
]


class SweepConfig(dg.Config):
    """Which variants, and how long each trains (a sweep compares, it does not finish a plan)."""

    talker_widths: list[int] = [384, 512, 768]
    moe: list[bool] = [False, True]
    stages: list[str] = ["text", "t2a"]
    max_steps: int | None = 40  # per stage; None: the plan's own lengths
    eval_probes: int = 8  # T2A probes each variant answers (its metrics join the table); 0: none


def evaluate_variant(
    checkpoint: Path, items: list[ProbeItem], tokenizer: ChatTokenizer, codec: Codec
) -> None:
    """T2A probes on one variant's checkpoint, logged to the run that trained it."""
    run_id = json.loads((checkpoint / LINEAGE_FILE).read_text())["mlflow_run_id"]
    evaluation = evaluate_checkpoint(checkpoint, items, tokenizer, codec)
    items_path = checkpoint.parent.parent / "evaluation" / "items.parquet"
    write_parquet(pa.Table.from_pylist(evaluation.rows()), items_path)
    log_evaluation(run_id, evaluation, items_path)


def comparison_table(sweep_id: str, stage: str) -> pl.DataFrame:
    """One row per variant: its size and `stage`'s final and validation metrics."""
    runs = mlflow.search_runs(
        filter_string=f"tags.sweep_id = '{sweep_id}' and tags.stage = '{stage}'",
        order_by=["start_time ASC"],
    )
    if runs.empty:
        raise dg.Failure(f"sweep {sweep_id}: MLflow holds no `{stage}` runs")
    columns = {
        "tags.variant": "variant",
        "params.talker_hidden": "talker_hidden",
        "params.moe": "moe",
        "params.trainable_parameters": "trainable_parameters",
        "run_id": "mlflow_run_id",
    } | {f"metrics.{name}": name for name in COMPARED_METRICS}
    present = {source: name for source, name in columns.items() if source in runs.columns}
    return pl.from_pandas(runs[list(present)].rename(columns=present))


@dg.asset(
    group_name="training",
    ins={name: dg.AssetIn() for name in ["chat_tokenizer", *SHARD_ASSETS]},
    kinds={"pytorch", "mlflow"},
    description="Talker 384/512/768 x dense/MoE on the same shards, compared from MLflow.",
)
def variant_comparison(
    context: dg.AssetExecutionContext,
    config: SweepConfig,
    store: StoreResource,
    trainer: TrainerResource,
    codec: CodecResource,
    pipes_subprocess_client: dg.PipesSubprocessClient,
    chat_tokenizer: TokenizerFile,
    **shards: ShardSet,
) -> dg.MaterializeResult:
    sweep_id = context.run.run_id
    probes = t2a_probes()[: config.eval_probes]
    tokenizer = ChatTokenizer.load(chat_tokenizer.path)
    for width in config.talker_widths:
        for moe in config.moe:
            variant = trainer.variant_name(width, moe)
            request = trainer.request(store, f"{sweep_id}/{variant}", config.stages,
                                      chat_tokenizer, [*shards.values()])  # fmt: skip
            request = dataclasses.replace(
                request,
                variant=request.variant | {"talker_hidden": width, "moe": moe},
                max_steps=config.max_steps,
                out=str(store.path("training", "sweeps", sweep_id, variant)),
                register=False,
                tags=request.tags | {"sweep_id": sweep_id, "variant": variant},
            )
            context.log.info(f"sweep: training {variant} ({', '.join(config.stages)})")
            launch(pipes_subprocess_client, context, request, report_materialization=False)
            if probes:
                use_store(store.path())
                checkpoint = Path(request.out, config.stages[-1], "final")
                evaluate_variant(checkpoint, probes, tokenizer, codec.load(store))
    use_store(store.path())
    table = comparison_table(sweep_id, config.stages[-1])
    path = store.path("training", "sweeps", sweep_id, "comparison.parquet")
    write_parquet(table.to_arrow(), path)
    # A MaterializeResult, not a value: an asset that opened Pipes sessions reports through
    # events. Readers find the table at the `path` in this metadata.
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "variants": len(table),
            "comparison": preview_table(table.to_dicts(), limit=len(table)),
            "sweep_id": sweep_id,
        }
    )
