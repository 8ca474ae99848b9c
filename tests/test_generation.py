"""Streaming generation: frame timing, stop handling, and agreement with the training layout."""

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch

from omni_model import OmniModel, make_config
from omni_model.config import AUDIO_STOP_ID
from omni_model.data import build_prompt, build_streams
from omni_model.generation import (
    AudioFrame,
    SamplingSettings,
    TextToken,
    generate_stream,
    penalize_repeats,
    sample,
)
from omni_model.models import OmniOutput
from omni_model.text.special_tokens import IM_END_ID, TEXT_PAD_ID
from omni_model.text.tokenizer import TokenizedConversation

# The scripted model replays training layouts of any lengths, also speech shorter than text,
# so the rule that speech outlasts the text (true of real samples) is off here.
GREEDY = SamplingSettings(
    text_temperature=0.0, audio_temperature=0.0, max_steps=100, min_frames_per_text_token=None
)


class ScriptedModel:
    """Stands in for OmniModel and scores a fixed reply highest at every step.

    Its audio logits rank the stop id above the scripted code for codebooks 1..7, so the
    generator's own rule (only codebook 0 may end speech) is what keeps frames whole.
    """

    def __init__(
        self, prompt_length: int, reply: list[int], answer: torch.Tensor, layout: str = "sequential"
    ):
        self.config = make_config("tiny", text_layout=layout)
        self.thinker = SimpleNamespace(embed_tokens=SimpleNamespace(weight=torch.zeros(1)))
        self.prompt_length, self.reply, self.answer = prompt_length, reply, answer
        self.fed: list[torch.Tensor] = []

    def new_cache(self, batch: int, max_len: int):
        return SimpleNamespace(length=0)

    def __call__(
        self,
        input_ids,
        audio_features=None,
        image_features=None,
        speaker=None,
        cache=None,
        letters=None,
    ):
        self.fed.append(input_ids[0])
        cache.length += input_ids.shape[-1]
        step = cache.length - self.prompt_length  # the step these logits are for
        text_logits = torch.zeros(1, 1, self.config.vocab_size)
        text_logits[0, 0, self.reply[step] if step < len(self.reply) else 99] = 20.0
        audio_logits = torch.zeros(1, 8, 1, 2112)
        frames = self.answer.shape[1]
        for k in range(8):
            frame = step - k - 1
            if 0 <= frame < frames:
                audio_logits[0, k, 0, self.answer[k, frame]] = 5.0
            if k > 0 or frame >= frames:
                audio_logits[0, k, 0, AUDIO_STOP_ID] = 10.0
        return OmniOutput(text_logits, audio_logits, torch.zeros(()))


def run_scripted(text_length: int, frames: int, settings: SamplingSettings = GREEDY):
    prompt_ids = list(range(30, 40))
    text = list(range(100, 100 + text_length))
    answer = torch.randint(0, 2048, (8, frames), generator=torch.Generator().manual_seed(frames))
    model = ScriptedModel(len(prompt_ids), [*text, IM_END_ID], answer)
    events = list(generate_stream(model, build_prompt(prompt_ids), settings=settings))
    return model, prompt_ids, text, answer, events


def test_frames_arrive_when_all_codebooks_exist_and_generation_stops_on_stop_ids():
    model, _, text, answer, events = run_scripted(text_length=4, frames=6)
    tokens = [e for e in events if isinstance(e, TextToken)]
    frames = [e for e in events if isinstance(e, AudioFrame)]
    assert [t.token_id for t in tokens] == [*text, IM_END_ID]
    assert [t.is_end for t in tokens] == [False] * 4 + [True]
    assert [f.index for f in frames] == list(range(6))
    assert [f.step for f in frames] == [8 + j for j in range(6)]  # codebook 7 completes frame j
    assert torch.equal(torch.stack([f.codes for f in frames], dim=1), answer)
    # Codebook 0 stops at step 7, codebook 7 at step 14: the last step generated.
    assert len(model.fed) == 1 + 14


def test_frames_carry_each_codebooks_distribution_at_the_expectation_temperature():
    *_, answer, events = run_scripted(text_length=4, frames=6)
    frames = [e for e in events if isinstance(e, AudioFrame)]
    distributions = torch.stack([f.distributions for f in frames], dim=1)  # (8, 6, 2048)
    assert distributions.shape == (8, 6, 2048)
    assert torch.allclose(distributions.sum(dim=-1), torch.ones(8, 6))
    assert torch.equal(distributions.argmax(dim=-1), answer)
    # The script scores its code 5 and the other 2,047 codes 0: at temperature 0.5 that is
    # e^10 against 2,047 ones (the stop id, scored higher, is not a code).
    chosen = distributions.gather(-1, answer[..., None])[..., 0]
    assert torch.allclose(chosen, torch.full((8, 6), math.exp(10) / (math.exp(10) + 2047)))
    codes_only = dataclasses.replace(GREEDY, acoustic_expectation_temperature=None)
    *_, events = run_scripted(text_length=4, frames=6, settings=codes_only)
    frames = [e for e in events if isinstance(e, AudioFrame)]
    assert len(frames) == 6 and all(f.distributions is None for f in frames)


def test_generated_streams_match_the_training_layout():
    model, prompt_ids, text, answer, _ = run_scripted(text_length=9, frames=3)
    generated = torch.cat([column for column in model.fed[1:]], dim=1)  # (9, steps - 1)
    conversation = TokenizedConversation(
        [*prompt_ids, *text, IM_END_ID], len(prompt_ids), len(prompt_ids) + len(text) + 1
    )
    streams = build_streams(conversation, answer).streams
    assert torch.equal(
        generated, streams[:, len(prompt_ids) : len(prompt_ids) + generated.shape[1]]
    )


def test_aligned_text_replays_its_training_layout_and_yields_no_pads():
    prompt_ids, text, frames = list(range(30, 40)), list(range(100, 104)), 12
    answer = torch.randint(0, 2048, (8, frames), generator=torch.Generator().manual_seed(1))
    conversation = TokenizedConversation([*prompt_ids, *text, IM_END_ID], 10, 15)
    layout = build_streams(conversation, answer, reply_weights=[1.0, 3.0, 2.0, 2.0, 0.0])
    script = layout.streams[8, 10 : layout.reply_end].tolist()  # the reply's text, with pads
    assert script.count(TEXT_PAD_ID) == frames + 1 - 5
    model = ScriptedModel(len(prompt_ids), script, answer, layout="aligned")
    events = list(generate_stream(model, build_prompt(prompt_ids), settings=GREEDY))
    tokens = [e for e in events if isinstance(e, TextToken)]
    assert [t.token_id for t in tokens] == [*text, IM_END_ID]
    assert [t.step for t in tokens] == [s for s, token in enumerate(script) if token]
    generated = torch.cat([column for column in model.fed[1:]], dim=1)  # (9, steps - 1)
    assert torch.equal(generated, layout.streams[:, 10 : 10 + generated.shape[1]])
    assert sum(isinstance(e, AudioFrame) for e in events) == frames


def test_text_longer_than_speech_keeps_going_until_text_ends():
    model, _, _, _, events = run_scripted(text_length=20, frames=2)
    assert [e.token_id for e in events if isinstance(e, TextToken)][-1] == IM_END_ID
    assert sum(isinstance(e, AudioFrame) for e in events) == 2
    assert len(model.fed) == 1 + 20


@pytest.mark.parametrize(
    ("text_length", "ratio", "spoken"),
    [
        (20, 0.0, 19),  # codebook 0 speaks from step 1 and may stop at the text's end, step 20
        (4, 2.5, 13),  # 5 text tokens (with the end) need ceil(2.5 * 5) = 13 codes
    ],
)
def test_speech_may_not_end_before_the_text_nor_under_its_frames_per_token(
    text_length, ratio, spoken
):
    settings = dataclasses.replace(GREEDY, min_frames_per_text_token=ratio)
    _, _, _, _, events = run_scripted(text_length=text_length, frames=2, settings=settings)
    end_step = next(e.step for e in events if isinstance(e, TextToken) and e.is_end)
    frames = [e for e in events if isinstance(e, AudioFrame)]
    assert end_step == text_length
    assert [f.index for f in frames] == list(range(spoken))


@pytest.mark.parametrize(
    ("text_length", "ratio", "spoken"),
    [
        (2, None, 50),  # no rule: codebook 0 speaks all 50 scripted frames
        (2, 4.0, 12),  # 3 text tokens (with the end) allow 4 * 3 = 12 codes
        (2, 3.5, 11),  # ceil(3.5 * 3)
        (20, 1.0, 21),  # never cut before the text has ended: 21 tokens, 21 codes
    ],
)
def test_speech_stops_after_its_most_frames_per_text_token(text_length, ratio, spoken):
    settings = dataclasses.replace(GREEDY, max_frames_per_text_token=ratio)
    _, _, _, answer, events = run_scripted(text_length=text_length, frames=50, settings=settings)
    frames = [e for e in events if isinstance(e, AudioFrame)]
    assert [f.index for f in frames] == list(range(spoken))
    assert torch.equal(torch.stack([f.codes for f in frames], dim=1), answer[:, :spoken])


def test_real_model_streams_valid_frames_until_max_steps():
    torch.manual_seed(0)
    model = OmniModel(make_config("tiny")).eval()
    settings = SamplingSettings(max_steps=30)
    prompt = build_prompt([1, 40, 41, 42], torch.randint(0, 2048, (8, 3)), with_speaker=True)
    events = list(
        generate_stream(
            model,
            prompt,
            speaker=torch.randn(64),
            settings=settings,
            generator=torch.Generator().manual_seed(0),
        )
    )
    frames = [e for e in events if isinstance(e, AudioFrame)]
    steps = [e.step for e in events]
    assert steps == sorted(steps) and max(steps) < 30
    assert all(f.step == f.index + 8 and f.codes.shape == (8,) for f in frames)
    assert all((f.codes >= 0).all() and (f.codes < 2048).all() for f in frames)


def test_sampling_helpers():
    logits = torch.tensor([0.0, 3.0, 2.9, -1.0])
    assert int(sample(logits, temperature=0.0)) == 1
    generator = torch.Generator().manual_seed(0)
    draws = {int(sample(logits, 1.0, top_p=0.9, generator=generator)) for _ in range(60)}
    assert draws == {1, 2}  # 0 and 3 lie outside the 90% nucleus
    draws = {int(sample(logits, 5.0, top_k=1, generator=generator)) for _ in range(20)}
    assert draws == {1}
    penalized = penalize_repeats(logits[None], [[1, 3]], 2.0)
    torch.testing.assert_close(penalized, torch.tensor([[0.0, 1.5, 2.9, -2.0]]))


def test_batched_sampling_keeps_each_row_to_its_own_nucleus_and_history():
    rows = torch.tensor([[0.0, 4.0, 3.9, -1.0, -2.0], [5.0, -1.0, 0.0, 4.9, 1.0]])
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([sample(rows, 1.0, top_k=2, generator=generator) for _ in range(80)])
    assert draws.shape == (80, 2)
    assert set(draws[:, 0].tolist()) == {1, 2} and set(draws[:, 1].tolist()) == {0, 3}
    assert sample(rows, 0.0).tolist() == [1, 0]
    penalized = penalize_repeats(rows, [[1], []], 2.0)  # row 0 loses its best, row 1 untouched
    assert sample(penalized, 0.0).tolist() == [2, 0]
    torch.testing.assert_close(penalized[1], rows[1])
