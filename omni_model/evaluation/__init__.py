"""Evaluation: does a trained model listen, see and speak correctly?

- `metrics`: exact match, token accuracy, CER/WER (jiwer), mel-cepstral distortion with DTW,
  speaker similarity; pure functions.
- `asr`: Whisper (local weights only) and pocketsphinx constrained by the evaluation texts.
- `probes`: `ProbeItem`, one question with its accepted answers, and shard rows as items.
- `evaluate`: ask a checkpoint every item and score the replies (`evaluate_checkpoint`).
"""

from omni_model.evaluation.asr import (
    AsrUnavailableError,
    PocketsphinxTranscriber,
    Transcriber,
    WhisperTranscriber,
    build_transcriber,
)
from omni_model.evaluation.evaluate import (
    Evaluation,
    ItemResult,
    Reply,
    Scorer,
    ask,
    cer_by_length,
    espeak_voices,
    evaluate,
    evaluate_checkpoint,
    similarity_by_voice,
    summarize,
)
from omni_model.evaluation.metrics import ErrorCounts
from omni_model.evaluation.probes import PROBE_TASKS, ProbeError, ProbeItem, item_from_row
from omni_model.text.normalize import normalize_text

__all__ = [
    "PROBE_TASKS",
    "AsrUnavailableError",
    "ErrorCounts",
    "Evaluation",
    "ItemResult",
    "PocketsphinxTranscriber",
    "ProbeError",
    "ProbeItem",
    "Reply",
    "Scorer",
    "Transcriber",
    "WhisperTranscriber",
    "ask",
    "build_transcriber",
    "cer_by_length",
    "espeak_voices",
    "evaluate",
    "evaluate_checkpoint",
    "item_from_row",
    "normalize_text",
    "similarity_by_voice",
    "summarize",
]
