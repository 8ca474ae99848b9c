"""`omni voices`: list the store's voices, or build one from any clip (or espeak-ng).

    omni voices list
    omni voices build me.wav --name me
    omni voices build --espeak en-us+f4

A voice is reference codes plus a speaker vector, made with one codec: voices are kept per
codec under `voices/{codec_id}/` and listed for the store's current codec by default.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from omni_model.audio_io import save_wav
from omni_model.inference.loading import DEFAULT_STORE, find_codec, voice_folder
from omni_model.quantization import CODEC_KINDS, FRAME_RATE, Codec
from omni_model.voices import REFERENCE_SECONDS, Voice, build_voice

ESPEAK_TEXT = "The quick brown fox jumps over the lazy dog, and then it runs back home."


def register(subparsers) -> None:
    parser = subparsers.add_parser("voices", help="list or build voices (voice prompts)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="the store's voices for a codec")
    listing.add_argument("--store", type=Path, default=DEFAULT_STORE)
    listing.add_argument("--codec-id", help="default: the store's current codec")
    listing.set_defaults(run=run_list)

    build = actions.add_parser("build", help="a voice from a clip, or from an espeak-ng voice")
    source = build.add_mutually_exclusive_group(required=True)
    source.add_argument("clip", nargs="?", type=Path, help="any wav/flac/ogg/mp3 clip")
    source.add_argument("--espeak", metavar="VOICE", help="synthesize the clip, e.g. en-us+f4")
    build.add_argument("--text", default=ESPEAK_TEXT, help="what --espeak says")
    build.add_argument("--name", help="voice name (default: the clip's file name)")
    build.add_argument("--seconds", type=float, default=REFERENCE_SECONDS, help="prompt length")
    build.add_argument("--store", type=Path, default=DEFAULT_STORE)
    build.add_argument("--codec", choices=CODEC_KINDS, help="default: the store's current codec")
    build.add_argument("--codec-weights", type=Path)
    build.add_argument("--out", type=Path, help="default: the store's voices/{codec_id}/NAME.voice")
    build.set_defaults(run=run_build)


def current_codec_id(store: Path) -> str:
    manifest = store / "codecs" / "current.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: no codec in the store; pass --codec-id")
    return json.loads(manifest.read_text())["codec_id"]


def run_list(args: argparse.Namespace) -> int:
    codec_id = args.codec_id or current_codec_id(args.store)
    rows = []
    for path in sorted(voice_folder(args.store, codec_id).glob("*.voice")):
        voice = Voice.load(path, codec_id=codec_id)
        row = {"name": voice.name, "frames": voice.reference_frames, "path": str(path)}
        rows.append(row | {"speaker_dim": voice.speaker.numel(), "clip": voice.source.get("clip")})
    print(f"{len(rows)} voices for codec {codec_id}")
    for row in rows:
        seconds = row["frames"] / FRAME_RATE
        print(f"  {row['name']:<24} {seconds:5.2f} s prompt  {row['speaker_dim']}-d  {row['clip']}")
    print(json.dumps({"codec_id": codec_id, "voices": rows}))
    return 0


def run_build(args: argparse.Namespace) -> int:
    codec = find_codec({}, args.codec_weights, args.store, args.codec)
    from omni_model.encoders.speaker import SpeakerEncoder  # resemblyzer: load on demand

    encoder = SpeakerEncoder()
    if args.espeak:
        voice = espeak_voice(args.espeak, args.text, codec, encoder, args.name, args.seconds)
    else:
        voice = build_voice(args.clip, codec, encoder, name=args.name, max_seconds=args.seconds)
    out = args.out or voice_folder(args.store, codec.codec_id) / f"{voice.name}.voice"
    out.parent.mkdir(parents=True, exist_ok=True)
    voice.save(out)
    print(f"voice {voice.name!r}: {voice.reference_frames} frames of {codec.codec_id} -> {out}")
    print(json.dumps({"name": voice.name, "frames": voice.reference_frames, "path": str(out)}))
    return 0


def espeak_voice(
    variant: str, text: str, codec: Codec, encoder, name: str | None, seconds: float
) -> Voice:
    """Speak `text` with espeak-ng `variant` and build the voice from that clip."""
    from omni_model.tts import synthesize

    audio = synthesize(text, variant, sample_rate=codec.sample_rate)
    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / f"{variant}.wav"
        save_wav(clip, audio, codec.sample_rate)
        voice = build_voice(clip, codec, encoder, name=name or variant, max_seconds=seconds)
    voice.source["clip"] = f"espeak-ng {variant}: {text}"
    return voice
