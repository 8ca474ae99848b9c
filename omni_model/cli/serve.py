"""`omni serve`: the browser demo, on http://127.0.0.1:8000 by default.

    omni serve --model tiny
    omni serve --checkpoint assets_store/training/tiny/a2a/final --voice en-us+f4

The page offers hands-free or push-to-talk microphone input, streaming audio playback, a
live transcript of the reply, a voice picker, image upload and interruption by speaking.
Bind to another address with --host only on a network you trust: there is no login.
"""

from __future__ import annotations

import argparse

from omni_model.cli.chat import (
    add_model_arguments,
    add_sampling_arguments,
    load_from_args,
    sampling_from_args,
)
from omni_model.inference import SessionSettings, VadSettings
from omni_model.serve import ServerSettings, create_app, run_server


def register(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="the browser demo (web server + page)")
    add_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: local)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--voice", help="the voice visitors start with (a name in the store)")
    parser.add_argument("--max-sessions", type=int, default=4, help="visitors at once")
    vad = VadSettings()
    parser.add_argument("--vad-threshold", type=float, default=vad.threshold)
    parser.add_argument("--speech-start-ms", type=float, default=vad.start_ms)
    parser.add_argument("--speech-end-ms", type=float, default=vad.end_ms)
    add_sampling_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.max_sessions < 1:
        raise ValueError(f"--max-sessions must be at least 1, got {args.max_sessions}")
    vad = VadSettings(args.vad_threshold, args.speech_start_ms, args.speech_end_ms)
    settings = ServerSettings(
        max_sessions=args.max_sessions,
        sampling=sampling_from_args(args),
        session=SessionSettings(vad=vad),
        voice=args.voice,
        system=args.system,
        seed=args.seed,
    )
    app = create_app(load_from_args(args), settings)
    print(f"open http://{args.host}:{args.port}/ in a browser")
    run_server(app, args.host, args.port)
    return 0
