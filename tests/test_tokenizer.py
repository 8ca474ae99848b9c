"""The BPE tokenizer and chat format: fixed special ids, reply spans, placeholders."""

import pytest

from omni_model.text import SPECIAL_TOKENS, ChatTokenizer, train_tokenizer
from omni_model.text.special_tokens import (
    AUDIO_PLACEHOLDER_ID,
    IM_END_ID,
    IM_START_ID,
    IMAGE_PLACEHOLDER_ID,
)

CORPUS = [f"The {c} ball has {n} spots. How many spots?" for c in ("red", "blue") for n in range(9)]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CORPUS, vocab_size=400)


def test_special_tokens_have_fixed_ids(tokenizer):
    for index, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.tokenizer.token_to_id(token) == index
    assert tokenizer.vocab_size <= 400


def test_text_round_trips(tokenizer):
    text = "The blue ball has 7 spots. How many spots?"
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_reply_span_is_the_last_assistant_turn(tokenizer):
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "How many spots?"},
        {"role": "assistant", "content": "Seven."},
        {"role": "user", "content": "<image>What colour is the ball?"},
        {"role": "assistant", "content": "The ball is red."},
    ]
    conversation = tokenizer.encode_chat(chat, audio_frames=[0, 5])
    ids = conversation.ids
    reply = ids[conversation.reply_start : conversation.reply_end]
    assert reply[-1] == IM_END_ID and len(ids) == conversation.reply_end
    assert tokenizer.decode(reply[:-1]) == "The ball is red."
    assert ids.count(IMAGE_PLACEHOLDER_ID) == 64
    assert ids.count(AUDIO_PLACEHOLDER_ID) == 5
    assert ids.count(IM_START_ID) == 5


def test_generation_prompt_and_errors(tokenizer, tmp_path):
    prompt = tokenizer.encode_chat([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    assert prompt.reply_start == prompt.reply_end == len(prompt.ids)
    assert tokenizer.decode(prompt.ids).endswith("assistant\n")
    with pytest.raises(ValueError, match="must end with an assistant turn"):
        tokenizer.encode_chat([{"role": "user", "content": "Hi"}])
    with pytest.raises(ValueError, match="message 0"):
        tokenizer.encode_chat([{"role": "robot", "content": "Hi"}])
    path = tmp_path / "tokenizer.json"
    tokenizer.save(path)
    loaded = ChatTokenizer.load(path)
    assert loaded.tokenizer_id == tokenizer.tokenizer_id
    assert loaded.encode("red ball") == tokenizer.encode("red ball")
