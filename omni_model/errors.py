"""The shape of every "this input cannot be used" error: it names the input and the reason."""

from __future__ import annotations


class LabelledError(ValueError):
    """`label` names the input (a file, a row, a voice...), `reason` says what is wrong; the
    message is `label: reason`, so a user sees which input to fix and why."""

    def __init__(self, label: str, reason: str):
        super().__init__(f"{label}: {reason}")
        self.label = label
        self.reason = reason
