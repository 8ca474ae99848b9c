"""Talking latency on CPU: prefill, per-step time, first audio, real-time factor.

For each preset (random weights: the same computation as trained ones) and each codec
(Mimi with random weights, the offline codec fitted here on a little espeak-ng speech):
- prefill: one forward pass over the prompt (30 tokens);
- per step: one generation step, sampling included (a step emits a text token and a frame);
- first audio: from a typed question (tokenizing, prefill, 8 steps until codebook 7's first
  code completes frame 0, and that frame's streaming decode) to its first decoded sample;
- real-time factor: reply wall time / seconds of reply audio, streaming decode included.

Batch-1 decoding is memory-bound: a step reads every weight once. The benchmark measures
memory bandwidth in the same process (a large tensor copy) and prints the floor = bytes of
weights one step reads / bandwidth. Beside it, the matvec floor: the same bytes at the speed
torch's batch-1 matrix-vector product reads weights here (a plain `linear` on one large
matrix), the most a step can reach without faster kernels. Judged for `reference`: per step
<= 1.3x the floor, first audio <= 0.45 s, real-time factor <= 0.6. The random Talker's
codebook-0 stop logit is pushed down so every reply runs its full length. With --bf16 each
preset is measured again with bfloat16 weights, reported separately (it may go below the
fp32 floor). Other processes inflate every time here: the 1-minute load average is recorded.

    python benchmarks/latency.py [--presets reference tiny] [--codecs mimi offline] [--bf16]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from common import best_time, matvec_bandwidth, memory_bandwidth
from torch import nn

from omni_model import OmniModel, make_config
from omni_model.config import AUDIO_STOP_ID
from omni_model.data import build_prompt
from omni_model.generation import SamplingSettings, generate_stream
from omni_model.inference import AudioChunk, OmniChat, ReplyDone
from omni_model.quantization import FRAME_RATE, Codec, OfflineCodec
from omni_model.quantization.mimi import load_mimi, save_random_mimi
from omni_model.text import ChatTokenizer, train_tokenizer
from omni_model.tts import synthesize

PROMPT_TOKENS = 30
TARGET_STEP_OVER_FLOOR = 1.3
TARGET_FIRST_AUDIO_S = 0.45
TARGET_RTF = 0.6
SENTENCES = (
    "Please count the blue circles and tell me how many of them are larger than the rest.",
    "A quiet train carried seven sleepy travellers through the snowy mountains at night.",
    "She opened the window, listened to the rain, and wrote a long letter home to her family.",
)


def step_weight_bytes(model: OmniModel) -> int:
    """Bytes of the weights one step reads: every parameter but the projectors (prefill only)
    and the embedding tables, of which a step gathers a few rows; the Thinker's table is read
    whole all the same, as the tied text head."""
    projectors = [*model.audio_projector.parameters(), *model.vision_projector.parameters()]
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    skipped = ({id(p) for p in projectors} | tables) - {id(model.thinker.embed_tokens.weight)}
    return sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in skipped)


def random_model(preset: str) -> OmniModel:
    torch.manual_seed(0)
    model = OmniModel(make_config(preset)).eval()
    with torch.no_grad():
        model.talker.head.up_bias[0, 0, AUDIO_STOP_ID] = -30.0
    return model


def generation_times(model: OmniModel, steps: int, repeats: int) -> dict[str, float]:
    """Prefill of a 30-token prompt, and the time of each step after it."""
    prompt = build_prompt(list(range(20, 20 + PROMPT_TOKENS)))  # (9, 30)
    settings = SamplingSettings(max_steps=steps, max_frames_per_text_token=None)  # all `steps`

    @torch.no_grad()
    def prefill() -> None:
        model(prompt[None], cache=model.new_cache(1, PROMPT_TOKENS + steps))

    def generate() -> None:
        generator = torch.Generator().manual_seed(0)
        events = list(generate_stream(model, prompt, settings=settings, generator=generator))
        assert events[-1].step == steps - 1, "the reply ended early"

    cache = model.new_cache(1, PROMPT_TOKENS + 4 * steps)
    column = prompt[None, :, -1:]  # (1, 9, 1)

    @torch.no_grad()
    def forward() -> None:  # one step's model call alone, without sampling
        model(column, cache=cache)

    prefill_s = best_time(prefill, repeats)
    step_s = (best_time(generate, repeats) - prefill_s) / steps
    with torch.no_grad():
        model(prompt[None], cache=cache)
    forward_s = best_time(forward, repeats=steps, warmup=2)
    return {"prefill_s": prefill_s, "step_s": step_s, "forward_s": forward_s}


def decode_seconds(codec: Codec, frames: int = 10) -> float:
    """Streaming decode of one frame, best of `frames` after two."""
    decoder = codec.streaming_decoder()
    codes = torch.randint(0, codec.codebook_size, (codec.num_codebooks,))
    return best_time(lambda: decoder.decode_frame(codes), repeats=frames, warmup=2)


def question_of(tokenizer, tokens: int) -> str:
    """A question whose chat prompt (header and all) is at least `tokens` long."""
    words = " ".join(SENTENCES).split()
    for count in range(1, len(words) + 1):
        question = " ".join(words[:count])
        chat = [{"role": "user", "content": question}]
        if len(tokenizer.encode_chat(chat, add_generation_prompt=True).ids) >= tokens:
            return question
    raise ValueError("the sentences are too short for the prompt asked for")


def reply_times(chat: OmniChat, question: str, repeats: int) -> dict[str, float]:
    """First-audio latency and real-time factor of a whole streamed reply, best of repeats."""
    first, factor = [], []
    for _ in range(repeats + 1):  # the first run warms up
        chat.reset()
        events = list(chat.reply(question))
        done = events[-1]
        assert isinstance(done, ReplyDone) and done.frames > 0
        first.append(next(e.seconds for e in events if isinstance(e, AudioChunk)))
        factor.append(done.seconds / (done.frames / FRAME_RATE))
    return {"first_audio_s": min(first[1:]), "rtf": min(factor[1:])}


def codecs(names: list[str], folder: Path) -> dict[str, Codec]:
    found: dict[str, Codec] = {}
    if "mimi" in names:
        found["mimi"] = load_mimi(save_random_mimi(folder / "mimi.safetensors"))
    if "offline" in names:
        speech = [synthesize(text, voice) for text in SENTENCES for voice in ("en-us+f2", "en+m2")]
        found["offline"] = OfflineCodec.fit(speech, iterations=2, progress=False)
    return found


@dataclass
class Setup:
    """What every measurement shares."""

    bandwidth: float  # bytes/s
    codecs: dict[str, Codec]
    tokenizer: ChatTokenizer
    question: str  # a chat prompt of PROMPT_TOKENS tokens
    steps: int
    repeats: int


def measure_preset(
    preset: str, dtype: torch.dtype, setup: Setup, fp32_floor: float | None = None
) -> dict[str, float]:
    """One preset at one weight precision: generation times, then a reply per codec."""
    model = random_model(preset).to(dtype)
    weights = step_weight_bytes(model)
    floor = weights / setup.bandwidth
    matvec_floor = weights / matvec_bandwidth(dtype)
    times = generation_times(model, setup.steps, setup.repeats)
    row = {"weights_mb": weights / 1e6, "floor_ms": 1e3 * floor, **times}
    row["matvec_floor_ms"] = 1e3 * matvec_floor
    row["step_over_floor"] = times["step_s"] / floor
    row["step_over_matvec_floor"] = times["step_s"] / matvec_floor
    print(
        f"{preset} ({str(dtype).removeprefix('torch.')}): {weights / 1e6:.0f} MB of weights per "
        f"step -> floor {1e3 * floor:.1f} ms; prefill ({PROMPT_TOKENS} tokens) "
        f"{1e3 * times['prefill_s']:.1f} ms; step {1e3 * times['step_s']:.1f} ms = "
        f"{row['step_over_floor']:.2f}x the floor (model call {1e3 * times['forward_s']:.1f} ms, "
        f"sampling and the rest {1e3 * (times['step_s'] - times['forward_s']):.1f} ms)"
    )
    print(
        f"  torch's matrix-vector kernels read {weights / matvec_floor / 1e9:.1f} GB/s here: "
        f"those bytes take {1e3 * matvec_floor:.1f} ms, step = "
        f"{row['step_over_matvec_floor']:.2f}x that"
    )
    if fp32_floor is not None:
        row["step_over_fp32_floor"] = times["step_s"] / fp32_floor
        print(f"  step = {row['step_over_fp32_floor']:.2f}x the fp32 floor")
    settings = SamplingSettings(max_steps=setup.steps, max_frames_per_text_token=None)
    for name, codec in setup.codecs.items():
        chat = OmniChat(model, setup.tokenizer, codec, settings=settings, seed=0)
        result = reply_times(chat, setup.question, setup.repeats)
        result["decode_s"] = decode_seconds(codec)
        row |= {f"{name}_{key}": value for key, value in result.items()}
        print(
            f"  {name:>7} codec: first audio {1e3 * result['first_audio_s']:.0f} ms, "
            f"real-time factor {result['rtf']:.2f} (streaming decode included: "
            f"{1e3 * result['decode_s']:.1f} ms a frame)"
        )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["reference", "tiny"])
    parser.add_argument("--codecs", nargs="+", default=["mimi", "offline"])
    parser.add_argument("--steps", type=int, default=40, help="generation steps timed")
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--bf16", action="store_true", help="also bfloat16 weights (separately)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = 20 if args.quick else args.steps
    repeats = 1 if args.quick else 3

    figures: dict[str, float] = {
        "threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
        "prompt_tokens": PROMPT_TOKENS,
        "steps": steps,
        "repeats": repeats,
    }
    bandwidth = memory_bandwidth()
    figures["bandwidth_gb_s"] = bandwidth / 1e9
    print(
        f"{figures['threads']} threads, load average {figures['load_average_1min']:.1f}; "
        f"memory bandwidth {bandwidth / 1e9:.1f} GB/s (copy of 512 MiB)"
    )
    tokenizer = train_tokenizer(SENTENCES * 20, vocab_size=6400)
    with tempfile.TemporaryDirectory() as folder:
        loaded = codecs(args.codecs, Path(folder))
    question = question_of(tokenizer, PROMPT_TOKENS)
    setup = Setup(bandwidth, loaded, tokenizer, question, steps, repeats)

    for preset in args.presets:
        row = measure_preset(preset, torch.float32, setup)
        figures |= {f"{preset}_{key}": value for key, value in row.items()}
        if args.bf16:
            row = measure_preset(preset, torch.bfloat16, setup, fp32_floor=row["floor_ms"] / 1e3)
            figures |= {f"{preset}_bf16_{key}": value for key, value in row.items()}

    if "reference" in args.presets:
        print(
            f"judged: reference step = {figures['reference_step_over_floor']:.2f}x the floor "
            f"(target <= {TARGET_STEP_OVER_FLOOR}x)"
        )
        for name in loaded:
            print(
                f"judged: reference + {name}: first audio "
                f"{figures[f'reference_{name}_first_audio_s']:.3f} s (target <= "
                f"{TARGET_FIRST_AUDIO_S} s), real-time factor "
                f"{figures[f'reference_{name}_rtf']:.2f} (target <= {TARGET_RTF})"
            )
    figures["load_average_1min_end"] = os.getloadavg()[0]
    print(json.dumps({key: round(value, 4) for key, value in figures.items()}))


if __name__ == "__main__":
    main()
