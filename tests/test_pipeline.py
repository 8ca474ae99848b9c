"""The data pipeline end to end, in process, on the tiny corpus plus a seeded local corpus."""

from __future__ import annotations

import io
import json
from pathlib import Path

import dagster as dg
import duckdb
import mlflow
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
from conftest import GOOD_CLIPS, STEPS
from mlflow import MlflowClient
from PIL import Image
from safetensors.torch import load_file

from omni_model.quantization import load_codec
from omni_model.quantization.phonetic import PHONES
from omni_model.text import ChatTokenizer
from omni_model.training.checkpoint import read_meta
from omni_model.training.plans import tiny_plan
from pipelines.assets.shards import REFERENCE_COLUMNS, SHARD_SCHEMA
from pipelines.automation import SHARD_ASSETS, shard_hashes
from pipelines.definitions import make_definitions
from pipelines.resources import StoreResource
from pipelines.run import run_buckets, run_job
from pipelines.storage import atomic_path, content_hash, write_parquet
from pipelines.tracking import use_store

pytestmark = pytest.mark.slow


def shard_rows(store: Path, task: str) -> list[dict]:
    return [
        row
        for p in sorted((store / "shards" / task).glob("*.parquet"))
        for row in pq.read_table(p).to_pylist()
    ]


def test_shards_carry_the_reference_columns_and_types(store):
    for task in ("t2a", "a2a", "i2t", "text"):
        paths = sorted((store / "shards" / task).glob("*.parquet"))
        assert paths, task
        schema = pq.read_schema(paths[0])
        for name, kind in REFERENCE_COLUMNS.items():
            assert schema.field(name).type == kind, (task, name)
        assert schema.names == SHARD_SCHEMA.names


def test_a_t2a_row_decodes_to_audio_of_its_length_and_its_text_round_trips(store):
    row = shard_rows(store, "t2a")[0]
    manifest = json.loads((store / "codecs" / "current.json").read_text())
    codec = load_codec(manifest["kind"], manifest["weights"])
    assert row["codec_id"] == codec.codec_id == manifest["codec_id"]
    assert codec.tagger is not None  # the tiny pipeline fits a phonetic first stage
    frames = 0
    for turn_codes in row["answer_audios"]:
        codes = torch.tensor(turn_codes).view(-1, 8).T[None]  # (1, 8, F)
        assert int(codes[0, 0].max()) < len(PHONES)  # first codes name phones
        audio, lengths = codec.decode(codes)
        assert codes.shape[-1] * 1920 == audio.shape[-1] == int(lengths[0])
        frames += codes.shape[-1]
    assert frames == row["frames"]
    assert abs(frames - row["duration_s"] * 12.5) <= len(row["answer_audios"])
    assert len(row["ref_audios"]) % 8 == 0 and len(row["ref_audios"]) > 0
    assert len(row["spk_emb"]) == 256
    tokenizer_path = next((store / "tokenizer").glob("*.json"))
    tokenizer = ChatTokenizer.load(tokenizer_path)
    for turn in json.loads(row["conversations"]):
        assert tokenizer.decode(tokenizer.encode(turn["content"])) == turn["content"]


def test_a2a_rows_carry_one_question_clip_per_user_turn(store):
    for row in shard_rows(store, "a2a"):
        users = [t for t in json.loads(row["conversations"]) if t["role"] == "user"]
        assert len(row["question_audios"]) == len(users)
        audio, rate = sf.read(io.BytesIO(row["question_audios"][0]))
        assert rate == 24_000 and len(audio) > 0


def test_i2t_images_open(store):
    rows = shard_rows(store, "i2t")
    assert rows
    for row in rows:
        with Image.open(io.BytesIO(row["image_bytes"])) as image:
            assert min(image.size) > 0
        assert "<image>" in row["conversations"]


def test_catalog_counts_agree_with_shards_and_quarantine_names_every_bad_input(store):
    with duckdb.connect(str(store / "catalog.duckdb"), read_only=True) as db:
        catalog_rows = db.execute("SELECT sum(rows) FROM summary").fetchone()[0]
        reasons = db.execute("SELECT key, reason FROM quarantine").fetchall()
        leaked = db.execute(
            "SELECT count(*) FROM (SELECT sample_id FROM samples GROUP BY 1 "
            "HAVING count(DISTINCT split) > 1)"
        ).fetchone()[0]
    shard_total = sum(len(shard_rows(store, t)) for t in ("t2a", "a2a", "i2t", "text"))
    assert catalog_rows == shard_total
    assert leaked == 0
    keys = " ".join(key for key, _ in reasons)
    for bad in ("corrupt", "orphan", "empty", "#line2", "#line3"):
        assert bad in keys, (bad, reasons)
    local_good = [r for r in shard_rows(store, "t2a") if r["source"].startswith("speech:")]
    assert sorted(json.loads(r["conversations"])[-1]["content"] for r in local_good) == sorted(
        GOOD_CLIPS
    )


def test_rematerializing_unchanged_input_reuses_codes_and_gives_identical_shards(store):
    before = content_hash(list((store / "shards").rglob("*.parquet")))
    result = run_job(str(store), "codes_job", partition_key="bucket-0")
    materializations = result.asset_materializations_for_node("speech_codes")
    assert [m.metadata["reused"].value for m in materializations] == [True]
    run_buckets(str(store), "codes_job", workers=1)
    run_job(str(store), "shards_job")
    assert content_hash(list((store / "shards").rglob("*.parquet"))) == before


def test_a_write_killed_midway_leaves_the_old_file_and_no_partial_one(tmp_path):
    path = tmp_path / "train-00000.parquet"
    write_parquet(pa.table({"x": [1, 2]}), path)
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as temporary:
        temporary.write_bytes(b"half a parquet file")
        raise KeyboardInterrupt
    assert pq.read_table(path)["x"].to_pylist() == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_training_assets_report_their_mlflow_runs_and_checkpoints(store, trained):
    assert set(trained) == {"thinker_text", "omni_t2a", "omni_a2a", "omni_i2t"}
    for name, metadata in trained.items():
        checkpoint = Path(metadata["checkpoint"].value)
        assert checkpoint.is_relative_to(store / "training" / "tiny"), name
        lineage = json.loads((checkpoint / "lineage.json").read_text())
        assert lineage["mlflow_run_id"] == metadata["mlflow_run_id"].value
        assert metadata["final_loss"].value > 0
    assert trained["omni_a2a"]["checkpoint"].value.endswith("a2a/final")
    assert trained["omni_i2t"]["model_version"].value == 1
    # Every stage reads images through the pretrained encoder file, frozen and not copied.
    (encoder_file,) = (store / "encoders").glob("patch-*.safetensors")
    for metadata in trained.values():
        checkpoint = Path(metadata["checkpoint"].value)
        assert read_meta(checkpoint)["encoders"]["patch_model"] == str(encoder_file)
        weights = load_file(str(checkpoint / "model.safetensors"))
        assert not [key for key in weights if key.startswith("image_encoder.")]


def test_mlflow_holds_one_plan_run_with_a_nested_run_per_stage(store, trained):
    use_store(store)
    client = MlflowClient()
    (parent,) = mlflow.search_runs(filter_string="tags.role = 'plan'", output_format="list")
    stages = mlflow.search_runs(
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'", output_format="list"
    )
    assert sorted(run.data.tags["stage"] for run in stages) == sorted(tiny_plan().stage_names)
    for run in stages:
        stage = tiny_plan().stage(run.data.tags["stage"])
        assert run.data.params["plan"] == "tiny"
        assert int(run.data.params["config.thinker.hidden"]) > 0
        history = client.get_metric_history(run.info.run_id, "loss")
        assert [point.step for point in history] == list(range(1, STEPS + 1))
        assert {f"audio_loss_cb{i}" for i in range(8)} <= set(run.data.metrics)
        inputs = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}
        task_shards = sorted((store / "shards" / stage.task).glob("*.parquet"))
        assert inputs == {f"{stage.task}_shards": content_hash(task_shards)}
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")}
        assert "checkpoint/model.safetensors" in artifacts
    (version,) = client.search_model_versions("name = 'tiny-omni-tiny'")
    i2t = next(run for run in stages if run.data.tags["stage"] == "i2t")
    assert version.run_id == i2t.info.run_id


def test_retraining_sensor_fires_once_per_change_of_shard_content(store, trained):
    definitions = make_definitions(StoreResource(root=str(store)))
    sensor = definitions.resolve_sensor_def("retrain_on_new_shards")
    instance = dg.DagsterInstance.get()
    first = sensor(dg.build_sensor_context(instance=instance, definitions=definitions))
    assert isinstance(first, dg.RunRequest)
    assert set(first.tags["changed_shards"].split(",")) == set(SHARD_ASSETS)
    cursor = shard_hashes(instance)
    again = sensor(dg.build_sensor_context(instance=instance, cursor=json.dumps(cursor)))
    assert isinstance(again, dg.SkipReason)
    instance.report_runless_asset_event(
        dg.AssetMaterialization("t2a_shards", metadata={"content_hash": "changed"})
    )
    changed = sensor(dg.build_sensor_context(instance=instance, cursor=json.dumps(cursor)))
    assert changed.tags["changed_shards"] == "t2a_shards"


def test_variant_sweep_compares_each_variant_from_mlflow(store, trained):
    sweep = {
        "talker_widths": [64, 96],
        "moe": [False],
        "stages": ["text", "t2a"],
        "max_steps": 2,
        "eval_probes": 1,
    }
    result = run_job(str(store), "variant_sweep_job", {"variant_comparison": sweep})
    (event,) = result.get_asset_materialization_events()
    table = pq.read_table(event.materialization.metadata["path"].value).to_pylist()
    assert [row["variant"] for row in table] == ["tiny-talker64", "tiny-talker96"]
    assert [row["talker_hidden"] for row in table] == ["64", "96"]
    assert int(table[0]["trainable_parameters"]) < int(table[1]["trainable_parameters"])
    assert all(row["final_audio_loss"] > 0 for row in table)
    assert all(0.0 <= row["eval/t2a/exact_match"] <= 1.0 for row in table)


def test_evaluation_logs_to_the_checkpoints_run_and_writes_the_report(store, trained):
    config = {
        "model_evaluation": {
            "probes_per_task": 2,
            "held_out_per_task": 1,
            "sampling_seeds": 2,
            "acoustic_expectation": 0.25,
        }
    }
    result = run_job(str(store), "evaluation_job", config)
    evaluated = result.output_for_node("model_evaluation")
    assert evaluated.mlflow_run_id == trained["omni_i2t"]["mlflow_run_id"].value
    for task in ("t2a", "a2a", "i2t"):
        assert 0.0 <= evaluated.metrics[f"{task}/exact_match"] <= 1.0
        assert evaluated.metrics[f"{task}/items"] >= 2
    items = pq.read_table(evaluated.items_path).to_pylist()
    questions = sum(evaluated.metrics[f"{t}/items"] for t in ("t2a", "a2a", "i2t"))
    assert [item["seed"] for item in items] == [0] * int(questions) + [1] * int(questions)
    use_store(store)
    run = mlflow.get_run(evaluated.mlflow_run_id).data
    assert run.metrics["eval/t2a/exact_match"] == evaluated.metrics["t2a/exact_match"]
    assert run.tags["eval.acoustic_expectation"] == "0.25"
    report = Path(result.output_for_node("evaluation_report"))
    for name in ("loss_curves.png", "cer_by_length.png", "similarity_by_voice.png"):
        assert (report.parent / name).stat().st_size > 1000, name
    assert "<h2>Metrics</h2>" in report.read_text()
    wrong = [i for i in items if not i["held_out"] and not i["exact_match"] and i["seed"] == 0]
    listed = (report.parent / "report.md").read_text().split("## Probes answered wrong")[1]
    assert listed.count("\n| ") == (1 + len(wrong) if wrong else 0)  # header, then a row each
    assert all(item["question"][:40] in listed for item in wrong)
    artifacts = MlflowClient().list_artifacts(evaluated.mlflow_run_id, "evaluation/report")
    assert {a.path.rsplit("/", 1)[-1] for a in artifacts} >= {"report.html", "report.md"}
