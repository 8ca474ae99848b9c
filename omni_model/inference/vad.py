"""Voice activity detection: Silero VAD probabilities and the start/end decisions made from them.

Silero VAD is the model the `silero-vad` package ships (no download). The session's VAD
window is the reference's 1,024 samples at 16 kHz (64 ms), but Silero VAD v5 and later
only accept 512-sample windows at 16 kHz, so each VAD window runs the model on its two
halves in order (its recurrent state carries across them) and takes the larger
probability: a window is speech when either half is.

Decisions use hysteresis, as Silero's own `VADIterator` does: a window counts as speech
at probability >= `threshold`; once speech has started, a silence run begins at a window
below `threshold - 0.15` and goes on until a speech window. Speech starts after
`start_ms` of consecutive speech windows and ends after `end_ms` of silence run, both
rounded up to whole windows (128 ms -> 2 windows, 800 ms -> 13).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import torch

SAMPLE_RATE = 16_000
MODEL_WINDOW = 512  # what Silero VAD v5+ accepts at 16 kHz
NEGATIVE_MARGIN = 0.15  # Silero's VADIterator: silence is below threshold - 0.15


@dataclass(frozen=True)
class VadSettings:
    threshold: float = 0.8  # speech probability of a speech window
    start_ms: float = 128.0  # consecutive speech that starts an utterance
    end_ms: float = 800.0  # silence that ends it
    window: int = 1024  # samples per VAD window at 16 kHz, a multiple of 512

    def __post_init__(self) -> None:
        if self.window <= 0 or self.window % MODEL_WINDOW:
            raise ValueError(f"VAD window must be a multiple of {MODEL_WINDOW}, got {self.window}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"speech threshold must lie in (0, 1], got {self.threshold}")
        if self.start_ms <= 0 or self.end_ms <= 0:
            raise ValueError("start_ms and end_ms must be positive")

    def windows(self, milliseconds: float) -> int:
        """Whole windows covering `milliseconds`."""
        return math.ceil(milliseconds * SAMPLE_RATE / 1000 / self.window - 1e-9)

    @property
    def negative_threshold(self) -> float:
        return self.threshold - NEGATIVE_MARGIN


def load_silero_vad() -> torch.jit.ScriptModule:
    """The packaged Silero VAD (TorchScript). Importing `silero_vad` sets torch's thread
    count to 1 for the whole process; the caller's count is put back."""
    threads = torch.get_num_threads()
    try:
        from silero_vad import load_silero_vad as load
    finally:
        torch.set_num_threads(threads)
    return load()


class SileroVad:
    """Speech probability of each VAD window, in stream order (the model is stateful)."""

    def __init__(self, window: int = 1024, model: torch.jit.ScriptModule | None = None):
        self.window = window
        self.model = model or load_silero_vad()

    def reset(self) -> None:
        self.model.reset_states()

    @torch.inference_mode()
    def probability(self, samples: torch.Tensor) -> float:
        """samples: (window,) float32 at 16 kHz -> the larger probability of its halves.

        The model runs on one thread: its operations are tiny, and on a busy machine waking
        a second thread for each costs ~25x the work (measured: 74 ms a window instead of
        3 ms). Torch's thread count is per thread, so the caller's is put back after.
        """
        if samples.shape != (self.window,):
            raise ValueError(f"expected ({self.window},) samples, got {tuple(samples.shape)}")
        parts = samples.float().split(MODEL_WINDOW)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return max(float(self.model(part, SAMPLE_RATE)) for part in parts)
        finally:
            torch.set_num_threads(threads)


class Decision(Enum):
    START = "start"
    END = "end"


class SpeechDetector:
    """Turns window probabilities into utterance start and end decisions."""

    def __init__(self, settings: VadSettings):
        self.settings = settings
        self.start_windows = settings.windows(settings.start_ms)
        self.end_windows = settings.windows(settings.end_ms)
        self.in_speech = False
        self.speech_run = 0  # consecutive speech windows (before a start)
        self.silence_run = 0  # windows since the silence run began (after a start)

    def update(self, probability: float) -> Decision | None:
        is_speech = probability >= self.settings.threshold
        if not self.in_speech:
            self.speech_run = self.speech_run + 1 if is_speech else 0
            if self.speech_run < self.start_windows:
                return None
            self.in_speech, self.speech_run, self.silence_run = True, 0, 0
            return Decision.START
        if is_speech:
            self.silence_run = 0
        elif self.silence_run or probability < self.settings.negative_threshold:
            self.silence_run += 1
        if self.silence_run < self.end_windows:
            return None
        self.in_speech, self.silence_run = False, 0
        return Decision.END

    def force_end(self) -> None:
        self.in_speech, self.speech_run, self.silence_run = False, 0, 0
