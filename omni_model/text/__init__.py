"""Text side: special tokens, the BPE tokenizer and the chat format."""

from omni_model.text.special_tokens import SPECIAL_TOKENS, TEXT_PAD_ID
from omni_model.text.tokenizer import ChatTokenizer, TokenizedConversation, train_tokenizer

__all__ = [
    "SPECIAL_TOKENS",
    "TEXT_PAD_ID",
    "ChatTokenizer",
    "TokenizedConversation",
    "train_tokenizer",
]
