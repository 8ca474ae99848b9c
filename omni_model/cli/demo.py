"""`omni demo`: the part of the main job that exists so far, end to end on `tiny`.

Trains a tokenizer on a few templated chats, overfits the tiny model on them with
synthetic answer codes, then streams a reply: text tokens and complete audio frames.
"""

from __future__ import annotations

import argparse
import time

import torch

from omni_model.config import make_config
from omni_model.data import build_prompt, build_sample, collate
from omni_model.generation import AudioFrame, SamplingSettings, TextToken, generate_stream
from omni_model.models import OmniModel
from omni_model.quantization import CODEBOOK_SIZE, NUM_CODEBOOKS
from omni_model.text import train_tokenizer
from omni_model.training import omni_loss

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the offline demo end to end on the tiny preset"
    )
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run)


def demo_chats() -> list[list[dict]]:
    return [
        [
            {"role": "user", "content": f"What colour is the {colour} ball?"},
            {"role": "assistant", "content": f"The ball is {colour}."},
        ]
        for colour in COLOURS
    ]


def run(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    chats = demo_chats()
    tokenizer = train_tokenizer((m["content"] for chat in chats for m in chat), vocab_size=300)
    config = make_config("tiny", vocab_size=tokenizer.vocab_size)
    model = OmniModel(config)
    generator = torch.Generator().manual_seed(args.seed)
    samples = [
        build_sample(
            tokenizer.encode_chat(chat),
            torch.randint(0, CODEBOOK_SIZE, (NUM_CODEBOOKS, 6), generator=generator),
        )
        for chat in chats
    ]
    batch = collate(samples)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    print(f"training tiny model ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params)")
    for step in range(args.steps):
        output = model(batch["input_ids"])
        loss = omni_loss(
            output.text_logits,
            output.audio_logits,
            batch["text_labels"],
            batch["audio_labels"],
            output.aux_loss,
        )
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
        if step % 10 == 0 or step == args.steps - 1:
            print(f"  step {step:3d}  text {loss.text.item():.3f}  audio {loss.audio.item():.3f}")

    model.eval()
    prompt = tokenizer.encode_chat(chats[2][:1], add_generation_prompt=True).ids
    settings = SamplingSettings(text_temperature=0.0, audio_temperature=0.0, max_steps=60)
    print(f"user: {chats[2][0]['content']}\nassistant: ", end="", flush=True)
    text_ids, frames = [], 0
    for event in generate_stream(model, build_prompt(prompt), settings=settings):
        if isinstance(event, TextToken) and not event.is_end:
            text_ids.append(event.token_id)
            print(tokenizer.decode([event.token_id]), end="", flush=True)
        elif isinstance(event, AudioFrame):
            frames += 1
    print(f"\n  streamed {frames} audio frames ({frames * 0.08:.2f} s of speech)")
    print(f"demo finished in {time.perf_counter() - started:.1f} s")
    return 0
