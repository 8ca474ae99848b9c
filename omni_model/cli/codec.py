"""`omni codec`: fit the offline codec on a folder of audio, or round-trip one file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omni_model.audio_io import AudioError, load_audio, save_wav
from omni_model.quantization import CODEC_KINDS, SAMPLE_RATE, OfflineCodec, load_codec
from omni_model.quantization.offline import FIRST_STAGE_CODES, RESIDUAL_STAGE_CODES
from omni_model.quantization.phonetic import TAGGER_STEPS

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")


def register(subparsers) -> None:
    parser = subparsers.add_parser("codec", help="fit the offline codec, or round-trip audio")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    fit = actions.add_parser("fit", help="fit the offline codec on every audio file in a folder")
    fit.add_argument(
        "audio_dir", type=Path, metavar="AUDIO_DIR", help="searched recursively for audio files"
    )
    fit.add_argument("--out", type=Path, required=True, metavar="FILE", help="codec to write")
    fit.add_argument("--iterations", type=int, default=4, help="k-means iterations per stage")
    fit.add_argument(
        "--first-stage-codes",
        type=int,
        default=FIRST_STAGE_CODES,
        help="centroids of a k-means first stage",
    )
    fit.add_argument(
        "--residual-stage-codes",
        type=int,
        default=RESIDUAL_STAGE_CODES,
        help="centroids of each of the seven later stages",
    )
    fit.add_argument(
        "--first-stage",
        choices=("kmeans", "phones"),
        default="kmeans",
        help="kmeans (default): clustered like the later stages; phones: a phonetic first "
        "stage, learnt from each file's transcript (NAME.txt beside NAME.wav)",
    )
    fit.add_argument(
        "--tagger-steps",
        type=int,
        default=TAGGER_STEPS,
        help="training steps of the phonetic first stage's phone tagger",
    )
    fit.add_argument("--seed", type=int, default=0)
    fit.set_defaults(run=run_fit)

    roundtrip = actions.add_parser("roundtrip", help="encode and decode one audio file")
    roundtrip.add_argument("in_audio", type=Path, metavar="IN_AUDIO", help="wav/flac/mp3/ogg")
    roundtrip.add_argument("out_wav", type=Path, metavar="OUT_WAV", help="decoded 24 kHz wav")
    roundtrip.add_argument("--codec", choices=CODEC_KINDS, default="offline")
    roundtrip.add_argument("--weights", type=Path, metavar="FILE", help="codec weights file")
    roundtrip.add_argument(
        "--allow-download",
        action="store_true",
        help="mimi without --weights: fetch the released checkpoint from the Hugging Face hub",
    )
    roundtrip.set_defaults(run=run_roundtrip)


def audio_files(folder: Path) -> list[Path]:
    """Every wav/flac/mp3/ogg file under `folder`, in a stable order."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such directory")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)


def transcripts(paths: list[Path], first_stage: str) -> list[str] | None:
    """Each file's transcript (NAME.txt beside it) for a phonetic first stage, or None."""
    if first_stage == "kmeans":
        return None
    missing = [path for path in paths if not path.with_suffix(".txt").is_file()]
    if missing:
        listed = ", ".join(str(path) for path in missing[:5])
        raise ValueError(
            f"--first-stage phones needs a transcript beside every audio file; "
            f"{len(missing)} have none ({listed}); use --first-stage kmeans"
        )
    return [path.with_suffix(".txt").read_text().strip() for path in paths]


def run_fit(args: argparse.Namespace) -> int:
    paths = audio_files(args.audio_dir)
    texts = transcripts(paths, args.first_stage)
    clips, kept_texts = [], []
    for index, path in enumerate(paths):
        try:
            clips.append(load_audio(path, sample_rate=SAMPLE_RATE))
        except AudioError as error:
            print(f"warning: skipping {error}", file=sys.stderr)
            continue
        if texts is not None:
            kept_texts.append(texts[index])
    skipped = len(paths) - len(clips)
    if not clips:
        raise ValueError(
            f"{args.audio_dir}: no usable audio ({len(paths)} audio files, {skipped} skipped)"
        )
    seconds = sum(len(clip) for clip in clips) / SAMPLE_RATE
    first_stage = "phones" if texts is not None else "kmeans"
    print(f"fitting on {len(clips)} files ({seconds:.1f} s of audio), skipped {skipped}")
    print(f"first stage: {first_stage}")
    codec = OfflineCodec.fit(
        clips,
        texts=kept_texts if texts is not None else None,
        iterations=args.iterations,
        seed=args.seed,
        first_stage_codes=args.first_stage_codes,
        residual_stage_codes=args.residual_stage_codes,
        tagger_steps=args.tagger_steps,
    )
    codec.save(args.out)
    print(f"wrote {args.out} ({codec.codec_id})")
    summary = {"files": len(clips), "skipped": skipped, "audio_s": round(seconds, 3)}
    summary["first_stage"] = first_stage
    print(json.dumps({**summary, "codec_id": codec.codec_id, "out": str(args.out)}))
    return 0


def run_roundtrip(args: argparse.Namespace) -> int:
    codec = load_codec(args.codec, args.weights, allow_download=args.allow_download)
    audio = load_audio(args.in_audio, sample_rate=codec.sample_rate)  # (samples,)
    codes, frames = codec.encode(audio[None])  # (1, 8, F), (1,)
    decoded, _ = codec.decode(codes, frames)  # (1, F * 1920)
    save_wav(args.out_wav, decoded[0, : len(audio)], codec.sample_rate)
    shape = list(codes[0].shape)
    seconds = len(audio) / codec.sample_rate
    print(f"{args.in_audio}: {seconds:.2f} s -> {int(frames[0])} frames, codes of shape {shape}")
    print(f"wrote {args.out_wav} ({codec.codec_id})")
    print(json.dumps({"frames": int(frames[0]), "code_shape": shape, "codec_id": codec.codec_id}))
    return 0
