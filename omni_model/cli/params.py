"""`omni params`: the parameter table of a preset; the last line is JSON."""

from __future__ import annotations

import argparse
import json

from omni_model.config import PRESETS, make_config
from omni_model.models import OmniModel
from omni_model.models.summary import parameter_table


def register(subparsers) -> None:
    parser = subparsers.add_parser("params", help="print the parameter table of a model preset")
    parser.add_argument("--preset", default="reference", choices=sorted(PRESETS))
    parser.add_argument("--talker-hidden", type=int, choices=(384, 512, 768), default=None)
    parser.add_argument(
        "--moe", action="store_true", help="mixture-of-experts MLPs (4 experts, top-1)"
    )
    parser.add_argument(
        "--vocab-size", type=int, default=None, help="text vocabulary (default 6400)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = make_config(
        args.preset, talker_hidden=args.talker_hidden, moe=args.moe, vocab_size=args.vocab_size
    )
    counts = parameter_table(OmniModel(config))
    print(
        f"preset {args.preset}: thinker {config.thinker.hidden} x {config.thinker.num_layers}, "
        f"talker {config.talker.hidden} x {config.talker.num_layers}, "
        f"{'MoE' if config.thinker.use_moe else 'dense'}, vocab {config.vocab_size}"
    )
    for name, count in counts.items():
        print(f"  {name:<22} {count:>13,}  ({count / 1e6:7.2f} M)")
    print(json.dumps({"preset": args.preset, **counts}))
    return 0
