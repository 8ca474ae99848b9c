"""Text as it is spoken: lower case, numbers as words, no punctuation.

Speech of "4 plus 7 is 11" says "four plus seven is eleven": comparing an ASR transcript
with a reply, or aligning speech with its text, needs the words as spoken.
"""

from __future__ import annotations

import re

ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
)  # fmt: skip
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
MAX_SPELLED = 999_999  # larger numbers are read digit by digit
NUMBER = re.compile(r"\d+")
NOT_WORD = re.compile(r"[^a-z']+")


def number_words(number: int) -> str:
    """0..999,999 in words ("twenty one"); larger numbers digit by digit."""
    if number > MAX_SPELLED:
        return " ".join(ONES[int(digit)] for digit in str(number))
    if number < 20:
        return ONES[number]
    if number < 100:
        tens, ones = divmod(number, 10)
        return TENS[tens] + (f" {ONES[ones]}" if ones else "")
    if number < 1000:
        hundreds, rest = divmod(number, 100)
        return f"{ONES[hundreds]} hundred" + (f" {number_words(rest)}" if rest else "")
    thousands, rest = divmod(number, 1000)
    return f"{number_words(thousands)} thousand" + (f" {number_words(rest)}" if rest else "")


def normalize_text(text: str) -> str:
    """Lower case, digits spelled out, punctuation dropped, single spaces."""
    spelled = NUMBER.sub(lambda match: f" {number_words(int(match.group()))} ", text.lower())
    return " ".join(NOT_WORD.sub(" ", spelled).split())
