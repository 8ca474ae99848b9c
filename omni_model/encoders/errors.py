"""The error every side-encoder loader raises for a checkpoint it cannot use."""

from __future__ import annotations

from omni_model.errors import LabelledError


class CheckpointError(LabelledError):
    """A model name or checkpoint that cannot be loaded; the message names it and the reason."""
