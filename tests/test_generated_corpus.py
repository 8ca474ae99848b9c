"""The offline corpus and its speech: deterministic, valid, and right about what it says."""

from __future__ import annotations

import io
import operator
import re
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from scipy import ndimage

from omni_model.encoders.pretraining import IGNORE
from omni_model.tts import VOICES
from pipelines.assets.vision import ATTRIBUTES, labelled_pictures
from pipelines.records import TASKS, RawRecord, Rejected, read_tars, validate, write_tars
from pipelines.sources.generated import (
    HELD_OUT_PAIRS,
    SHAPE_COLOURS,
    SHAPES,
    SIZES,
    CorpusSettings,
    generate_corpus,
)
from pipelines.speech import (
    answer_voice,
    question_voice,
    speakable,
    speaking_rate,
    synthesize_missing,
)

TINY = CorpusSettings.named("tiny", seed=7)
EQUATION = re.compile(r"(\d+) (plus|minus|times) (\d+) (?:is|equals) (\d+)")
OPERATIONS = {"plus": operator.add, "minus": operator.sub, "times": operator.mul}
COUNT_REPLY = re.compile(r"There (?:is|are) (no|\d+) (?:(\w+) )?shapes?\.")
POSITION_REPLY = re.compile(
    r"The (\w+) \w+ is (on the left|on the right|at the top|at the bottom)\."
)
DESCRIBE_REPLY = re.compile(r"I see (.+)\.")
EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)


@pytest.fixture(scope="module")
def corpus() -> list[RawRecord]:
    items = list(generate_corpus(TINY))
    assert [item for item in items if isinstance(item, Rejected)] == []
    return items


def exchanges(record: RawRecord) -> list[tuple[str, str]]:
    """(user text, the assistant reply that follows it) pairs."""
    turns = [turn for turn in record.conversations if turn["role"] != "system"]
    return [(q["content"], a["content"]) for q, a in zip(turns[::2], turns[1::2], strict=True)]


def chat(*texts: str) -> list[dict[str, str]]:
    """Alternating user and assistant turns."""
    return [{"role": ("user", "assistant")[i % 2], "content": t} for i, t in enumerate(texts)]


def pixels(record: RawRecord) -> tuple[np.ndarray, np.ndarray]:
    """(height, width, 3) uint8 pixels and the background colour (a corner never has a shape)."""
    image = Image.open(io.BytesIO(record.image))
    image.load()
    assert image.format == "PNG" and image.mode == "RGB"
    assert image.width == image.height and 224 <= image.width <= 256
    array = np.asarray(image)
    return array, array[0, 0]


def blobs(mask: np.ndarray) -> int:
    return ndimage.label(mask, structure=EIGHT_NEIGHBOURS)[1]


def colour_mask(array: np.ndarray, colour: str) -> np.ndarray:
    return (array == np.array(SHAPE_COLOURS[colour], dtype=np.uint8)).all(axis=-1)


def duration(clip: bytes) -> float:
    info = sf.info(io.BytesIO(clip))
    assert (info.samplerate, info.channels, info.subtype) == (24_000, 1, "PCM_16")
    return info.frames / info.samplerate


def test_same_seed_gives_identical_records_and_another_seed_differs(corpus):
    assert list(generate_corpus(TINY)) == corpus  # dataclass equality: image bytes included
    other = list(generate_corpus(replace(TINY, seed=8)))
    assert [r.conversations for r in other] != [r.conversations for r in corpus]
    assert [r.image for r in other if r.task == "i2t"] != [r.image for r in corpus if r.image]


def test_counts_per_task_ids_and_validation(corpus):
    assert Counter(r.task for r in corpus) == {task: TINY.count(task) for task in TASKS}
    assert len({r.sample_id for r in corpus}) == len(corpus)
    assert all(r.sample_id == f"generated/{r.sample_id.split('/', 1)[1]}" for r in corpus)
    assert all(validate(r) is None for r in corpus)
    assert all(not r.answer_audio and not r.question_audio for r in corpus)
    for record in corpus:
        has_marker = any("<image>" in text for text in record.turns("user"))
        assert has_marker == (record.task == "i2t") == (record.image is not None)
    user_turns = Counter(len(r.turns("user")) for r in corpus)
    assert set(user_turns) == {1, 2, 3}, user_turns


def test_settings_sizes_and_bad_settings():
    assert CorpusSettings.named("small").as_dict() | {"seed": 0} == SIZES["small"].as_dict()
    for task in TASKS:  # each size has more of every task than the one below it
        assert SIZES["tiny"].count(task) < SIZES["small"].count(task) < SIZES["large"].count(task)
    assert CorpusSettings.named("large", seed=3).seed == 3
    with pytest.raises(ValueError, match="unknown corpus size"):
        CorpusSettings.named("huge")
    with pytest.raises(ValueError, match="negative"):
        CorpusSettings(a2a=-1)
    with pytest.raises(ValueError, match="multi_turn_share"):
        CorpusSettings(multi_turn_share=1.5)


def test_arithmetic_replies_are_correct_and_use_numbers_from_the_conversation(corpus):
    checked = 0
    for record in corpus:
        said: set[int] = set()
        for question, reply in exchanges(record):
            said |= {int(n) for n in re.findall(r"\d+", question)}
            for a, op, b, result in EQUATION.findall(reply):
                assert OPERATIONS[op](int(a), int(b)) == int(result), reply
                assert {int(a), int(b)} <= said, (record.conversations, reply)
                said.add(int(result))
                checked += 1
    assert checked >= 8


SHAPE_TALK = re.compile(r"I drew (an?) (\w+) (\w+)\. What (colour|shape) is the (\w+)(?: one)?\?")


def test_shape_talk_is_text_only_and_asks_back_what_it_names():
    settings = CorpusSettings(t2a=100, a2a=0, i2t=0, text=200, multi_turn_share=0.0)
    records = [item for item in generate_corpus(settings) if isinstance(item, RawRecord)]
    talk = Counter()
    for record in records:
        for question, reply in exchanges(record):
            if not (match := SHAPE_TALK.fullmatch(question)):
                continue
            assert record.task == "text", record.sample_id
            article, colour, kind, asked, named = match.groups()
            assert colour in SHAPE_COLOURS and kind in SHAPES
            assert article == ("an" if colour == "orange" else "a"), question
            if asked == "colour":
                assert named == kind and reply == f"The {kind} is {colour}."
            else:
                assert named == colour and reply == f"The {colour} shape is a {kind}."
            talk[asked] += 1
    # A fifth of single turns (weight 6 of 29): about 40 of 200 text rows, both questions.
    assert 25 <= sum(talk.values()) <= 60 and min(talk.values()) >= 10, talk


def test_count_replies_match_the_shapes_in_the_pixels(corpus):
    checked = 0
    for record in (r for r in corpus if r.task == "i2t"):
        array, background = pixels(record)
        for _, reply in exchanges(record):
            if match := COUNT_REPLY.fullmatch(reply):
                told = 0 if match[1] == "no" else int(match[1])
                mask = (
                    colour_mask(array, match[2]) if match[2] else (array != background).any(axis=-1)
                )
                assert blobs(mask) == told, (record.sample_id, reply)
                checked += 1
    assert checked >= 5


def test_position_and_description_replies_match_the_pixels(corpus):
    checked = 0
    for record in (r for r in corpus if r.task == "i2t"):
        array = pixels(record)[0]
        for _, reply in exchanges(record):
            if match := POSITION_REPLY.fullmatch(reply):
                rows, columns = np.nonzero(colour_mask(array, match[1]))
                centre = array.shape[0] / 2
                side = {
                    "on the left": columns.mean() < centre,
                    "on the right": columns.mean() > centre,
                    "at the top": rows.mean() < centre,
                    "at the bottom": rows.mean() > centre,
                }
                assert side[match[2]], (record.sample_id, reply)
                checked += 1
            elif match := DESCRIBE_REPLY.fullmatch(reply):
                drawn = {c for c in SHAPE_COLOURS if colour_mask(array, c).any()}
                said = {c for c in SHAPE_COLOURS if re.search(rf"\b{c}\b", match[1])}
                assert drawn == said, (record.sample_id, reply)
                assert not re.search(r"\ba [aeiou]|\ban [^aeiou]", reply), reply  # an orange
                checked += 1
    assert checked >= 3


def test_spoken_records_use_many_voices(corpus):
    spoken = [r for r in corpus if r.task in ("t2a", "a2a")]
    assert all(r.voice in VOICES for r in spoken)
    assert len({r.voice for r in spoken}) >= 8
    assert all(r.voice is None for r in corpus if r.task in ("text", "i2t"))


def test_a2a_synthesis_gives_two_voices_and_24khz_clips_deterministically(corpus):
    record = max((r for r in corpus if r.task == "a2a"), key=lambda r: len(r.turns("user")))
    spoken = synthesize_missing(record)
    assert isinstance(spoken, RawRecord), spoken
    assert spoken.conversations == record.conversations  # the text is the transcript
    assert len(spoken.question_audio) == len(record.turns("user")) >= 2
    assert len(spoken.answer_audio) == len(record.turns("assistant"))
    assert all(duration(clip) > 0.3 for clip in spoken.question_audio + spoken.answer_audio)
    assert spoken.voice == record.voice != question_voice(record)
    assert synthesize_missing(record) == spoken  # bytes included


def test_clip_duration_grows_with_text_and_shrinks_with_speed():
    long = "The capital of France is Paris, and the capital of Japan is Tokyo."
    turns = chat("Hi.", "Seven.", "And more?", long)
    record = RawRecord("test/durations", "test", "t2a", turns, voice=VOICES[0])
    slow = [duration(c) for c in synthesize_missing(record, speeds=(140, 140)).answer_audio]
    fast = [duration(c) for c in synthesize_missing(record, speeds=(190, 190)).answer_audio]
    assert slow[0] * 3 < slow[1]
    assert fast[1] < 0.9 * slow[1]


def test_synthesis_leaves_other_records_alone_and_rejects_unspeakable_turns(corpus):
    for record in (r for r in corpus if r.task in ("text", "i2t")):
        assert synthesize_missing(record) is record
    spoken = synthesize_missing(next(r for r in corpus if r.task == "t2a"))
    assert synthesize_missing(spoken) is spoken

    rejected = synthesize_missing(RawRecord("test/bad", "test", "t2a", chat("Hi.", "***")))
    assert isinstance(rejected, Rejected)
    assert (rejected.source, rejected.key) == ("test", "test/bad")
    assert "answer turn 0: nothing speakable" in rejected.reason

    turns = chat("Hi.", "Hello.")
    corpus_speaker = RawRecord("test/x", "test", "t2a", turns, voice="librispeech-1234")
    filled = synthesize_missing(corpus_speaker)
    assert filled.voice == answer_voice(corpus_speaker) and filled.voice in VOICES


def test_voices_and_rates_are_stable_functions_of_the_sample_id():
    records = [RawRecord(f"s/{i}", "s", "a2a", [], voice=None) for i in range(200)]
    rates = [speaking_rate(r.sample_id, "assistant") for r in records]
    assert all(140 <= rate <= 190 for rate in rates) and len(set(rates)) > 20
    assert rates == [speaking_rate(r.sample_id, "assistant") for r in records]
    assert all(question_voice(r) != answer_voice(r) for r in records)
    assert len({question_voice(r) for r in records}) == len(VOICES)
    with pytest.raises(ValueError, match="speeds"):
        synthesize_missing(replace(records[0], task="t2a"), speeds=(200, 150))


def test_speakable_drops_markup_but_keeps_the_words():
    assert speakable("<image>\n**Bold** and `code`  here") == "Bold and code here"
    assert speakable("What is 3 plus 4?") == "What is 3 plus 4?"


def test_generated_and_spoken_records_round_trip_through_tars(corpus, tmp_path):
    spoken = synthesize_missing(next(r for r in corpus if r.task == "a2a"))
    records = [*corpus, spoken]
    paths = write_tars(records, tmp_path, per_tar=25)
    assert len(paths) == -(-len(records) // 25)
    assert list(read_tars(paths)) == records


def test_encoder_test_pictures_label_only_their_held_out_pair():
    train = labelled_pictures(6, seed=0, split="train")
    test = labelled_pictures(6, seed=0, split="held-out")
    assert not (train.labels["colour"] == IGNORE).any()
    fresh = labelled_pictures(6, seed=0, split="test")
    assert not torch.equal(fresh.pixels, train.pixels)  # a stream of its own
    with pytest.raises(ValueError, match="split is train, test or held-out"):
        labelled_pictures(1, seed=0, split="validation")
    for colour, shape in zip(test.labels["colour"], test.labels["shape"], strict=True):
        labelled = (colour != IGNORE).nonzero().flatten().tolist()
        assert labelled == (shape != IGNORE).nonzero().flatten().tolist() and len(labelled) == 1
        names = (
            ATTRIBUTES["colour"][colour[labelled[0]] - 1],
            ATTRIBUTES["shape"][shape[labelled[0]] - 1],
        )
        assert names in HELD_OUT_PAIRS
