"""Jobs: the data steps one at a time (how `make demo` runs them), training, and the sweep."""

import dagster as dg

corpora_job = dg.define_asset_job(
    "corpora_job", selection=dg.AssetSelection.groups("corpora"), description="Land every source."
)
speech_job = dg.define_asset_job(
    "speech_job",
    selection=dg.AssetSelection.assets("spoken_corpus"),
    description="Synthesize missing speech, one bucket per run.",
)
codec_job = dg.define_asset_job(
    "codec_job",
    selection=dg.AssetSelection.assets("speech_codec"),
    description="Fit/load the codec.",
)
codes_job = dg.define_asset_job(
    "codes_job",
    selection=dg.AssetSelection.assets("speech_codes"),
    description="Encode answer speech, one bucket per run (unchanged buckets are skipped).",
)
shards_job = dg.define_asset_job(
    "shards_job",
    selection=dg.AssetSelection.groups("text", "voices", "shards", "catalog"),
    description="Tokenizer, voices, T2A/A2A/I2T/text shards and the DuckDB catalog.",
)
image_encoder_job = dg.define_asset_job(
    "image_encoder_job",
    selection=dg.AssetSelection.groups("vision"),
    description="Pretrain the offline patch image encoder on drawn pictures.",
)
training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.assets("thinker_text", "omni_t2a", "omni_a2a", "omni_i2t"),
    description="Train every stage of the `trainer` resource's plan, from the current shards.",
)
variant_sweep_job = dg.define_asset_job(
    "variant_sweep_job",
    selection=dg.AssetSelection.assets("variant_comparison"),
    description="Train each Talker width x dense/MoE variant and compare them from MLflow.",
)
evaluation_job = dg.define_asset_job(
    "evaluation_job",
    selection=dg.AssetSelection.groups("evaluation"),
    description="Evaluate the plan's final checkpoint and write the report.",
)
JOBS = (
    corpora_job,
    speech_job,
    codec_job,
    codes_job,
    shards_job,
    image_encoder_job,
    training_job,
    evaluation_job,
    variant_sweep_job,
)
