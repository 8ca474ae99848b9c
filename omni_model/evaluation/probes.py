"""Probe items: one question with its accepted answers, asked of a checkpoint in one voice.

The fixed probe sets are built by the pipeline (`pipelines.sources.probes`); held-out shard
rows become items through `item_from_row`. Either way an item is plain data, so a set can
be saved, hashed and shown in a report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from omni_model.errors import LabelledError
from omni_model.text.tokenizer import IMAGE_MARKER

PROBE_TASKS = ("t2a", "a2a", "i2t")
SPOKEN_TASKS = ("t2a", "a2a")  # tasks trained with answer speech (and a voice prompt)


class ProbeError(LabelledError):
    """An item that cannot be asked; the message names the item and the reason."""


@dataclass(frozen=True)
class ProbeItem:
    """One single-turn question.

    `question` is the user's text (for A2A the transcript of `question_audio`, which is what
    the model hears); `answers` are the accepted replies, the first the canonical one.
    `voice` is the espeak-ng voice a spoken reply (T2A, A2A) is asked for, None for I2T,
    which trains without speech; `voice_seen` says whether training speech used that voice.
    `question_audio` and `image` are encoded files (wav/flac, png/jpeg). `held_out` marks a
    validation row asked beside the fixed probes: its metrics are also reported apart.
    """

    item_id: str
    task: str
    question: str
    answers: tuple[str, ...]
    voice: str | None = None
    voice_seen: bool = False
    question_audio: bytes | None = None
    image: bytes | None = None
    system: str | None = None
    held_out: bool = False

    def __post_init__(self) -> None:
        reason = _invalid_reason(self)
        if reason:
            raise ProbeError(f"probe {self.item_id!r}", reason)


def _invalid_reason(item: ProbeItem) -> str | None:
    if item.task not in PROBE_TASKS:
        return f"task {item.task!r} is not one of {PROBE_TASKS}"
    if not item.answers or not all(answer.strip() for answer in item.answers):
        return "no accepted answer (or an empty one)"
    if IMAGE_MARKER in item.question:
        return f"the question holds {IMAGE_MARKER}: give the picture as `image` instead"
    if (item.task == "a2a") != (item.question_audio is not None):
        return "an A2A item, and only an A2A item, has question audio"
    if (item.task == "i2t") != (item.image is not None):
        return "an I2T item, and only an I2T item, has an image"
    if item.task != "a2a" and not item.question.strip():
        return "empty question"
    if (item.task in SPOKEN_TASKS) != (item.voice is not None):
        return f"spoken tasks {SPOKEN_TASKS}, and only they, name the voice to reply in"
    return None


def item_from_row(row: dict, voice_seen: bool = True) -> ProbeItem | None:
    """A shard row (DESIGN.md section 6 plus `sample_id`, `task`, `voice`) as an item.

    Only single-turn conversations (an optional system prompt, one question, one reply) of
    the probe tasks become items; others give None, since their earlier replies would have
    to be the model's own. Malformed rows raise ProbeError naming the sample.
    """
    label = f"row {row.get('sample_id')!r}"
    if row.get("task") not in PROBE_TASKS:
        return None
    try:
        turns = json.loads(row["conversations"])
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise ProbeError(label, f"conversations is not JSON ({error})") from error
    system = turns[0]["content"] if turns and turns[0].get("role") == "system" else None
    roles = [turn.get("role") for turn in turns[1 if system else 0 :]]
    if roles != ["user", "assistant"]:
        return None
    question, answer = (turn["content"] for turn in turns[-2:])
    audios = row.get("question_audios") or []
    image = row.get("image_bytes")
    if isinstance(image, list):
        image = image[0] if image else None
    return ProbeItem(
        item_id=str(row.get("sample_id")),
        task=row["task"],
        question=" ".join(question.replace(IMAGE_MARKER, " ").split()),
        answers=(answer,),
        voice=row.get("voice") if row["task"] in SPOKEN_TASKS else None,
        voice_seen=voice_seen and row["task"] in SPOKEN_TASKS,
        question_audio=audios[0] if audios and row["task"] == "a2a" else None,
        image=image if row["task"] == "i2t" else None,
        system=system,
        held_out=True,
    )
