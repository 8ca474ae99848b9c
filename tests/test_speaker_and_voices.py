"""Speaker vectors from resemblyzer, and voices: build from clips, save, load, refuse mixing."""

import itertools
import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import save_file

from omni_model.audio_io import load_audio, resample
from omni_model.encoders.speaker import SpeakerEncoder, SpeakerError, cosine_similarity
from omni_model.quantization.offline import OfflineCodec
from omni_model.tts import synthesize
from omni_model.voices import Voice, VoiceError, build_voice

RATE = 24_000
# A female and a male espeak-ng variant: measured far apart by resemblyzer (cosine ~0.65-0.70
# across sentences, against ~0.87-0.9 for one voice). Not every pair of variants is:
# en-us+f2/f5 and f3/f4 score 0.95-0.97, and the male variants 0.86-0.93 with each other.
VOICES = ("en-us+f3", "en-us+m3")
SENTENCES = (
    "Please bring me three red apples and a glass of cold water.",
    "A small blue square sits to the left of two green circles.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
)


@pytest.fixture(scope="module")
def speaker_encoder() -> SpeakerEncoder:
    return SpeakerEncoder()


@pytest.fixture(scope="module")
def speech() -> dict[tuple[str, int], torch.Tensor]:
    """(voice, sentence index) -> (samples,) at 24 kHz."""
    return {
        (voice, index): synthesize(text, voice, sample_rate=RATE)
        for voice in VOICES
        for index, text in enumerate(SENTENCES)
    }


@pytest.fixture(scope="module")
def vectors(speech, speaker_encoder) -> dict[tuple[str, int], torch.Tensor]:
    """(voice, sentence index) -> its (256,) speaker vector."""
    return {key: speaker_encoder.embed(audio, RATE) for key, audio in speech.items()}


@pytest.fixture(scope="module")
def codec(speech) -> OfflineCodec:
    """The real offline codec, fitted (briefly) on the test speech."""
    return OfflineCodec.fit(list(speech.values()), iterations=2, progress=False)


def test_same_voice_is_more_similar_than_another_voice(speaker_encoder, vectors):
    for vector in vectors.values():
        assert vector.shape == (speaker_encoder.dim,) == (256,)
        assert vector.dtype == torch.float32
        assert math.isclose(vector.norm().item(), 1.0, abs_tol=1e-4)
    pairs = itertools.combinations(range(len(SENTENCES)), 2)
    same = [
        cosine_similarity(vectors[v, i], vectors[v, j]).item() for v in VOICES for i, j in pairs
    ]
    different = [
        cosine_similarity(vectors[VOICES[0], i], vectors[VOICES[1], j]).item()
        for i in range(len(SENTENCES))
        for j in range(len(SENTENCES))
    ]
    assert min(same) > max(different) + 0.1, (same, different)


def test_embedding_does_not_depend_on_the_sample_rate(speaker_encoder, speech, vectors):
    audio = speech[VOICES[0], 0]
    at_24k = vectors[VOICES[0], 0]
    at_16k = speaker_encoder.embed(torch.from_numpy(resample(audio.numpy(), RATE, 16_000)), 16_000)
    at_44k = speaker_encoder.embed(torch.from_numpy(resample(audio.numpy(), RATE, 44_100)), 44_100)
    assert cosine_similarity(at_24k, at_16k) > 0.99
    assert cosine_similarity(at_24k, at_44k) > 0.99
    assert torch.equal(at_24k, speaker_encoder.embed(audio, RATE))  # deterministic


def test_clips_without_a_voice_raise_speaker_error(speaker_encoder):
    bad = {
        "too short": (torch.randn(RATE // 4) * 0.1, "too short"),
        "silence": (torch.zeros(2 * RATE), "silent"),
        "quiet noise": (torch.randn(2 * RATE) * 1e-3, "found 0.00 s of speech"),
        "stereo": (torch.randn(2, RATE), "expected mono"),
    }
    for name, (audio, reason) in bad.items():
        with pytest.raises(SpeakerError, match=f"^{name}: .*{reason}"):
            speaker_encoder.embed(audio, RATE, name=name)


def test_cosine_similarity_broadcasts_over_batches():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    b = torch.tensor([[2.0, 0.0], [-1.0, -1.0], [3.0, 0.0]])
    torch.testing.assert_close(cosine_similarity(a, b), torch.tensor([1.0, -1.0, 0.0]))
    assert cosine_similarity(a, a[0]).shape == (3,)


@pytest.mark.parametrize(
    ("suffix", "rate"), [(".wav", 22_050), (".flac", 48_000), (".mp3", 16_000)]
)
def test_build_voice_from_any_format_and_rate(
    suffix, rate, tmp_path, speech, vectors, codec, speaker_encoder
):
    audio = speech[VOICES[1], 2]
    clip = tmp_path / f"narrator{suffix}"
    sf.write(clip, resample(audio.numpy(), RATE, rate), rate)
    voice = build_voice(clip, codec, speaker_encoder, max_seconds=2.0)
    decoded = load_audio(clip, sample_rate=RATE)  # what build_voice read, at the codec's rate
    expected_codes, _ = codec.encode(decoded[None, : 2 * RATE])
    assert voice.name == "narrator" and voice.codec_id == codec.codec_id
    assert voice.codes.shape == (8, math.ceil(2.0 * 12.5))
    assert torch.equal(voice.codes, expected_codes[0])
    assert voice.source["clip"] == str(clip)
    assert math.isclose(voice.source["clip_seconds"], len(decoded) / RATE)
    assert cosine_similarity(voice.speaker, vectors[VOICES[1], 2]) > 0.95


def test_voice_round_trips_through_one_small_file(tmp_path, speech, codec, speaker_encoder):
    clip = tmp_path / "alice.wav"
    sf.write(clip, speech[VOICES[0], 0].numpy(), RATE)
    voice = build_voice(clip, codec, speaker_encoder, name="alice")
    path = tmp_path / "alice.voice"
    voice.save(path)
    assert path.stat().st_size < 8_000
    loaded = Voice.load(path, codec_id=codec.codec_id)
    assert torch.equal(loaded.codes, voice.codes) and torch.equal(loaded.speaker, voice.speaker)
    assert (loaded.name, loaded.codec_id, loaded.source) == ("alice", codec.codec_id, voice.source)
    assert loaded.reference_frames == voice.codes.shape[1] == math.ceil(3.0 * 12.5)

    with pytest.raises(VoiceError, match=f"{path}: its codes were made by codec {codec.codec_id}"):
        Voice.load(path, codec_id="mimi-0123456789abcdef")
    with pytest.raises(VoiceError, match="not offline-other"):
        loaded.check_codec("offline-other")


def test_bad_voices_raise_voice_error_naming_the_file(tmp_path):
    speaker = torch.ones(256) / 16
    header = {"format": "tiny-omni-voice", "version": 1, "name": "ok", "codec_id": "offline-x"}
    header["source"] = {}
    codes = torch.zeros(8, 5, dtype=torch.long)
    invalid = {
        "out_of_range": (codes + 2048, speaker, "codes must lie in 0..2047"),
        "seven_codebooks": (codes[:7], speaker, r"codes must have shape \(8, frames > 0\)"),
        "no_frames": (codes[:, :0], speaker, r"codes must have shape"),
        "float_codes": (codes.float(), speaker, "codes must be int64"),
        "nan_speaker": (codes, speaker * float("nan"), "speaker vector holds NaN"),
        "no_speaker": (codes, speaker[:0], "speaker must be a float32 vector"),
    }
    for name, (bad_codes, bad_speaker, reason) in invalid.items():
        with pytest.raises(VoiceError, match=f"voice '{name}': {reason}"):
            Voice(name, bad_codes, bad_speaker, "offline-x")
        path = tmp_path / f"{name}.voice"
        tensors = {"codes": bad_codes.contiguous(), "speaker": bad_speaker.contiguous()}
        save_file(tensors, str(path), metadata={"voice": json.dumps(header)})
        with pytest.raises(VoiceError, match=f"{path}: {reason}"):
            Voice.load(path)

    garbage = tmp_path / "garbage.voice"
    garbage.write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(VoiceError, match=f"{garbage}: unreadable voice file"):
        Voice.load(garbage)
    plain = tmp_path / "plain.safetensors"
    save_file({"codes": codes}, str(plain))
    with pytest.raises(VoiceError, match=f"{plain}: not a voice file"):
        Voice.load(plain)
    with pytest.raises(VoiceError, match="no such voice file"):
        Voice.load(tmp_path / "missing.voice")


def test_build_voice_names_a_clip_it_cannot_use(tmp_path, codec, speaker_encoder):
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    with pytest.raises(ValueError, match=f"{text}: not readable as audio"):
        build_voice(text, codec, speaker_encoder)
    hiss = tmp_path / "hiss.flac"
    sf.write(hiss, np.random.default_rng(0).normal(0, 1e-3, 2 * RATE), RATE)
    with pytest.raises(SpeakerError, match=f"{hiss}: .*found 0.00 s of speech"):
        build_voice(hiss, codec, speaker_encoder)
    with pytest.raises(ValueError, match="max_seconds must be positive"):
        build_voice(hiss, codec, speaker_encoder, max_seconds=0)
