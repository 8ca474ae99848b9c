"""Mimi through the same loading path users take, with a random-weight checkpoint."""

from __future__ import annotations

import math
import os
import re
import shutil
import socket
import struct

import huggingface_hub
import pytest
import torch
from safetensors.torch import save_file

from omni_model.quantization.mimi import (
    HF_FILENAME,
    HF_REPO,
    MimiCodec,
    MimiWeightsError,
    load_mimi,
    save_random_mimi,
    weights_hash,
)

SAMPLE_RATE = 24_000


def speechlike(milliseconds: int, seed: int) -> torch.Tensor:
    """(samples,) of 50 ms tones with random pitch and loudness: varied frame to frame."""
    generator = torch.Generator().manual_seed(seed)
    samples = milliseconds * SAMPLE_RATE // 1000
    segments = -(-samples // 1200)
    pitch = (100 + 900 * torch.rand(segments, 1, generator=generator)).repeat(1, 1200).flatten()
    loudness = (0.05 + 0.5 * torch.rand(segments, 1, generator=generator)).repeat(1, 1200)
    phase = 2 * math.pi * torch.cumsum(pitch, dim=0) / SAMPLE_RATE
    return (loudness.flatten() * torch.sin(phase))[:samples]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory):
    return save_random_mimi(tmp_path_factory.mktemp("mimi") / "mimi.safetensors", seed=0)


@pytest.fixture(scope="module")
def codec(checkpoint) -> MimiCodec:
    return load_mimi(checkpoint)


def test_frame_count_shape_and_dtype(codec: MimiCodec):
    for milliseconds in (80, 500, 1000, 1050, 1640):
        audio = speechlike(milliseconds, seed=milliseconds)[None]
        codes, frames = codec.encode(audio)
        expected = math.ceil(milliseconds / 1000 * 12.5)
        assert codes.shape == (1, 8, expected)
        assert codes.dtype == torch.long
        assert frames.tolist() == [expected]


def test_codes_in_range_and_varied(codec: MimiCodec):
    codes, _ = codec.encode(speechlike(2000, seed=1)[None])  # 25 frames
    assert codes.min() >= 0 and codes.max() <= 2047
    distinct = [len(codes[0, k].unique()) for k in range(8)]
    assert min(distinct) >= 10, distinct


def test_batch_encode_matches_per_item(codec: MimiCodec):
    clips = [speechlike(1300, seed=2), speechlike(700, seed=3)]
    batch = torch.zeros(2, len(clips[0]))
    batch[1, : len(clips[1])] = clips[1]
    batch[0] = clips[0]
    codes, frames = codec.encode(batch, torch.tensor([len(c) for c in clips]))
    assert frames.tolist() == [17, 9]
    for item, clip in enumerate(clips):
        alone, _ = codec.encode(clip[None])
        assert torch.equal(codes[item, :, : frames[item]], alone[0])
    assert (codes[1, :, 9:] == 0).all()


def test_decode_lengths_and_padding(codec: MimiCodec):
    codes = torch.randint(0, 2048, (2, 8, 6), generator=torch.Generator().manual_seed(4))
    audio, lengths = codec.decode(codes, torch.tensor([6, 4]))
    assert audio.shape == (2, 6 * 1920)
    assert lengths.tolist() == [6 * 1920, 4 * 1920]
    assert (audio[1, 4 * 1920 :] == 0).all()
    assert audio[0, 4 * 1920 :].abs().max() > 0
    assert torch.isfinite(audio).all()


def test_streaming_decode_equals_batch_decode(codec: MimiCodec):
    generator = torch.Generator().manual_seed(5)
    streams = torch.randint(0, 2048, (2, 8, 8), generator=generator)
    expected, _ = codec.decode(streams)
    decoders = [codec.streaming_decoder(), codec.streaming_decoder()]
    chunks: list[list[torch.Tensor]] = [[], []]
    for frame in range(streams.shape[2]):  # two streams interleaved on one model
        for item, decoder in enumerate(decoders):
            chunks[item].append(decoder.decode_frame(streams[item, :, frame]))
    assert all(chunk.shape == (1920,) for chunk in chunks[0])
    streamed = torch.stack([torch.cat(c) for c in chunks])
    torch.testing.assert_close(streamed, expected, atol=1e-5, rtol=0)
    assert not codec.model.is_streaming


def test_codec_id_stable_and_weight_specific(checkpoint, codec: MimiCodec, tmp_path):
    assert codec.codec_id == "mimi-" + weights_hash(checkpoint)
    assert re.fullmatch(r"mimi-[0-9a-f]{16}", codec.codec_id)
    copy = tmp_path / "copy.safetensors"
    shutil.copyfile(checkpoint, copy)
    assert weights_hash(copy) == weights_hash(checkpoint)  # content, not path
    other = tmp_path / "other.safetensors"
    shutil.copyfile(checkpoint, other)
    with other.open("r+b") as file:  # the last float of the last tensor: still a valid checkpoint
        file.seek(-4, os.SEEK_END)
        file.write(struct.pack("<f", 0.5))
    assert load_mimi(other).codec_id != codec.codec_id


def test_missing_weights_never_touch_the_hub(monkeypatch, tmp_path):
    def no_network(*args, **kwargs):
        raise AssertionError("the network was contacted")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(MimiWeightsError, match=r"--weights.*" + HF_REPO):
        load_mimi(None)
    missing = tmp_path / "absent.safetensors"
    with pytest.raises(MimiWeightsError, match=re.escape(str(missing))):
        load_mimi(missing)


def test_download_only_when_allowed(monkeypatch, checkpoint):
    requests = []

    def fake_download(repo_id: str, filename: str, **kwargs) -> str:
        requests.append((repo_id, filename))
        return str(checkpoint)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    codec = load_mimi(None, allow_download=True)
    assert requests == [(HF_REPO, HF_FILENAME)]
    assert codec.codec_id == "mimi-" + weights_hash(checkpoint)

    def offline(repo_id: str, filename: str, **kwargs) -> str:
        raise OSError("network unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(MimiWeightsError, match=r"download failed.*--weights"):
        load_mimi(None, allow_download=True)


def test_bad_weights_files_name_the_file(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(MimiWeightsError, match=re.escape(str(junk)) + ".*safetensors"):
        load_mimi(junk)
    wrong = tmp_path / "wrong.safetensors"
    save_file({"weight": torch.zeros(3)}, str(wrong))
    with pytest.raises(MimiWeightsError, match=re.escape(str(wrong)) + ".*not a Mimi checkpoint"):
        load_mimi(wrong)
    pickle = tmp_path / "mimi.pt"
    pickle.write_bytes(b"x")
    with pytest.raises(MimiWeightsError, match=re.escape(str(pickle)) + ".*safetensors"):
        load_mimi(pickle)


def test_bad_codes_raise_clear_errors(codec: MimiCodec):
    with pytest.raises(ValueError, match=r"0\.\.2047"):
        codec.decode(torch.full((1, 8, 2), 2048))
    with pytest.raises(ValueError, match=r"\(8,\)"):
        codec.streaming_decoder().decode_frame(torch.zeros(7, dtype=torch.long))
    with pytest.raises(ValueError, match="integers"):
        codec.decode(torch.zeros(1, 8, 2))
    with pytest.raises(ValueError, match=r"\(batch, 8, frames\)"):
        codec.decode(torch.zeros(1, 4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"0\.\.2047"):
        codec.streaming_decoder().decode_frame(torch.full((8,), -1))
    with pytest.raises(ValueError, match="lengths"):
        codec.encode(torch.zeros(1, 1920), torch.tensor([1921]))
    with pytest.raises(ValueError, match=r"\(batch, samples\)"):
        codec.encode(torch.zeros(1920))
    with pytest.raises(ValueError, match="NaN"):
        codec.encode(torch.full((1, 1920), float("nan")))
