"""The `omni` command line. Each subcommand lives in its own module with a `register`."""

from __future__ import annotations

import argparse
import os
import sys

from omni_model.cli import chat, codec, info, params, serve, train, voices

COMMANDS = (params, codec, train, chat, voices, info, serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omni", description="Tiny omni model: build, inspect, train and talk to it."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except (ValueError, FileNotFoundError) as error:
        print(f"omni {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`omni voices list | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
