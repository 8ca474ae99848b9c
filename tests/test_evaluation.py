"""Evaluation: each metric on cases with known answers, the ASR backends, the probe sets and
the held-out split of the corpus generator, and one end-to-end run on a random checkpoint."""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import math
import random
import re

import numpy as np
import pytest
import torch
from conftest import save_tiny_whisper
from PIL import Image
from scipy import ndimage

from omni_model.audio_io import encode_wav_bytes
from omni_model.config import make_config
from omni_model.encoders.speaker import SpeakerEncoder
from omni_model.evaluation import (
    AsrUnavailableError,
    ErrorCounts,
    ItemResult,
    PocketsphinxTranscriber,
    ProbeError,
    ProbeItem,
    Reply,
    Scorer,
    WhisperTranscriber,
    build_transcriber,
    cer_by_length,
    espeak_voices,
    evaluate_checkpoint,
    item_from_row,
    similarity_by_voice,
    summarize,
)
from omni_model.evaluation.asr import Transcriber, dictionary_pronunciations
from omni_model.evaluation.metrics import (
    char_errors,
    dtw,
    exact_match,
    mel_cepstral_distortion,
    normalize_text,
    token_accuracy,
    voice_similarity,
    word_errors,
)
from omni_model.generation import SamplingSettings
from omni_model.inference import CompatibilityError
from omni_model.quantization import OfflineCodec
from omni_model.text import train_tokenizer
from omni_model.text.pronunciation import arpabet
from omni_model.training.checkpoint import save_checkpoint
from omni_model.training.model import EncoderSpec, TrainModel
from omni_model.tts import VOICES, SpeechSynthesisError, ipa_pronunciations, synthesize
from omni_model.voices import Voice
from pipelines.sources.generated import HELD_OUT_PAIRS, SCENES, SHAPE_COLOURS, SHAPES
from pipelines.sources.probes import (
    I2T_PICTURES,
    PROBE_VOICES,
    a2a_probes,
    i2t_probes,
    probe_set,
    t2a_probes,
)

RATE = 24_000
CLEAR = ("en-us+f2", "en-us+f3", "en-us+f4", "en-us+f5", "en-us+m6")
VOICE_NAMES = ("en-us+f2", "en-us+f3", "en-us+m3")  # the voices replies are scored against
ANSWERS = (
    "The capital of France is Paris.",
    "A spider has 8 legs.",
    "Grass is green.",
    "The opposite of hot is cold.",
    "Tuesday comes after Monday.",
    "There are 7 days in a week.",
)


@pytest.fixture(scope="module")
def speaker_encoder() -> SpeakerEncoder:
    return SpeakerEncoder()


@pytest.fixture(scope="module")
def codec() -> OfflineCodec:
    """A small offline codec fitted on a few sentences: enough to build voices and decode."""
    return OfflineCodec.fit(
        [synthesize(text, voice) for text, voice in zip(ANSWERS, itertools.cycle(CLEAR))]
    )


@pytest.fixture(scope="module")
def voices(codec, speaker_encoder) -> dict[str, Voice]:
    return espeak_voices(VOICE_NAMES, codec, speaker_encoder)


@pytest.fixture(scope="module")
def probes() -> list[ProbeItem]:
    return probe_set()


# Text metrics -------------------------------------------------------------------------------


def test_normalize_text_spells_numbers_and_drops_punctuation():
    assert normalize_text("It is 12, because 5 plus 7 equals 12.") == (
        "it is twelve because five plus seven equals twelve"
    )
    assert normalize_text("  Don't   STOP!  ") == "don't stop"
    assert normalize_text("2048 and 101") == "two thousand forty eight and one hundred one"
    assert normalize_text("1234567") == "one two three four five six seven"
    assert normalize_text("?!") == ""


def test_exact_match_and_token_accuracy_on_known_strings():
    assert exact_match("the capital of FRANCE is paris", ["The capital of France is Paris."])
    assert exact_match("A spider has eight legs", ["A spider has 8 legs."])
    assert not exact_match("The capital of France is Rome.", ["The capital of France is Paris."])
    assert token_accuracy("Grass is green.", ["Grass is green."]) == 1.0
    # 4 of the reference's 8 words line up, 4 are missing: 4 / 8.
    assert token_accuracy("The sky is blue.", ["The sky on a clear day is blue."]) == 0.5
    assert token_accuracy("Grass is red.", ["Grass is green."]) == pytest.approx(2 / 3)
    assert token_accuracy("wholly unrelated", ["Grass is green."]) == 0.0
    assert token_accuracy("Grass is red.", ["Snow is white.", "Grass is green."]) == (
        pytest.approx(2 / 3)
    )


def test_error_counts_add_up_and_empty_references_are_defined():
    assert char_errors("Grass is green.", "grass is clean") == ErrorCounts(3, 14)
    assert word_errors("Grass is green.", "grass is clean") == ErrorCounts(1, 3)
    assert word_errors("Seven days", "7 days.") == ErrorCounts(0, 2)
    assert word_errors("a b c d", "a x c") == ErrorCounts(2, 4)
    assert (ErrorCounts(1, 4) + ErrorCounts(3, 6)).rate == 0.4
    assert ErrorCounts(0, 0).rate == 0.0 and ErrorCounts(2, 0).rate == 1.0


# Speech metrics -----------------------------------------------------------------------------


def brute_force_dtw(cost: np.ndarray) -> tuple[float, int]:
    """The textbook O(N M) recursion, remembering each cell's path length."""
    rows, columns = cost.shape
    total = np.full((rows + 1, columns + 1), np.inf)
    length = np.zeros((rows + 1, columns + 1), dtype=int)
    total[0, 0] = 0.0
    for i in range(1, rows + 1):
        for j in range(1, columns + 1):
            moves = [(i - 1, j - 1), (i - 1, j), (i, j - 1)]
            best = min(moves, key=lambda m: total[m])
            total[i, j] = cost[i - 1, j - 1] + total[best]
            length[i, j] = length[best] + 1
    return float(total[-1, -1]), int(length[-1, -1])


def test_dtw_matches_the_textbook_recursion_and_absorbs_time_stretching():
    generator = np.random.default_rng(0)
    for shape in ((1, 1), (1, 6), (5, 1), (7, 4), (12, 15)):
        cost = generator.random(shape)
        total, length = dtw(cost)
        expected_total, expected_length = brute_force_dtw(cost)
        assert total == pytest.approx(expected_total) and length == expected_length
    sequence = generator.random((6, 3))
    stretched = np.repeat(sequence, [1, 3, 1, 2, 1, 4], axis=0)  # (12, 3)
    distances = np.linalg.norm(sequence[:, None] - stretched[None], axis=-1)
    assert dtw(distances) == (0.0, 12)


def test_identical_audio_gives_mcd_zero_and_cer_zero():
    audio = synthesize("The capital of France is Paris.", "en-us+f3")
    assert mel_cepstral_distortion(audio, audio) == 0.0
    assert char_errors("The capital of France is Paris.", "the capital of france is paris") == (
        ErrorCounts(0, 30)
    )


def test_mcd_is_small_for_a_tempo_change_and_large_for_another_voice():
    text = "The opposite of hot is cold, and the opposite of big is small."
    reference = synthesize(text, "en-us+f3")
    faster = synthesize(text, "en-us+f3", speed_wpm=210)
    other_voice = synthesize(text, "en-us+m3")
    other_text = synthesize("Tuesday comes after Monday and before Wednesday.", "en-us+f3")
    tempo = mel_cepstral_distortion(faster, reference)
    assert 0.0 < tempo < 3.0  # DTW lines the syllables up; only the rendering differs
    assert mel_cepstral_distortion(other_voice, reference) > 2 * tempo
    assert mel_cepstral_distortion(other_text, reference) > 2 * tempo


def test_the_same_voice_is_more_similar_than_another_voice(speaker_encoder, voices):
    names = ["en-us+f3", "en-us+m3"]
    speakers = torch.stack([voices[name].speaker for name in names])  # (2, 256)
    for index, name in enumerate(names):
        audio = synthesize("The children on the bridge wave hello to the boat.", name)
        cosines = voice_similarity(speaker_encoder, audio, speakers)
        assert cosines.shape == (2,) and cosines.abs().max() <= 1.0 + 1e-6
        assert cosines[index] > cosines[1 - index] + 0.05


# ASR ----------------------------------------------------------------------------------------


def test_arpabet_maps_espeak_ipa_onto_the_dictionarys_phones():
    assert arpabet("kˈæt") == "K AE T"
    assert arpabet("dʒˈʌdʒ") == "JH AH JH"  # affricates are one phone, not two
    assert arpabet("fˈoːɹtiːn") == "F AO R T IY N"  # the r-coloured vowel before its parts
    assert arpabet("bˈʌʔn̩") == "B AH T AH N"
    assert arpabet("ʀˈu") is None and arpabet("ˈ") is None  # no English phone / no phone
    # The evaluation texts' words, as espeak-ng's rules say them, against every pronunciation
    # the dictionary lists for them ("monday" and "monday(2)"), stress marks aside.
    words = sorted({w for text in ANSWERS for w in normalize_text(text).split()})
    variants = [f"{word}({n})" if n > 1 else word for word in words for n in (1, 2, 3)]
    entries = dictionary_pronunciations(set(variants)).items()
    listed = {(e.split("(")[0], re.sub(r"\d", "", phones)) for e, phones in entries if phones}
    ruled = zip(words, map(arpabet, ipa_pronunciations(words)), strict=True)
    same = [word for word, phones in ruled if (word, phones) in listed]
    assert len(words) >= 20 and len(same) >= 0.9 * len(words), (words, same)


def test_pocketsphinx_trigram_asr_hears_espeak_renderings_with_low_cer():
    asr = PocketsphinxTranscriber.from_texts([*ANSWERS, "Zorblax is flimwex."])
    assert asr.unknown_words == [] and asr.rule_words == ["flimwex", "zorblax"]
    errors = ErrorCounts(0, 0)
    for text, voice in zip(ANSWERS, itertools.cycle(CLEAR)):
        errors += char_errors(text, asr.transcribe(synthesize(text, voice), RATE))
    assert errors.rate <= 0.05, errors


def test_pocketsphinx_grammar_asr_only_hears_grammar_sentences():
    grammar = (
        "#JSGF V1.0;\ngrammar colours;\n"
        "public <sentence> = <thing> is (red | green | blue);\n<thing> = grass | snow | the sky;\n"
    )
    asr = PocketsphinxTranscriber.from_grammar(grammar)
    assert asr.transcribe(synthesize("The sky is blue.", "en-us+f2"), RATE) == "the sky is blue"
    sentences = {
        f"{t} is {c}" for t in ("grass", "snow", "the sky") for c in ("red", "green", "blue")
    }
    assert asr.transcribe(synthesize("Snow is white.", "en-us+f2"), RATE) in sentences | {""}
    made_up = PocketsphinxTranscriber.from_grammar(grammar.replace("snow", "zorblax"))
    assert made_up.rule_words == ["zorblax"]  # pronounced by espeak-ng's rules instead
    assert made_up.transcribe(synthesize("Zorblax is red.", "en-us+f2"), RATE) == "zorblax is red"


def test_pocketsphinx_rejects_grammar_words_nothing_pronounces(monkeypatch):
    def no_espeak(words):
        raise SpeechSynthesisError("espeak-ng is not installed")

    monkeypatch.setattr("omni_model.text.pronunciation.ipa_pronunciations", no_espeak)
    grammar = "#JSGF V1.0;\ngrammar g;\npublic <sentence> = zorblax is (red | blue);\n"
    with pytest.raises(ValueError, match=r"no pronunciation .*\['zorblax'\]"):
        PocketsphinxTranscriber.from_grammar(grammar)
    asr = build_transcriber(["Zorblax is flimwex.", "Grass is green."])
    assert asr.unknown_words == ["flimwex", "zorblax"]  # that sentence is left out, not fatal
    assert asr.describe().endswith("(no pronunciation, never heard: flimwex, zorblax)")
    many = build_transcriber([f"Zorb{chr(97 + i)}lax is green." for i in range(15)] + ["Hi."])
    assert many.describe().endswith("never heard: zorbalax, zorbblax, zorbclax, zorbdlax, "
        "zorbelax, zorbflax, zorbglax, zorbhlax, zorbilax, zorbjlax, zorbklax, zorbllax "
        "and 3 more)")  # fmt: skip
    assert asr.transcribe(synthesize("Grass is green.", "en-us+f2"), RATE) == "grass is green"


def test_pocketsphinx_sentence_asr_picks_each_rendering_out_of_the_evaluated_texts():
    texts = [*ANSWERS, "Zorblax is flimwex.", "Grass is green."]
    asr = build_transcriber(texts)
    assert asr.name == "pocketsphinx-sentences"
    assert asr.unknown_words == [] and asr.rule_words == ["flimwex", "zorblax"]
    assert (
        asr.describe()
        == "pocketsphinx-sentences (pronounced by espeak-ng's rules: flimwex, zorblax)"
    )
    for text, voice in zip(texts, itertools.cycle(CLEAR)):
        assert asr.transcribe(synthesize(text, voice), RATE) == normalize_text(text)
    # Speech outside the grammar is heard as one of its sentences, or as nothing.
    heard = asr.transcribe(synthesize("Snow is white.", "en-us+f2"), RATE)
    assert heard in {normalize_text(text) for text in ANSWERS} | {""}
    with pytest.raises(ValueError, match="unknown ASR constraint"):
        build_transcriber(ANSWERS, constraint="bigram")


def test_whisper_loads_local_weights_and_never_downloads(tmp_path):
    path = save_tiny_whisper(tmp_path / "tiny.pt")
    saved = torch.load(path)["model_state_dict"]
    loaded = WhisperTranscriber(str(path)).model.state_dict()
    assert all(torch.equal(loaded[key], saved[key]) for key in saved)

    empty_cache = str(tmp_path / "cache")
    with pytest.raises(AsrUnavailableError, match="no downloaded Whisper weights"):
        WhisperTranscriber("tiny.en", download_root=empty_cache)
    fallback = build_transcriber(ANSWERS, whisper_model="tiny.en", download_root=empty_cache)
    assert isinstance(fallback, PocketsphinxTranscriber)
    assert isinstance(build_transcriber(ANSWERS, whisper_model=str(path)), WhisperTranscriber)


# Probe sets and the held-out split ------------------------------------------------------------


def test_probe_sets_are_deterministic_and_speak_in_the_right_voices(probes):
    again = probe_set()
    assert not any(item.held_out for item in probes)
    assert probes == again
    assert [p.task for p in probes].count("t2a") == len(t2a_probes())
    assert len({p.item_id for p in probes}) == len(probes)
    assert set(PROBE_VOICES).isdisjoint(VOICES)
    for item in probes:
        if item.task == "i2t":
            assert item.voice is None and item.image is not None
        else:
            assert item.voice_seen == (item.voice in VOICES)
    t2a = [p for p in probes if p.task == "t2a"]
    assert {p.voice_seen for p in t2a} == {True, False}
    assert len({p.question for p in t2a}) == len(t2a)


def test_a2a_questions_are_spoken_in_voices_training_never_uses():
    items = a2a_probes(4)
    for item, voice in zip(items, PROBE_VOICES, strict=True):
        assert voice not in VOICES
        spoken = synthesize(item.question, voice)
        assert encode_wav_bytes(spoken, RATE) == item.question_audio
        assert item.voice in VOICES and item.voice_seen  # the reply is in a training voice


def blobs(image: Image.Image, colour: str) -> int:
    mask = (np.asarray(image.convert("RGB")) == SHAPE_COLOURS[colour]).all(axis=-1)
    return ndimage.label(mask)[1]


def test_i2t_probes_show_the_held_out_pairs_and_their_answers_match_the_pixels():
    items = i2t_probes()
    assert len(items) == 3 * len(HELD_OUT_PAIRS) * I2T_PICTURES
    assert (
        len({item.item_id for item in items}) == len({item.image for item in items}) == len(items)
    )
    for item in items:
        colour, kind = item.item_id.split("-")[1:3]
        assert (colour, kind) in HELD_OUT_PAIRS
        image = Image.open(io.BytesIO(item.image))
        assert blobs(image, colour) >= 1
        answer = item.answers[0]
        if "-count-" in item.item_id:
            said = re.search(r"(\d+)", answer)
            assert said and int(said.group(1)) == blobs(image, colour)
        else:
            assert colour in answer and kind in answer


def test_the_corpus_generator_never_draws_a_held_out_pair_but_draws_everything_else():
    drawn = set()
    for index in range(3000):
        rng = random.Random(f"held-out/{index}")
        shapes, _ = SCENES[index % len(SCENES)](rng)
        drawn |= {(shape.colour, shape.kind) for shape in shapes}
    assert not drawn & HELD_OUT_PAIRS
    assert drawn == {(c, k) for c in SHAPE_COLOURS for k in SHAPES} - HELD_OUT_PAIRS


def test_probe_items_validate_and_shard_rows_become_items():
    with pytest.raises(ProbeError, match="question audio"):
        ProbeItem("x", "a2a", "Hi?", ("Hello.",), "en-us+f2", True)
    with pytest.raises(ProbeError, match="name the voice"):
        ProbeItem("x", "t2a", "Hi?", ("Hello.",))
    with pytest.raises(ProbeError, match="no accepted answer"):
        ProbeItem("x", "t2a", "Hi?", (), "en-us+f2", True)

    def row(task: str, turns: list[tuple[str, str]], **values) -> dict:
        chat = [{"role": role, "content": text} for role, text in turns]
        return {"sample_id": f"{task}-1", "task": task, "conversations": json.dumps(chat)} | values

    turns = [("system", "Be brief."), ("user", "Hi?"), ("assistant", "Hello.")]
    t2a = item_from_row(row("t2a", turns, voice="en-us+f4"))
    assert (t2a.question, t2a.answers, t2a.voice, t2a.system, t2a.held_out) == (
        "Hi?",
        ("Hello.",),
        "en-us+f4",
        "Be brief.",
        True,
    )
    question = [("user", "<image>\nWhat colour is the star?"), ("assistant", "Red.")]
    i2t = item_from_row(row("i2t", question, image_bytes=b"png", voice=None))
    assert i2t.question == "What colour is the star?" and i2t.image == b"png" and i2t.voice is None
    a2a = row("a2a", [("user", "Hi?"), ("assistant", "Hello.")], question_audios=[b"wav"])
    assert item_from_row(a2a | {"voice": "en-us+f2"}).question_audio == b"wav"
    multi_turn = [("user", "Hi?"), ("assistant", "Hello."), ("user", "Bye?"), ("assistant", "Bye.")]
    assert item_from_row(row("t2a", multi_turn, voice="en-us+f2")) is None
    assert item_from_row(row("text", [("user", "Hi?"), ("assistant", "Hello.")])) is None
    with pytest.raises(ProbeError, match="not JSON"):
        item_from_row({"sample_id": "bad", "task": "t2a", "conversations": "{"})


# Scoring and summaries ------------------------------------------------------------------------


def test_a_perfect_reply_scores_perfectly(speaker_encoder, voices):
    scorer = Scorer(PocketsphinxTranscriber.from_texts(ANSWERS), speaker_encoder, voices)
    answer = "The capital of France is Paris."
    item = ProbeItem(
        "perfect", "t2a", "What is the capital of France?", (answer,), "en-us+f3", True
    )
    spoken = synthesize(normalize_text(answer), "en-us+f3")  # what the scorer renders itself
    result = scorer.score(item, Reply(answer, spoken, seconds=1.0))
    assert result.exact_match and result.token_accuracy == 1.0
    assert result.mcd_db == 0.0
    assert result.transcript == result.floor_transcript == "the capital of france is paris"
    assert (result.char_errors, result.chars, result.words) == (0, 30, 6)
    assert result.length_bucket == "mid"
    assert result.similarity > result.other_similarity + 0.05
    metrics = summarize([result], voices)
    assert metrics["t2a/exact_match"] == 1.0 and metrics["speech/cer"] == 0.0
    assert "speech/codec_floor_cer" not in metrics  # no codec given to the scorer
    assert metrics["speech/cer_mid"] == 0.0 and "speech/cer_short" not in metrics
    assert metrics["voice/similarity_seen"] == pytest.approx(result.similarity)
    assert "voice/similarity_unseen" not in metrics
    assert -1.0 <= metrics["voice/different_voices"] < 1.0


def test_the_codec_floor_reads_the_rendering_through_the_codec(speaker_encoder, voices, codec):
    transcriber = PocketsphinxTranscriber.from_sentences(ANSWERS)
    answer = "The capital of France is Paris."
    item = ProbeItem("floor", "t2a", "What is the capital of France?", (answer,), "en-us+f2")
    # The voice the fixture's codec was fitted on for this sentence: the round trip is close.
    reply = Reply(answer, synthesize(normalize_text(answer), "en-us+f2"), seconds=1.0)
    good = Scorer(transcriber, speaker_encoder, voices, codec).score(item, reply)
    assert good.codec_transcript == "the capital of france is paris"
    assert good.codec_char_errors == 0
    # A codec whose every code decodes to its codebook's mean frame cannot carry words.
    mean_frames = codec.codebooks.mean(dim=1, keepdim=True).expand_as(codec.codebooks)
    flat = Scorer(transcriber, speaker_encoder, voices, OfflineCodec(mean_frames.clone()))
    bad = flat.score(item, reply)
    assert bad.codec_char_errors > bad.chars / 2
    assert (
        (bad.transcript, bad.char_errors)
        == (good.transcript, good.char_errors)
        == (
            "the capital of france is paris",
            0,
        )
    )


class CountingTranscriber(Transcriber):
    """Passes every call on to `inner` and counts them."""

    name = "counting"

    def __init__(self, inner: Transcriber):
        self.inner, self.calls = inner, 0

    def transcribe(self, audio: torch.Tensor, sample_rate: int) -> str:
        self.calls += 1
        return self.inner.transcribe(audio, sample_rate)


def test_a_reply_heard_again_reuses_its_rendering_and_floors(speaker_encoder, voices, codec):
    transcriber = CountingTranscriber(PocketsphinxTranscriber.from_sentences(ANSWERS))
    scorer = Scorer(transcriber, speaker_encoder, voices, codec)
    answer = "The capital of France is Paris."
    item = ProbeItem("again", "t2a", "What is the capital of France?", (answer,), "en-us+f2")
    spoken = synthesize(normalize_text(answer), "en-us+f2")
    first = scorer.score(item, Reply(answer, spoken, seconds=1.0))
    assert transcriber.calls == 3  # the reply, the rendering, the rendering through the codec
    # Another seed's reply: the same words (up to case and punctuation), other audio.
    second = scorer.score(item, Reply(answer.lower()[:-1], spoken[: len(spoken) // 2], 1.0))
    assert transcriber.calls == 4  # only the new reply's audio
    assert (second.floor_transcript, second.codec_transcript) == (
        first.floor_transcript,
        first.codec_transcript,
    )
    assert first.mcd_db == 0.0 < second.mcd_db  # still measured against the rendering
    other_voice = dataclasses.replace(item, voice="en-us+f3")
    scorer.score(other_voice, Reply(answer, spoken, seconds=1.0))
    assert transcriber.calls == 7  # another voice renders the words anew


ITEM_NUMBERS = itertools.count()


def scored(task: str, voice: str | None, seen: bool, words: int, **values) -> ItemResult:
    """A scored reply to a question of its own (unless `item_id` says which)."""
    base = ItemResult(
        f"id-{next(ITEM_NUMBERS)}", task, voice, seen, "q", "a", "r", True, 1.0, 1.0, 1.0
    )
    return dataclasses.replace(base, words=words, **values)


def test_summaries_weigh_items_by_length_and_bucket_by_reply_words():
    speech = {"word_errors": 0, "floor_char_errors": 1, "floor_word_errors": 0, "mcd_db": 4.0}
    speech |= {"codec_char_errors": 5}
    results = [
        scored("t2a", "a", True, 3, chars=10, char_errors=1, length_bucket="short",
               similarity=0.8, other_similarity=0.4, transcript="the cat", **speech),
        scored("t2a", "b", False, 8, chars=30, char_errors=9, length_bucket="mid",
               similarity=0.6, other_similarity=0.5, held_out=True, exact_match=False,
               transcript=" . ", **speech),
        scored("a2a", "a", True, 12, chars=60, char_errors=0, length_bucket="long",
               similarity=0.7, other_similarity=0.2, transcript="all of it",
               **speech | {"floor_char_errors": 0}),
        dataclasses.replace(scored("i2t", None, False, 0), exact_match=False, token_accuracy=0.5),
    ]  # fmt: skip
    codes = torch.zeros(8, 1, dtype=torch.long)
    speakers = {"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([0.6, 0.8])}
    voices = {name: Voice(name, codes, vector, "codec") for name, vector in speakers.items()}
    metrics = summarize(results, voices)
    assert metrics["voice/different_voices"] == pytest.approx(0.6)
    assert metrics["speech/cer"] == pytest.approx(10 / 100)  # not the mean of 0.1, 0.3, 0
    assert metrics["t2a/cer"] == pytest.approx(10 / 40)
    assert metrics["speech/asr_floor_cer"] == pytest.approx(2 / 100)
    assert metrics["speech/codec_floor_cer"] == pytest.approx(15 / 100)
    # Whole sentences heard: the a2a reply alone; its floor rendering too. Nothing heard:
    # the transcript of punctuation alone.
    assert metrics["speech/heard_whole"] == pytest.approx(1 / 3)
    assert metrics["speech/asr_floor_heard_whole"] == pytest.approx(1 / 3)
    assert metrics["speech/heard_nothing"] == pytest.approx(1 / 3)
    assert metrics["i2t/exact_match"] == 0.0 and metrics["i2t/token_accuracy"] == 0.5
    assert metrics["t2a/items"] == 2 and metrics["speech/items"] == 3
    assert metrics["t2a/exact_match"] == 0.5  # probes and held-out rows together, and apart:
    assert metrics["t2a/probe_exact_match"] == 1.0 and metrics["t2a/held_out_exact_match"] == 0.0
    assert "i2t/held_out_exact_match" not in metrics and metrics["i2t/probe_exact_match"] == 0.0
    assert metrics["voice/similarity_seen"] == pytest.approx(0.75)
    assert metrics["voice/similarity_unseen"] == pytest.approx(0.6)
    assert {k: v.rate for k, v in cer_by_length(results).items()} == pytest.approx(
        {"short": 0.1, "mid": 0.3, "long": 0.0}
    )
    assert list(cer_by_length(results)) == ["short", "mid", "long"]
    by_voice = similarity_by_voice(results)
    assert list(by_voice) == ["a", "b"]
    assert by_voice["a"] == pytest.approx((0.75, 0.3)) and by_voice["b"] == pytest.approx(
        (0.6, 0.5)
    )
    assert all(math.isfinite(v) for v in metrics.values())


def test_replies_under_several_seeds_pool_into_one_cer_and_count_each_question_once():
    codes = torch.zeros(8, 1, dtype=torch.long)
    voices = {"a": Voice("a", codes, torch.tensor([1.0, 0.0]), "codec")}
    errors = {(0, "q1"): 2, (0, "q2"): 0, (1, "q1"): 5, (1, "q2"): 1}  # of 10 characters each
    results = [
        scored("t2a", "a", True, 2, item_id=item, seed=seed, chars=10, char_errors=count,
               word_errors=0, floor_char_errors=0, floor_word_errors=0, transcript="x")
        for (seed, item), count in errors.items()
    ]  # fmt: skip
    metrics = summarize(results, voices)
    assert metrics["t2a/items"] == 2 and metrics["speech/items"] == 2
    assert metrics["speech/cer"] == pytest.approx(8 / 40)
    assert metrics["speech/cer_seed_min"] == pytest.approx(2 / 20)
    assert metrics["speech/cer_seed_max"] == pytest.approx(6 / 20)
    one_seed = summarize([r for r in results if r.seed == 0], voices)
    assert one_seed["speech/cer"] == pytest.approx(0.1) and "speech/cer_seed_min" not in one_seed


# End to end -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_evaluating_a_random_checkpoint_gives_every_metric_in_range(
    tmp_path, codec, speaker_encoder, voices, probes
):
    items = [next(p for p in probes if p.task == task) for task in ("t2a", "a2a", "i2t")]
    texts = [text for p in probes for text in (p.question, *p.answers)]
    tokenizer = train_tokenizer(texts * 3, vocab_size=400)
    torch.manual_seed(0)
    config = make_config("tiny", vocab_size=tokenizer.vocab_size)
    model = TrainModel(
        dataclasses.replace(config, speaker_dim=SpeakerEncoder.dim), EncoderSpec(width=32)
    )
    meta = {
        "config": model.config.to_dict(),
        "encoders": model.encoders.to_dict(),
        "tokenizer_id": tokenizer.tokenizer_id,
        "codec_id": codec.codec_id,
    }
    checkpoint = save_checkpoint(tmp_path / "random", model, meta)
    # Sampled text: a random model's greedy reply is one token repeated, often not a word.
    # Speech runs to max_steps (3.2 s), never cut by the reply's length: the speaker encoder
    # needs 0.5 s its VAD hears as speech, which 1.3 s of random codes may not hold.
    sampling = SamplingSettings(
        text_temperature=1.0, text_top_p=1.0, max_steps=48, max_frames_per_text_token=None
    )
    evaluation = evaluate_checkpoint(
        checkpoint,
        items,
        tokenizer,
        codec,
        encoder=speaker_encoder,
        voices=voices,
        sampling=sampling,
        seeds=(0, 1),
    )
    assert evaluation.transcriber.startswith("pocketsphinx-sentences")
    rows = evaluation.rows()
    assert [(row["item_id"], row["seed"]) for row in rows] == [
        (p.item_id, seed) for seed in (0, 1) for p in items
    ]
    metrics = evaluation.metrics
    for task in ("t2a", "a2a", "i2t"):
        assert metrics[f"{task}/items"] == 1
        assert 0.0 <= metrics[f"{task}/exact_match"] <= metrics[f"{task}/token_accuracy"] <= 1
    speech = ("cer", "wer", "asr_floor_cer", "asr_floor_wer", "codec_floor_cer", "mcd_db")
    assert all(0.0 <= metrics[f"speech/{name}"] < math.inf for name in speech)
    shares = ("heard_whole", "asr_floor_heard_whole", "heard_nothing")
    assert all(0.0 <= metrics[f"speech/{name}"] <= 1.0 for name in shares)
    assert metrics["speech/items"] == 2  # I2T replies are not scored as speech
    assert metrics["speech/cer_seed_min"] <= metrics["speech/cer"] <= metrics["speech/cer_seed_max"]
    for name in ("similarity_seen", "similarity_other_voices", "different_voices"):
        assert -1.0 <= metrics[f"voice/{name}"] <= 1.0
    i2t = evaluation.items[2]
    assert i2t.transcript is None and i2t.audio_seconds >= 0.0

    again = evaluate_checkpoint(
        checkpoint,
        items[:1],
        tokenizer,
        codec,
        encoder=speaker_encoder,
        voices=voices,
        sampling=sampling,
    )
    assert again.items[0].reply == evaluation.items[0].reply  # seeded by item, not by order
    pictures_only = evaluate_checkpoint(
        checkpoint, items[2:], tokenizer, codec, encoder=speaker_encoder, sampling=sampling
    )  # no item names a voice: none is built, no speech is scored
    assert pictures_only.items[0].reply == i2t.reply
    assert pictures_only.metrics["i2t/items"] == 1 and "speech/cer" not in pictures_only.metrics
    other = train_tokenizer(["something else entirely"] * 3, vocab_size=300)
    with pytest.raises(CompatibilityError, match="tokenizer"):
        evaluate_checkpoint(checkpoint, items, other, codec, encoder=speaker_encoder)
