"""Metrics of one reply, each a pure function of plain values.

- Text against the reference answer: `exact_match`, `token_accuracy`.
- Speech against text: `char_errors` / `word_errors` (jiwer) of an ASR transcript.
- Spectra: `mel_cepstral_distortion`, DTW-aligned, against a TTS rendering of the same text.
- Voice: `voice_similarity`, speaker-vector cosine against voices' vectors.

Texts are compared after `normalize_text`: case, punctuation and digits differ between a
reply ("7 days.") and what an ASR writes ("seven days"), not the words themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import jiwer
import numpy as np
import scipy.fft
import torch
from scipy.spatial.distance import cdist
from whisper.audio import mel_filters

from omni_model.audio_io import resample
from omni_model.encoders.speaker import SpeakerEncoder, cosine_similarity
from omni_model.text.normalize import normalize_text

# Mel cepstra for MCD: 25 ms windows every 10 ms at 16 kHz, 80 mel bands (Whisper's filters).
MCD_RATE = 16_000
MCD_FFT = 400
MCD_HOP = 160
MCD_MELS = 80
MCD_CEPSTRA = 24  # c1..c24; c0 (loudness) is left out, as usual for MCD
MEL_FLOOR = 1e-10  # mel power floor before the log
TRIM_DB = 40.0  # leading/trailing frames this far below the loudest frame are silence
MCD_SCALE = 10.0 * math.sqrt(2.0) / math.log(10.0)  # cepstral distance -> dB


@dataclass(frozen=True)
class ErrorCounts:
    """Edit errors against a reference of `length` units (characters or words).

    Summed before dividing, so a corpus rate weighs each item by its length.
    """

    errors: int
    length: int

    @property
    def rate(self) -> float:
        """errors / length; an empty reference scores 0 when matched, else 1."""
        if self.length == 0:
            return float(self.errors > 0)
        return self.errors / self.length

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(self.errors + other.errors, self.length + other.length)


def _counts(output: jiwer.WordOutput | jiwer.CharacterOutput) -> ErrorCounts:
    errors = output.substitutions + output.deletions + output.insertions
    return ErrorCounts(errors, output.hits + output.substitutions + output.deletions)


def char_errors(reference: str, hypothesis: str) -> ErrorCounts:
    """Character edit errors between the normalised texts (spaces count as characters)."""
    return _counts(jiwer.process_characters(normalize_text(reference), normalize_text(hypothesis)))


def word_errors(reference: str, hypothesis: str) -> ErrorCounts:
    """Word edit errors between the normalised texts."""
    return _counts(jiwer.process_words(normalize_text(reference), normalize_text(hypothesis)))


def exact_match(prediction: str, answers: Sequence[str]) -> bool:
    """Whether the normalised prediction equals any accepted answer."""
    return normalize_text(prediction) in {normalize_text(answer) for answer in answers}


def token_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Matched words / aligned positions (1 - jiwer's match error rate), best over answers.

    1 only for identical word sequences, 0 when no word lines up; missing and extra words
    both count against it.
    """
    scores = []
    for answer in answers:
        output = jiwer.process_words(normalize_text(answer), normalize_text(prediction))
        aligned = output.hits + output.substitutions + output.deletions + output.insertions
        scores.append(output.hits / aligned if aligned else 1.0)
    return max(scores)


def mel_cepstra(audio: torch.Tensor, sample_rate: int) -> np.ndarray:
    """(samples,) -> (frames, 24) mel cepstra c1..c24 of log mel amplitude, silence trimmed.

    Leading and trailing frames quieter than the loudest by over 40 dB are cut, so that a
    TTS clip's digital silence is not compared with a codec's low noise.
    """
    wav = torch.from_numpy(resample(audio.detach().float().cpu().numpy(), sample_rate, MCD_RATE))
    window = torch.hann_window(MCD_FFT)
    spectrum = torch.stft(wav, MCD_FFT, MCD_HOP, window=window, return_complex=True)
    power = mel_filters("cpu", MCD_MELS) @ spectrum.abs().pow(2)  # (80, frames)
    log_amplitude = 0.5 * power.clamp_min(MEL_FLOOR).log().numpy()  # natural log of amplitude
    energy_db = 10.0 * np.log10(power.sum(dim=0).clamp_min(MEL_FLOOR).numpy())  # (frames,)
    loud = np.flatnonzero(energy_db >= energy_db.max() - TRIM_DB)
    # Real-cepstrum scale, c_d = (1/N) sum_n x_n cos(pi d (n + 1/2) / N): the one MCD's
    # 10 / ln 10 * sqrt(2) factor assumes (scipy's unnormalised DCT-II is 2N times that).
    cepstra = scipy.fft.dct(log_amplitude, type=2, axis=0)[1 : MCD_CEPSTRA + 1] / (2 * MCD_MELS)
    return cepstra[:, loud[0] : loud[-1] + 1].T


def dtw(cost: np.ndarray) -> tuple[float, int]:
    """Minimal total cost of a monotone path through cost (N, M), and that path's length.

    Steps go right, down or diagonally. Along a row the recurrence
    c[j] = d[j] + min(a[j], c[j - 1]), with a[j] = min(above, above-left), unrolls to
    c[j] = D[j] + min over k <= j of (a[k] - D[k - 1]) with D the running sum of d, so each
    row is one cumulative minimum instead of a Python loop over columns.
    """
    rows, columns = cost.shape
    total = np.empty_like(cost, dtype=np.float64)
    total[0] = np.cumsum(cost[0])
    for i in range(1, rows):
        above = total[i - 1]
        entry = np.minimum(above, np.concatenate(([np.inf], above[:-1])))  # (M,)
        running = np.cumsum(cost[i])
        before = np.concatenate(([0.0], running[:-1]))
        total[i] = running + np.minimum.accumulate(entry - before)
    i, j, length = rows - 1, columns - 1, 1
    while i or j:  # walk back along the cheapest predecessors to count the path's steps
        moves = [(i - 1, j - 1), (i - 1, j), (i, j - 1)]
        i, j = min(
            (move for move in moves if move[0] >= 0 and move[1] >= 0), key=lambda m: total[m]
        )
        length += 1
    return float(total[-1, -1]), length


def mel_cepstral_distortion(
    audio: torch.Tensor, reference: torch.Tensor, sample_rate: int = 24_000
) -> float:
    """MCD in dB between two clips (samples,), averaged along their DTW alignment.

    Per frame pair: (10 / ln 10) * sqrt(2 * sum_d (c_d - c'_d)^2) over c1..c24. 0 for
    identical audio; a few dB between two renderings of one text in one voice.
    """
    a, b = mel_cepstra(audio, sample_rate), mel_cepstra(reference, sample_rate)
    distances = MCD_SCALE * cdist(a, b)  # (N, M) Euclidean, in dB
    total, length = dtw(distances)
    return total / length


def voice_similarity(
    encoder: SpeakerEncoder,
    audio: torch.Tensor,
    speakers: torch.Tensor,
    sample_rate: int = 24_000,
    name: str = "<audio>",
) -> torch.Tensor:
    """Cosine between the speaker vector of `audio` (samples,) and voice vectors (..., D).

    Returns (...). Raises `SpeakerError` (naming `name`) for a clip with too little speech.
    """
    return cosine_similarity(encoder.embed(audio, sample_rate, name=name), speakers)
