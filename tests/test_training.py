"""The trainer library: shard reading, batching, augmentation, checkpoints, plans, resume.

Shards are written here in the pipeline's schema: templated chats, answer codes from a small
alphabet tied to the answer's words (learnable in a few dozen steps), tones as question
audio and Pillow-drawn images. torch.compile itself takes over two minutes to compile the
tiny model on this CPU, so the compiled <-> plain checkpoint test wraps the model with
torch.compile (the `_orig_mod.` names that broke the reference's resume) without running it.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import save_tiny_whisper
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file

from omni_model.audio_io import encode_wav_bytes
from omni_model.cli import main
from omni_model.config import AUDIO_STOP_ID, make_config
from omni_model.data.sample import IGNORE_INDEX, TEXT_ROW
from omni_model.encoders.audio import feature_frames
from omni_model.encoders.image import PatchImageEncoder
from omni_model.text import ChatTokenizer, train_tokenizer
from omni_model.text.letters import EDGE, NONE, spell
from omni_model.text.special_tokens import (
    AUDIO_PLACEHOLDER_ID,
    IM_END_ID,
    IMAGE_PLACEHOLDER_ID,
    TEXT_PAD_ID,
)
from omni_model.training.augment import AugmentSettings, augment_speech
from omni_model.training.checkpoint import (
    WEIGHTS_FILE,
    CheckpointMismatchError,
    latest_checkpoint,
    load_checkpoint,
    load_weights,
    read_meta,
    save_checkpoint,
)
from omni_model.training.data import (
    DataSettings,
    ShardData,
    ShardError,
    measure_row,
    plan_batches,
)
from omni_model.training.model import EncoderSpec, TrainModel
from omni_model.training.plans import Plan, get_plan
from omni_model.training.schedule import cosine_lr
from omni_model.training.trainer import (
    Callback,
    Trainer,
    TrainSettings,
    initial_model,
    train_stage,
    window_losses,
)
from pipelines.assets.shards import SHARD_SCHEMA

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220)}
OBJECTS = ("ball", "cup", "kite", "hat", "box", "car", "boat", "lamp")
CODEC = "test-codec-1"
SPEAKER_DIM = 16
RATE = 24_000


def chats() -> list[tuple[str, str]]:
    return [
        (f"What colour is the {thing}?", f"The {thing} is {colour}.")
        for thing in OBJECTS
        for colour in COLOURS
    ]


def word_codes(answer: str, frames: int) -> list[int]:
    """Codes frame-major; each word owns a few codes per codebook (a learnable alphabet)."""
    words = answer.lower().strip(".").split()
    codes = []
    for frame in range(frames):
        word = words[frame * len(words) // frames]
        base = sum(map(ord, word)) % 60
        codes += [(base * 31 + k * 7 + frame % 2) % 2048 for k in range(8)]
    return codes


def tone(*frequencies: float, seconds: float) -> bytes:
    """One tone after another, each `seconds` long: a "spoken" question the model can read."""
    t = torch.arange(int(seconds * RATE)) / RATE
    signal = torch.cat([0.3 * torch.sin(2 * math.pi * f * t) for f in frequencies])
    return encode_wav_bytes(signal, RATE)


def picture(colour: str) -> bytes:
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).rectangle((12, 12, 52, 52), fill=COLOURS[colour])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def shard_row(task: str, number: int, turns: list[dict], split: str = "train", **values) -> dict:
    row = {
        "conversations": json.dumps(turns),
        "question_audios": [],
        "answer_audios": [],
        "image_bytes": None,
        "ref_audios": [],
        "spk_emb": [],
        "sample_id": f"test/{task}-{number:04d}",
        "source": "test",
        "task": task,
        "voice": None,
        "duration_s": 0.0,
        "frames": 0,
        "codec_id": "",
        "split": split,
    }
    return row | values


def spoken(number: int, answer: str, codec: str = CODEC) -> dict:
    """Answer codes (8 to 47 frames), a voice prompt and a speaker vector of voice 0 or 1."""
    voice = number % 2
    frames = 8 + (number * 7) % 40
    generator = torch.Generator().manual_seed(voice)
    return {
        "answer_audios": [word_codes(answer, frames)],
        "ref_audios": [100 + voice * 50 + k for _ in range(4) for k in range(8)],
        "spk_emb": torch.randn(SPEAKER_DIM, generator=generator).tolist(),
        "frames": frames,
        "duration_s": frames / 12.5,
        "codec_id": codec,
        "voice": f"voice-{voice}",
    }


def task_rows(task: str) -> list[dict]:
    rows = []
    for number, (question, answer) in enumerate(chats()):
        split = "validation" if number % 8 == 7 else "train"
        turns = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        values: dict = {}
        if task in ("t2a", "a2a"):
            values = spoken(number, answer)
        if task == "a2a":  # one pitch names the object, the next the colour (chats() order)
            thing, colour = divmod(number, len(COLOURS))
            values["question_audios"] = [tone(250 + 120 * thing, 300 + 400 * colour, seconds=0.3)]
        if task == "i2t":
            colour = answer.split()[-1].strip(".")
            turns[0]["content"] = "<image>\nWhat colour is the square?"
            turns[1]["content"] = f"The square is {colour}."
            values["image_bytes"] = picture(colour)
        rows.append(shard_row(task, number, turns, split, **values))
    return rows


def write_rows(path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SHARD_SCHEMA), path)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """(shards root, tokenizer path): every task, train and validation files."""
    root = tmp_path_factory.mktemp("shards")
    for task in ("text", "t2a", "a2a", "i2t"):
        rows = task_rows(task)
        for split in ("train", "validation"):
            write_rows(
                root / task / f"{split}-00000.parquet", [r for r in rows if r["split"] == split]
            )
    texts = [turn["content"] for q, a in chats() for turn in ({"content": q}, {"content": a})]
    texts += ["What colour is the square?", "The square is red green blue."]
    tokenizer = train_tokenizer(texts * 3, vocab_size=400)
    path = root / "tokenizer.json"
    tokenizer.save(path)
    return root, path


def tiny_model(vocab_size: int = 400, letter_window: int = 0) -> TrainModel:
    torch.manual_seed(0)
    config = dataclasses.replace(
        make_config("tiny", vocab_size=vocab_size, letter_window=letter_window),
        speaker_dim=SPEAKER_DIM,
    )
    return TrainModel(config, EncoderSpec(width=32))


def first_batch(data: ShardData) -> dict[str, torch.Tensor]:
    batch = next(iter(data.loader(epochs=1)))
    return {k: v for k, v in batch.items() if k not in ("epoch", "batch")}


# Augmentation ---------------------------------------------------------------------------


def test_augmentation_is_deterministic_per_seed_and_changes_the_audio():
    clip = torch.sin(torch.arange(16_000) / 16_000 * 2 * math.pi * 220).numpy() * 0.5
    every = AugmentSettings(speed_p=1, reverb_p=1, noise_p=1, gain_p=1, mask_p=1)
    first = augment_speech(clip, 16_000, np.random.default_rng([0, 3, 7]), every)
    again = augment_speech(clip, 16_000, np.random.default_rng([0, 3, 7]), every)
    other = augment_speech(clip, 16_000, np.random.default_rng([0, 4, 7]), every)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert np.abs(first).max() <= 1.0 and first.dtype == np.float32
    # Speed 0.9..1.1 changes the length by the inverse factor.
    assert 16_000 / 1.1 - 10 <= len(first) <= 16_000 / 0.9 + 10 and len(first) != 16_000

    def only(**chosen) -> np.ndarray:
        settings = dataclasses.replace(
            AugmentSettings(speed_p=0, reverb_p=0, noise_p=0, gain_p=0, mask_p=0), **chosen
        )
        return augment_speech(clip, 16_000, np.random.default_rng(1), settings)

    noisy = only(noise_p=1, snr_db_range=(10.0, 10.0))
    snr = 10 * np.log10(np.mean(clip**2) / np.mean((noisy - clip) ** 2))
    assert abs(snr - 10) < 0.5
    gained = only(gain_p=1, gain_db_range=(-6.0, -6.0))
    assert np.allclose(gained, clip * 10 ** (-6 / 20), atol=1e-6)
    masked = only(mask_p=1, max_masks=2, max_mask_seconds=0.1)
    assert 0 < (masked == 0).sum() - (clip == 0).sum() <= 2 * 1_600
    reverbed = only(reverb_p=1, rt60_range=(0.3, 0.3))
    assert len(reverbed) == len(clip) and not np.allclose(reverbed, clip, atol=1e-3)


def test_augmentation_is_on_for_a2a_and_repeats_per_epoch_and_sample(shards):
    root, tokenizer_path = shards
    tokenizer = ChatTokenizer.load(tokenizer_path)
    settings = DataSettings("a2a", max_seq_len=256, batch_size=4)
    data = ShardData(root, tokenizer, settings)
    plain = ShardData(root, tokenizer, dataclasses.replace(settings, augment=False))
    one, two = data.dataset.load(0, epoch=0), data.dataset.load(0, epoch=0)
    assert torch.equal(one.questions[0], two.questions[0])
    assert not torch.equal(one.questions[0], data.dataset.load(0, epoch=1).questions[0])
    clean = plain.dataset.load(0, epoch=0).questions[0]
    assert len(clean) == 9_600  # two tones of 0.3 s at 16 kHz
    assert one.questions[0].shape != clean.shape or not torch.equal(one.questions[0], clean)


# Reading and batching -------------------------------------------------------------------


def test_batches_hold_every_side_input_in_placeholder_order(shards):
    root, tokenizer_path = shards
    tokenizer = ChatTokenizer.load(tokenizer_path)
    a2a = first_batch(ShardData(root, tokenizer, DataSettings("a2a", 256, 4, augment=False)))
    text_row = a2a["input_ids"][:, TEXT_ROW]
    frames = feature_frames(a2a["question_lengths"])
    assert int((text_row == AUDIO_PLACEHOLDER_ID).sum()) == int(frames.sum())
    assert a2a["speaker"].shape == (4, SPEAKER_DIM)
    assert (a2a["audio_labels"] == AUDIO_STOP_ID).sum() == 4 * 8  # one stop per codebook
    # The spoken question replaces the user's text: its words are not in the prompt.
    colour_ids = set(tokenizer.encode(" colour"))
    assert not colour_ids & set(text_row[0].tolist())

    i2t = first_batch(ShardData(root, tokenizer, DataSettings("i2t", 256, 4)))
    assert i2t["pixels"].shape == (4, 3, 256, 256)
    assert int((i2t["input_ids"][:, TEXT_ROW] == IMAGE_PLACEHOLDER_ID).sum()) == 4 * 64

    text = first_batch(ShardData(root, tokenizer, DataSettings("text", 256, 4, all_tokens=True)))
    inputs, labels = text["input_ids"][:, TEXT_ROW], text["text_labels"]
    for row in range(4):
        width = int((inputs[row] != 0).sum())  # no pads inside a text-only conversation
        assert torch.equal(labels[row, : width - 1], inputs[row, 1:width])
        assert (labels[row, width:] == IGNORE_INDEX).all()


def noiseless_t2a(**changes) -> DataSettings:
    """T2A rows padded to 256, without augmentation or scheduled sampling."""
    settings = DataSettings("t2a", 256, 4, batching="pad_to_max", augment=False)
    return dataclasses.replace(settings, scheduled_sampling=0.0, **changes)


def test_aligned_layout_reads_the_same_reply_spread_over_its_speech(shards):
    root, tokenizer_path = shards
    tokenizer = ChatTokenizer.load(tokenizer_path)
    settings = noiseless_t2a(drop_reference=0.0)
    sequential = ShardData(root, tokenizer, settings)
    aligned = ShardData(root, tokenizer, dataclasses.replace(settings, text_layout="aligned"))
    for number in range(4):
        plain = sequential.dataset.load(number, 0).sample
        spread = aligned.dataset.load(number, 0).sample
        width = plain.audio_labels.shape[1]
        assert torch.equal(plain.audio_labels, spread.audio_labels[:, :width])
        words = plain.text_labels[plain.text_labels != IGNORE_INDEX]
        labels = spread.text_labels[spread.text_labels != IGNORE_INDEX]
        assert torch.equal(labels[labels != TEXT_PAD_ID], words)  # same reply, pads between
        frames = int((plain.audio_labels[0] != IGNORE_INDEX).sum()) - 1  # codes, then a stop
        assert len(labels) == frames + 1  # the reply ends where its speech does
        # The end-of-turn token sits where codebook 0's last code does.
        end = int((spread.text_labels == IM_END_ID).nonzero()[0])
        last_code = int((spread.audio_labels[0] == AUDIO_STOP_ID).nonzero()[0]) - 1
        assert end == last_code
    with pytest.raises(ValueError, match="unknown text layout"):
        dataclasses.replace(settings, text_layout="interleaved")


def test_letter_window_reads_the_reply_from_its_first_frame_to_its_last_stop(shards):
    root, tokenizer_path = shards
    tokenizer = ChatTokenizer.load(tokenizer_path)
    data = ShardData(root, tokenizer, noiseless_t2a(letter_window=5))
    for number in range(4):
        sample = data.dataset.load(number, 0).sample
        reads = (sample.letters != NONE).any(dim=0).nonzero().flatten()
        codes = (sample.audio_labels[0] != IGNORE_INDEX).nonzero().flatten()
        stops = (sample.audio_labels[7] != IGNORE_INDEX).nonzero().flatten()
        # Column reply_start predicts codebook 0's first frame; the last reads before the
        # final stop target.
        assert reads.tolist() == list(range(int(codes[0]), int(stops[-1]) + 1))
        reply = tokenizer.decode(sample.text_labels[sample.text_labels != IGNORE_INDEX].tolist())
        assert sample.letters[2, codes[0]] == spell(reply)[0]  # the centre: the first letter
        assert (sample.letters[2, int(stops[-1]) - 7 :] == EDGE).all()  # speech over
    batch = next(iter(data.loader(0)))
    assert batch["letters"].shape[:2] == (4, 5)
    assert batch["letters"].shape[2] == batch["input_ids"].shape[2] == 256
    model = tiny_model(tokenizer.vocab_size, letter_window=5)
    with torch.no_grad():
        read = model(batch).audio_logits
        unread = model({**batch, "letters": torch.full_like(batch["letters"], NONE)}).audio_logits
    assert not torch.allclose(read, unread)  # the training model hands the letters on


def test_epoch_plans_are_deterministic_cover_every_row_and_split_across_ranks(shards):
    root, tokenizer_path = shards
    settings = DataSettings("t2a", 256, 4, bucket_batches=2)
    data = ShardData(root, ChatTokenizer.load(tokenizer_path), settings)
    index = data.index
    epoch0 = plan_batches(index, settings, 0)
    assert epoch0 == plan_batches(index, settings, 0)
    assert epoch0 != plan_batches(index, settings, 1)
    assert sorted(n for batch in epoch0 for n in batch) == list(range(len(index.rows)))
    ranks = [plan_batches(index, settings, 0, rank, 2) for rank in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(epoch0) // 2
    seen = [n for plan in ranks for batch in plan for n in batch]
    assert len(seen) == len(set(seen))


def test_mixing_draws_a_fresh_share_of_other_tasks_into_every_epoch(shards):
    root, tokenizer_path = shards
    tokenizer = ChatTokenizer.load(tokenizer_path)
    settings = DataSettings("i2t", 256, 4, mix=("t2a", "text"), mix_share=0.5)
    data = ShardData(root, tokenizer, settings)
    own = data.describe()["task_rows"]["i2t"]
    assert data.describe()["task_rows"] == {"i2t": own, "t2a": own, "text": own}

    def mixed_in(epoch: int) -> list[int]:
        rows = [n for batch in plan_batches(data.index, settings, epoch) for n in batch]
        assert sorted(n for n in rows if not data.index.rows[n].mixed) == list(range(own))
        return sorted(n for n in rows if data.index.rows[n].mixed)

    first = mixed_in(0)
    assert len(first) == round(0.5 * own) and first != mixed_in(1)
    # Mixed batches: images for the I2T rows, speech targets and speakers for the T2A rows.
    batches = list(data.loader(epochs=1))
    pixels = sum(len(b["pixels"]) for b in batches if "pixels" in b)
    placeholders = sum(
        int((b["input_ids"][:, TEXT_ROW] == IMAGE_PLACEHOLDER_ID).sum()) for b in batches
    )
    assert pixels == own and placeholders == 64 * own
    assert any((b["audio_labels"] != IGNORE_INDEX).any() for b in batches)
    # Validation reads the stage's own task only.
    stage = dataclasses.replace(get_plan("tiny").stage("i2t"), mix=("t2a",))
    validation = ShardData(root, tokenizer, stage.data_settings("validation"))
    assert set(validation.describe()["task_rows"]) == {"i2t"}


def test_length_bucketing_keeps_padding_well_below_pad_to_max(shards):
    root, tokenizer_path = shards
    tokenizer = ChatTokenizer.load(tokenizer_path)

    def padding(batching: str) -> float:
        settings = DataSettings("t2a", 256, 4, batching=batching, bucket_batches=8)
        batches = list(ShardData(root, tokenizer, settings).loader(epochs=1))
        useful = sum(int(b["positions"]) for b in batches)
        total = sum(b["input_ids"].shape[0] * b["input_ids"].shape[-1] for b in batches)
        return 1 - useful / total

    bucketed, padded = padding("bucket"), padding("pad_to_max")
    assert padded > 0.5
    assert bucketed < 0.15


def test_codec_guard_refuses_mixed_codecs(shards, tmp_path):
    root, tokenizer_path = shards
    tokenizer = ChatTokenizer.load(tokenizer_path)
    rows = task_rows("t2a")
    other = [r | {"codec_id": "other-codec"} for r in rows[:6]]
    write_rows(tmp_path / "t2a" / "train-00000.parquet", rows)
    write_rows(tmp_path / "t2a" / "reference-00000.parquet", other)
    with pytest.raises(ShardError, match=r"different codecs.*other-codec.*test-codec-1"):
        ShardData(tmp_path, tokenizer, DataSettings("t2a", 256, 4))
    with pytest.raises(ShardError, match="trained on codec mimi"):
        ShardData(root, tokenizer, DataSettings("t2a", 256, 4), codec_id="mimi")


def test_bad_rows_are_skipped_and_counted_by_reason(tmp_path, shards):
    _, tokenizer_path = shards
    rows = task_rows("t2a")[:6]
    rows[0]["answer_audios"] = [[1, 2, 3]]
    rows[1]["conversations"] = "not json"
    rows[2]["conversations"] = json.dumps([{"role": "user", "content": "<image> hi"}] * 2)
    write_rows(tmp_path / "t2a" / "train-00000.parquet", rows)
    data = ShardData(tmp_path, ChatTokenizer.load(tokenizer_path), DataSettings("t2a", 256, 2))
    assert data.rows == 3
    reasons = " | ".join(data.index.skipped)
    assert "not a multiple of 8" in reasons
    assert "not JSON" in reasons
    assert "2 <image> markers but 0 images" in reasons


def test_spoken_prompts_keep_room_for_the_slowest_augmented_speed(shards):
    _, tokenizer_path = shards
    tokenizer = ChatTokenizer.load(tokenizer_path)
    row = task_rows("a2a")[0] | {"question_audios": [tone(300, seconds=4.0)]}
    frames = int(feature_frames(torch.tensor(64_000)))  # 4 s at 16 kHz
    spoken_turns = [{"role": "user", "content": ""}, json.loads(row["conversations"])[1]]
    reply_start = tokenizer.encode_chat(spoken_turns, [frames]).reply_start
    assert reply_start > frames
    clean = DataSettings("a2a", 512, 1, augment=False)
    # Slowed to 0.9x the clip gains ~5 frames: a limit 3 past the prompt fits only clean audio.
    limit = reply_start + 3
    assert measure_row(row, tokenizer, dataclasses.replace(clean, max_seq_len=limit), "a2a")
    with pytest.raises(ValueError, match="prompt longer than max_seq_len"):
        measure_row(row, tokenizer, DataSettings("a2a", limit, 1, augment=True), "a2a")


# Checkpoints ----------------------------------------------------------------------------


def test_strict_load_lists_missing_unexpected_and_misshaped_keys(tmp_path):
    model = tiny_model()
    path = save_checkpoint(tmp_path / "ckpt", model, {"config": model.config.to_dict()})
    tensors = load_file(str(path / WEIGHTS_FILE))
    del tensors["model.talker.norm.weight"]
    tensors["model.extra.weight"] = torch.zeros(3)
    save_file(tensors, str(path / WEIGHTS_FILE))
    with pytest.raises(CheckpointMismatchError) as caught:
        load_weights(tiny_model(vocab_size=500), path)
    error = caught.value
    assert error.missing == ["model.talker.norm.weight"]
    assert error.unexpected == ["model.extra.weight"]
    assert error.misshaped == ["model.thinker.embed_tokens.weight (400, 128) vs (500, 128)"]
    assert "1 missing" in str(error) and "1 unexpected" in str(error)


def test_compiled_and_plain_models_load_each_others_checkpoints(tmp_path):
    trained = tiny_model()
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.add_(0.01)
    compiled = torch.compile(trained)
    assert next(iter(compiled.state_dict())).startswith("_orig_mod.")
    save_checkpoint(tmp_path / "from_compiled", compiled, {})
    plain = tiny_model()
    load_weights(plain, tmp_path / "from_compiled")
    for (name, mine), theirs in zip(
        trained.state_dict().items(), plain.state_dict().values(), strict=True
    ):
        assert torch.equal(mine, theirs), name

    save_checkpoint(tmp_path / "from_plain", plain, {})
    fresh = torch.compile(tiny_model())
    load_weights(fresh, tmp_path / "from_plain")
    assert torch.equal(fresh._orig_mod.model.thinker.embed_tokens.weight,
                       trained.model.thinker.embed_tokens.weight)  # fmt: skip
    # A file written from a compiled model's raw state dict (prefixed keys) loads too.
    raw = {k: v.contiguous() for k, v in compiled.state_dict().items()}
    save_file(raw, str(tmp_path / "from_plain" / WEIGHTS_FILE))
    load_weights(tiny_model(), tmp_path / "from_plain")


def test_frozen_whisper_weights_are_neither_saved_nor_expected(tmp_path):
    checkpoint = save_tiny_whisper(tmp_path / "whisper.pt")
    spec = EncoderSpec(audio="whisper", width=32, whisper_model=checkpoint)
    model = TrainModel(make_config("tiny", vocab_size=400), spec)
    assert model.config.audio_feature_dim == 32
    meta = {"config": model.config.to_dict(), "encoders": spec.to_dict()}
    path = save_checkpoint(tmp_path / "ckpt", model, meta)
    assert not [k for k in load_file(str(path / WEIGHTS_FILE)) if k.startswith("audio_encoder.")]
    loaded, _ = load_checkpoint(path)
    assert torch.equal(
        loaded.model.audio_projector.fc1.weight, model.model.audio_projector.fc1.weight
    )


def test_side_encoders_are_chosen_at_launch_without_touching_the_plan(shards, tmp_path):
    plan = get_plan("tiny")
    whisper = plan.variant(audio_encoder="whisper", whisper_model="/models/base.pt")
    assert whisper.encoders == dataclasses.replace(
        plan.encoders, audio="whisper", whisper_model="/models/base.pt"
    )
    assert whisper.stages == plan.stages
    assert plan.variant(talker_hidden=512, moe=True).encoders == plan.encoders
    with pytest.raises(ValueError, match="audio is one of"):
        plan.variant(audio_encoder="wav2vec")
    assert plan.text_layout == "sequential"
    assert plan.variant(text_layout="aligned").model_config(400, 8).text_layout == "aligned"
    with pytest.raises(ValueError, match="unknown text layout"):
        plan.variant(text_layout="interleaved")
    assert plan.letter_window == 7
    assert plan.variant(text_layout="aligned").letter_window == 0
    assert plan.variant(letter_window=0).model_config(400, 8).letter_window == 0
    assert plan.variant(letter_window=5).variant_params["letter_window"] == 5

    root, tokenizer_path = shards
    checkpoint = save_tiny_whisper(tmp_path / "whisper.pt")
    out = tmp_path / "run"
    argv = ["train", "--shards", str(root), "--tokenizer", str(tokenizer_path), "--out", str(out)]
    argv += ["--stages", "text", "t2a", "a2a_proj", "--max-steps", "2", "--workers", "0"]
    argv += ["--no-progress", "--text-layout", "aligned"]
    assert main([*argv, "--audio-encoder", "whisper", "--whisper-model", checkpoint]) == 0
    final = out / "a2a_proj" / "final"
    assert read_meta(final)["config"]["text_layout"] == "aligned"
    assert read_meta(final)["encoders"]["audio"] == "whisper"
    assert read_meta(final)["encoders"]["whisper_model"] == checkpoint
    assert not [k for k in load_file(str(final / WEIGHTS_FILE)) if k.startswith("audio_encoder.")]
    loaded, _ = load_checkpoint(final)
    assert loaded.config.audio_feature_dim == 32  # the Whisper's width feeds the projector


def test_a_pretrained_patch_encoder_is_loaded_frozen_and_left_out_of_checkpoints(shards, tmp_path):
    torch.manual_seed(3)
    pretrained = PatchImageEncoder(48, width=32)
    pretrained.save(tmp_path / "patch.safetensors")
    root, tokenizer_path = shards
    out = tmp_path / "run"
    argv = ["train", "--shards", str(root), "--tokenizer", str(tokenizer_path), "--out", str(out)]
    argv += ["--stages", "text", "t2a", "a2a_proj", "a2a", "i2t", "--max-steps", "2"]
    patch = ["--patch-model", str(tmp_path / "patch.safetensors")]
    assert main([*argv, "--workers", "0", "--no-progress", *patch]) == 0
    final = out / "i2t" / "final"
    assert read_meta(final)["encoders"]["patch_model"] == str(tmp_path / "patch.safetensors")
    saved = load_file(str(final / WEIGHTS_FILE))
    assert not [key for key in saved if key.startswith("image_encoder.")]
    # The i2t stage trained everything else; the encoder is the file's, bit for bit.
    loaded, _ = load_checkpoint(final)
    assert loaded.config.image_feature_dim == 48  # the pretrained encoder's width
    assert not any(p.requires_grad for p in loaded.image_encoder.parameters())
    loaded.set_training_mode("all")
    assert not any(p.requires_grad for p in loaded.image_encoder.parameters())
    assert any(p.requires_grad for p in loaded.model.vision_projector.parameters())
    for name, tensor in pretrained.state_dict().items():
        assert torch.equal(loaded.image_encoder.state_dict()[name], tensor), name
    before = load_file(str(out / "a2a" / "final" / WEIGHTS_FILE))
    assert any(not torch.equal(before[k], saved[k]) for k in saved if "vision_projector" in k)


def test_cosine_schedule_warms_up_then_falls_to_a_tenth():
    values = [cosine_lr(step, 100, 1.0, 10, 0.1) for step in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(values[9:]))
    assert cosine_lr(100, 100, 1.0, 10, 0.1) == pytest.approx(0.1)


def test_window_losses_count_each_loss_only_over_steps_with_its_targets():
    steps = [
        {"loss": 2.0, "text_loss": 2.0, "audio_loss": 0.0, "text_targets": 9, "audio_targets": 0},
        {"loss": 7.0, "text_loss": 3.0, "audio_loss": 4.0, "text_targets": 5, "audio_targets": 80},
        {"loss": 6.0, "text_loss": 0.0, "audio_loss": 6.0, "text_targets": 0, "audio_targets": 8},
    ]
    assert window_losses(steps) == {"loss": 5.0, "text_loss": 2.5, "audio_loss": 5.0}
    assert window_losses(steps[:1])["audio_loss"] == 0.0


# Training -------------------------------------------------------------------------------


def one_stage_plan(task: str = "t2a", steps: int = 24, every: int = 8) -> Plan:
    stage = dataclasses.replace(
        get_plan("tiny").stage(task), max_steps=steps, checkpoint_every=every, eval_batches=1
    )
    return dataclasses.replace(get_plan("tiny"), stages=(stage,))


def test_reloaded_checkpoint_gives_identical_logits(shards, tmp_path):
    root, tokenizer_path = shards
    tokenizer = ChatTokenizer.load(tokenizer_path)
    plan = one_stage_plan(steps=6, every=100)
    stage = plan.stages[0]
    model, meta = initial_model(plan, stage, root, tokenizer, None, seed=0)
    data = ShardData(root, tokenizer, stage.data_settings())
    settings = TrainSettings(progress=False, num_workers=0)
    result = Trainer(plan, stage, model, data, tmp_path, meta, settings).fit()
    assert result.steps == 6 and result.codec_id == CODEC
    loaded, loaded_meta = load_checkpoint(result.checkpoint)
    assert loaded_meta["tokenizer_id"] == tokenizer.tokenizer_id
    assert loaded_meta["config"]["speaker_dim"] == SPEAKER_DIM
    batch = first_batch(ShardData(root, tokenizer, stage.data_settings("validation")))
    model.eval()
    loaded.eval()
    with torch.no_grad():
        mine, theirs = model(batch), loaded(batch)
    assert torch.equal(mine.text_logits, theirs.text_logits)
    assert torch.equal(mine.audio_logits, theirs.audio_logits)


class Killed(Exception):
    pass


class Recorder(Callback):
    def __init__(self, kill_at: int | None = None):
        self.kill_at, self.losses = kill_at, {}

    def on_step(self, metrics: dict[str, float]) -> None:
        self.losses[metrics["step"]] = metrics["loss"]
        if metrics["step"] == self.kill_at:
            raise Killed


@pytest.mark.slow
def test_kill_and_resume_matches_an_uninterrupted_run(shards, tmp_path):
    root, tokenizer_path = shards
    plan = one_stage_plan(steps=24, every=8)
    settings = TrainSettings(progress=False, num_workers=1)
    common = {"shards": root, "tokenizer": tokenizer_path, "settings": settings}
    whole = Recorder()
    straight = train_stage(plan, "t2a", out=tmp_path / "a", callbacks=[whole], **common)

    with pytest.raises(Killed):
        train_stage(plan, "t2a", out=tmp_path / "b", callbacks=[Recorder(kill_at=13)], **common)
    assert latest_checkpoint(tmp_path / "b" / "t2a").name == "step-0000008"
    after = Recorder()
    resumed = train_stage(plan, "t2a", out=tmp_path / "b", callbacks=[after], resume=True, **common)
    assert resumed.resumed_from.endswith("step-0000008")
    assert resumed.steps == straight.steps == 24
    assert sorted(after.losses) == list(range(9, 25))
    for step, loss in after.losses.items():
        assert loss == pytest.approx(whole.losses[step], abs=1e-5), step
    a = load_file(str(tmp_path / "a" / "t2a" / "final" / WEIGHTS_FILE))
    b = load_file(str(tmp_path / "b" / "t2a" / "final" / WEIGHTS_FILE))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    # A finished stage is reported, not retrained.
    again = train_stage(plan, "t2a", out=tmp_path / "b", resume=True, **common)
    assert again.skipped and again.steps == 24


@pytest.mark.slow
def test_tiny_plan_runs_every_stage_and_losses_fall(shards, tmp_path, capsys):
    root, tokenizer_path = shards
    out = tmp_path / "run"
    argv = ["train", "--plan", "tiny", "--shards", str(root), "--tokenizer", str(tokenizer_path)]
    argv += ["--out", str(out), "--max-steps", "40", "--workers", "0", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    results = {}
    for stage in get_plan("tiny").stage_names:
        assert f"  {stage} " in printed
        meta = read_meta(out / stage / "final")
        results[stage] = meta["result"]
        assert meta["step"] == 40 and meta["stage"] == stage and meta["codec_id"] in (None, CODEC)
    assert "total" in printed

    def drop(stage: str, key: str) -> float:
        result = results[stage]
        return result["final_losses"][key] / result["first_losses"][key]

    # Each stage's new objective falls clearly (the T2A text is already learned by the text
    # stage, which mixes in T2A conversations; T2A's low rate slows its first 40 steps).
    assert drop("text", "text_loss") < 0.3
    assert drop("t2a", "audio_loss") < 0.8
    assert drop("a2a", "text_loss") < 1.0 and results["a2a"]["final_losses"]["audio_loss"] == 0
    assert drop("i2t", "text_loss") < 0.6
    # a2a_proj trains the audio projector and encoder only: a frozen tiny Thinker learns
    # little through them in 40 steps, so its loss must just not rise, and nothing else move.
    assert drop("a2a_proj", "loss") < 1.1
    before = load_file(str(out / "t2a" / "final" / WEIGHTS_FILE))
    after = load_file(str(out / "a2a_proj" / "final" / WEIGHTS_FILE))
    changed = [key for key in before if not torch.equal(before[key], after[key])]
    assert changed and all(
        k.startswith(("audio_encoder.", "model.audio_projector.")) for k in changed
    )
    # A2A trains the Thinker on spoken questions and leaves the Talker as T2A left it.
    spoken = load_file(str(out / "a2a" / "final" / WEIGHTS_FILE))
    changed = {key for key in after if not torch.equal(after[key], spoken[key])}
    assert any(k.startswith("model.thinker.") for k in changed)
    assert not any(k.startswith("model.talker.") for k in changed)
    # Each stage starts from the previous one's final checkpoint; codes stay one codec's.
    assert read_meta(out / "t2a" / "final")["init_from"] == str(out / "text" / "final")
    assert read_meta(out / "i2t" / "final")["codec_id"] == CODEC


# Command line ---------------------------------------------------------------------------


def cli_error(capsys, argv: list[str]) -> str:
    """Run `omni train`; it must fail with exit code 2 and a single line on stderr."""
    assert main(["train", "--no-progress", "--workers", "0", *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_train_cli_reports_bad_inputs_in_one_line_naming_the_file(shards, tmp_path, capsys):
    root, tokenizer_path = shards
    common = ["--shards", str(root), "--out", str(tmp_path / "out")]
    not_a_tokenizer = tmp_path / "tokenizer.json"
    not_a_tokenizer.write_text('{"version": "1.0"}')
    line = cli_error(capsys, [*common, "--tokenizer", str(not_a_tokenizer)])
    assert str(not_a_tokenizer) in line and "not a chat tokenizer" in line

    tokenizer = ["--tokenizer", str(tokenizer_path)]
    line = cli_error(capsys, [*common, *tokenizer, "--stages", "t2a"])
    assert str(tmp_path / "out" / "text" / "final") in line and "train text first" in line

    only_t2a = tmp_path / "only_t2a"
    write_rows(only_t2a / "t2a" / "train-00000.parquet", task_rows("t2a"))
    argv = ["--shards", str(only_t2a), "--out", str(tmp_path / "out"), *tokenizer]
    line = cli_error(capsys, [*argv, "--stages", "text"])
    assert str(only_t2a) in line and "no parquet shards for task 'text'" in line

    # A text stage trained with another tokenizer cannot be continued with this one.
    plan = get_plan("tiny")
    other = train_tokenizer([q + " " + a for q, a in chats()], vocab_size=300)
    model, meta = initial_model(plan, plan.stage("text"), root, other, None, seed=0)
    save_checkpoint(tmp_path / "out" / "text" / "final", model, meta)
    line = cli_error(capsys, [*common, *tokenizer, "--stages", "t2a"])
    assert str(tmp_path / "out" / "text" / "final") in line and other.tokenizer_id in line

    # Answer codes from two codecs in one task folder.
    mixed = tmp_path / "mixed"
    write_rows(mixed / "t2a" / "train-00000.parquet", task_rows("t2a"))
    write_rows(mixed / "text" / "train-00000.parquet", task_rows("text"))
    foreign = [row | {"codec_id": "other-codec"} for row in task_rows("t2a")[:4]]
    write_rows(mixed / "t2a" / "reference-00000.parquet", foreign)
    model, meta = initial_model(
        plan, plan.stage("text"), root, ChatTokenizer.load(tokenizer_path), None, seed=0
    )
    save_checkpoint(tmp_path / "mixed_out" / "text" / "final", model, meta)
    argv = ["--shards", str(mixed), "--out", str(tmp_path / "mixed_out"), *tokenizer]
    line = cli_error(capsys, [*argv, "--stages", "t2a"])
    assert "different codecs" in line and "reference-00000.parquet" in line
