"""The real training loop on CPU: length-bucketed batching vs padding to max_seq_len.

The `reference` preset (~0.1B) trains its T2A stage (max_seq_len 512) on the offline
corpus's shards through `Trainer.train_step`, the same code a plan runs. Judged:
(a) useful (non-padding) positions per second with our batching (sorted by length inside a
    shuffled window, each batch padded to its longest sample) over the same loop padding
    every sample to max_seq_len as the reference implementation does; target >= 1.5x;
(b) the share of step time spent waiting for the next batch (loader with its worker
    processes), on T2A and on A2A (spoken questions decoded and augmented); target <= 10%.
The 1-minute load average is recorded because other processes on the machine slow
every figure here.

    python benchmarks/training.py [--shards assets_store/shards] [--tokenizer PATH]
                                  [--batch 4] [--steps 4] [--workers 1]

Shards come from `python -m pipelines.run --size small --plan none`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
from pathlib import Path

import torch

from omni_model.training.data import ShardData, load_tokenizer
from omni_model.training.plans import get_plan
from omni_model.training.trainer import Trainer, TrainSettings, initial_model

STORE = Path(__file__).resolve().parents[1] / "assets_store"
TARGET_RATIO = 1.5
TARGET_DATA_SHARE = 0.10


def default_tokenizer(store: Path) -> Path:
    """The newest tokenizer the pipeline wrote."""
    found = sorted((store / "tokenizer").glob("*.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(
            f"no tokenizer under {store / 'tokenizer'}: run "
            "`python -m pipelines.run --size small --plan none` first, or pass --tokenizer"
        )
    return found[-1]


def measure(args: argparse.Namespace, task: str, batching: str, steps: int) -> dict[str, float]:
    """Run `steps` optimizer steps (after one warm-up step) of the reference T2A/A2A stage."""
    plan = get_plan("reference")
    stage = dataclasses.replace(plan.stage(task), batch_size=args.batch, warmup_steps=1)
    tokenizer = load_tokenizer(args.tokenizer)
    model, meta = initial_model(plan, stage, args.shards, tokenizer, None, seed=0)
    data = ShardData(args.shards, tokenizer, stage.data_settings(batching=batching))
    settings = TrainSettings(
        device="cpu", progress=False, num_workers=args.workers, max_steps=steps + 1
    )
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(plan, stage, model, data, out, meta, settings)
        stream = trainer.batches()
        trainer.train_step(stream)  # warm-up: allocator, worker start, first batches
        metrics = [trainer.train_step(stream) for _ in range(steps)]
    seconds = sum(m["step_s"] for m in metrics)
    useful = sum(m["tokens_per_s"] * m["step_s"] for m in metrics)
    padded = sum(m["tokens_per_s"] * m["step_s"] / (1 - m["padding_fraction"]) for m in metrics)
    result = {
        "positions_per_s": useful / seconds,
        "step_s": seconds / steps,
        "padding_fraction": 1 - useful / padded,
        "data_share": sum(m["data_s"] for m in metrics) / seconds,
    }
    print(
        f"{task:<4} {batching:<10} {result['positions_per_s']:8.1f} useful positions/s  "
        f"{result['step_s']:6.2f} s/step  padding {result['padding_fraction']:.1%}  "
        f"data wait {result['data_share']:.1%} of step time  ({steps} steps of {args.batch})"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", type=Path, default=STORE / "shards")
    parser.add_argument("--tokenizer", type=Path)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4, help="measured steps per bucketed run")
    parser.add_argument("--workers", type=int, default=1, help="data-loading processes")
    args = parser.parse_args()
    args.tokenizer = args.tokenizer or default_tokenizer(STORE)
    torch.manual_seed(0)
    print(f"reference preset on CPU ({torch.get_num_threads()} threads), shards {args.shards}")

    bucket = measure(args, "t2a", "bucket", args.steps)
    padded = measure(args, "t2a", "pad_to_max", max(2, args.steps // 2))
    spoken = measure(args, "a2a", "bucket", args.steps)
    ratio = bucket["positions_per_s"] / padded["positions_per_s"]
    print(
        f"judged: useful positions/s, bucketed / padded to max_seq_len = {ratio:.2f}x "
        f"(target >= {TARGET_RATIO}x)"
    )
    for task, result in (("t2a", bucket), ("a2a", spoken)):
        print(
            f"judged: {task} data-loading share of step time = {result['data_share']:.1%} "
            f"(target <= {TARGET_DATA_SHARE:.0%})"
        )
    figures = {"bucket_over_pad_to_max": ratio, "load_average_1min_end": os.getloadavg()[0]}
    for name, result in (
        ("t2a_bucket", bucket),
        ("t2a_pad_to_max", padded),
        ("a2a_bucket", spoken),
    ):
        figures.update({f"{name}_{key}": value for key, value in result.items()})
    print(json.dumps({key: round(value, 4) for key, value in figures.items()}))


if __name__ == "__main__":
    main()
