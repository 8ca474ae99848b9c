"""The project's BPE tokenizer and its chat format.

Chat format, one turn: <|im_start|>{role}\\n{content}<|im_end|>\\n. A literal `<image>` in
a user turn becomes <|image_start|> + 64 x <|image_pad|> + <|image_end|>; a spoken user
turn gets <|audio_start|> + one <|audio_pad|> per audio feature frame + <|audio_end|>.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from omni_model.text.special_tokens import (
    AUDIO_END_ID,
    AUDIO_PLACEHOLDER_ID,
    AUDIO_START_ID,
    IM_END_ID,
    IM_START_ID,
    IMAGE_END_ID,
    IMAGE_PLACEHOLDER_ID,
    IMAGE_START_ID,
    SPECIAL_TOKENS,
)

IMAGE_MARKER = "<image>"
ROLES = ("system", "user", "assistant")


@dataclass
class TokenizedConversation:
    """Token ids of a chat; [reply_start, reply_end) is the last assistant reply.

    The reply span covers the reply's tokens and its end-of-turn token: the text loss.
    """

    ids: list[int]
    reply_start: int
    reply_end: int


def train_tokenizer(texts: Iterable[str], vocab_size: int = 6400) -> ChatTokenizer:
    """Byte-level BPE with the special tokens at ids 0..8."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return ChatTokenizer(tokenizer)


class ChatTokenizer:
    def __init__(self, tokenizer: Tokenizer):
        for expected_id, token in enumerate(SPECIAL_TOKENS):
            if tokenizer.token_to_id(token) != expected_id:
                raise ValueError(
                    f"tokenizer maps {token} to {tokenizer.token_to_id(token)}, not {expected_id}"
                )
        self.tokenizer = tokenizer

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def tokenizer_id(self) -> str:
        """Content hash: checkpoints and shards record it so mismatches are caught."""
        return hashlib.sha256(self.tokenizer.to_str().encode()).hexdigest()[:16]

    @classmethod
    def load(cls, path: str | Path) -> ChatTokenizer:
        return cls(Tokenizer.from_file(str(path)))

    def save(self, path: str | Path) -> None:
        self.tokenizer.save(str(path))

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def piece(self, token: int) -> str:
        """The text of one token ("" for special tokens)."""
        return self.decode([token])

    def reply_pieces(self, conversation: TokenizedConversation) -> list[str]:
        """The text of each reply token."""
        reply = conversation.ids[conversation.reply_start : conversation.reply_end]
        return [self.piece(token) for token in reply]

    def reply_weights(self, conversation: TokenizedConversation) -> list[float]:
        """Characters of each reply token (0 for special tokens): how long it is spoken."""
        return [float(len(piece)) for piece in self.reply_pieces(conversation)]

    def encode_chat(
        self,
        messages: Sequence[dict],
        audio_frames: Sequence[int] = (),
        image_tokens: int = 64,
        add_generation_prompt: bool = False,
    ) -> TokenizedConversation:
        """Tokenize a conversation; the reply span is the last assistant turn.

        audio_frames: feature-frame count of each spoken user turn, in order. With
        add_generation_prompt the ids end with the assistant header and the (empty)
        reply span starts there, ready for generation.
        """
        ids: list[int] = []
        reply_start = reply_end = -1
        spoken_turns = iter(audio_frames)
        for index, message in enumerate(messages):
            role, content = message.get("role"), message.get("content")
            if role not in ROLES or not isinstance(content, str):
                raise ValueError(
                    f"message {index} needs a role in {ROLES} and text content: {message!r}"
                )
            ids += [IM_START_ID, *self.encode(f"{role}\n")]
            if role == "assistant":
                reply_start = len(ids)
            ids += self._encode_content(content, image_tokens)
            if role == "user":
                frames = next(spoken_turns, 0)
                if frames:
                    ids += [AUDIO_START_ID, *[AUDIO_PLACEHOLDER_ID] * frames, AUDIO_END_ID]
            ids.append(IM_END_ID)
            if role == "assistant":
                reply_end = len(ids)
            if index < len(messages) - 1 or add_generation_prompt:
                ids += self.encode("\n")
        if add_generation_prompt:
            ids += [IM_START_ID, *self.encode("assistant\n")]
            reply_start = reply_end = len(ids)
        elif reply_start < 0 or messages[-1].get("role") != "assistant":
            raise ValueError("a training conversation must end with an assistant turn")
        return TokenizedConversation(ids, reply_start, reply_end)

    def _encode_content(self, content: str, image_tokens: int) -> list[int]:
        ids: list[int] = []
        for index, piece in enumerate(content.split(IMAGE_MARKER)):
            if index:
                ids += [IMAGE_START_ID, *[IMAGE_PLACEHOLDER_ID] * image_tokens, IMAGE_END_ID]
            if piece:
                ids += self.encode(piece)
        return ids
