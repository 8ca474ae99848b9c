"""Codec speed on CPU: encode unbatched vs batched, batch decode, streaming decode per frame.

Both codecs run on the same espeak-ng speech clips. Mimi uses random weights (the same
computation as the released checkpoint, which this machine cannot download); the offline
codec is fitted here, quickly, on a little espeak-ng speech. Real-time factor = audio
seconds processed per wall second. Judged: batched encode (batch of 8) >= 1.3x unbatched
throughput, and Mimi streaming decode <= 40 ms per 80 ms frame. The 1-minute load average
is recorded because other processes on the machine inflate every time here.

    python benchmarks/codec.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from common import best_time

from omni_model.quantization import SAMPLE_RATE, SAMPLES_PER_FRAME, Codec
from omni_model.quantization.mimi import load_mimi, save_random_mimi
from omni_model.quantization.offline import OfflineCodec
from omni_model.tts import VOICES, synthesize

SENTENCES = (
    "The small red boat drifted slowly past the old harbour wall at sunrise.",
    "Please count the blue circles and tell me how many of them are larger.",
    "A quiet train carried seven sleepy travellers through the snowy mountains.",
    "She opened the window, listened to the rain, and wrote a long letter home.",
    "Fresh bread and warm soup were waiting on the kitchen table for everyone.",
    "The museum closes at six, so we should leave the park before half past five.",
    "Three green triangles sat beside a yellow square in the middle of the page.",
    "After the concert the musicians packed their violins and walked to the station.",
)
FIT_VOICES = VOICES[:4]
BATCH = 8
TARGET_BATCHED_RATIO = 1.3
TARGET_STREAM_MS = 40.0


def pad_batch(clips: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad clips into (B, longest) with their lengths (B,)."""
    lengths = torch.tensor([len(clip) for clip in clips])
    batch = torch.zeros(len(clips), int(lengths.max()))
    for row, clip in enumerate(clips):
        batch[row, : len(clip)] = clip
    return batch, lengths


def measure(codec: Codec, clips: list[torch.Tensor], repeats: int) -> dict[str, float]:
    """Encode one by one vs in one batch, batch decode, and streaming decode of one clip."""
    audio_s = sum(len(clip) for clip in clips) / SAMPLE_RATE
    batch, lengths = pad_batch(clips)
    codes, frames = codec.encode(batch, lengths)
    streamed_frames = int(frames[0])

    def stream_one_clip() -> None:
        decoder = codec.streaming_decoder()
        for frame in range(streamed_frames):
            decoder.decode_frame(codes[0, :, frame])

    unbatched = best_time(lambda: [codec.encode(clip[None]) for clip in clips], repeats)
    batched = best_time(lambda: codec.encode(batch, lengths), repeats)
    decoded = best_time(lambda: codec.decode(codes, frames), repeats)
    per_frame = best_time(stream_one_clip, repeats) / streamed_frames
    return {
        "encode_unbatched_rtf": audio_s / unbatched,
        "encode_batched_rtf": audio_s / batched,
        "batched_over_unbatched": unbatched / batched,
        "decode_batched_rtf": audio_s / decoded,
        "stream_ms_per_frame": 1e3 * per_frame,
        "stream_rtf": SAMPLES_PER_FRAME / SAMPLE_RATE / per_frame,
    }


def report(name: str, result: dict[str, float]) -> None:
    print(
        f"{name:>7}: encode {result['encode_unbatched_rtf']:5.1f}x real time unbatched, "
        f"{result['encode_batched_rtf']:5.1f}x batched; "
        f"batch decode {result['decode_batched_rtf']:5.1f}x; streaming decode "
        f"{result['stream_ms_per_frame']:6.1f} ms per 80 ms frame "
        f"({result['stream_rtf']:.1f}x real time)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s clips, fewer repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs, best kept")
    args = parser.parse_args()
    seconds = 2.0 if args.quick else 5.0
    repeats = args.repeats or (1 if args.quick else 3)

    figures: dict[str, float] = {
        "threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
        "batch": BATCH,
        "repeats": repeats,
    }
    clips = [synthesize(text)[: int(seconds * SAMPLE_RATE)] for text in SENTENCES[:BATCH]]
    corpus = [synthesize(text, voice) for voice in FIT_VOICES for text in SENTENCES]
    figures["audio_s"] = sum(len(clip) for clip in clips) / SAMPLE_RATE
    figures["offline_fit_corpus_s"] = sum(len(clip) for clip in corpus) / SAMPLE_RATE
    print(
        f"{BATCH} clips, {figures['audio_s']:.1f} s of speech; {figures['threads']} threads; "
        f"best of {repeats}; load average {figures['load_average_1min']:.1f}"
    )

    with tempfile.TemporaryDirectory() as folder:
        mimi = load_mimi(save_random_mimi(Path(folder) / "mimi.safetensors"))
    results = {"mimi": measure(mimi, clips, repeats)}
    started = time.perf_counter()
    offline = OfflineCodec.fit(corpus, iterations=2 if args.quick else 4, progress=False)
    figures["offline_fit_s"] = time.perf_counter() - started
    print(
        f"offline codec fitted on {figures['offline_fit_corpus_s']:.0f} s of speech "
        f"in {figures['offline_fit_s']:.1f} s"
    )
    results["offline"] = measure(offline, clips, repeats)

    for name, result in results.items():
        report(name, result)
        figures.update({f"{name}_{key}": value for key, value in result.items()})
    for name, result in results.items():
        print(
            f"judged: {name} batched/unbatched encode = {result['batched_over_unbatched']:.2f}x "
            f"(target >= {TARGET_BATCHED_RATIO}x)"
        )
    print(
        f"judged: mimi streaming decode = {results['mimi']['stream_ms_per_frame']:.1f} ms/frame "
        f"(target <= {TARGET_STREAM_MS:.0f} ms); real-time factor "
        f"{results['mimi']['stream_rtf']:.1f}x"
    )
    figures["load_average_1min_end"] = os.getloadavg()[0]
    print(json.dumps({key: round(value, 4) for key, value in figures.items()}))


if __name__ == "__main__":
    main()
