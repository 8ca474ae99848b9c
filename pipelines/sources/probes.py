"""The fixed probe sets asked of every checkpoint, one per task, deterministic.

- T2A: closed-domain questions from the generated corpus' own tables (facts, colours,
  sequences, greetings), each with the one reply the corpus phrases for it; replies are
  asked alternately in voices training spoke in and in voices it never heard.
- A2A: the same kind of questions spoken by espeak-ng voices that no training record uses
  (`PROBE_VOICES`), replies in training voices.
- I2T: pictures holding a colour/shape pair the corpus generator never draws
  (`HELD_OUT_PAIRS`), asked for the colour, the shape, or how many of that colour.

Items are built from the corpus generator's question makers and drawing code, so they are
phrased and drawn exactly as training data is, and right by construction.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from omni_model.audio_io import encode_wav_bytes
from omni_model.evaluation.probes import ProbeItem
from omni_model.tts import DEFAULT_WPM, VOICES, synthesize
from pipelines.sources.generated import (
    GRID,
    HELD_OUT_PAIRS,
    SHAPE_COLOURS,
    SHAPES,
    Shape,
    Turn,
    animal_legs,
    animal_sound,
    capital,
    colour_fact,
    colour_for,
    colour_mix,
    count_reply,
    draw_scene,
    greeting,
    kind_for,
    next_in_sequence,
    opposite,
    place,
    trivia,
)

# espeak-ng voices outside VOICES: no training record is spoken by them. The first two are
# the clearest to pocketsphinx, so they are the unseen voices replies are asked in.
PROBE_VOICES = ("en-us+f1", "en-us+m5", "en-gb-x-gbclan+m5", "en-us+m4")
SEEN_REPLY_VOICES = VOICES[:5]  # the training voices pocketsphinx hears best
UNSEEN_REPLY_VOICES = PROBE_VOICES[:2]
# Question makers whose reply is fixed by the question (unlike arithmetic's varied phrasing).
LOOKUPS: tuple[Callable[[random.Random], Turn], ...] = (
    colour_fact,
    capital,
    animal_legs,
    opposite,
    next_in_sequence,
    animal_sound,
    trivia,
    colour_mix,
    greeting,
)
T2A_COUNT = 16
A2A_COUNT = 8
I2T_PICTURES = 3  # per held-out pair and question
SAMPLE_RATE = 24_000


def lookup_turns(task: str, count: int) -> list[Turn]:
    """`count` distinct (question, reply) pairs, cycling through the question makers."""
    turns: dict[str, str] = {}
    for attempt in range(100 * count):
        if len(turns) == count:
            break
        rng = random.Random(f"probes/{task}/{attempt}")
        question, reply = LOOKUPS[attempt % len(LOOKUPS)](rng)
        turns.setdefault(question, reply)
    return list(turns.items())


def t2a_probes(count: int = T2A_COUNT) -> list[ProbeItem]:
    """Even items reply in a training voice, odd items in an unseen one."""
    items = []
    for index, (question, reply) in enumerate(lookup_turns("t2a", count)):
        seen = index % 2 == 0
        voices = SEEN_REPLY_VOICES if seen else UNSEEN_REPLY_VOICES
        voice = voices[(index // 2) % len(voices)]
        items.append(ProbeItem(f"probe/t2a-{index:03d}", "t2a", question, (reply,), voice, seen))
    return items


def a2a_probes(count: int = A2A_COUNT) -> list[ProbeItem]:
    """Questions spoken in the unseen `PROBE_VOICES`; replies in training voices."""
    items = []
    for index, (question, reply) in enumerate(lookup_turns("a2a", count)):
        speaker = PROBE_VOICES[index % len(PROBE_VOICES)]
        audio = synthesize(question, speaker, DEFAULT_WPM, sample_rate=SAMPLE_RATE)
        items.append(
            ProbeItem(
                f"probe/a2a-{index:03d}",
                "a2a",
                question,
                (reply,),
                SEEN_REPLY_VOICES[index % len(SEEN_REPLY_VOICES)],
                True,
                question_audio=encode_wav_bytes(audio, SAMPLE_RATE),
            )
        )
    return items


def colour_question(rng: random.Random, colour: str, kind: str) -> tuple[list[Shape], Turn]:
    """The held-out shape among 0-2 shapes of other kinds: what colour is it?"""
    kinds = [kind, *rng.sample([k for k in SHAPES if k != kind], rng.randint(0, 2))]
    colours = [colour, *(colour_for(rng, other) for other in kinds[1:])]
    shapes = place(kinds, colours, rng.sample(range(GRID * GRID), len(kinds)))
    return shapes, (f"What colour is the {kind}?", f"The {kind} is {colour}.")


def shape_question(rng: random.Random, colour: str, kind: str) -> tuple[list[Shape], Turn]:
    """The held-out shape among 0-2 shapes of other colours: what shape is that colour?"""
    others = rng.sample([c for c in SHAPE_COLOURS if c != colour], rng.randint(0, 2))
    colours = [colour, *others]
    kinds = [kind, *(kind_for(rng, other) for other in others)]
    shapes = place(kinds, colours, rng.sample(range(GRID * GRID), len(kinds)))
    return shapes, (f"What shape is the {colour} one?", f"The {colour} shape is a {kind}.")


def count_question(rng: random.Random, colour: str, kind: str) -> tuple[list[Shape], Turn]:
    """The held-out shape, 0-2 more of its colour and 1-3 of others: how many of its colour?"""
    same = [kind_for(rng, colour) for _ in range(rng.randint(0, 2))]
    others = [
        rng.choice([c for c in SHAPE_COLOURS if c != colour]) for _ in range(rng.randint(1, 3))
    ]
    colours = [colour] * (1 + len(same)) + others
    kinds = [kind, *same, *(kind_for(rng, other) for other in others)]
    shapes = place(kinds, colours, rng.sample(range(GRID * GRID), len(kinds)))
    question = f"How many {colour} shapes are there?"
    return shapes, (question, count_reply(1 + len(same), colour))


def i2t_probes(pictures: int = I2T_PICTURES) -> list[ProbeItem]:
    """Three questions per held-out colour/shape pair, each on `pictures` pictures of its own.

    Three pictures rather than one: with 18 items a probe more or less moved the score by
    0.06, and runs of one recipe landed two probes apart. The first picture of each is the one
    the set held when it had 18 items, so older scores stay comparable.
    """
    items = []
    for colour, kind in sorted(HELD_OUT_PAIRS):
        for ask in (colour_question, shape_question, count_question):
            question_type = ask.__name__.removesuffix("_question")
            for picture in range(pictures):
                key = f"probes/i2t/{colour}/{kind}/{ask.__name__}" + (
                    f"/{picture}" if picture else ""
                )
                rng = random.Random(key)
                shapes, (question, reply) = ask(rng, colour, kind)
                item_id = f"probe/i2t-{colour}-{kind}-{question_type}-{picture + 1}"
                items.append(
                    ProbeItem(item_id, "i2t", question, (reply,), image=draw_scene(rng, shapes))
                )
    return items


def probe_set() -> list[ProbeItem]:
    """Every probe: T2A, then A2A, then I2T."""
    return [*t2a_probes(), *a2a_probes(), *i2t_probes()]
