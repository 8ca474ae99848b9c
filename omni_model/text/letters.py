"""The letters a Talker reads while it speaks (`OmniConfig.letter_window`).

In the sequential layout a reply's text runs far ahead of its speech, and a tiny Talker
loses track of which word a frame says (README, Results). With a letter window it is told:
frame j of a reply of C letters and F frames reads the letters around letter
j * C / (F - TRAILING_SILENCE_FRAMES), an even pace as espeak-ng speaks, the window a
NETtalk-style letter-to-sound model reads. In generation F is not known yet, so frame j
reads letter j / frames_per_letter.

Ids: letters the Thinker has not written yet are UNKNOWN (a frame never reads ahead of the
text it was given), positions before the reply and past its end EDGE, columns outside a
spoken reply NONE (the Talker adds nothing there).
"""

from __future__ import annotations

import re

import torch

NONE, UNKNOWN, EDGE, OTHER = 0, 1, 2, 3
ALPHABET = " abcdefghijklmnopqrstuvwxyz'"  # digits are spelled out as words
LETTER_VOCAB = 4 + len(ALPHABET)
_IDS = {char: 4 + index for index, char in enumerate(ALPHABET)}
# espeak-ng's replies end in about 0.4 s of silence (the median over the corpus' phonetic
# codes): the letters are spread over the frames before it.
TRAILING_SILENCE_FRAMES = 5
_ONES = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
]  # fmt: skip
_TENS = ["-", "-", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(number: int) -> str:
    """How espeak-ng says a whole number below a million (above: digit by digit)."""
    if number < 20:
        return _ONES[number]
    if number < 100:
        tens, ones = divmod(number, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    for size, name in ((1000, "thousand"), (100, "hundred")):
        if size <= number < 1000 * size:
            high, low = divmod(number, size)
            return f"{number_words(high)} {name}" + (f" {number_words(low)}" if low else "")
    return " ".join(_ONES[int(digit)] for digit in str(number))


def spell(text: str) -> list[int]:
    """One id per character as spoken: numbers as their words ("8" reads "eight", so a
    number takes as many letters as its sound takes time), case folded, punctuation and
    the rest OTHER. A number split over two tokens reads as two numbers."""
    spoken = re.sub(r"\d+", lambda match: number_words(int(match.group())), text)
    return [_IDS.get(char, OTHER) for char in spoken.lower()]


def letter_windows(
    letters: torch.Tensor,
    known: torch.Tensor,
    complete: torch.Tensor,
    centres: torch.Tensor,
    width: int,
) -> torch.Tensor:
    """Windows of `width` letters around each centre.

    letters: (C,) ids of the whole reply; known: (N,) how many of them each frame may see;
    complete: (N,) bool, whether the reply's end was written by then; centres: (N,) letter
    index each frame reads -> (width, N) ids.
    """
    offsets = torch.arange(width) - width // 2  # (W,)
    index = centres.view(1, -1) + offsets.view(-1, 1)  # (W, N)
    inside = (index >= 0) & (index < known.view(1, -1))
    picked = letters[index.clamp(0, max(len(letters) - 1, 0))] if len(letters) else index * 0
    unwritten = (index >= known.view(1, -1)) & ~complete.view(1, -1)
    return torch.where(inside, picked, torch.where(unwritten, UNKNOWN, EDGE))


def reply_letters(pieces: list[str], frames: int, columns: int, width: int) -> torch.Tensor:
    """Windows for the first `columns` columns of a spoken reply in the sequential layout.

    pieces: the text of each reply token, the end token last (""); frames: F. Column j from
    reply_start holds reply tokens 0..j, so it may see their letters -> (width, columns).
    """
    spelled = [spell(piece) for piece in pieces]
    letters = torch.tensor([i for word in spelled for i in word], dtype=torch.long)
    written = torch.tensor([len(word) for word in spelled], dtype=torch.long).cumsum(0)
    column = torch.arange(columns)
    token = column.clamp(max=len(pieces) - 1)
    centres = column * len(letters) // max(frames - TRAILING_SILENCE_FRAMES, 1)
    return letter_windows(letters, written[token], column >= len(pieces) - 1, centres, width)


class ReplyReading:
    """The letter windows of a reply being generated: frame j reads letter
    j / frames_per_letter of what the Thinker has written so far."""

    def __init__(self, width: int, frames_per_letter: float):
        self.width, self.frames_per_letter = width, frames_per_letter
        self.letters: list[int] = []
        self.complete = False

    def write(self, piece: str, is_end: bool) -> None:
        """One more reply token: its text, and whether it ends the reply."""
        self.letters += spell(piece)
        self.complete = self.complete or is_end

    def window(self, column: int) -> torch.Tensor:
        """(W,) ids read at reply column `column` (frame `column`'s codebook 0 comes next)."""
        return letter_windows(
            torch.tensor(self.letters, dtype=torch.long),
            torch.tensor([len(self.letters)]),
            torch.tensor([self.complete]),
            torch.tensor([int(column / self.frames_per_letter)]),
            self.width,
        )[:, 0]
