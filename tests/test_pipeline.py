"""The data pipeline end to end, in process, on the tiny corpus plus a seeded local corpus."""

from __future__ import annotations

import io
import json
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
from PIL import Image

from omni_model.quantization import load_codec
from omni_model.text import ChatTokenizer
from omni_model.tts import synthesize
from pipelines.assets.shards import REFERENCE_COLUMNS, SHARD_SCHEMA
from pipelines.run import run_buckets, run_job, run_pipeline
from pipelines.storage import atomic_path, content_hash, write_parquet

pytestmark = pytest.mark.slow

TINY = {
    "generated_corpus": {"size": "tiny"},
    "speech_codec": {"fit_minutes": 1.0, "kmeans_iterations": 2},
}
GOOD_CLIPS = ("the cat sat on the mat", "two plus two is four")


def seeded_local_corpus(root: Path) -> dict:
    """Two good clips and three bad inputs of each kind the local readers see."""
    speech = root / "speech"
    speech.mkdir(parents=True)
    for index, text in enumerate(GOOD_CLIPS):
        sf.write(speech / f"good{index}.wav", synthesize(text, "en-us+f3", 160).numpy(), 24_000)
        (speech / f"good{index}.txt").write_text(text)
    (speech / "corrupt.wav").write_bytes(b"RIFF\x00\x00not audio at all")
    (speech / "corrupt.txt").write_text("this clip is broken")
    sf.write(speech / "orphan.wav", np.zeros(24_000, dtype=np.float32) + 0.1, 24_000)
    (speech / "empty.txt").write_text("")
    chat = root / "chat.jsonl"
    lines = [
        json.dumps({"instruction": "Say hello.", "output": "Hello there!"}),
        "{not json",
        json.dumps({"messages": [{"role": "user", "content": "Hi"}]}),
    ]
    chat.write_text("\n".join(lines) + "\n")
    return {"speech_dirs": [str(speech)], "chat_jsonl": [str(chat)]}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    local = seeded_local_corpus(root / "local")
    config = {**TINY, "local_corpus": local}
    run_pipeline(str(root / "store"), workers=1, asset_config=config)
    return root / "store"


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
    frames = 0
    for turn_codes in row["answer_audios"]:
        codes = torch.tensor(turn_codes).view(-1, 8).T[None]  # (1, 8, F)
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
