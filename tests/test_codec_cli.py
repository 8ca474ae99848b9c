"""`omni codec fit` and `omni codec roundtrip`, run through the CLI entry point."""

from __future__ import annotations

import json
import math

import soundfile as sf
import torch

from omni_model.cli import main
from omni_model.quantization import OfflineCodec
from omni_model.quantization.mimi import save_random_mimi


def write_corpus(folder, speech_corpus) -> None:
    """Four usable clips in three formats (one in a subfolder) and two broken files."""
    clips = [utterance.audio.numpy() for utterance in speech_corpus.train[:4]]
    (folder / "nested").mkdir(parents=True)
    sf.write(folder / "a.wav", clips[0], 24_000)
    sf.write(folder / "nested" / "b.flac", clips[1], 24_000)
    sf.write(folder / "c.mp3", clips[2], 24_000)
    sf.write(folder / "d.WAV", clips[3][::3], 8_000)  # another rate, upper-case suffix
    (folder / "broken.wav").write_bytes(b"RIFF....WAVEfmt nonsense")
    (folder / "empty.ogg").write_bytes(b"")
    (folder / "notes.txt").write_text("not audio, not even looked at")


def test_fit_skips_bad_files_by_name_and_writes_a_loadable_codec(tmp_path, speech_corpus, capsys):
    write_corpus(tmp_path / "audio", speech_corpus)
    out = tmp_path / "codec.safetensors"
    args = ["codec", "fit", str(tmp_path / "audio"), "--out", str(out)]
    assert main([*args, "--first-stage-codes", "32", "--residual-stage-codes", "16"]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2
    assert "broken.wav: not readable as audio" in warnings[0]
    assert "empty.ogg: empty file" in warnings[1]
    summary = json.loads(captured.out.splitlines()[-1])
    assert (summary["files"], summary["skipped"]) == (4, 2)
    loaded = OfflineCodec.load(out)
    assert loaded.codec_id == summary["codec_id"]
    assert loaded.stage_sizes == (32,) + (16,) * 7


def test_fit_with_transcripts_can_give_a_phonetic_first_stage(tmp_path, speech_corpus, capsys):
    folder = tmp_path / "audio"
    folder.mkdir()
    for index, utterance in enumerate(speech_corpus.train[:6]):
        sf.write(folder / f"{index}.wav", utterance.audio.numpy(), 24_000)
        (folder / f"{index}.txt").write_text(utterance.text)
    out = tmp_path / "codec.safetensors"
    fit = ["codec", "fit", str(folder), "--out", str(out), "--tagger-steps", "20"]
    assert main([*fit, "--first-stage", "phones"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["first_stage"] == "phones" and OfflineCodec.load(out).tagger is not None
    (folder / "5.txt").unlink()
    assert main([*fit, "--first-stage", "phones"]) == 2
    error = capsys.readouterr().err
    assert "1 have none" in error and "5.wav" in error
    assert main(fit) == 0  # k-means by default
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["first_stage"] == "kmeans" and OfflineCodec.load(out).tagger is None


def test_fit_without_usable_audio_fails_clearly(tmp_path, capsys):
    (tmp_path / "bad.wav").write_bytes(b"\0" * 10)
    assert main(["codec", "fit", str(tmp_path), "--out", str(tmp_path / "c.st")]) == 2
    assert "no usable audio (1 audio files, 1 skipped)" in capsys.readouterr().err
    assert main(["codec", "fit", str(tmp_path / "nowhere"), "--out", "c.st"]) == 2
    assert "nowhere: no such directory" in capsys.readouterr().err


def roundtrip(args: list[str], capsys) -> dict:
    assert main(["codec", "roundtrip", *args]) == 0
    return json.loads(capsys.readouterr().out.splitlines()[-1])


def test_roundtrip_offline_writes_audio_as_long_as_the_input(
    tmp_path, small_codec, speech_corpus, capsys
):
    weights = tmp_path / "codec.safetensors"
    small_codec.save(weights)
    source = tmp_path / "in.flac"
    audio = speech_corpus.held_out[0].audio
    sf.write(source, audio.numpy()[::2], 12_000)  # stored at 12 kHz: resampled to 24
    out = tmp_path / "out.wav"
    printed = roundtrip(
        [str(source), str(out), "--codec", "offline", "--weights", str(weights)], capsys
    )
    frames = math.ceil(len(audio[::2]) * 2 / 1_920)
    assert printed == {
        "frames": frames,
        "code_shape": [8, frames],
        "codec_id": small_codec.codec_id,
    }
    info = sf.info(out)
    assert (info.samplerate, info.channels, info.frames) == (24_000, 1, len(audio[::2]) * 2)
    decoded, _ = sf.read(out, dtype="float32")
    assert torch.from_numpy(decoded).abs().max() > 0.05


def test_roundtrip_mimi_needs_weights_or_permission_to_download(tmp_path, capsys):
    source = tmp_path / "in.wav"
    sf.write(source, 0.1 * torch.randn(24_000).numpy(), 24_000)
    assert (
        main(["codec", "roundtrip", str(source), str(tmp_path / "o.wav"), "--codec", "mimi"]) == 2
    )
    assert "no Mimi weights given" in capsys.readouterr().err

    weights = save_random_mimi(tmp_path / "mimi.safetensors")
    printed = roundtrip(
        [str(source), str(tmp_path / "o.wav"), "--codec", "mimi", "--weights", str(weights)], capsys
    )
    assert printed["code_shape"] == [8, 13] and printed["codec_id"].startswith("mimi-")
    assert sf.info(tmp_path / "o.wav").frames == 24_000
