"""What every reader of a user corpus shares: field checks, record construction, quarantine.

A reader only finds items (an utterance, a JSONL line, a tar sample, a parquet row) and hands
their fields here. Whatever is wrong with a field raises `InvalidInput`, whose message is the
quarantine reason, and `guarded` turns it into a `Rejected`; so a clip, an image or a text is
judged the same way whichever layout it arrived in.

Records built from given speech are T2A: the user asks for a sentence to be read aloud and the
assistant says it, with the given clip as the answer audio (one of `SPEAK_PROMPTS`, chosen by
the key's hash, so that the choice is stable). A caption becomes an I2T answer to one of
`CAPTION_PROMPTS`, chosen the same way.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from PIL import Image, UnidentifiedImageError

from omni_model.audio_io import AudioError, load_audio
from omni_model.text.special_tokens import SPECIAL_TOKENS
from omni_model.text.tokenizer import IMAGE_MARKER
from pipelines.records import MAX_TEXT_CHARS, ROLES, RawRecord, Rejected, checked

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
ROLE_ALIASES = {"human": "user", "gpt": "assistant"}  # ShareGPT's `from` values
SPEAK_PROMPTS = (
    "Read this aloud: {text}",
    "Please say the following: {text}",
    "Say this out loud: {text}",
    "Speak this sentence: {text}",
)
CAPTION_PROMPTS = (
    "Describe this image.",
    "What does this picture show?",
    "Give a short caption for this image.",
)


@dataclass(frozen=True)
class Limits:
    """What counts as absurd: items past these are quarantined, never truncated."""

    max_audio_seconds: float = 60.0
    max_text_chars: int = MAX_TEXT_CHARS
    max_image_side: int = 4_096


DEFAULT_LIMITS = Limits()


class InvalidInput(ValueError):
    """One item is unusable; the message is the reason recorded in quarantine."""


class SourceNotFound(ValueError):
    """A configured corpus location does not exist or holds nothing to read."""


class Identified(Protocol):
    source: str
    sample_id: str


Item = TypeVar("Item", bound=Identified)


def sample_id(source: str, key: str) -> str:
    return f"{source}/{key}"


def guarded(source: str, key: str, build: Callable[..., Item], *args: object) -> Item | Rejected:
    """`build(*args)`, or the rejection of `key` if one of its fields is invalid."""
    try:
        return build(*args)
    except InvalidInput as error:
        return Rejected(source, key, str(error))


def unique(items: Iterable[Item | Rejected]) -> Iterator[Item | Rejected]:
    """Reject every repeat of a sample id: ids key the split, the codes and the catalog."""
    seen: set[str] = set()
    for item in items:
        if isinstance(item, Rejected):
            yield item
        elif item.sample_id in seen:
            key = item.sample_id.removeprefix(f"{item.source}/")
            yield Rejected(item.source, key, "duplicate sample id")
        else:
            seen.add(item.sample_id)
            yield item


def finish(items: Iterable[RawRecord | Rejected]) -> Iterator[RawRecord | Rejected]:
    """The last step of every reader: unique ids, then the shared record validation."""
    return checked(unique(items))


def source_files(paths: Path | Sequence[Path], suffix: str) -> list[tuple[Path, str]]:
    """(file, name) for a file itself or every `*suffix` file under a folder, sorted.

    The name, which keys the file's items, is the path relative to the folder given (the
    file's own name for a file given), so equal names in two sub-folders stay apart.
    """
    found: list[tuple[Path, str]] = []
    for path in [paths] if isinstance(paths, Path) else paths:
        if path.is_dir():
            found.extend(
                (file, file.relative_to(path).as_posix())
                for file in path.rglob(f"*{suffix}")
                if not file.name.startswith(".")
            )
        elif path.is_file():
            found.append((path, path.name))
        else:
            raise SourceNotFound(f"{path}: no such file or folder")
    if not found:
        raise SourceNotFound(f"no *{suffix} files in {paths}")
    return sorted(found)


def existing_folder(root: Path) -> Path:
    if not root.is_dir():
        raise SourceNotFound(f"{root}: no such folder")
    return root


def read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise InvalidInput(f"{what}: cannot read {path.name} ({error.strerror})") from None


def parse_json(data: object, what: str) -> object:
    if not isinstance(data, (bytes, str)):
        raise InvalidInput(f"{what} is {type(data).__name__}, not JSON text")
    try:
        return json.loads(data)
    except UnicodeDecodeError as error:
        raise InvalidInput(f"{what}: not valid UTF-8 (byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise InvalidInput(f"{what}: invalid JSON ({error.msg} at column {error.colno})") from None


def json_object(data: bytes | str, what: str) -> dict:
    fields = parse_json(data, what)
    if not isinstance(fields, dict):
        raise InvalidInput(f"{what}: a JSON {type(fields).__name__}, not an object")
    return fields


def text(value: object, what: str, limits: Limits, image_marker: bool = False) -> str:
    """A stripped, non-empty, bounded text without the chat format's reserved tokens.

    `image_marker` allows the literal `<image>`, which only a user turn with an image may hold.
    """
    if value is None:
        raise InvalidInput(f"missing {what}")
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise InvalidInput(f"{what} is not valid UTF-8 (byte {error.start})") from None
    if not isinstance(value, str):
        raise InvalidInput(f"{what} is {type(value).__name__}, not text")
    value = value.strip()
    if not value:
        raise InvalidInput(f"empty {what}")
    if len(value) > limits.max_text_chars:
        raise InvalidInput(f"{what} has {len(value)} characters (limit {limits.max_text_chars})")
    reserved = SPECIAL_TOKENS if image_marker else (*SPECIAL_TOKENS, IMAGE_MARKER)
    for token in reserved:
        if token in value:
            raise InvalidInput(f"{what} contains the reserved token {token}")
    return value


def audio(data: bytes, what: str, limits: Limits) -> bytes:
    """The clip itself, once it decodes to finite, non-silent samples within the limit."""
    try:
        load_audio(data, name=what, max_seconds=limits.max_audio_seconds)
    except AudioError as error:
        raise InvalidInput(f"{what}: {error.reason}") from None
    return data


def image(data: bytes, what: str, limits: Limits) -> bytes:
    """The image itself, once Pillow identifies, verifies and fully decodes it."""
    if not data:
        raise InvalidInput(f"{what}: empty file (0 bytes)")
    width, height = _decoded_size(data, what)
    if max(width, height) > limits.max_image_side:
        raise InvalidInput(
            f"{what}: {width}x{height} pixels, over the limit of {limits.max_image_side} a side"
        )
    return data


def _decoded_size(data: bytes, what: str) -> tuple[int, int]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as opened:
                opened.verify()  # checksums and structure, without decoding pixels
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as opened:
                opened.load()  # catches truncated pixel data, which verify does not read
                return opened.size
    except UnidentifiedImageError:
        formats = "/".join(IMAGE_FORMATS)
        raise InvalidInput(f"{what}: not a readable {formats} image (or zero-sized)") from None
    except Exception as error:  # a decoder failing on malformed bytes is the input's fault
        raise InvalidInput(f"{what}: image does not decode ({error})") from None


def stable_choice(options: Sequence[str], key: str) -> str:
    """The same option for the same key in every run (Python's own hash is salted)."""
    digest = hashlib.sha1(key.encode()).digest()
    return options[int.from_bytes(digest[:4], "big") % len(options)]


def turns(value: object, limits: Limits, image_marker: bool = False) -> list[dict[str, str]]:
    """A list of {"role", "content"} (or ShareGPT {"from", "value"}) turns, checked."""
    if not isinstance(value, list) or not value:
        raise InvalidInput("conversation is not a non-empty list of turns")
    checked_turns = []
    for index, turn in enumerate(value):
        if not isinstance(turn, dict):
            raise InvalidInput(f"turn {index} is {type(turn).__name__}, not an object")
        role = turn.get("role", turn.get("from"))
        role = ROLE_ALIASES.get(role, role)
        if role not in ROLES:
            raise InvalidInput(f"turn {index}: unknown role {role!r}")
        content = text(
            turn.get("content", turn.get("value")),
            f"turn {index} content",
            limits,
            image_marker=image_marker and role == "user",
        )
        checked_turns.append({"role": role, "content": content})
    return checked_turns


def chat_turns(fields: dict, limits: Limits) -> list[dict[str, str]]:
    """The turns of a chat object: `conversations`, `messages` or instruction/input/output."""
    for name in ("conversations", "messages"):
        if name in fields:
            return turns(fields[name], limits)
    if "instruction" in fields and "output" in fields:
        instruction = text(fields["instruction"], "instruction", limits)
        extra = fields.get("input")
        if extra not in (None, ""):
            instruction = f"{instruction}\n\n{text(extra, 'input', limits)}"
        return [
            {"role": "user", "content": instruction},
            {"role": "assistant", "content": text(fields["output"], "output", limits)},
        ]
    raise InvalidInput("no conversations, messages or instruction/output fields")


def normalise_transcript(said: str) -> str:
    """One space between words; an all-capitals transcript (LibriSpeech's style) in sentence case.

    The Thinker learns to write what the Talker says, so shouted-case transcripts would teach
    it to answer in capitals.
    """
    said = " ".join(said.split())
    if said.upper() == said and said.lower() != said:
        said = said.lower()
        said = said[0].upper() + said[1:]
        said = re.sub(r"\bi\b", "I", said)
    return said


def speech_record(
    source: str, key: str, transcript: object, clip: bytes, voice: str, limits: Limits
) -> RawRecord:
    """A T2A record: the assistant reads the transcript aloud, with `clip` as its speech."""
    said = normalise_transcript(text(transcript, "transcript", limits))
    return RawRecord(
        sample_id=sample_id(source, key),
        source=source,
        task="t2a",
        conversations=[
            {"role": "user", "content": stable_choice(SPEAK_PROMPTS, key).format(text=said)},
            {"role": "assistant", "content": said},
        ],
        answer_audio=[audio(clip, "audio", limits)],
        voice=voice,
    )


def image_record(source: str, key: str, picture: bytes, fields: dict, limits: Limits) -> RawRecord:
    """An I2T record from {"question", "answer"} or {"caption"} fields about `picture`.

    A question may already hold the `<image>` marker (LLaVA style); it is moved to the front.
    """
    if "question" in fields or "answer" in fields:
        question = fields.get("question")
        if isinstance(question, str):
            question = question.replace(IMAGE_MARKER, "")
        question = text(question, "question", limits)
        answer = text(fields.get("answer"), "answer", limits)
    elif "caption" in fields:
        question = stable_choice(CAPTION_PROMPTS, key)
        answer = text(fields["caption"], "caption", limits)
    else:
        raise InvalidInput("no question/answer or caption fields")
    return RawRecord(
        sample_id=sample_id(source, key),
        source=source,
        task="i2t",
        conversations=[
            {"role": "user", "content": f"{IMAGE_MARKER}\n{question}"},
            {"role": "assistant", "content": answer},
        ],
        image=image(picture, "image", limits),
    )


def chat_record(source: str, key: str, fields: dict, limits: Limits) -> RawRecord:
    """A text-only record (task `text`): the chat of an object `chat_turns` understands."""
    return RawRecord(
        sample_id=sample_id(source, key),
        source=source,
        task="text",
        conversations=chat_turns(fields, limits),
    )
