"""`omni chat`: talk to a trained model; the reply's text and audio stream as they are made.

    omni chat --model tiny --text "What colour is the ball?"
    omni chat --checkpoint assets_store/training/tiny/a2a/final --audio question.wav
    omni chat --model tiny --image shapes.png --text "How many circles?" --clone me.wav

With no --text, --audio or --image it reads turns from stdin, one per line, keeping the
dialogue: `/audio FILE [text]`, `/image FILE [text]`, `/voice NAME|FILE`, `/reset`.
Each reply is written to a wav that grows frame by frame (`--out`; later turns get -2,
-3, ... before the suffix), and played too with `--play` when a sound device exists.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from omni_model.generation import SamplingSettings
from omni_model.inference import AudioChunk, OmniChat, ReplyDone, TextDelta
from omni_model.inference.loading import DEFAULT_STORE, Loaded, load
from omni_model.inference.playback import open_player
from omni_model.inference.wav_writer import GrowingWav
from omni_model.quantization import CODEC_KINDS

COMMANDS = ("/audio", "/image", "/voice", "/reset")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Which checkpoint, and where its tokenizer and codec are: shared by chat/serve/info."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a checkpoint folder")
    source.add_argument(
        "--model", help="a trained model in the store: VARIANT (its last stage) or VARIANT/STAGE"
    )
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help="the asset store")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer JSON (default: from the store)")
    parser.add_argument("--codec", choices=CODEC_KINDS, help="codec kind (default: recorded)")
    parser.add_argument("--codec-weights", type=Path, help="codec weights (default: the store's)")
    parser.add_argument(
        "--allow-download", action="store_true", help="mimi: fetch the released weights if needed"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="bfloat16 weights: about half the time per step on CPUs with bf16 support",
    )


def load_from_args(args: argparse.Namespace) -> Loaded:
    return load(
        args.checkpoint,
        model=args.model,
        store=args.store,
        tokenizer=args.tokenizer,
        codec_weights=args.codec_weights,
        codec_kind=args.codec,
        allow_download=args.allow_download,
        device=args.device,
        dtype=torch.bfloat16 if args.bf16 else None,
    )


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SamplingSettings()
    add = parser.add_argument
    add("--temperature", type=float, default=defaults.text_temperature, help="text sampling")
    add("--top-p", type=float, default=defaults.text_top_p, help="text nucleus mass")
    add("--audio-temperature", type=float, default=defaults.audio_temperature)
    add("--audio-top-k", type=int, default=defaults.audio_top_k)
    add("--repetition-penalty", type=float, default=defaults.audio_repetition_penalty)
    add(
        "--acoustic-expectation",
        type=float,
        default=defaults.acoustic_expectation_temperature,
        metavar="TEMPERATURE",
        help="the offline codec decodes codebooks 1..7 as their expected entries under the "
        "Talker's distribution at this temperature; 0: the sampled codes",
    )
    add("--max-steps", type=int, default=defaults.max_steps, help="steps per reply at most")
    add(
        "--min-frames-per-token",
        type=float,
        default=defaults.min_frames_per_text_token,
        help="speech may not stop before this many 80 ms frames per reply text token",
    )
    add(
        "--max-frames-per-token",
        type=float,
        default=defaults.max_frames_per_text_token,
        help="speech stops after this many 80 ms frames per reply text token",
    )
    add("--seed", type=int, default=None, help="fixed seed: the same reply every run")
    add("--system", help="a system prompt")


def sampling_from_args(args: argparse.Namespace) -> SamplingSettings:
    if args.max_steps < 1:
        raise ValueError(f"--max-steps must be at least 1, got {args.max_steps}")
    if args.min_frames_per_token < 0:
        raise ValueError(f"--min-frames-per-token may not be negative: {args.min_frames_per_token}")
    if args.max_frames_per_token < max(args.min_frames_per_token, 1):
        raise ValueError(
            f"--max-frames-per-token ({args.max_frames_per_token}) must be at least 1 and at "
            f"least --min-frames-per-token ({args.min_frames_per_token})"
        )
    return SamplingSettings(
        text_temperature=args.temperature,
        text_top_p=args.top_p,
        audio_temperature=args.audio_temperature,
        audio_top_k=args.audio_top_k,
        audio_repetition_penalty=args.repetition_penalty,
        acoustic_expectation_temperature=args.acoustic_expectation or None,
        max_steps=args.max_steps,
        min_frames_per_text_token=args.min_frames_per_token,
        max_frames_per_text_token=args.max_frames_per_token,
    )


def register(subparsers) -> None:
    parser = subparsers.add_parser("chat", help="talk to a trained model (streaming text + audio)")
    add_model_arguments(parser)
    parser.add_argument("--text", help="the question (one turn, then exit)")
    parser.add_argument("--audio", type=Path, help="a spoken question: wav/flac/ogg/mp3")
    parser.add_argument("--image", type=Path, help="an image the question is about")
    voice = parser.add_mutually_exclusive_group()
    voice.add_argument("--voice", help="a built voice: its name in the store, or a .voice file")
    voice.add_argument("--clone", type=Path, help="speak like this clip (any audio file)")
    parser.add_argument("--out", type=Path, default=Path("reply.wav"), help="reply audio (wav)")
    parser.add_argument("--play", action="store_true", help="also play the reply as it streams")
    add_sampling_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    loaded = load_from_args(args)
    chat = loaded.chat(settings=sampling_from_args(args), system=args.system, seed=args.seed)
    if args.voice:
        chat.set_voice(loaded.voice(args.voice))
    elif args.clone:
        chat.clone_voice(args.clone)
    player = None
    if args.play:
        player, reason = open_player(loaded.codec.sample_rate)
        if player is None:
            print(f"no playback ({reason}); writing audio files only", file=sys.stderr)
    try:
        if args.text is not None or args.audio or args.image:
            turn = {"text": args.text or "", "audio": args.audio, "image": args.image}
            summary = reply(chat, args.out, player, **turn)
            print(json.dumps(summary))
        else:
            converse(chat, loaded, args.out, player)
    finally:
        if player is not None:
            player.close()
    return 0


def reply(chat: OmniChat, out: Path, player, **turn) -> dict:
    """Stream one reply: text to stdout, every frame into `out` (and the player)."""
    events = chat.reply(**turn)  # bad input fails here, before a file is written
    first_audio = None
    with GrowingWav(out, chat.codec.sample_rate) as wav:
        for event in events:
            if isinstance(event, TextDelta):
                print(event.text, end="", flush=True)
            elif isinstance(event, AudioChunk):
                wav.append(event.samples)
                if player is not None:
                    player.play(event.samples)
                first_audio = event.seconds if first_audio is None else first_audio
            elif isinstance(event, ReplyDone):
                done = event
    print()  # ends the reply's line on stdout
    seconds = wav.samples / chat.codec.sample_rate
    print(
        f"[{done.frames} frames, {seconds:.2f} s of audio -> {out}; "
        f"first audio after {first_audio or 0:.2f} s, reply in {done.seconds:.2f} s]",
        file=sys.stderr,
    )
    return {
        "text": done.text,
        "frames": done.frames,
        "steps": done.steps,
        "audio_s": round(seconds, 3),
        "first_audio_s": None if first_audio is None else round(first_audio, 3),
        "reply_s": round(done.seconds, 3),
        "wav": str(out),
    }


def numbered(path: Path, turn: int) -> Path:
    return path if turn == 1 else path.with_name(f"{path.stem}-{turn}{path.suffix}")


def converse(chat: OmniChat, loaded: Loaded, out: Path, player) -> None:
    """Turns from stdin until EOF; a bad turn is reported and the dialogue goes on."""
    replies = 0
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        command, _, rest = line.partition(" ") if line.startswith("/") else ("", "", line)
        try:
            if command == "/reset":
                chat.reset()
            elif command == "/voice":
                chat.set_voice(loaded.voice(rest.strip()))
            elif command in ("/audio", "/image"):
                file, _, text = rest.strip().partition(" ")
                turn = {"text": text, command[1:]: Path(file)}
                reply(chat, numbered(out, replies + 1), player, **turn)
                replies += 1
            elif command:
                raise ValueError(f"unknown command {command}: use one of {', '.join(COMMANDS)}")
            else:
                reply(chat, numbered(out, replies + 1), player, text=rest)
                replies += 1
        except (ValueError, FileNotFoundError) as error:
            print(f"error: {error}", file=sys.stderr)
