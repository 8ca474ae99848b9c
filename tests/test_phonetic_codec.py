"""The offline codec's phonetic first stage: forced alignment, the phone tagger, and codes
that name what is said rather than who says it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omni_model.evaluation.metrics import dtw
from omni_model.quantization import OfflineCodec
from omni_model.quantization.offline import LogMel, MelSettings
from omni_model.quantization.phonetic import PHONES, SILENCE, ForcedAligner
from omni_model.tts import synthesize

SAMPLE_RATE = 24_000


@pytest.fixture(scope="module")
def aligner() -> ForcedAligner:
    return ForcedAligner()


def mel_frames(audio: torch.Tensor) -> torch.Tensor:
    vectors, _ = LogMel(MelSettings()).frame_vectors(audio[None])
    return vectors[0].reshape(-1, 80)  # (8F, 80)


def collapsed(labels: list[int]) -> list[int]:
    """Runs of one label as one, silence dropped."""
    out = [label for i, label in enumerate(labels) if i == 0 or label != labels[i - 1]]
    return [label for label in out if label != SILENCE]


def dtw_agreement(a: list[int], b: list[int]) -> float:
    """1 - (mismatches on the cheapest monotonic alignment) / (longer length)."""
    mismatches, _ = dtw((np.asarray(a)[:, None] != np.asarray(b)[None, :]).astype(float))
    return 1.0 - mismatches / max(len(a), len(b))


def test_aligner_finds_each_words_dictionary_phones_in_order(aligner):
    text = "my old teacher found four apples"
    audio = synthesize(text, "en-us+f3")
    labels = aligner.align(audio, SAMPLE_RATE, text, len(mel_frames(audio)))
    expected = [
        PHONES.index(phone)
        for word in text.split()
        for phone in aligner.decoder.lookup_word(word).split()
    ]
    assert collapsed(labels.tolist()) == expected
    speaking = (labels != SILENCE).float().mean().item()
    assert 0.5 < speaking < 1.0  # espeak leaves a little silence around the words


def test_aligner_spells_numbers_and_gives_none_without_words(aligner):
    audio = synthesize("4 plus 7 is 11", "en-us+f4")
    frames = len(mel_frames(audio))
    labels = aligner.align(audio, SAMPLE_RATE, "4 plus 7 is 11", frames)
    assert labels is not None and PHONES.index("V") in labels.tolist()  # "seven", "eleven"
    assert aligner.align(audio, SAMPLE_RATE, "?!", frames) is None


def test_first_codes_name_the_aligned_phone_on_held_out_speech(
    phonetic_codec, speech_corpus, aligner
):
    right = total = 0
    for utterance in speech_corpus.held_out:
        codes, frames = phonetic_codec.encode(utterance.audio[None])
        labels = aligner.align(utterance.audio, SAMPLE_RATE, utterance.text, 8 * int(frames[0]))
        if labels is None:
            continue
        dominant = torch.nn.functional.one_hot(labels, len(PHONES)).reshape(-1, 8, len(PHONES))
        right += int((codes[0, 0] == dominant.sum(dim=1).argmax(dim=1)).sum())
        total += int(frames[0])
    assert total > 0 and right / total > 0.7, f"{right}/{total} first codes name the phone"


def test_first_codes_follow_the_words_not_the_voice(phonetic_codec, small_codec, speech_corpus):
    """The same sentences in two voices: phonetic first codes mostly agree, k-means ones don't."""
    texts = [u.text for u in speech_corpus.held_out[:6]]
    agreement = {}
    for name, codec in (("phones", phonetic_codec), ("kmeans", small_codec)):
        scores = []
        for text in texts:
            first = [
                codec.encode(synthesize(text, v)[None])[0][0, 0].tolist()
                for v in ("en-us+f2", "en-us+m6")
            ]
            scores.append(dtw_agreement(*first))
        agreement[name] = sum(scores) / len(scores)
    assert agreement["phones"] > 0.5 and agreement["phones"] > agreement["kmeans"] + 0.2, agreement


def test_phonetic_codec_saves_loads_and_batches(phonetic_codec, speech_corpus, tmp_path):
    path = tmp_path / "codec.safetensors"
    phonetic_codec.save(path)
    loaded = OfflineCodec.load(path)
    assert loaded.codec_id == phonetic_codec.codec_id and loaded.tagger is not None
    assert loaded.stage_sizes[0] == len(PHONES)
    summary = phonetic_codec.fit_summary  # what fit measured; a loaded codec has none
    assert summary["aligned_clips"] >= 0.8 * summary["clips"] == 0.8 * len(speech_corpus.train)
    assert 0.6 < summary["tagger_accuracy"] <= 1.0 and loaded.fit_summary == {}
    clips = [u.audio for u in speech_corpus.held_out[:3]]
    lengths = torch.tensor([len(c) for c in clips])
    batch = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)
    codes, frames = loaded.encode(batch, lengths)
    for row, clip in enumerate(clips):
        alone, _ = phonetic_codec.encode(clip[None])
        assert torch.equal(codes[row, :, : frames[row]], alone[0])
    assert int(codes[:, 0].max()) < len(PHONES)


def test_fit_wants_one_text_per_clip(speech_corpus):
    clips = [u.audio for u in speech_corpus.train[:3]]
    with pytest.raises(ValueError, match="2 texts for 3 clips"):
        OfflineCodec.fit(clips, texts=["a", "b"], progress=False)
