"""Talking to a checkpoint: streaming replies, dialogue history, voices, loading checks, CLI."""

from __future__ import annotations

import argparse
import dataclasses
import io
import itertools
import json
import struct
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from talk_support import (
    RUN_ID,
    SENTENCES,
    SPEAKER_DIM,
    VOICE_NAMES,
    build_store,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    speech16k,
)

from omni_model.audio_io import AudioError, save_wav
from omni_model.cli import main
from omni_model.cli.chat import add_sampling_arguments, sampling_from_args
from omni_model.config import SPEAKER_MARKER_ID
from omni_model.encoders.image import ImageError
from omni_model.generation import AudioFrame, SamplingSettings, TextToken, generate_stream
from omni_model.inference import AudioChunk, CompatibilityError, GrowingWav, ReplyDone, TextDelta
from omni_model.inference.engine import IncrementalText, Turn
from omni_model.inference.loading import find_voice, load, resolve_model
from omni_model.quantization import SAMPLES_PER_FRAME, OfflineCodec
from omni_model.text import train_tokenizer
from omni_model.text.special_tokens import AUDIO_PLACEHOLDER_ID, IMAGE_PLACEHOLDER_ID
from omni_model.voices import VoiceError

SETTINGS = SamplingSettings(max_steps=20)
QUESTION = "What colour is the ball?"


@pytest.fixture(scope="module")
def store(tmp_path_factory, small_codec):
    root = tmp_path_factory.mktemp("store")
    checkpoint, codec = build_store(root, small_codec)
    return SimpleNamespace(root=root, checkpoint=checkpoint, codec=codec)


@pytest.fixture(scope="module")
def loaded(store):
    return load(store.checkpoint, store=store.root, codec=store.codec)


def split(events):
    kinds = {TextDelta: [], AudioChunk: [], ReplyDone: []}
    for event in events:
        kinds[type(event)].append(event)
    return kinds[TextDelta], kinds[AudioChunk], kinds[ReplyDone]


def test_growing_wav_is_a_complete_file_after_every_frame(tmp_path):
    path = tmp_path / "reply.wav"
    frames = [torch.linspace(-0.5, 0.5, SAMPLES_PER_FRAME) * (i + 1) for i in range(3)]
    with GrowingWav(path) as wav:
        for count, frame in enumerate(frames, start=1):
            wav.append(frame)
            audio, rate = sf.read(path, dtype="int16")  # read while still being written
            assert rate == 24_000 and len(audio) == count * SAMPLES_PER_FRAME
            expected = (torch.cat(frames[:count]).clamp(-1, 1) * 32767).round().numpy()
            assert np.array_equal(audio, expected.astype(np.int16))
        header = path.read_bytes()[:44]
    (riff_size,), (data_size,) = struct.unpack("<I", header[4:8]), struct.unpack("<I", header[40:])
    assert data_size == 3 * SAMPLES_PER_FRAME * 2 and riff_size == data_size + 36


def test_incremental_text_never_emits_half_a_character():
    tokenizer = train_tokenizer(SENTENCES, vocab_size=300)
    text = "Smile 🙂 at the naïve café"
    ids = tokenizer.encode(text)
    assert len(ids) > len(text.split())  # the emoji's 4 bytes are separate tokens
    stream = IncrementalText(tokenizer)
    deltas = [stream.push(token) for token in ids]
    assert "".join(deltas) == text == stream.text
    assert not any("\ufffd" in delta for delta in deltas)
    assert "" in deltas  # held back while the emoji was incomplete


def test_reply_streams_the_generated_text_and_every_frame_decoded_in_order(loaded):
    chat = loaded.chat(settings=SETTINGS, seed=3)
    deltas, chunks, (done,) = split(chat.reply(QUESTION))
    assert "".join(d.text for d in deltas) == done.text
    assert [c.index for c in chunks] == list(range(done.frames)) and done.frames > 0
    assert chunks[0].step == 8  # frame 0 is whole once codebook 7 has its first code
    assert all(a.seconds <= b.seconds for a, b in itertools.pairwise(chunks))

    # The same seed through generate_stream and a fresh streaming decoder: same audio.
    fresh = loaded.chat(settings=SETTINGS)
    prompt = fresh.prompt([fresh.user_turn(QUESTION)])
    generator = torch.Generator().manual_seed(3)
    decoder = loaded.codec.streaming_decoder()
    model = loaded.trained.model
    events = list(generate_stream(model, prompt.streams, settings=SETTINGS, generator=generator))
    audio = [e for e in events if isinstance(e, AudioFrame)]
    frames = [decoder.decode_frame(e.codes, e.distributions) for e in audio]
    tokens = [e.token_id for e in events if isinstance(e, TextToken) and not e.is_end]
    assert loaded.tokenizer.decode(tokens).startswith(done.text)
    assert len(frames) == len(chunks)
    for chunk, samples in zip(chunks, frames, strict=True):
        assert chunk.samples.shape == (SAMPLES_PER_FRAME,)
        assert torch.equal(chunk.samples, samples)


def test_history_holds_each_exchange_even_when_a_reply_is_cut_short(loaded):
    chat = loaded.chat(settings=SETTINGS, seed=0)
    first = list(chat.reply(QUESTION))[-1]
    assert [t.role for t in chat.history] == ["user", "assistant"]
    assert chat.history[1].text == first.text

    stream = chat.reply("And the boat?")
    heard = ""
    for event in stream:
        if isinstance(event, AudioChunk):
            break  # the listener interrupted after the first frame
        heard += event.text
    stream.close()
    assert [t.role for t in chat.history] == ["user", "assistant"] * 2
    assert chat.history[2].text == "And the boat?"
    assert chat.history[3].text == heard and heard

    prompt = chat.prompt([*chat.history, chat.user_turn("Thanks.")])
    said = loaded.tokenizer.decode(prompt.streams[-1].tolist())
    assert QUESTION in said and "And the boat?" in said and first.text in said
    chat.reset()
    assert chat.history == []


def test_old_exchanges_are_dropped_to_leave_room_for_the_reply(loaded):
    chat = loaded.chat(settings=dataclasses.replace(SETTINGS, max_steps=200))
    limit = loaded.trained.model.config.max_seq_len
    long_answer = " ".join(["the boat is near the bridge"] * 12)
    for index in range(8):
        chat.history += [chat.user_turn(f"question {index}"), Turn("assistant", long_answer)]
    prompt, steps = chat.fit_prompt(chat.user_turn(QUESTION))
    assert prompt.length + steps <= limit and steps == 200
    assert 1 < prompt.turns < 17 and prompt.turns % 2 == 1  # whole exchanges, then the question
    with pytest.raises(ValueError, match="context"):
        chat.fit_prompt(chat.user_turn(" ".join(["word"] * limit)))


def test_spoken_question_and_image_fill_their_placeholders(loaded):
    chat = loaded.chat(settings=SETTINGS)
    audio = torch.from_numpy(speech16k("How many circles are there?"))
    image = Image.new("RGB", (80, 60), "red")
    turn = chat.user_turn("Look:", audio=audio, sample_rate=16_000, image=image)
    frames = -(-len(audio) // 1280)  # ceil(seconds * 12.5)
    assert turn.audio_features.shape == (frames, loaded.trained.config.audio_feature_dim)
    assert turn.image_features.shape[0] == 64
    text_row = chat.prompt([turn]).streams[-1]
    assert int((text_row == AUDIO_PLACEHOLDER_ID).sum()) == frames
    assert int((text_row == IMAGE_PLACEHOLDER_ID).sum()) == 64
    _, chunks, (done,) = split(chat.reply("Look:", audio=audio, sample_rate=16_000, image=image))
    assert done.frames == len(chunks) > 0


def test_bf16_weights_take_fp32_features_and_agree_with_fp32_logits(loaded, store):
    half = load(store.checkpoint, store=store.root, codec=store.codec, dtype=torch.bfloat16)
    assert {p.dtype for p in half.trained.model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in half.trained.image_encoder.parameters()} == {torch.float32}
    audio = torch.from_numpy(speech16k("How many circles are there?"))
    image = Image.new("RGB", (80, 60), "red")
    logits = []
    for model in (loaded, half):
        chat = model.chat(voice=model.voice(VOICE_NAMES[0]), settings=SETTINGS, seed=0)
        prompt = chat.prompt([chat.user_turn("Look:", audio=audio, image=image)])
        with torch.no_grad():
            output = model.trained.model(
                prompt.streams[None], prompt.audio_features, prompt.image_features,
                prompt.speaker[None],
            )  # fmt: skip
        logits.append(output.text_logits[0, -1].float())
    # bf16 keeps 8 bits of mantissa: logits off by a small share of their spread.
    error = (logits[1] - logits[0]).abs().max() / logits[0].std()
    assert error < 0.1
    chat = half.chat(voice=half.voice(VOICE_NAMES[0]), settings=SETTINGS, seed=0)
    _, chunks, (done,) = split(chat.reply("Look:", audio=audio, sample_rate=16_000, image=image))
    assert done.frames == len(chunks) > 0
    assert all(c.samples.dtype == torch.float32 and c.samples.isfinite().all() for c in chunks)


def test_bad_inputs_fail_before_generation_naming_the_problem(loaded, tmp_path):
    chat = loaded.chat(settings=SETTINGS)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(AudioError, match=r"broken\.wav"):
        chat.reply(audio=broken)
    not_image = tmp_path / "photo.png"
    not_image.write_text("hello")
    with pytest.raises(ImageError, match=r"photo\.png"):
        chat.reply("what is it?", image=not_image)
    with pytest.raises(ValueError, match="empty user turn"):
        chat.reply("   ")
    assert chat.history == []


def test_a_voice_goes_into_the_prompt_as_marker_codes_and_speaker(loaded, store):
    chat = loaded.chat(settings=SETTINGS)
    voice = loaded.voice(VOICE_NAMES[0])
    chat.set_voice(voice)
    prompt = chat.prompt([chat.user_turn(QUESTION)])
    frames = voice.reference_frames
    audio_rows = prompt.streams[:8]
    assert torch.equal(audio_rows[:, -frames:], voice.codes)
    assert (audio_rows[:, -frames - 1] == SPEAKER_MARKER_ID).all()
    assert torch.equal(prompt.speaker, voice.speaker)
    _, chunks, _ = split(chat.reply(QUESTION))
    assert chunks

    other = dataclasses.replace(voice, codec_id="offline-0000000000000000")
    with pytest.raises(VoiceError, match="offline-0000000000000000"):
        chat.set_voice(other)
    with pytest.raises(FileNotFoundError, match="alto, bass"):
        find_voice("tenor", loaded.codec.codec_id, store.root)


def test_cloning_a_clip_uses_its_codes_and_speaker_vector(loaded, tmp_path):
    clip = tmp_path / "me.wav"
    speech = speech16k("The quick brown fox jumps over the lazy dog.")
    save_wav(clip, torch.from_numpy(speech), 16_000)
    chat = loaded.chat(settings=SETTINGS)
    voice = chat.clone_voice(clip)
    assert chat.voice is voice and voice.name == "me"
    assert voice.speaker.shape == (SPEAKER_DIM,)
    assert abs(float(voice.speaker.norm()) - 1.0) < 1e-4
    reference = voice.codes.shape[1]
    assert 30 <= reference <= 38  # the clip's first 3 s (or all of it) at 12.5 frames/s
    _, chunks, _ = split(chat.reply(QUESTION))
    assert chunks


def test_loading_refuses_another_tokenizer_or_codec(store, small_codec, tmp_path):
    other_tokenizer = train_tokenizer(["entirely different words here"], vocab_size=280)
    with pytest.raises(CompatibilityError, match="tokenizer") as error:
        load(store.checkpoint, store=store.root, tokenizer=other_tokenizer, codec=store.codec)
    assert other_tokenizer.tokenizer_id in str(error.value)
    shifted = OfflineCodec(small_codec.codebooks + 1.0, small_codec.mel)
    with pytest.raises(CompatibilityError, match=shifted.codec_id):
        load(store.checkpoint, store=store.root, codec=shifted)
    with pytest.raises(ValueError, match="exactly one"):
        load(store.checkpoint, model="test", store=store.root)


def test_model_names_resolve_to_the_last_trained_stage(store):
    assert resolve_model("test", store.root) == store.root / "training/test/a2a/final"
    assert resolve_model("test/t2a", store.root) == store.root / "training/test/t2a/final"
    with pytest.raises(FileNotFoundError, match="completed: a2a, t2a, text"):
        resolve_model("test/i2t", store.root)
    with pytest.raises(FileNotFoundError, match="trained models: test"):
        resolve_model("nothing", store.root)


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_cli_chat_streams_text_and_a_growing_wav(store, tmp_path, capsys):
    out = tmp_path / "reply.wav"
    code = main([
        "chat", "--model", "test", "--store", str(store.root), "--text", QUESTION,
        "--voice", "bass", "--max-steps", "12", "--seed", "1", "--out", str(out),
    ])  # fmt: skip
    assert code == 0
    summary = last_json(capsys)
    audio, rate = sf.read(out)
    assert rate == 24_000 and summary["frames"] == 12 - 8
    assert len(audio) == summary["frames"] * SAMPLES_PER_FRAME


def test_cli_chat_keeps_a_dialogue_from_stdin(store, tmp_path, capsys, monkeypatch):
    lines = ["What colour is the ball?", "/image missing.png what is it?", "/voice bass", "Why?"]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    out = tmp_path / "reply.wav"
    args = ["chat", "--model", "test", "--store", str(store.root), "--max-steps", "10"]
    assert main([*args, "--out", str(out)]) == 0
    assert "missing.png: no such file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.glob("*.wav")) == ["reply-2.wav", "reply.wav"]
    assert len(sf.read(tmp_path / "reply-2.wav")[0]) == 2 * SAMPLES_PER_FRAME


def test_cli_chat_refuses_frames_per_token_rules_that_cannot_hold(store, capsys):
    args = ["chat", "--model", "test", "--store", str(store.root), "--text", QUESTION]
    assert main([*args, "--min-frames-per-token", "-1"]) == 2
    assert "--min-frames-per-token may not be negative" in capsys.readouterr().err
    assert main([*args, "--min-frames-per-token", "3", "--max-frames-per-token", "2"]) == 2
    assert "--max-frames-per-token (2.0) must be at least 1" in capsys.readouterr().err


def test_cli_sampling_arguments_choose_how_acoustic_codebooks_decode():
    parser = argparse.ArgumentParser()
    add_sampling_arguments(parser)
    default = sampling_from_args(parser.parse_args([]))
    assert default.acoustic_expectation_temperature == 0.5
    sharper = sampling_from_args(parser.parse_args(["--acoustic-expectation", "0.25"]))
    assert sharper.acoustic_expectation_temperature == 0.25
    codes_only = sampling_from_args(parser.parse_args(["--acoustic-expectation", "0"]))
    assert codes_only.acoustic_expectation_temperature is None


def test_cli_chat_reports_a_tokenizer_mismatch(store, tmp_path, capsys):
    other = tmp_path / "other.json"
    train_tokenizer(["another corpus altogether"], vocab_size=280).save(other)
    code = main(["chat", "--checkpoint", str(store.checkpoint), "--store", str(store.root),
                 "--tokenizer", str(other), "--text", QUESTION])  # fmt: skip
    assert code == 2
    assert "trained with tokenizer" in capsys.readouterr().err


def test_cli_info_shows_parameters_codec_and_mlflow_run(store, capsys):
    assert main(["info", "--model", "test", "--store", str(store.root)]) == 0
    info = last_json(capsys)
    assert info["stage"] == "a2a" and info["codec_id"] == store.codec.codec_id
    assert info["lineage"]["mlflow_run_id"] == RUN_ID
    assert info["lineage"]["inputs"] == [{"task": "a2a", "rows": 7}]
    params = info["parameters"]
    assert params["talker"] == sum(v for k, v in params.items() if k.startswith("talker."))
    assert info["encoder_parameters"]["audio_encoder"] > 0


def test_cli_voices_lists_and_builds(store, capsys):
    assert main(["voices", "list", "--store", str(store.root)]) == 0
    assert [v["name"] for v in last_json(capsys)["voices"]] == list(VOICE_NAMES)
    assert main(["voices", "build", "--espeak", "en-us+f4", "--store", str(store.root)]) == 0
    built = last_json(capsys)
    voice = find_voice("en-us+f4", store.codec.codec_id, store.root)
    assert voice.reference_frames == built["frames"] > 20
    assert voice.speaker.shape == (SPEAKER_DIM,)
    (store.root / "voices" / store.codec.codec_id / "en-us+f4.voice").unlink()
