"""Training samples: the 9-stream layout and batching."""

from omni_model.data.sample import (
    IGNORE_INDEX,
    Sample,
    Streams,
    TokenizedConversation,
    build_prompt,
    build_sample,
    build_streams,
    collate,
)

__all__ = [
    "IGNORE_INDEX",
    "Sample",
    "Streams",
    "TokenizedConversation",
    "build_prompt",
    "build_sample",
    "build_streams",
    "collate",
]
