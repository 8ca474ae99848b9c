"""espeak-ng's IPA -> the ARPAbet phones of pocketsphinx's English model.

pocketsphinx can only hear (or align) words its dictionary holds. A reply may say a word it lacks (a
made-up word of an undertrained model, a rare name in a user's corpus); espeak-ng's
letter-to-sound rules still pronounce it, and mapping that pronunciation onto the acoustic
model's 39 phones lets the grammar include the word. Against the dictionary (stress marks
aside) it gives the same phones for 92 of the 98 commonest English words (the rest are
alternates: "and" as AE N D, not AH N D) and for 60% of 3,000 random entries, mostly rare
names, where it is within a phone or two: close enough for a grammar-constrained search.
"""

from __future__ import annotations

import logging

from omni_model.tts import SpeechSynthesisError, ipa_pronunciations

log = logging.getLogger(__name__)

# Longest symbols first when matching; r-coloured vowels and diphthongs before their parts.
IPA_TO_ARPABET = {
    "aɪə": "AY ER",
    "aɪɚ": "AY ER",
    "ɑːɹ": "AA R",
    "ɔːɹ": "AO R",
    "oːɹ": "AO R",
    "ɜːɹ": "ER",
    "ɚɹ": "ER",
    "aɪ": "AY",
    "aʊ": "AW",
    "eɪ": "EY",
    "oʊ": "OW",
    "ɔɪ": "OY",
    "tʃ": "CH",
    "dʒ": "JH",
    "ɛɹ": "EH R",
    "ɪɹ": "IH R",
    "ʊɹ": "UH R",
    "n̩": "AH N",
    "l̩": "AH L",
    "ɑː": "AA",
    "ɜː": "ER",
    "ɔː": "AO",
    "oː": "AO",
    "iː": "IY",
    "uː": "UW",
    "ɑ": "AA",
    "ɒ": "AA",
    "æ": "AE",
    "a": "AE",
    "ʌ": "AH",
    "ə": "AH",
    "ɐ": "AH",
    "ɚ": "ER",
    "ɜ": "ER",
    "ɔ": "AO",
    "o": "OW",
    "ɛ": "EH",
    "e": "EH",
    "ɪ": "IH",
    "ᵻ": "IH",
    "i": "IY",
    "ʊ": "UH",
    "u": "UW",
    "b": "B",
    "d": "D",
    "ð": "DH",
    "f": "F",
    "ɡ": "G",
    "g": "G",
    "h": "HH",
    "k": "K",
    "x": "K",
    "l": "L",
    "ɫ": "L",
    "m": "M",
    "n": "N",
    "ŋ": "NG",
    "p": "P",
    "ɹ": "R",
    "r": "R",
    "s": "S",
    "ʃ": "SH",
    "t": "T",
    "ɾ": "T",  # the American flap of "little"; the dictionary writes T or D
    "ʔ": "T",  # the glottal stop of "button"
    "θ": "TH",
    "v": "V",
    "w": "W",
    "j": "Y",
    "z": "Z",
    "ʒ": "ZH",
}
_LONGEST_FIRST = sorted(IPA_TO_ARPABET, key=len, reverse=True)
_SKIPPED = set("ˈˌː.‿- ")  # stress, length and boundary marks: the acoustic model has none


def arpabet(ipa: str) -> str | None:
    """IPA as espeak-ng writes it ("kˈæt") -> space-separated ARPAbet ("K AE T"), or None
    when it holds a symbol without an English phone (the word then stays unknown)."""
    phones, position = [], 0
    while position < len(ipa):
        if ipa[position] in _SKIPPED:
            position += 1
            continue
        symbol = next((s for s in _LONGEST_FIRST if ipa.startswith(s, position)), None)
        if symbol is None:
            return None
        phones.append(IPA_TO_ARPABET[symbol])
        position += len(symbol)
    return " ".join(phones) or None


def espeak_pronunciations(words: set[str]) -> dict[str, str | None]:
    """Each word's phones by espeak-ng's letter-to-sound rules, None where they have a sound
    without an English phone; all None (with a warning) when espeak-ng is not installed."""
    ordered = sorted(words)
    try:
        ipa = ipa_pronunciations(ordered)
    except SpeechSynthesisError as error:
        log.warning("no pronunciations for words outside pocketsphinx's dictionary: %s", error)
        return dict.fromkeys(ordered)
    return {word: arpabet(sounds) for word, sounds in zip(ordered, ipa, strict=True)}
