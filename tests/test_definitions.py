"""The code location `dagster dev` loads: what it holds and how it is wired."""

import importlib
import tomllib
from pathlib import Path

import dagster as dg
import pytest

from pipelines.assets.text import TokenizerFile
from pipelines.assets.training import TrainerResource
from pipelines.definitions import defs
from pipelines.partitions import BUCKETS, NUM_BUCKETS, bucket_of, split_of
from pipelines.resources import StoreResource

ROOT = Path(__file__).resolve().parent.parent


def test_pyproject_points_dagster_at_these_definitions():
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]
    module = importlib.import_module(settings["module_name"])
    assert isinstance(module.defs, dg.Definitions)


def test_every_shard_asset_and_source_has_a_check_and_buckets_partition_the_heavy_steps():
    graph = defs.resolve_asset_graph()
    checked = {key.asset_key.to_user_string() for key in graph.asset_check_keys}
    for name in (
        "t2a_shards",
        "a2a_shards",
        "i2t_shards",
        "text_shards",
        "dataset_catalog",
        "generated_corpus",
        "local_corpus",
        "webdataset_corpus",
        "spoken_corpus",
        "speech_codes",
        "chat_tokenizer",
    ):
        assert name in checked, name
    for name in ("spoken_corpus", "speech_codes"):
        assert graph.get(dg.AssetKey(name)).partitions_def == BUCKETS


def test_buckets_and_splits_depend_on_the_id_alone_and_spread():
    ids = [f"generated/t2a-{i}" for i in range(2000)]
    buckets = [bucket_of(i) for i in ids]
    assert buckets == [bucket_of(i) for i in ids]
    counts = [buckets.count(f"bucket-{b}") for b in range(NUM_BUCKETS)]
    assert min(counts) > 2000 / NUM_BUCKETS * 0.8
    validation = sum(split_of(i) == "validation" for i in ids) / len(ids)
    assert 0.03 < validation < 0.07


def test_training_follows_the_shards_and_automation_starts_switched_off():
    graph = defs.resolve_asset_graph()
    upstream = {
        name: {key.to_user_string() for key in graph.get(dg.AssetKey(name)).parent_keys}
        for name in ("thinker_text", "omni_t2a", "omni_a2a", "omni_i2t")
    }
    assert {"text_shards", "patch_image_encoder"} <= upstream["thinker_text"]
    assert {"t2a_shards", "thinker_text"} <= upstream["omni_t2a"]
    assert {"a2a_shards", "omni_t2a"} <= upstream["omni_a2a"]
    assert {"i2t_shards", "omni_a2a"} <= upstream["omni_i2t"]
    assert defs.resolve_job_def("training_job") is not None
    schedule = defs.resolve_schedule_def("nightly_retraining")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    sensor = defs.resolve_sensor_def("retrain_on_new_shards")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED


def test_trainer_config_names_the_variant_and_reaches_the_launched_plan(tmp_path):
    trainer = TrainerResource(talker_hidden=512, audio_encoder="whisper", whisper_model="/m/b.pt")
    assert trainer.variant_name() == "tiny-talker512-whisper"
    assert TrainerResource(image_encoder="patch").variant_name() == "tiny"
    aligned = TrainerResource(text_layout="aligned")
    assert aligned.variant_name() == "tiny-aligned"
    assert aligned.variant()["text_layout"] == "aligned"
    reading = TrainerResource(letter_window=7)
    assert reading.variant_name() == "tiny-letters7"
    assert reading.variant()["letter_window"] == 7
    tokenizer = TokenizerFile(str(tmp_path / "tokenizer.json"), "tok-1", 400)
    request = trainer.request(StoreResource(root=str(tmp_path)), "run-1", ["t2a"], tokenizer, [])
    assert request.out.endswith("training/tiny-talker512-whisper")
    plan = request.plan_variant()  # what the launched process trains
    assert (plan.talker_hidden, plan.moe) == (512, False)
    assert (plan.encoders.audio, plan.encoders.whisper_model) == ("whisper", "/m/b.pt")
    assert plan.encoders.image == "patch"


def test_only_a_plan_reading_images_through_the_patch_encoder_asks_for_the_pretrained_one():
    instance = dg.DagsterInstance.ephemeral()
    siglip = TrainerResource(image_encoder="siglip")
    assert not siglip.uses_pretrained_patch_encoder()
    assert siglip.pretrained_patch_encoder(instance) is None
    scratch = TrainerResource(pretrained_image_encoder=False)
    assert scratch.pretrained_patch_encoder(instance) is None
    with pytest.raises(dg.Failure, match="materialize `patch_image_encoder`"):
        TrainerResource().pretrained_patch_encoder(instance)
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            "patch_image_encoder",
            metadata={"encoder_file": dg.MetadataValue.path("/store/encoders/patch-1.safetensors")},
        )
    )
    found = TrainerResource().pretrained_patch_encoder(instance)
    assert found == "/store/encoders/patch-1.safetensors"
    tokenizer = TokenizerFile("/store/tokenizer.json", "tok-1", 400)
    store = StoreResource(root="/store")
    request = TrainerResource().request(store, "run-1", ["text"], tokenizer, [], found)
    assert request.plan_variant().encoders.patch_model == found


def test_evaluation_config_refuses_an_unknown_asr_constraint_before_any_run():
    job = defs.resolve_job_def("evaluation_job")

    def run_config(constraint: str) -> dict:
        return {"ops": {"model_evaluation": {"config": {"asr_constraint": constraint}}}}

    validated = dg.validate_run_config(job, run_config("trigram"))
    assert validated["ops"]["model_evaluation"]["config"]["asr_constraint"] == "trigram"
    with pytest.raises(dg.DagsterInvalidConfigError, match="asr_constraint"):
        dg.validate_run_config(job, run_config("bigram"))
