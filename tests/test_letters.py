"""The Talker's letter window: what each reply column reads, in training and in generation."""

import pytest
import torch

from omni_model.config import make_config
from omni_model.data import build_sample, collate
from omni_model.generation import SamplingSettings, generate_stream
from omni_model.models import OmniModel
from omni_model.text.letters import (
    ALPHABET,
    EDGE,
    NONE,
    OTHER,
    TRAILING_SILENCE_FRAMES,
    UNKNOWN,
    ReplyReading,
    number_words,
    reply_letters,
    spell,
)
from omni_model.text.tokenizer import TokenizedConversation

PIECES = ["The", " sky", " is", " blue", ".", ""]  # 16 letters, the end token last
LETTERS = spell("".join(PIECES))


def test_spelling_folds_case_and_keeps_one_id_per_character():
    ids = spell("Hi, x'y")
    assert len(ids) == 7
    assert ids[0] == spell("h")[0] and ids[2] == OTHER and ids[3] == spell(" ")[0]
    assert len(set(spell(ALPHABET))) == len(ALPHABET)
    assert min(spell(ALPHABET)) > OTHER


@pytest.mark.parametrize(
    ("number", "words"),
    [(0, "zero"), (8, "eight"), (14, "fourteen"), (40, "forty"), (42, "forty two"),
     (105, "one hundred five"), (2024, "two thousand twenty four"),
     (1234567, "one two three four five six seven")],
)  # fmt: skip
def test_numbers_are_read_as_the_words_they_are_spoken_as(number, words):
    assert number_words(number) == words
    assert spell(f"A {number}.") == spell(f"a {words}.")


@pytest.mark.parametrize("frames", [11, 16, 37])  # 16 letters over 6 to 32 frames
def test_each_column_reads_around_its_share_of_the_letters_and_never_ahead_of_the_text(frames):
    width, columns = 5, frames + 9
    windows = reply_letters(PIECES, frames, columns, width)
    assert windows.shape == (width, columns)
    written = torch.tensor([len(p) for p in PIECES]).cumsum(0)
    for column in range(columns):
        centre = column * len(LETTERS) // (frames - TRAILING_SILENCE_FRAMES)
        known = int(written[min(column, len(PIECES) - 1)])
        complete = column >= len(PIECES) - 1
        for row, index in enumerate(range(centre - width // 2, centre + width // 2 + 1)):
            if 0 <= index < known:
                expected = LETTERS[index]
            elif index >= known and not complete:
                expected = UNKNOWN
            else:
                expected = EDGE
            assert windows[row, column] == expected, (column, row)
    # Once the letters are spoken (then silence, then the stops) the centre is past the end.
    assert (windows[width // 2, frames - TRAILING_SILENCE_FRAMES :] == EDGE).all()


def test_generation_reads_the_same_windows_as_training_at_the_same_pace():
    frames, width = 2 * len(LETTERS) + TRAILING_SILENCE_FRAMES, 7  # 2.0 frames per letter
    trained = reply_letters(PIECES, frames, frames + 9, width)
    reading = ReplyReading(width, frames_per_letter=2.0)
    for column in range(frames + 9):
        if column < len(PIECES):  # one reply token per step, as generation writes them
            reading.write(PIECES[column], column == len(PIECES) - 1)
        assert torch.equal(reading.window(column), trained[:, column]), column


def test_samples_carry_letters_only_on_the_spoken_reply_and_collate_pads_them():
    conversation = TokenizedConversation(list(range(20, 40)), reply_start=14, reply_end=20)
    answer = torch.randint(0, 2048, (8, 10), generator=torch.Generator().manual_seed(0))
    sample = build_sample(conversation, answer, reply_pieces=PIECES, letter_window=3)
    assert sample.letters.shape == (3, sample.input_ids.shape[1])
    reads = (sample.letters != NONE).any(dim=0).nonzero().flatten()
    assert reads.tolist() == list(range(14, 14 + 10 + 8))  # the last stop is no input
    assert torch.equal(sample.letters[:, 14:], reply_letters(PIECES, 10, 19, 3)[:, :-1])
    assert build_sample(conversation, answer).letters is None
    text_only = build_sample(conversation, None, reply_pieces=PIECES, letter_window=3)
    assert (text_only.letters == NONE).all()
    cut = build_sample(conversation, answer, reply_pieces=PIECES, letter_window=3, max_len=20)
    assert torch.equal(cut.letters, sample.letters[:, :20])

    batch = collate([cut, sample])
    assert batch["letters"].shape == (2, 3, sample.input_ids.shape[1])
    assert (batch["letters"][0, :, 20:] == NONE).all()
    with pytest.raises(ValueError, match="letter windows"):
        collate([cut, build_sample(conversation, answer)])


def test_letters_move_the_talker_only_from_the_first_column_that_reads_them():
    torch.manual_seed(0)
    model = OmniModel(make_config("tiny", vocab_size=64, letter_window=3)).eval()
    ids = torch.randint(20, 64, (1, 9, 12))  # no special tokens
    ids[:, :8] = torch.randint(0, 2048, (1, 8, 12))
    nothing = torch.full((1, 3, 12), NONE)
    some = nothing.clone()
    some[:, :, 5:] = torch.tensor(spell("abc")).view(1, 3, 1)
    without = model(ids).audio_logits
    assert torch.equal(model(ids, letters=nothing).audio_logits, without)
    moved = model(ids, letters=some).audio_logits
    assert torch.equal(moved[:, :, :5], without[:, :, :5])
    assert not torch.allclose(moved[:, :, 5:], without[:, :, 5:])


def test_a_letter_window_needs_the_sequential_layout_and_spelling_to_generate():
    with pytest.raises(ValueError, match="sequential"):
        make_config("tiny", text_layout="aligned", letter_window=5)
    model = OmniModel(make_config("tiny", vocab_size=64, letter_window=3)).eval()
    prompt = torch.full((9, 4), 2049)
    prompt[8] = torch.arange(20, 24)
    settings = SamplingSettings(max_steps=12)
    with pytest.raises(ValueError, match="spelling"):
        next(generate_stream(model, prompt, settings=settings))
    events = list(generate_stream(model, prompt, settings=settings, spelling=lambda t: "ab"))
    assert events and max(event.step for event in events) < 12
