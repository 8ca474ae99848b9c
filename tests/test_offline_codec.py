"""The offline codec: residual VQ on log-mel, fitted by k-means, decoded by Griffin-Lim."""

from __future__ import annotations

import json
import math
from itertools import pairwise

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from omni_model.evaluation.asr import PocketsphinxTranscriber
from omni_model.quantization import CODEBOOK_SIZE, OfflineCodec, load_codec
from omni_model.quantization.offline import FIRST_STAGE_CODES, RESIDUAL_STAGE_CODES, kmeans

SAMPLE_RATE = 24_000


def pad_batch(clips: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad clips into (B, longest) with their lengths (B,)."""
    lengths = torch.tensor([len(clip) for clip in clips])
    batch = torch.zeros(len(clips), int(lengths.max()))
    for row, clip in enumerate(clips):
        batch[row, : len(clip)] = clip
    return batch, lengths


def spectral_error(codec: OfflineCodec, audio: torch.Tensor, codes: torch.Tensor) -> float:
    """How far audio's STFT magnitudes are from those the codes describe (relative norm)."""
    target = codec.magnitudes(codes)  # (1, bins, 8F)
    actual = codec.log_mel.stft(audio[None]).abs()[..., :-1]
    return float((actual - target).norm() / target.norm())


def test_residual_energy_falls_stage_by_stage_on_held_out_speech(small_codec, speech_corpus):
    for utterance in speech_corpus.held_out[:3]:
        energies = small_codec.residual_energies(utterance.audio)  # unquantized, stages 1..8
        assert len(energies) == 9
        assert all(after < before for before, after in pairwise(energies)), energies
        assert energies[1] < 0.25 * energies[0]  # the first stage captures the spectral shape
        assert energies[8] < 0.9 * energies[1]  # the later seven still add detail


@pytest.mark.parametrize("seconds", [0.04, 0.08, 0.5, 1.0, 1.23, 2.5])
def test_frame_count_is_ceil_of_seconds_times_12_5(small_codec, seconds):
    generator = torch.Generator().manual_seed(0)
    audio = 0.1 * torch.randn(1, round(seconds * SAMPLE_RATE), generator=generator)
    codes, frames = small_codec.encode(audio)
    expected = math.ceil(round(seconds * 12.5, 6))
    assert codes.shape == (1, 8, expected) and codes.dtype == torch.long
    assert frames.tolist() == [expected]
    decoded, lengths = small_codec.decode(codes, frames)
    assert decoded.shape == (1, expected * 1920) and lengths.tolist() == [expected * 1920]


def test_codes_are_deterministic_in_range_and_varied(small_codec, speech_corpus):
    audio = speech_corpus.held_out[0].audio[None]
    codes, _ = small_codec.encode(audio)
    assert torch.equal(codes, small_codec.encode(audio.clone())[0])
    assert codes.min() >= 0 and codes.max() < CODEBOOK_SIZE
    # Every stage varies from frame to frame (the later ones, fitted on residuals of 450
    # frames, with fewer codes: 5 to 18 of their 256 over these 41 frames).
    assert len(codes[0, 0].unique()) > 20 and all(len(stage.unique()) > 3 for stage in codes[0])


def test_fit_is_deterministic(small_codec, speech_corpus):
    again = OfflineCodec.fit([u.audio for u in speech_corpus.train[:12]], progress=False)
    assert again.codec_id == small_codec.codec_id
    assert small_codec.codec_id.startswith("offline-") and len(small_codec.codec_id) == 24


def test_save_load_gives_identical_codes(small_codec, speech_corpus, tmp_path):
    path = tmp_path / "codec.safetensors"
    small_codec.save(path)
    with safe_open(path, framework="pt") as file:
        assert list(file.keys()) == ["codebooks"]
        assert json.loads(file.metadata()["offline_codec"])["mel"]["n_mels"] == 80
    for loaded in (OfflineCodec.load(path), load_codec("offline", path)):
        assert loaded.codec_id == small_codec.codec_id
        assert torch.equal(loaded.codebooks, small_codec.codebooks)
        audio = speech_corpus.held_out[1].audio[None]
        assert torch.equal(loaded.encode(audio)[0], small_codec.encode(audio)[0])


def test_stages_encode_with_their_first_entries_only(small_codec, speech_corpus, tmp_path):
    """Coarse stages: codes below each stage's size, zero entries past it, kept by save/load,
    and the search never lands on an unused (zero) entry even where zero is the nearest."""
    assert small_codec.stage_sizes == (FIRST_STAGE_CODES,) + (RESIDUAL_STAGE_CODES,) * 7
    for stage, size in enumerate(small_codec.stage_sizes):
        assert small_codec.codebooks[stage, size:].abs().sum() == 0
    codes, _ = small_codec.encode(speech_corpus.held_out[0].audio[None])
    assert codes[0, 0].max() < FIRST_STAGE_CODES and len(codes[0, 0].unique()) > 5
    assert codes[0, 1:].max() < RESIDUAL_STAGE_CODES and len(codes[0, 1].unique()) > 5
    path = tmp_path / "codec.safetensors"
    small_codec.save(path)
    assert OfflineCodec.load(path).stage_sizes == small_codec.stage_sizes

    # Silence reads as log-mel of about -6.9 in every bin: the zero rows past each stage's
    # 4 entries (5, 6, 7, 8 everywhere) are nearer than any used entry, yet never chosen.
    sizes = (4,) * 8
    codebooks = torch.zeros(8, CODEBOOK_SIZE, 640)
    codebooks[:, :4] = 5.0 + torch.arange(4.0).view(1, 4, 1)
    codec = OfflineCodec(codebooks, stage_sizes=sizes)
    codes, _ = codec.encode(torch.zeros(1, 24_000))
    assert codes.max() < 4 and (codes[0, 0] == 0).all()
    with pytest.raises(ValueError, match=r"stage_sizes must be 8 sizes in 1\.\.2048"):
        OfflineCodec(codebooks, stage_sizes=(0,) * 8)
    with pytest.raises(ValueError, match=r"stage_sizes must be .*got \(4096, 256"):
        OfflineCodec.fit([speech_corpus.train[0].audio], first_stage_codes=4096, progress=False)


def test_distributions_decode_stages_1_to_7_as_their_expected_entries(small_codec, speech_corpus):
    codes, _ = small_codec.encode(speech_corpus.held_out[0].audio[None])  # (1, 8, F)
    one_hot = torch.nn.functional.one_hot(codes, CODEBOOK_SIZE).float()  # (1, 8, F, 2048)
    hard = small_codec.magnitudes(codes)
    assert torch.allclose(small_codec.magnitudes(codes, one_hot), hard, rtol=1e-3, atol=1e-5)
    # Uniform over all 2,048 codes: each later stage adds the mean of the entries it uses,
    # codebook 0 its chosen entry.
    uniform = torch.full_like(one_hot, 1 / CODEBOOK_SIZE)
    books, sizes = small_codec.codebooks, small_codec.stage_sizes
    means = sum(books[k, : sizes[k]].mean(dim=0) for k in range(1, 8))  # (640,)
    vectors = books[0, codes[0, 0]] + means  # (F, 640)
    assert torch.allclose(
        small_codec.magnitudes(codes, uniform),
        small_codec.log_mel.magnitudes(vectors[None]),
        rtol=1e-3,
        atol=1e-5,
    )
    streamed = small_codec.streaming_decoder().decode_frame(codes[0, :, 0], one_hot[0, :, 0])
    played = small_codec.streaming_decoder().decode_frame(codes[0, :, 0])
    assert torch.allclose(streamed, played, rtol=1e-3, atol=1e-5)
    with pytest.raises(ValueError, match=r"distributions must be \(batch, 8, frames, 2048\)"):
        small_codec.decode(codes, distributions=one_hot[..., :16])


def test_version_1_files_load_with_full_stages_and_their_old_codec_id(small_codec, tmp_path):
    """Files written before stage sizes existed: every entry of every stage is a centroid."""
    full = small_codec.codebooks.clone()
    full[0, FIRST_STAGE_CODES:] = 1.0
    header = {"format": "tiny-omni-offline-codec", "version": 1, "mel": {"n_mels": 80}}
    path = tmp_path / "old.safetensors"
    save_file({"codebooks": full}, str(path), metadata={"offline_codec": json.dumps(header)})
    loaded = OfflineCodec.load(path)
    assert loaded.stage_sizes == (CODEBOOK_SIZE,) * 8
    assert torch.equal(loaded.codebooks, full)
    assert loaded.codec_id == OfflineCodec(full, small_codec.mel).codec_id != small_codec.codec_id


def test_load_rejects_files_that_are_not_offline_codecs(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match=r"garbage\.safetensors: unreadable"):
        OfflineCodec.load(garbage)
    with pytest.raises(ValueError, match=r"other\.safetensors: not an offline codec"):
        OfflineCodec.load(other)
    with pytest.raises(FileNotFoundError, match=r"missing\.safetensors"):
        OfflineCodec.load(tmp_path / "missing.safetensors")


def test_load_codec_names_the_choices():
    with pytest.raises(ValueError, match="unknown codec 'encodec': expected one of mimi, offline"):
        load_codec("encodec")
    with pytest.raises(ValueError, match="needs its weights file"):
        load_codec("offline")


def test_padded_batch_encodes_like_each_item_alone(small_codec, speech_corpus):
    held_out = speech_corpus.held_out
    clips = [held_out[0].audio[:30_000], held_out[1].audio[:47_000], held_out[2].audio[:9_999]]
    batch, lengths = pad_batch(clips)
    codes, frames = small_codec.encode(batch, lengths)
    assert frames.tolist() == [16, 25, 6]
    for row, clip in enumerate(clips):
        alone, _ = small_codec.encode(clip[None])
        assert torch.equal(codes[row, :, : frames[row]], alone[0])
        assert (codes[row, :, frames[row] :] == 0).all()  # padding frames read as code 0
    decoded, samples = small_codec.decode(codes, frames)
    assert samples.tolist() == [16 * 1920, 25 * 1920, 6 * 1920]
    assert (decoded[2, samples[2] :] == 0).all() and decoded[2, : samples[2]].abs().max() > 0.01


def test_decode_rejects_bad_codes(small_codec):
    with pytest.raises(ValueError, match=r"codes must lie in 0\.\.2047"):
        small_codec.decode(torch.full((1, 8, 3), CODEBOOK_SIZE))
    with pytest.raises(ValueError, match="integer codes of shape"):
        small_codec.decode(torch.zeros(1, 7, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="frames must be"):
        small_codec.decode(torch.zeros(1, 8, 3, dtype=torch.long), torch.tensor([4]))


def test_streaming_decode_continues_the_waveform_as_well_as_batch_decode(
    small_codec, speech_corpus
):
    """Streamed chunks concatenate to the batch length, and match the codes' spectrum about
    as closely as batch Griffin-Lim (which sees the whole utterance at once) does."""
    codes, frames = small_codec.encode(speech_corpus.held_out[2].audio[None])
    decoder = small_codec.streaming_decoder()
    chunks = [decoder.decode_frame(codes[0, :, frame]) for frame in range(int(frames[0]))]
    assert all(chunk.shape == (1920,) for chunk in chunks)
    streamed = torch.cat(chunks)
    batch, _ = small_codec.decode(codes, frames)
    assert streamed.shape == batch[0].shape and torch.isfinite(streamed).all()
    streamed_error = spectral_error(small_codec, streamed, codes)
    batch_error = spectral_error(small_codec, batch[0], codes)
    assert streamed_error < 1.5 * batch_error
    replay = small_codec.streaming_decoder()
    assert torch.equal(replay.decode_frame(codes[0, :, 0]), chunks[0])  # deterministic


def test_kmeans_finds_separated_clusters():
    generator = torch.Generator().manual_seed(0)
    centers = 10 * torch.randn(4, 3, generator=generator)
    points = centers.repeat(50, 1) + 0.1 * torch.randn(200, 3, generator=generator)
    found = kmeans(points, 4, 10, generator)
    distances = torch.cdist(centers, found)  # (4, 4)
    assert distances.min(dim=1).values.max() < 0.1
    assert sorted(distances.argmin(dim=1).tolist()) == [0, 1, 2, 3]


def test_kmeans_with_fewer_rows_than_centroids_keeps_every_row_and_code():
    rows = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    centroids = kmeans(rows, 16, 4, torch.Generator().manual_seed(1))
    assert centroids.shape == (16, 3) and torch.isfinite(centroids).all()
    assert torch.equal(centroids[:5], rows)
    assert torch.allclose(centroids[5:], rows.mean(dim=0).expand(11, 3), atol=1e-3)


def word_errors(reference: str, hypothesis: str) -> int:
    """Levenshtein distance in words (substitutions + insertions + deletions)."""
    ref, hyp = reference.split(), hypothesis.split()
    row = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, 1):
        diagonal, row[0] = row[0], i
        for j, hyp_word in enumerate(hyp, 1):
            substitution = diagonal + (ref_word != hyp_word)
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, substitution)
    return row[-1]


def test_word_errors():
    assert word_errors("a b c d", "a x c d") == 1
    assert word_errors("a b c d", "a c d") == 1
    assert word_errors("a b", "a b c d") == 2
    assert word_errors("a b", "a b") == 0


@pytest.mark.slow
@pytest.mark.parametrize("first_stage", ["kmeans", "phones"])
def test_decoded_held_out_speech_is_recognised(speech_corpus, phonetic_codec, first_stage):
    """Quality gate: fit on ~8 minutes of speech, decode unseen sentences, WER <= 10%.

    The grammar allows any phrase in each of the four slots (4,096 sentences), so a
    misheard phrase counts as a word error rather than snapping to the right sentence.
    """
    if first_stage == "phones":
        codec = phonetic_codec
    else:
        codec = OfflineCodec.fit([u.audio for u in speech_corpus.train], progress=False)
    slots = ["(" + " | ".join(phrases) + ")" for phrases in speech_corpus.slots]
    grammar = f"#JSGF V1.0;\ngrammar sentences;\npublic <sentence> = {' '.join(slots)};\n"
    asr = PocketsphinxTranscriber.from_grammar(grammar)
    clips = [u.audio for u in speech_corpus.held_out]
    codes, frames = codec.encode(*pad_batch(clips))
    decoded, _ = codec.decode(codes, frames)
    errors = words = 0
    for utterance, audio in zip(speech_corpus.held_out, decoded, strict=True):
        heard = asr.transcribe(audio[: len(utterance.audio)], SAMPLE_RATE)
        errors += word_errors(utterance.text, heard)
        words += len(utterance.text.split())
    assert errors / words <= 0.10, f"word error rate {errors / words:.3f}"
