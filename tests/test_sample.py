"""Delay-pattern invariants of the 9-stream sample builder, and the loss."""

import itertools
import math

import pytest
import torch

from omni_model.config import AUDIO_PAD_ID, AUDIO_STOP_ID, SPEAKER_MARKER_ID
from omni_model.data import IGNORE_INDEX, build_prompt, build_sample, build_streams, collate
from omni_model.data.sample import reply_columns
from omni_model.text.special_tokens import TEXT_PAD_ID
from omni_model.text.tokenizer import TokenizedConversation
from omni_model.training import omni_loss

CONVERSATION = TokenizedConversation(ids=list(range(20, 50)), reply_start=22, reply_end=30)


def codes(frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 2048, (8, frames), generator=torch.Generator().manual_seed(seed))


def test_codebook_k_starts_at_reply_start_plus_k_plus_one_and_stops_once():
    answer = codes(12)
    layout = build_streams(CONVERSATION, answer)
    streams, reply_start = layout.streams, layout.reply_start
    assert reply_start == 22
    assert streams.shape == (9, max(30, 22 + 12 + 9))
    for k in range(8):
        row = streams[k]
        first = reply_start + k + 1
        assert (row[:first] == AUDIO_PAD_ID).all()
        assert torch.equal(row[first : first + 12], answer[k])
        assert row[first + 12] == AUDIO_STOP_ID
        assert (row == AUDIO_STOP_ID).sum() == 1
        assert (row[first + 13 :] == AUDIO_PAD_ID).all()
    assert torch.equal(streams[8, :30], torch.tensor(CONVERSATION.ids))
    assert (streams[8, 30:] == TEXT_PAD_ID).all()


def test_labels_cover_only_the_reply_and_inputs_are_shifted():
    answer = codes(12)
    sample = build_sample(CONVERSATION, answer)
    layout = build_streams(CONVERSATION, answer)
    streams, reply_start = layout.streams, layout.reply_start
    assert torch.equal(sample.input_ids, streams[:, :-1])
    text_positions = (sample.text_labels != IGNORE_INDEX).nonzero().flatten() + 1
    assert text_positions.tolist() == list(range(22, 30))
    assert torch.equal(sample.text_labels[text_positions - 1], streams[8, 22:30])
    for k in range(8):
        positions = (sample.audio_labels[k] != IGNORE_INDEX).nonzero().flatten() + 1
        assert positions.tolist() == list(range(reply_start + k + 1, reply_start + k + 14))
        assert sample.audio_labels[k, positions[-1] - 1] == AUDIO_STOP_ID


def test_reference_codes_end_right_before_the_reply_after_a_speaker_marker():
    reference = codes(5, seed=1)
    layout = build_streams(CONVERSATION, codes(4), reference, with_speaker=True)
    streams, reply_start = layout.streams, layout.reply_start
    assert reply_start == 22
    assert torch.equal(streams[:8, 17:22], reference)
    assert (streams[:8, 16] == SPEAKER_MARKER_ID).all()
    assert (streams[:8, :16] == AUDIO_PAD_ID).all()
    sample = build_sample(CONVERSATION, codes(4), reference, with_speaker=True)
    assert (sample.audio_labels[:, :21] == IGNORE_INDEX).all()  # condition only, no loss


def test_long_reference_shifts_the_conversation_right():
    reference = codes(30, seed=2)
    layout = build_streams(CONVERSATION, codes(3), reference, with_speaker=True)
    streams, reply_start = layout.streams, layout.reply_start
    shift = 31 - 22
    assert reply_start == 22 + shift
    assert (streams[8, :shift] == TEXT_PAD_ID).all()
    assert torch.equal(streams[8, shift : shift + 30], torch.tensor(CONVERSATION.ids))
    assert torch.equal(streams[:8, 1:reply_start], reference)
    assert (streams[:8, 0] == SPEAKER_MARKER_ID).all()


def test_truncation_and_prompt_too_long():
    sample = build_sample(CONVERSATION, codes(40), max_len=50)
    assert sample.input_ids.shape == (9, 50)
    assert sample.audio_labels.shape == (8, 50) and sample.text_labels.shape == (50,)
    with pytest.raises(ValueError, match="no room for a reply"):
        build_sample(CONVERSATION, codes(4), max_len=20)


def test_scheduled_sampling_touches_only_answer_code_inputs():
    answer = codes(60)
    clean = build_sample(CONVERSATION, answer)
    noisy = build_sample(
        CONVERSATION, answer, scheduled_sampling=0.3, generator=torch.Generator().manual_seed(0)
    )
    changed = clean.input_ids != noisy.input_ids
    assert not changed[8].any()
    assert torch.equal(clean.audio_labels, noisy.audio_labels)
    assert 0.15 < changed[:8].sum().item() / (8 * 60) < 0.45
    answer_inputs = clean.audio_labels[:, :-1] != IGNORE_INDEX  # label at t-1 == input at t
    assert not (changed[:8, 1:] & ~answer_inputs).any()
    assert (noisy.input_ids[:8][changed[:8]] < 2048).all()


def test_bad_codes_and_spans_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        build_streams(CONVERSATION, torch.zeros(7, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        build_streams(CONVERSATION, torch.full((8, 4), 2048))
    with pytest.raises(ValueError, match="reply span"):
        build_streams(TokenizedConversation([1, 2, 3], 2, 5))


def test_prompt_streams_and_collate_padding():
    prompt = build_prompt([5, 6, 7], codes(2), with_speaker=True)
    assert prompt.shape == (9, 3)
    assert (prompt[:8, 0] == SPEAKER_MARKER_ID).all()
    short = build_sample(CONVERSATION, codes(2))
    long = build_sample(CONVERSATION, codes(9))
    batch = collate([short, long])
    width = long.input_ids.shape[1]
    assert batch["input_ids"].shape == (2, 9, width)
    assert (batch["text_labels"][0, short.input_ids.shape[1] :] == IGNORE_INDEX).all()
    assert (batch["input_ids"][0, :8, short.input_ids.shape[1] :] == AUDIO_PAD_ID).all()


def test_loss_weights_stop_targets_and_ignores_masked_positions():
    vocab, audio_vocab = 11, 2112
    text_logits = torch.zeros(1, 3, vocab)
    audio_logits = torch.zeros(1, 8, 3, audio_vocab)
    text_labels = torch.tensor([[IGNORE_INDEX, 4, 5]])
    audio_labels = torch.full((1, 8, 3), IGNORE_INDEX)
    audio_labels[0, 0, 0], audio_labels[0, 0, 1] = 7, AUDIO_STOP_ID
    audio_logits[0, 0, 1, AUDIO_STOP_ID] = 5.0  # the stop is predicted well, the code is not
    loss = omni_loss(text_logits, audio_logits, text_labels, audio_labels, torch.tensor(0.25))
    uniform = math.log(audio_vocab)
    stop_ce = -torch.log_softmax(audio_logits[0, 0, 1], -1)[AUDIO_STOP_ID].item()
    expected_cb0 = (uniform + 10 * stop_ce) / 11
    assert loss.text.item() == pytest.approx(math.log(vocab), rel=1e-5)
    assert loss.per_codebook[0].item() == pytest.approx(expected_cb0, rel=1e-5)
    assert loss.audio.item() == pytest.approx(expected_cb0, rel=1e-5)  # other codebooks empty
    assert loss.total.item() == pytest.approx(math.log(vocab) + expected_cb0 + 0.25, rel=1e-5)


@pytest.mark.parametrize(
    ("weights", "frames"),
    [([3.0, 5.0, 2.0, 6.0, 0.0], 40), ([1.0] * 9 + [0.0], 4), ([0.0], 7), ([4.0, 0.0], 10)],
)
def test_aligned_reply_columns_rise_in_proportion_and_end_where_speech_ends(weights, frames):
    columns = reply_columns(weights, frames)
    assert len(columns) == len(weights)
    assert all(later > earlier for earlier, later in itertools.pairwise(columns))
    assert columns[-1] == max(frames, len(weights) - 1)
    total = sum(weights[:-1])
    if len(weights) > 1:
        assert columns[0] == 0
    if frames >= 4 * len(weights):  # room enough: each token starts at its share of the speech
        for index in range(1, len(weights) - 1):
            share = frames * sum(weights[:index]) / total
            assert share - 1 < columns[index] <= share


def test_aligned_sample_spreads_the_reply_over_its_speech_with_pad_labels():
    frames, weights = 30, [2.0, 4.0, 1.0, 3.0, 5.0, 1.0, 2.0, 0.0]  # 8 reply tokens
    answer = codes(frames)
    sequential = build_streams(CONVERSATION, answer)
    aligned = build_streams(CONVERSATION, answer, reply_weights=weights)
    assert aligned.reply_start == 22 and aligned.reply_end == 22 + frames + 1
    assert torch.equal(aligned.streams[:8], sequential.streams[:8, : aligned.streams.shape[1]])
    text = aligned.streams[8]
    reply_columns_ = [22 + c for c in reply_columns(weights, frames)]
    assert text[reply_columns_].tolist() == CONVERSATION.ids[22:30]
    spoken = text[22 : aligned.reply_end]
    assert (spoken != TEXT_PAD_ID).sum() == 8  # the rest of the reply span is pads
    # Tokens after the reply (none in training conversations) follow it directly, in order.
    longer = TokenizedConversation(list(range(20, 60)), reply_start=22, reply_end=30)
    layout = build_streams(longer, answer, reply_weights=weights)
    assert layout.streams[8, layout.reply_end : layout.reply_end + 10].tolist() == longer.ids[30:]
    sample = build_sample(CONVERSATION, answer, reply_weights=weights)
    labelled = (sample.text_labels != IGNORE_INDEX).nonzero().flatten() + 1
    assert labelled.tolist() == list(range(22, aligned.reply_end))
    assert torch.equal(
        sample.audio_labels,
        build_sample(CONVERSATION, answer).audio_labels[:, : sample.audio_labels.shape[1]],
    )


def test_aligned_layout_needs_one_weight_per_reply_token():
    with pytest.raises(ValueError, match="7 reply weights for 8 reply tokens"):
        build_streams(CONVERSATION, codes(10), reply_weights=[1.0] * 7)
