"""Streaming generation (DESIGN.md section 4).

Each step emits one text token and, for every codebook whose delay has elapsed, one
audio code. Codebook k of frame j appears at step k + 1 + j, so frame j is complete at
step 8 + j and is yielded right then: the codec can decode it while the reply goes on.
Codebook 0 decides when speech ends, within a range of frames per text token; codebook k
stops exactly one step after k - 1, so every yielded frame has all 8 codes. Text is padded
after its end token while audio finishes; generation ends when text has ended and every
codebook has stopped. A model trained on the aligned text layout also samples text pads
between its words (the step says nothing new); they are fed back but not yielded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from omni_model.config import AUDIO_PAD_ID, AUDIO_STOP_ID, CODEBOOK_SIZE
from omni_model.generation.sampling import penalize_repeats, sample
from omni_model.models import OmniModel
from omni_model.text.letters import ReplyReading
from omni_model.text.special_tokens import IM_END_ID, SPECIAL_TOKENS, TEXT_PAD_ID


@dataclass
class SamplingSettings:
    text_temperature: float = 0.7
    text_top_p: float = 0.9
    audio_temperature: float = 0.2
    audio_top_k: int = 50
    audio_repetition_penalty: float = 1.1
    repetition_window: int = 3
    max_steps: int = 400
    # Speech is slower than text: an espeak-ng reply spans 2.5 to 5.4 frames per text token
    # (1st and 90th percentile of the generated corpus), so codebook 0 may not stop before the
    # text has ended and this many frames per text token were spoken. None lifts the rule.
    min_frames_per_text_token: float | None = 2.5
    # Nor may it go on past this many (the corpus' slowest reply spans 6.7): an undertrained
    # Talker that never picks the stop id would otherwise babble until max_steps.
    max_frames_per_text_token: float | None = 8.0
    # A Talker with a letter window reads letter j / frames_per_letter at frame j: the pace
    # of its speech (the corpus' replies, less their trailing silence, span 0.74 frames per
    # letter as spoken: the median; 0.58 to 0.93 from the 10th to the 90th percentile).
    frames_per_letter: float = 0.74
    # Each frame also carries every codebook's distribution over its codes at this
    # temperature (None: no distributions), so that a codec able to (the offline one) can
    # decode codebooks 1..7 as their expected entries rather than the sampled ones. A tiny
    # Talker names the acoustic codes poorly, and a wrong sampled entry adds a wrong
    # spectrum: its T2A probes' CER was 0.47 with the sampled codes, 0.15 with these
    # expectations at 0.5 (0.17 at 1.0, 0.20 at 0.25; codebook 0 alone: 0.24).
    acoustic_expectation_temperature: float | None = 0.5


@dataclass
class TextToken:
    token_id: int
    step: int
    is_end: bool


@dataclass
class AudioFrame:
    codes: torch.Tensor  # (8,) long, values 0..2047
    index: int  # frame number within the reply
    step: int
    # (8, 2048): each code's distribution when it was sampled (settings'
    # `acoustic_expectation_temperature`), or None
    distributions: torch.Tensor | None = None


@torch.no_grad()
def generate_stream(
    model: OmniModel,
    prompt: torch.Tensor,
    audio_features: torch.Tensor | None = None,
    image_features: torch.Tensor | None = None,
    speaker: torch.Tensor | None = None,
    settings: SamplingSettings | None = None,
    generator: torch.Generator | None = None,
    spelling: Callable[[int], str] | None = None,
) -> Iterator[TextToken | AudioFrame]:
    """prompt: (9, P) streams from `build_prompt`; yields events as they become available.

    spelling (token id -> its text) is what a Talker with a letter window reads."""
    settings = settings or SamplingSettings()
    reading = None
    if model.config.letter_window:
        if spelling is None:
            raise ValueError("this model's Talker reads letters: pass `spelling`")
        reading = ReplyReading(model.config.letter_window, settings.frames_per_letter)
    num_codebooks = model.config.num_codebooks
    device = model.thinker.embed_tokens.weight.device
    cache = model.new_cache(1, prompt.shape[1] + settings.max_steps)
    speaker = None if speaker is None else speaker.to(device).view(1, -1)
    output = model(prompt[None].to(device), audio_features, image_features, speaker, cache)

    # Of the special tokens a reply may only end with <|im_end|> (and, when aligned in time
    # with its speech, hold pads): a sampled placeholder would ask for audio/image features
    # that do not exist, a header would break the format.
    aligned = model.config.text_layout == "aligned"
    allowed = {IM_END_ID} | ({TEXT_PAD_ID} if aligned else set())
    text_mask = torch.zeros(output.text_logits.shape[-1], device=device)
    text_mask[[i for i in range(len(SPECIAL_TOKENS)) if i not in allowed]] = float("-inf")
    # Codebooks sample from 0..2047; only codebook 0 may also pick the stop id (speech ends).
    audio_mask = torch.full(
        (num_codebooks, output.audio_logits.shape[-1]), float("-inf"), device=device
    )
    audio_mask[:, :CODEBOOK_SIZE] = 0.0  # (8, audio vocab)
    audio_mask[0, AUDIO_STOP_ID] = 0.0
    codes: list[list[int]] = [[] for _ in range(num_codebooks)]  # emitted codes per codebook
    # each emitted code's distribution (8, 2048) until its frame is complete
    distributions: list[list[torch.Tensor | None]] = [[] for _ in range(num_codebooks)]
    expectation = settings.acoustic_expectation_temperature
    stop_step: list[int | None] = [None] * num_codebooks
    text_done, text_tokens = False, 0
    for step in range(settings.max_steps):
        text_logits = output.text_logits[0, -1]  # (vocab,)
        audio_logits = output.audio_logits[0, :, -1]  # (8, audio vocab)
        column = torch.full((num_codebooks + 1,), AUDIO_PAD_ID, dtype=torch.long)
        column[-1] = TEXT_PAD_ID
        if not text_done:
            token = _next_text(text_logits + text_mask, aligned, settings, generator)
            text_done = token == IM_END_ID
            column[-1] = token
            if token != TEXT_PAD_ID:
                text_tokens += 1
                if reading is not None:
                    reading.write(spelling(token), text_done)
                yield TextToken(token, step, text_done)
        audio_logits = audio_logits + audio_mask
        if too_early_to_stop(settings, text_done, text_tokens, len(codes[0])):
            audio_logits[0, AUDIO_STOP_ID] = float("-inf")
        sampled = _sample_codes(audio_logits, codes, settings, generator).tolist()
        if expectation is not None:
            logits = audio_logits[:, :CODEBOOK_SIZE] / expectation
            step_distributions = logits.softmax(-1).cpu()  # (8, 2048), one copy a step
        if time_to_stop(settings, text_done, text_tokens, len(codes[0])):
            sampled[0] = AUDIO_STOP_ID
        for k in range(num_codebooks):
            if step < k + 1 or stop_step[k] is not None:
                continue
            # Codebook k stops the step after k - 1 did, so every frame has all 8 codes.
            forced_stop = k > 0 and stop_step[k - 1] == step - 1
            code = AUDIO_STOP_ID if forced_stop else sampled[k]
            column[k] = code
            if code == AUDIO_STOP_ID:
                stop_step[k] = step
            else:
                codes[k].append(code)
                if expectation is not None:
                    distributions[k].append(step_distributions[k])
        frame = step - num_codebooks  # the frame codebook 7 just completed
        if frame >= 0 and len(codes[-1]) == frame + 1 and stop_step[-1] is None:
            frame_codes = torch.tensor([codes[k][frame] for k in range(num_codebooks)])
            frame_distributions = None
            if expectation is not None:
                frame_distributions = torch.stack([d[frame] for d in distributions])
                for d in distributions:
                    d[frame] = None  # (8, 2048) floats a code: keep only incomplete frames'
            yield AudioFrame(frame_codes, frame, step, frame_distributions)
        if text_done and stop_step[-1] is not None:
            return
        letters = None if reading is None else reading.window(step).view(1, -1, 1).to(device)
        column = column.view(1, -1, 1).to(device)
        output = model(column, speaker=speaker, cache=cache, letters=letters)


def _next_text(
    logits: torch.Tensor,
    aligned: bool,
    settings: SamplingSettings,
    generator: torch.Generator | None,
) -> int:
    """logits: (vocab,), masked -> the next text token.

    Aligned with speech, whether the next word starts now is decided greedily (pad while the
    model finds a pad at least as likely as any word): sampling it would start each word at
    the first step a word is at all likely, and the reply would run ahead of its speech.
    """
    if aligned:
        if torch.softmax(logits, -1)[TEXT_PAD_ID] >= 0.5:
            return TEXT_PAD_ID
        logits = logits.clone()
        logits[TEXT_PAD_ID] = float("-inf")
    return int(sample(logits, settings.text_temperature, settings.text_top_p, generator=generator))


def too_early_to_stop(
    settings: SamplingSettings, text_done: bool, text_tokens: int, spoken_frames: int
) -> bool:
    """Whether codebook 0 must keep speaking (see `min_frames_per_text_token`)."""
    ratio = settings.min_frames_per_text_token
    if ratio is None:
        return False
    return not text_done or spoken_frames < ratio * text_tokens


def time_to_stop(
    settings: SamplingSettings, text_done: bool, text_tokens: int, spoken_frames: int
) -> bool:
    """Whether codebook 0 must stop now (see `max_frames_per_text_token`)."""
    ratio = settings.max_frames_per_text_token
    return ratio is not None and text_done and spoken_frames >= ratio * text_tokens


def _sample_codes(
    logits: torch.Tensor,
    history: list[list[int]],
    settings: SamplingSettings,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """logits: (8, audio vocab), already masked -> one candidate code per codebook (8,)."""
    recent = [codes[-settings.repetition_window :] for codes in history]
    logits = penalize_repeats(logits, recent, settings.audio_repetition_penalty)
    return sample(
        logits,
        settings.audio_temperature,
        top_k=settings.audio_top_k,
        generator=generator,
    )
