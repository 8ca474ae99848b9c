"""The 9-stream training sample of DESIGN.md section 3, built by pure functions.

A sample is an integer tensor (9, T): rows 0..7 are the Mimi codebooks, row 8 the text.
Codebook k of the answer starts at reply_start + k + 1 (one step of delay per codebook)
and ends with one stop id. Optional reference codes (a voice prompt) sit right before
reply_start, after one speaker-marker column. Inputs are the streams without their last
column; labels are the streams without their first column, masked to the reply.

Two layouts of a spoken reply's text (`OmniConfig.text_layout`): `sequential` (DESIGN.md) writes the
reply's tokens one per column from reply_start, so text ends long before its speech and the
Talker must find on its own which word each frame says. `aligned` spreads them over the
speech in proportion to their characters, with text pads between, so each token sits one
column before the frame its sound starts in and the reply's end token where speech ends
(Moshi's time-aligned "inner monologue"). The Thinker then also learns when to say the
next word: its reply targets include the pads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from omni_model.config import (
    AUDIO_PAD_ID,
    AUDIO_STOP_ID,
    CODEBOOK_SIZE,
    NUM_CODEBOOKS,
    SPEAKER_MARKER_ID,
)
from omni_model.text.letters import NONE, reply_letters
from omni_model.text.special_tokens import TEXT_PAD_ID
from omni_model.text.tokenizer import TokenizedConversation

IGNORE_INDEX = -100
TEXT_ROW = NUM_CODEBOOKS


@dataclass
class Sample:
    input_ids: torch.Tensor  # (9, T) long
    text_labels: torch.Tensor  # (T,) long, IGNORE_INDEX outside the reply
    audio_labels: torch.Tensor  # (8, T) long, IGNORE_INDEX outside the answer codes + stops
    reply_start: int  # column of the first reply token in the full (unshifted) streams
    letters: torch.Tensor | None = None  # (W, T) long: the Talker's letter window per input


@dataclass
class Streams:
    streams: torch.Tensor  # (9, L) long
    reply_start: int  # column of the reply's first token (shifted when a prompt was padded)
    reply_end: int  # column after the reply's last token


def reply_columns(weights: list[float], frames: int) -> list[int]:
    """Offsets from reply_start of the reply's tokens in the aligned layout.

    weights: one per reply token (its characters), the last being the end token, which goes
    where speech ends (offset `frames`). The others start at their share of the weight
    before them, at least one column apart.
    """
    total = sum(weights[:-1]) or 1.0
    columns: list[int] = []
    before = 0.0
    for weight in weights[:-1]:
        share = int(frames * before / total)
        columns.append(max(share, columns[-1] + 1) if columns else 0)
        before += weight
    if weights:
        columns.append(max(frames, columns[-1] + 1) if columns else frames)
    return columns


def build_streams(
    conversation: TokenizedConversation,
    answer_codes: torch.Tensor | None = None,
    reference_codes: torch.Tensor | None = None,
    with_speaker: bool = False,
    reply_weights: list[float] | None = None,
) -> Streams:
    """Lay out the full (9, L) streams.

    answer_codes: (8, F) codes 0..2047; reference_codes: (8, R). When the prompt is too
    short to hold the reference, pad columns are prepended so the voice prompt fits.
    reply_weights (one per reply token) choose the aligned layout for a spoken reply.
    """
    _check_codes(answer_codes, "answer_codes")
    _check_codes(reference_codes, "reference_codes")
    if not 0 < conversation.reply_start <= conversation.reply_end <= len(conversation.ids):
        raise ValueError(
            f"reply span [{conversation.reply_start}, {conversation.reply_end}) "
            f"does not fit {len(conversation.ids)} tokens"
        )
    prompt_columns = (0 if reference_codes is None else reference_codes.shape[1]) + int(
        with_speaker
    )
    shift = max(0, prompt_columns - conversation.reply_start)
    reply_start = conversation.reply_start + shift
    frames = 0 if answer_codes is None else answer_codes.shape[1]
    audio_end = reply_start + NUM_CODEBOOKS + frames + 1 if answer_codes is not None else 0
    ids = torch.tensor(conversation.ids)
    columns = torch.arange(len(ids)) + shift  # (N,) column of every text token
    reply = slice(conversation.reply_start, conversation.reply_end)
    if reply_weights is not None and answer_codes is not None and reply.stop > reply.start:
        if len(reply_weights) != reply.stop - reply.start:
            raise ValueError(
                f"{len(reply_weights)} reply weights for {reply.stop - reply.start} reply tokens"
            )
        offsets = torch.tensor(reply_columns(reply_weights, frames), dtype=torch.long)
        columns[reply] = reply_start + offsets
        columns[reply.stop :] += int(columns[reply.stop - 1]) + 1 - (reply_start + len(offsets))
    reply_end = int(columns[reply.stop - 1]) + 1 if reply.stop > reply.start else reply_start
    length = max(int(columns[-1]) + 1 if len(ids) else 0, audio_end)

    streams = torch.full((NUM_CODEBOOKS + 1, length), AUDIO_PAD_ID, dtype=torch.long)
    streams[TEXT_ROW] = TEXT_PAD_ID
    streams[TEXT_ROW, columns] = ids
    if answer_codes is not None:
        for k in range(NUM_CODEBOOKS):
            first = reply_start + k + 1
            streams[k, first : first + frames] = answer_codes[k]
            streams[k, first + frames] = AUDIO_STOP_ID
    if prompt_columns:
        ref_start = reply_start - prompt_columns
        if with_speaker:
            streams[:NUM_CODEBOOKS, ref_start] = SPEAKER_MARKER_ID
            ref_start += 1
        if reference_codes is not None:
            streams[:NUM_CODEBOOKS, ref_start:reply_start] = reference_codes
    return Streams(streams, reply_start, reply_end)


def build_sample(
    conversation: TokenizedConversation,
    answer_codes: torch.Tensor | None = None,
    reference_codes: torch.Tensor | None = None,
    with_speaker: bool = False,
    max_len: int | None = None,
    scheduled_sampling: float = 0.0,
    generator: torch.Generator | None = None,
    reply_weights: list[float] | None = None,
    reply_pieces: list[str] | None = None,
    letter_window: int = 0,
) -> Sample:
    """Streams -> shifted inputs and masked labels, truncated to `max_len` input positions.

    scheduled_sampling: probability that an answer-code input is replaced by a random
    code, so the Talker learns to recover from its own sampling errors. reply_weights:
    see `build_streams`; in the aligned layout the pads between reply tokens are labels.
    letter_window > 0 with reply_pieces (each reply token's text) adds the letters each
    column of a spoken reply reads (omni_model.text.letters).
    """
    layout = build_streams(conversation, answer_codes, reference_codes, with_speaker, reply_weights)
    streams, reply_start, reply_end = layout.streams, layout.reply_start, layout.reply_end
    letters = None
    if letter_window:
        letters = torch.full((letter_window, streams.shape[1]), NONE, dtype=torch.long)
        if answer_codes is not None and reply_pieces is not None:
            columns = NUM_CODEBOOKS + 1 + answer_codes.shape[1]  # until every codebook stopped
            letters[:, reply_start : reply_start + columns] = reply_letters(
                reply_pieces, answer_codes.shape[1], columns, letter_window
            )
    if max_len is not None:
        if reply_start >= max_len:
            raise ValueError(
                f"prompt of {reply_start} tokens leaves no room for a reply in {max_len}"
            )
        streams = streams[:, : max_len + 1]
        letters = None if letters is None else letters[:, : max_len + 1]

    length = streams.shape[1]
    columns = torch.arange(length)
    text_target = (columns >= reply_start) & (columns < reply_end)
    audio_target = (streams[:NUM_CODEBOOKS] != AUDIO_PAD_ID) & (columns > reply_start)
    text_labels = torch.where(text_target, streams[TEXT_ROW], IGNORE_INDEX)[1:]
    audio_labels = torch.where(audio_target, streams[:NUM_CODEBOOKS], IGNORE_INDEX)[:, 1:]

    input_ids = streams[:, :-1].clone()
    if scheduled_sampling > 0:
        audio_inputs = input_ids[:NUM_CODEBOOKS]
        is_code = audio_target[:, :-1] & (audio_inputs < CODEBOOK_SIZE)
        flip = torch.rand(audio_inputs.shape, generator=generator) < scheduled_sampling
        noise = torch.randint(0, CODEBOOK_SIZE, audio_inputs.shape, generator=generator)
        input_ids[:NUM_CODEBOOKS] = torch.where(is_code & flip, noise, audio_inputs)
    inputs_letters = None if letters is None else letters[:, :-1]
    return Sample(input_ids, text_labels, audio_labels, reply_start, inputs_letters)


def build_prompt(
    prompt_ids: list[int],
    reference_codes: torch.Tensor | None = None,
    with_speaker: bool = False,
) -> torch.Tensor:
    """Streams (9, P) of a generation prompt: the reply starts right after them."""
    conversation = TokenizedConversation(prompt_ids, len(prompt_ids), len(prompt_ids))
    return build_streams(conversation, None, reference_codes, with_speaker).streams


def collate(samples: list[Sample]) -> dict[str, torch.Tensor]:
    """Right-pad samples to the longest in the batch."""
    length = max(sample.input_ids.shape[1] for sample in samples)
    batch = len(samples)
    windows = {0 if sample.letters is None else sample.letters.shape[0] for sample in samples}
    if len(windows) > 1:
        raise ValueError(f"samples of one batch have letter windows of {sorted(windows)}")
    window = windows.pop()
    letters = torch.full((batch, window, length), NONE, dtype=torch.long)
    input_ids = torch.full((batch, NUM_CODEBOOKS + 1, length), AUDIO_PAD_ID, dtype=torch.long)
    input_ids[:, TEXT_ROW] = TEXT_PAD_ID
    text_labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
    audio_labels = torch.full((batch, NUM_CODEBOOKS, length), IGNORE_INDEX, dtype=torch.long)
    for row, sample in enumerate(samples):
        width = sample.input_ids.shape[1]
        input_ids[row, :, :width] = sample.input_ids
        text_labels[row, :width] = sample.text_labels
        audio_labels[row, :, :width] = sample.audio_labels
        if sample.letters is not None:
            letters[row, :, :width] = sample.letters
    tensors = {"input_ids": input_ids, "text_labels": text_labels, "audio_labels": audio_labels}
    return tensors | {"letters": letters} if window else tensors


def _check_codes(codes: torch.Tensor | None, name: str) -> None:
    if codes is None:
        return
    if codes.dim() != 2 or codes.shape[0] != NUM_CODEBOOKS:
        raise ValueError(
            f"{name} must have shape ({NUM_CODEBOOKS}, frames), got {tuple(codes.shape)}"
        )
    if codes.numel() and (codes.min() < 0 or codes.max() >= CODEBOOK_SIZE):
        raise ValueError(f"{name} hold values outside 0..{CODEBOOK_SIZE - 1}")
