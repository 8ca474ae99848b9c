"""The error every side-encoder loader raises for a checkpoint it cannot use."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A model name or checkpoint that cannot be loaded; the message names it and the reason."""

    def __init__(self, label: str, reason: str):
        super().__init__(f"{label}: {reason}")
        self.label = label
        self.reason = reason
