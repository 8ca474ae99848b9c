"""The offline corpus: templated conversations and drawn pictures, deterministic from a seed.

With nothing to download, the pipeline still needs data a model can learn from and a test
can check. Every answer here is computed (sums, counts, table look-ups), so it is right by
construction and can be verified independently: the tests redo the arithmetic from the text
and re-count the shapes from the pixels. Each record draws from its own generator seeded by
(seed, task, index), so a record does not depend on how many others are generated.

Speech is not made here: `pipelines.speech.synthesize_missing` speaks the turns afterwards,
in the voice assigned to each spoken record.
"""

from __future__ import annotations

import io
import math
import operator
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace

from PIL import Image, ImageDraw

from omni_model.tts import VOICES
from pipelines.records import TASKS, RawRecord, Rejected, checked

SOURCE = "generated"
SPOKEN_TASKS = ("t2a", "a2a")
Turn = tuple[str, str]  # (user text, assistant reply)


@dataclass(frozen=True)
class CorpusSettings:
    """How many records of each task to generate, from which seed."""

    seed: int = 0
    t2a: int = 300
    a2a: int = 150
    i2t: int = 150
    text: int = 500
    multi_turn_share: float = 0.25  # conversations with 2-3 user turns
    system_share: float = 0.1  # text conversations that open with a system prompt

    def __post_init__(self) -> None:
        for task in TASKS:
            if self.count(task) < 0:
                raise ValueError(f"corpus settings: {task} count {self.count(task)} is negative")
        for name in ("multi_turn_share", "system_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"corpus settings: {name} {getattr(self, name)} not in 0..1")

    def count(self, task: str) -> int:
        return getattr(self, task)

    @classmethod
    def named(cls, size: str, seed: int = 0) -> CorpusSettings:
        """One of the named sizes in `SIZES`, with the given seed."""
        if size not in SIZES:
            raise ValueError(f"unknown corpus size {size!r}: choose one of {sorted(SIZES)}")
        return replace(SIZES[size], seed=seed)

    def as_dict(self) -> dict[str, int | float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


SIZES = {
    "tiny": CorpusSettings(t2a=24, a2a=12, i2t=24, text=24),  # tests
    # `make demo`, minutes. 2,000 text rows instead of 500 took the demo model's T2A probes
    # from 11/16 to 13/16; 2,400 leave as many after shape talk took its share. 2,000 T2A
    # rows instead of 300 (a minute more of speech synthesis) took them to 16/16, and I2T
    # from 3/18 to 5/18. 23,000 pictures (a minute to draw): the I2T stage learned its
    # 3,000 pictures rather than how to read pictures; with 20,000 more and 9,000 steps its
    # validation loss fell from 0.29 to 0.07 and I2T probes rose from 6/18 to 12/18 (T2A
    # probes 13/16, the other rows mixed in being a smaller share; 6,000 pictures at 4,500
    # steps had gained nothing). 46,000 at the same 9,000 steps answered 36/54 probes
    # against 39 (one data seed; data seeds alone span 33-39), so 23,000 stay.
    "small": CorpusSettings(t2a=2000, a2a=150, i2t=23_000, text=2400),
    # Experiments on a faster machine. Distinct pictures are what the I2T stage needs most.
    "large": CorpusSettings(t2a=20_000, a2a=10_000, i2t=100_000, text=40_000),
}


def generate_corpus(settings: CorpusSettings) -> Iterator[RawRecord | Rejected]:
    """Every record of the corpus, task by task in `TASKS` order, through the shared checks."""
    yield from checked(
        make_record(settings, task, index)
        for task in TASKS
        for index in range(settings.count(task))
    )


def make_record(settings: CorpusSettings, task: str, index: int) -> RawRecord:
    """Record `index` of `task`: a function of the seed, the task and the index only."""
    rng = random.Random(f"{SOURCE}/{settings.seed}/{task}/{index}")
    multi_turn = rng.random() < settings.multi_turn_share
    image = None
    if task == "i2t":
        image, turns = picture_conversation(rng, multi_turn)
        turns[0] = (f"<image>\n{turns[0][0]}", turns[0][1])
    else:
        table = TEXT_TURN if task == "text" else SINGLE_TURN
        turns = rng.choice(MULTI_TURN)(rng) if multi_turn else [weighted_turn(rng, table)]
    conversation = [
        message
        for user, reply in turns
        for message in (chat("user", user), chat("assistant", reply))
    ]
    if task != "i2t" and rng.random() < settings.system_share:
        conversation.insert(0, chat("system", rng.choice(SYSTEM_PROMPTS)))
    return RawRecord(
        sample_id=f"{SOURCE}/{task}-s{settings.seed}-{index:06d}",
        source=SOURCE,
        task=task,
        conversations=conversation,
        image=image,
        voice=assigned_voice(settings.seed, task, index),
    )


def assigned_voice(seed: int, task: str, index: int) -> str | None:
    """Spoken tasks cycle through every voice (from a seeded start), so speakers stay balanced."""
    if task not in SPOKEN_TASKS:
        return None
    start = random.Random(f"{SOURCE}/{seed}/{task}/voices").randrange(len(VOICES))
    return VOICES[(start + index) % len(VOICES)]


def chat(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


SYSTEM_PROMPTS = (
    "You are a helpful assistant.",
    "You are Tiny Omni, a friendly assistant. Answer briefly.",
    "Answer the question in one short sentence.",
)

# Arithmetic: the reply always states the equation "A op B is|equals R", so it can be checked.

OPERATIONS = {"plus": operator.add, "minus": operator.sub, "times": operator.mul}
ARITHMETIC_QUESTIONS = {
    "plus": (
        "What is {a} plus {b}?",
        "How much is {a} plus {b}?",
        "Can you add {a} and {b}?",
        "What do you get when you add {a} and {b}?",
    ),
    "minus": (
        "What is {a} minus {b}?",
        "How much is {a} minus {b}?",
        "What is {b} subtracted from {a}?",
        "Take {b} away from {a}. What is left?",
    ),
    "times": (
        "What is {a} times {b}?",
        "How much is {a} times {b}?",
        "What is {a} multiplied by {b}?",
        "Multiply {a} by {b}, please.",
    ),
}
FOLLOW_UP_QUESTIONS = {
    "plus": ("Now add {b} to that.", "And if you add {b}?"),
    "minus": ("Now subtract {b}.", "And if you take away {b}?"),
    "times": ("Now multiply that by {b}.", "And times {b}?"),
}
EQUATION_REPLIES = (
    "{a} {op} {b} is {r}.",
    "{a} {op} {b} equals {r}.",
    "The answer is {r}: {a} {op} {b} is {r}.",
    "It is {r}, because {a} {op} {b} equals {r}.",
)


def equation_reply(rng: random.Random, a: int, op: str, b: int) -> tuple[str, int]:
    result = OPERATIONS[op](a, b)
    return rng.choice(EQUATION_REPLIES).format(a=a, op=op, b=b, r=result), result


def arithmetic(rng: random.Random) -> Turn:
    op = rng.choice(tuple(OPERATIONS))
    if op == "times":
        a, b = rng.randint(0, 12), rng.randint(0, 12)
    else:
        a, b = rng.randint(0, 20), rng.randint(0, 20)
        if op == "minus":
            a, b = max(a, b), min(a, b)
    question = rng.choice(ARITHMETIC_QUESTIONS[op]).format(a=a, b=b)
    return question, equation_reply(rng, a, op, b)[0]


def arithmetic_chain(rng: random.Random) -> list[Turn]:
    """A sum, then 1-2 follow-ups on "that": the model must carry the result across turns."""
    a, b = rng.randint(1, 20), rng.randint(1, 20)
    question = rng.choice(ARITHMETIC_QUESTIONS["plus"]).format(a=a, b=b)
    reply, result = equation_reply(rng, a, "plus", b)
    turns = [(question, reply)]
    for _ in range(rng.randint(1, 2)):
        op = rng.choice(("plus", "minus", "times") if result <= 30 else ("plus", "minus"))
        b = {"plus": rng.randint(1, 10), "minus": rng.randint(0, min(result, 20))}.get(
            op, rng.randint(2, 4)
        )
        question = rng.choice(FOLLOW_UP_QUESTIONS[op]).format(b=b)
        reply, next_result = equation_reply(rng, result, op, b)
        turns.append((question, reply))
        result = next_result
    return turns


# Colours.

COLOUR_FACTS = (
    ("the sky on a clear day", "blue"),
    ("grass", "green"),
    ("a ripe banana", "yellow"),
    ("snow", "white"),
    ("coal", "black"),
    ("a ripe tomato", "red"),
    ("a carrot", "orange"),
    ("chocolate", "brown"),
    ("a lemon", "yellow"),
    ("milk", "white"),
    ("a strawberry", "red"),
    ("a leaf in summer", "green"),
    ("a plum", "purple"),
    ("a flamingo", "pink"),
    ("a fire truck", "red"),
    ("a polar bear", "white"),
    ("a crow", "black"),
    ("the sea", "blue"),
    ("a pumpkin", "orange"),
    ("a frog", "green"),
    ("an eggplant", "purple"),
    ("cinnamon", "brown"),
)
COLOUR_QUESTIONS = (
    "What colour is {thing}?",
    "What is the colour of {thing}?",
    "Tell me the colour of {thing}.",
)
COLOUR_MIXES = (
    ("red", "yellow", "orange"),
    ("blue", "yellow", "green"),
    ("red", "blue", "purple"),
    ("red", "white", "pink"),
    ("black", "white", "grey"),
)


def colour_fact(rng: random.Random) -> Turn:
    return colour_fact_turn(rng, *rng.choice(COLOUR_FACTS))


def colour_fact_turn(rng: random.Random, thing: str, colour: str) -> Turn:
    return rng.choice(COLOUR_QUESTIONS).format(thing=thing), f"{capitalised(thing)} is {colour}."


def colour_mix(rng: random.Random) -> Turn:
    first, second, mixed = rng.choice(COLOUR_MIXES)
    if rng.random() < 0.5:
        first, second = second, first
    question = f"What colour do you get when you mix {first} and {second}?"
    return question, f"Mixing {first} and {second} gives {mixed}."


def colour_follow_up(rng: random.Random) -> list[Turn]:
    """One colour question, then "What about X?" for 1-2 more things."""
    facts = rng.sample(COLOUR_FACTS, rng.randint(2, 3))
    turns = [colour_fact_turn(rng, *facts[0])]
    for thing, colour in facts[1:]:
        turns.append((f"What about {thing}?", f"{capitalised(thing)} is {colour}."))
    return turns


# Counting.

WORDS = (
    "cat", "dog", "sun", "moon", "tree", "book", "apple", "house", "river", "music",
    "lemon", "tiger", "cloud", "chair", "table", "bread", "ocean", "garden", "pencil",
    "window", "rabbit", "yellow", "planet", "bridge", "school", "flower", "purple", "summer",
)  # fmt: skip
LISTS = {
    "fruits": ("apple", "pear", "plum", "banana", "cherry", "grape", "mango", "peach", "melon"),
    "animals": ("cat", "dog", "cow", "horse", "sheep", "goat", "duck", "lion", "fox", "bear"),
    "colours": ("red", "green", "blue", "yellow", "orange", "purple", "pink", "brown"),
}


def count_range(rng: random.Random) -> Turn:
    start = rng.randint(1, 15)
    stop = start + rng.randint(2, 6)
    numbers = ", ".join(str(n) for n in range(start, stop + 1))
    return f"Count from {start} to {stop}.", f"{numbers}."


def neighbour_number(rng: random.Random) -> Turn:
    number = rng.randint(1, 99)
    if rng.random() < 0.5:
        return f"What number comes after {number}?", f"{number + 1} comes after {number}."
    return f"What number comes before {number}?", f"{number - 1} comes before {number}."


def word_letters(rng: random.Random) -> Turn:
    word = rng.choice(WORDS)
    return (
        f"How many letters are in the word {word}?",
        f"The word {word} has {len(word)} letters.",
    )


def list_count(rng: random.Random) -> Turn:
    kind = rng.choice(tuple(LISTS))
    items = rng.sample(LISTS[kind], rng.randint(2, 6))
    question = f"How many {kind} are in this list: {', '.join(items)}?"
    return question, f"There are {len(items)} {kind} in the list."


# Simple facts: a fixed table, and ordered sequences (days, months).

ANIMAL_LEGS = (
    ("a spider", 8), ("a dog", 4), ("a bird", 2), ("an ant", 6), ("a cat", 4),
    ("a horse", 4), ("a chicken", 2), ("a beetle", 6), ("a cow", 4), ("a duck", 2),
)  # fmt: skip
ANIMAL_SOUNDS = (
    ("a cow", "moo"), ("a cat", "meow"), ("a dog", "woof"), ("a duck", "quack"),
    ("a sheep", "baa"), ("an owl", "hoot"), ("a pig", "oink"), ("a horse", "neigh"),
)  # fmt: skip
CAPITALS = (
    ("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Germany", "Berlin"), ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("Kenya", "Nairobi"),
    ("Peru", "Lima"), ("Norway", "Oslo"), ("Greece", "Athens"), ("China", "Beijing"),
)  # fmt: skip
OPPOSITES = (
    ("hot", "cold"), ("big", "small"), ("up", "down"), ("fast", "slow"), ("happy", "sad"),
    ("light", "dark"), ("open", "closed"), ("early", "late"), ("full", "empty"),
)  # fmt: skip
TRIVIA = (
    ("How many days are in a week?", "There are 7 days in a week."),
    ("How many months are in a year?", "There are 12 months in a year."),
    ("How many hours are in a day?", "There are 24 hours in a day."),
    ("How many minutes are in an hour?", "There are 60 minutes in an hour."),
    ("What do bees make?", "Bees make honey."),
    ("What is frozen water called?", "Frozen water is called ice."),
    ("Which planet do we live on?", "We live on Earth."),
    ("What do plants need to grow?", "Plants need water, light and air to grow."),
    ("What is the largest ocean?", "The largest ocean is the Pacific Ocean."),
    ("Where does the sun rise?", "The sun rises in the east."),
)
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
SEQUENCES = {"day": DAYS, "month": MONTHS}


def animal_legs(rng: random.Random) -> Turn:
    animal, legs = rng.choice(ANIMAL_LEGS)
    return f"How many legs does {animal} have?", f"{capitalised(animal)} has {legs} legs."


def animal_sound(rng: random.Random) -> Turn:
    animal, sound = rng.choice(ANIMAL_SOUNDS)
    return f"What sound does {animal} make?", f"{capitalised(animal)} says {sound}."


def capital(rng: random.Random) -> Turn:
    country, city = rng.choice(CAPITALS)
    return f"What is the capital of {country}?", f"The capital of {country} is {city}."


def opposite(rng: random.Random) -> Turn:
    word, other = rng.choice(OPPOSITES)
    if rng.random() < 0.5:
        word, other = other, word
    return f"What is the opposite of {word}?", f"The opposite of {word} is {other}."


def trivia(rng: random.Random) -> Turn:
    return rng.choice(TRIVIA)


def sequence_step(kind: str, item: str, step: int) -> Turn:
    order = SEQUENCES[kind]
    neighbour = order[(order.index(item) + step) % len(order)]
    relation = "after" if step > 0 else "before"
    return f"What {kind} comes {relation} {item}?", f"{neighbour} comes {relation} {item}."


def next_in_sequence(rng: random.Random) -> Turn:
    kind = rng.choice(tuple(SEQUENCES))
    return sequence_step(kind, rng.choice(SEQUENCES[kind]), rng.choice((1, -1)))


def sequence_follow_up(rng: random.Random) -> list[Turn]:
    """What comes after X? And after that? (1-2 times): the model must track the position."""
    kind = rng.choice(tuple(SEQUENCES))
    order = SEQUENCES[kind]
    position = rng.randrange(len(order))
    turns = [sequence_step(kind, order[position], 1)]
    for _ in range(rng.randint(1, 2)):
        position = (position + 1) % len(order)
        after = order[(position + 1) % len(order)]
        turns.append(("And after that?", f"{after} comes after {order[position]}."))
    return turns


# Greetings and small talk.

GREETINGS = (
    ("Hello!", "Hello! How can I help you today?"),
    ("Hi there.", "Hi! What would you like to know?"),
    ("Good morning.", "Good morning! I hope you have a nice day."),
    ("Good evening.", "Good evening! How can I help?"),
    ("How are you?", "I am doing well, thank you for asking."),
    ("What is your name?", "My name is Tiny Omni."),
    ("Who are you?", "I am Tiny Omni, a small assistant that can listen, see and speak."),
    ("Can you help me?", "Of course. What do you need?"),
)
THANKS = (
    ("Thank you.", "You are welcome."),
    ("Thanks a lot!", "You are welcome. Happy to help."),
    ("Goodbye.", "Goodbye! Have a great day."),
    ("See you later.", "See you later!"),
)
NAMES = ("Sam", "Alice", "Tom", "Maria", "Omar", "Lena", "Kenji", "Priya", "Ben", "Zoe")


def greeting(rng: random.Random) -> Turn:
    return rng.choice(GREETINGS + THANKS)


def introduction(name: str) -> Turn:
    return f"Hello, my name is {name}.", f"Nice to meet you, {name}! How can I help?"


def introduce(rng: random.Random) -> Turn:
    return introduction(rng.choice(NAMES))


def small_talk(rng: random.Random) -> list[Turn]:
    """A question after a greeting and/or before a thank-you, or a greeting and two questions."""
    hello, question, thanks = rng.choice(GREETINGS), question_turn(rng), rng.choice(THANKS)
    shapes = ([hello, question, thanks], [question, thanks], [hello, question, question_turn(rng)])
    return rng.choice(shapes)


def name_memory(rng: random.Random) -> list[Turn]:
    """Introduce yourself, maybe ask something, then ask your name back."""
    name = rng.choice(NAMES)
    middle = [question_turn(rng)] if rng.random() < 0.5 else []
    recall = rng.choice(("What is my name?", "Do you remember my name?"))
    return [introduction(name), *middle, (recall, f"Your name is {name}.")]


QUESTIONS: tuple[tuple[Callable[[random.Random], Turn], int], ...] = (
    (arithmetic, 6),
    (colour_fact, 3),
    (colour_mix, 1),
    (count_range, 1),
    (neighbour_number, 1),
    (word_letters, 1),
    (list_count, 1),
    (animal_legs, 1),
    (animal_sound, 1),
    (capital, 1),
    (opposite, 1),
    (trivia, 1),
    (next_in_sequence, 1),
)
SINGLE_TURN = (*QUESTIONS, (greeting, 2), (introduce, 1))
MULTI_TURN = (small_talk, name_memory, arithmetic_chain, colour_follow_up, sequence_follow_up)


def weighted_turn(rng: random.Random, table: tuple[tuple[Callable, int], ...]) -> Turn:
    makers, weights = zip(*table, strict=True)
    return rng.choices(makers, weights)[0](rng)


def question_turn(rng: random.Random) -> Turn:
    return weighted_turn(rng, QUESTIONS)


# Pictures: shapes in a 3x3 grid, at most one per cell and never touching, filled with exact
# colours (no anti-aliasing), so that each shape is one connected blob of its colour and the
# tests can re-count them from the pixels. A few colour/shape pairs are never drawn: the I2T
# probes (`pipelines.sources.probes`) ask about them to test unseen combinations.

SHAPE_COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 150, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 200, 20),
    "orange": (245, 130, 20),
    "purple": (140, 50, 170),
    "pink": (240, 120, 180),
    "brown": (130, 80, 40),
    "black": (20, 20, 20),
}
BACKGROUNDS = ((255, 255, 255), (236, 236, 236), (250, 244, 222))
# corners, angle of the first corner in degrees (image y points down), inner radius share
POLYGONS = {
    "square": (4, 45.0, 1.0),
    "diamond": (4, -90.0, 1.0),
    "triangle": (3, -90.0, 1.0),
    "hexagon": (6, 0.0, 1.0),
    "star": (10, -90.0, 0.45),
}
SHAPES = ("circle", *POLYGONS)
# One pair per shape, each with another colour: every shape and colour is still drawn.
HELD_OUT_PAIRS = frozenset(
    {
        ("purple", "star"),
        ("orange", "circle"),
        ("pink", "square"),
        ("brown", "triangle"),
        ("yellow", "hexagon"),
        ("green", "diamond"),
    }
)
IMAGE_SIZES = (224, 240, 256)
GRID = 3  # cells per side
MARGIN = 3  # pixels kept free between a shape and the border of its cell
MAX_SHAPES = 7


def with_article(name: str) -> str:
    """ "a blue star", "an orange star"."""
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def shape_talk(rng: random.Random) -> Turn:
    """A colour and a shape named in words, and one of them asked back.

    Picture questions are answered by repeating what they name ("What colour is the star?"
    -> "The star is ..."). Measured on the demo model: without these rows the Thinker
    learned to repeat the colour but guessed the shape. Every pair appears, held-out ones
    too, equally often: words say nothing about how a purple star looks.
    """
    kind, colour = rng.choice(SHAPES), rng.choice(tuple(SHAPE_COLOURS))
    drew = f"I drew {with_article(f'{colour} {kind}')}."
    if rng.random() < 0.5:
        return f"{drew} What colour is the {kind}?", f"The {kind} is {colour}."
    question = f"{drew} What shape is the {colour} one?"
    return question, f"The {colour} shape is a {kind}."


# Text rows alone talk about shapes too (a fifth of single turns); spoken rows stay as they were.
TEXT_TURN = (*SINGLE_TURN, (shape_talk, 6))


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    cell: int  # 0..GRID*GRID-1, row-major

    @property
    def name(self) -> str:
        return f"{self.colour} {self.kind}"


Scene = tuple[list[Shape], Turn]


def place(kinds: list[str], colours: list[str], cells: list[int]) -> list[Shape]:
    return [Shape(*spec) for spec in zip(kinds, colours, cells, strict=True)]


def kind_for(rng: random.Random, colour: str) -> str:
    """A shape kind that may be drawn in `colour` (never a held-out pair)."""
    return rng.choice([kind for kind in SHAPES if (colour, kind) not in HELD_OUT_PAIRS])


def colour_for(rng: random.Random, kind: str, taken: tuple[str, ...] = ()) -> str:
    """A colour not in `taken` that `kind` may be drawn in (never a held-out pair)."""
    allowed = [c for c in SHAPE_COLOURS if c not in taken and (c, kind) not in HELD_OUT_PAIRS]
    return rng.choice(allowed)


def random_shapes(rng: random.Random, count: int) -> list[Shape]:
    cells = rng.sample(range(GRID * GRID), count)
    colours = [rng.choice(tuple(SHAPE_COLOURS)) for _ in cells]
    return place([kind_for(rng, colour) for colour in colours], colours, cells)


def labelled_picture(rng: random.Random, held_out: bool = False) -> tuple[bytes, list[Shape]]:
    """A picture of 1-7 random shapes and the shapes, for pretraining the image encoder.

    With `held_out`, one of up to 4 shapes is a held-out pair: for measuring, never training.
    """
    if not held_out:
        shapes = random_shapes(rng, rng.randint(1, MAX_SHAPES))
        return draw_scene(rng, shapes), shapes
    colour, kind = rng.choice(sorted(HELD_OUT_PAIRS))
    shapes = random_shapes(rng, rng.randint(0, 3))
    free = [cell for cell in range(GRID * GRID) if cell not in {s.cell for s in shapes}]
    shapes += place([kind], [colour], [rng.choice(free)])
    return draw_scene(rng, shapes), shapes


def count_reply(count: int, colour: str = "") -> str:
    noun = f"{colour} shape" if colour else "shape"
    if count == 0:
        return f"There are no {noun}s."
    return f"There is 1 {noun}." if count == 1 else f"There are {count} {noun}s."


def count_turn(rng: random.Random, shapes: list[Shape]) -> Turn:
    questions = ("How many shapes are there?", "How many shapes can you see?", "Count the shapes.")
    return rng.choice(questions), count_reply(len(shapes))


def describe_turn(rng: random.Random, shapes: list[Shape]) -> Turn:
    """Names every shape, grouped, in reading order: "I see 2 red stars and a blue circle."""
    groups = Counter(shape.name for shape in sorted(shapes, key=lambda shape: shape.cell))
    phrases = [with_article(name) if n == 1 else f"{n} {name}s" for name, n in groups.items()]
    listed = phrases[0] if len(phrases) == 1 else f"{', '.join(phrases[:-1])} and {phrases[-1]}"
    questions = ("Describe the picture.", "What is in this image?", "What do you see?")
    return rng.choice(questions), f"I see {listed}."


def count_scene(rng: random.Random) -> Scene:
    shapes = random_shapes(rng, rng.randint(1, MAX_SHAPES))
    return shapes, count_turn(rng, shapes)


def describe_scene(rng: random.Random) -> Scene:
    shapes = random_shapes(rng, rng.randint(1, 4))
    return shapes, describe_turn(rng, shapes)


def colour_count_scene(rng: random.Random) -> Scene:
    """k shapes of one colour (k may be 0) among others of different colours."""
    target = rng.choice(tuple(SHAPE_COLOURS))
    others = [colour for colour in SHAPE_COLOURS if colour != target]
    count = rng.randint(0, 4)
    total = count + rng.randint(0 if count else 1, MAX_SHAPES - count)
    colours = [target] * count + [rng.choice(others) for _ in range(total - count)]
    kinds = [kind_for(rng, colour) for colour in colours]
    shapes = place(kinds, colours, rng.sample(range(GRID * GRID), total))
    question = rng.choice(("How many {c} shapes are there?", "How many shapes are {c}?"))
    return shapes, (question.format(c=target), count_reply(count, target))


def colour_scene(rng: random.Random) -> Scene:
    """1-3 shapes of different kinds: ask for the colour of one kind."""
    kinds = rng.sample(SHAPES, rng.randint(1, 3))
    colours = [colour_for(rng, kind) for kind in kinds]
    shapes = place(kinds, colours, rng.sample(range(GRID * GRID), len(kinds)))
    target = rng.choice(shapes)
    question = rng.choice(("What colour is the {k}?", "Which colour does the {k} have?"))
    return shapes, (question.format(k=target.kind), f"The {target.kind} is {target.colour}.")


def shape_scene(rng: random.Random) -> Scene:
    """1-3 shapes of different colours: ask for the kind of one colour."""
    colours = rng.sample(tuple(SHAPE_COLOURS), rng.randint(1, 3))
    kinds = [kind_for(rng, colour) for colour in colours]
    shapes = place(kinds, colours, rng.sample(range(GRID * GRID), len(colours)))
    target = rng.choice(shapes)
    question = rng.choice(("What shape is the {c} one?", "Which shape is {c}?"))
    return shapes, (
        question.format(c=target.colour),
        f"The {target.colour} shape is a {target.kind}.",
    )


def position_scene(rng: random.Random) -> Scene:
    """Two shapes in opposite columns (left/right) or rows (top/bottom); ask where one is."""
    lines = [rng.randrange(GRID), rng.randrange(GRID)]
    if rng.random() < 0.5:
        places, cells = ("on the left", "on the right"), [lines[0] * GRID, lines[1] * GRID + 2]
    else:
        places, cells = ("at the top", "at the bottom"), [lines[0], (GRID - 1) * GRID + lines[1]]
    kinds = rng.sample(SHAPES, 2)
    first = colour_for(rng, kinds[0])
    shapes = place(kinds, [first, colour_for(rng, kinds[1], taken=(first,))], cells)
    side = rng.randrange(2)
    name, where = shapes[side].name, places[side]
    question = rng.choice(
        (
            f"Where is the {name}?",
            f"Which shape is {where}?",
            f"Is the {name} {' or '.join(places)}?",
        )
    )
    return shapes, (question, f"The {name} is {where}.")


SCENES = (
    count_scene,
    colour_count_scene,
    colour_scene,
    shape_scene,
    position_scene,
    describe_scene,
)


def picture_conversation(rng: random.Random, multi_turn: bool) -> tuple[bytes, list[Turn]]:
    """A drawn picture (PNG bytes) and 1-2 question turns about it."""
    make_scene = rng.choice(SCENES)
    shapes, turn = make_scene(rng)
    turns = [turn]
    if multi_turn:
        follow_up = {count_scene: describe_turn, describe_scene: count_turn}.get(
            make_scene, rng.choice((count_turn, describe_turn))
        )
        turns.append(follow_up(rng, shapes))
    return draw_scene(rng, shapes), turns


def outline(kind: str, x: float, y: float, radius: float) -> list[tuple[float, float]]:
    """Corners of a regular polygon (or star) of circumradius `radius` centred on (x, y)."""
    corners, start, inner = POLYGONS[kind]
    points = []
    for index in range(corners):
        angle = math.radians(start + index * 360.0 / corners)
        reach = radius * (inner if index % 2 else 1.0)
        points.append((x + reach * math.cos(angle), y + reach * math.sin(angle)))
    return points


def draw_scene(rng: random.Random, shapes: list[Shape]) -> bytes:
    """Draw `shapes` on a plain background, each somewhere inside its cell -> PNG bytes."""
    size = rng.choice(IMAGE_SIZES)
    image = Image.new("RGB", (size, size), rng.choice(BACKGROUNDS))
    draw = ImageDraw.Draw(image)
    cell = size / GRID
    for shape in shapes:
        radius = rng.uniform(0.26, 0.4) * cell
        slack = cell / 2 - radius - MARGIN
        row, column = divmod(shape.cell, GRID)
        x = (column + 0.5) * cell + rng.uniform(-slack, slack)
        y = (row + 0.5) * cell + rng.uniform(-slack, slack)
        fill = SHAPE_COLOURS[shape.colour]
        if shape.kind == "circle":
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill)
        else:
            draw.polygon(outline(shape.kind, x, y, radius), fill=fill)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
