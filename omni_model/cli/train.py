"""`omni train`: run a training plan (every stage, or some) on the pipeline's shards.

    omni train --plan tiny --shards assets_store/shards \\
        --tokenizer assets_store/tokenizer/tokenizer-ID.json --out assets_store/training/tiny

Multi-GPU with the same entry point: `torchrun --nproc_per_node N .venv/bin/omni train ...`.
"""

from __future__ import annotations

import argparse

from omni_model.config import TEXT_LAYOUTS
from omni_model.encoders.audio import AUDIO_ENCODERS
from omni_model.encoders.image import IMAGE_ENCODERS
from omni_model.training.plans import PLANS, get_plan
from omni_model.training.trainer import TrainSettings, train_plan

DESCRIPTION = """\
Train a plan's stages in order, each starting from the previous stage's final checkpoint
(OUT/STAGE/final). Shards are the pipeline's parquet files in the reference schema, one
folder per task under --shards (text/, t2a/, a2a/, i2t/); released reference files work too.
Checkpoints land in OUT/STAGE/step-N (kept for --resume) and OUT/STAGE/final."""


def plan_listing() -> str:
    """Every plan's stages, for the help text."""
    lines = ["plans (stage: task, trained weights, length):"]
    for name in sorted(PLANS):
        lines.append(f"  {name}")
        for stage in get_plan(name).stages:
            length = f"{stage.max_steps} steps" if stage.max_steps else f"{stage.epochs:g} epoch(s)"
            lines.append(f"    {stage.name:<9} {stage.task:<5} {stage.mode:<12} {length}")
    lines.append("multi-GPU: torchrun --nproc_per_node N .venv/bin/omni train ...")
    return "\n".join(lines)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a plan's stages on parquet shards",
        description=DESCRIPTION,
        epilog=plan_listing(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--plan", default="tiny", choices=sorted(PLANS), help="default: tiny")
    parser.add_argument("--shards", required=True, help="shards folder holding text/, t2a/, ...")
    parser.add_argument("--tokenizer", required=True, help="the pipeline's tokenizer JSON")
    parser.add_argument("--out", required=True, help="folder for the stages' checkpoints")
    parser.add_argument(
        "--stages", nargs="+", metavar="STAGE", help="only these stages (default: all, in order)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="skip finished stages and continue an interrupted one from its last step checkpoint",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument(
        "--workers", type=int, default=1, help="data-loading processes (0: in this one)"
    )
    parser.add_argument("--seed", type=int, default=0, help="weights and data order")
    parser.add_argument("--max-steps", type=int, help="cap every stage at this many steps")
    parser.add_argument(
        "--codec-id", help="codec of shards without a codec_id column (the reference's files)"
    )
    parser.add_argument("--talker-hidden", type=int, help="model variant: Talker width")
    parser.add_argument("--moe", action="store_true", help="model variant: MoE MLPs")
    parser.add_argument(
        "--text-layout",
        choices=TEXT_LAYOUTS,
        help="a spoken reply's text row: one token per step, or spread over its speech "
        "(default: the plan's)",
    )
    parser.add_argument(
        "--letter-window",
        type=int,
        help="the Talker also reads this many letters of the reply around the one each frame "
        "says; 0: none (default: the plan's)",
    )
    parser.add_argument(
        "--audio-encoder", choices=AUDIO_ENCODERS, help="question-audio encoder (default: plan's)"
    )
    parser.add_argument("--whisper-model", help="Whisper checkpoint file (or a cached name)")
    parser.add_argument("--image-encoder", choices=IMAGE_ENCODERS, help="default: the plan's")
    parser.add_argument("--siglip-model", help="SigLIP2 folder (or a cached hub name)")
    parser.add_argument(
        "--patch-model",
        help="a pretrained patch image encoder file (the patch_image_encoder asset), frozen",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    plan = get_plan(args.plan).variant(
        talker_hidden=args.talker_hidden,
        moe=args.moe,
        text_layout=args.text_layout,
        letter_window=args.letter_window,
        audio_encoder=args.audio_encoder,
        whisper_model=args.whisper_model,
        image_encoder=args.image_encoder,
        siglip_model=args.siglip_model,
        patch_model=args.patch_model,
    )
    settings = TrainSettings(
        device=args.device,
        compile=args.compile,
        seed=args.seed,
        num_workers=args.workers,
        progress=not args.no_progress,
        max_steps=args.max_steps,
        codec_id=args.codec_id,
    )
    results = train_plan(
        plan,
        shards=args.shards,
        tokenizer=args.tokenizer,
        out=args.out,
        settings=settings,
        resume=args.resume,
        stages=args.stages,
    )
    print(f"\nplan {plan.name}: stage durations and losses (first step -> last steps)")
    for result in results:
        first, final = result.first_losses, result.final_losses
        note = "  (already done)" if result.skipped else ""
        print(
            f"  {result.stage:<9} {result.seconds:7.1f} s  {result.steps:5d} steps"
            f"  text {first['text_loss']:.3f} -> {final['text_loss']:.3f}"
            f"  audio {first['audio_loss']:.3f} -> {final['audio_loss']:.3f}{note}"
        )
    print(f"  {'total':<9} {sum(r.seconds for r in results if not r.skipped):7.1f} s")
    print(f"final checkpoint: {results[-1].checkpoint}")
    return 0
