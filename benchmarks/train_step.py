"""Forward+backward throughput and model-FLOPs utilisation on CPU.

Positions/s counts one position as one time step of all 9 streams. Model FLOPs per
position = 6 x matmul parameters (every Linear plus the tied text head; embedding
lookups excluded) + causal attention 6 x layers x attention width x T. MFU is measured
against the fp32 GEMM peak of a 4096 x 4096 matmul taken in the same process.

    python benchmarks/train_step.py [--batch 2] [--seq 512] [--presets tiny reference]
"""

from __future__ import annotations

import argparse
import json

import torch
from common import best_time, gemm_peak_flops
from torch import nn

from omni_model import OmniModel, make_config
from omni_model.training import omni_loss


def matmul_parameters(model: OmniModel) -> int:
    """Weights used in matmuls: every matrix but the embedding tables, plus the tied head."""
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    matrices = sum(p.numel() for p in model.parameters() if p.dim() >= 2 and id(p) not in tables)
    return matrices + model.thinker.embed_tokens.weight.numel()


def flops_per_position(model: OmniModel, seq: int) -> float:
    attention = sum(
        stack.num_layers * stack.num_heads * stack.head_dim
        for stack in (model.config.thinker, model.config.talker)
    )
    return 6 * matmul_parameters(model) + 6 * attention * seq


def train_batch(config, batch: int, seq: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, 2048, (batch, 9, seq), generator=generator)
    input_ids[:, 8] = torch.randint(20, config.vocab_size, (batch, seq), generator=generator)
    labels = torch.randint(0, 2048, (batch, 8, seq), generator=generator)
    return {"input_ids": input_ids, "text_labels": input_ids[:, 8], "audio_labels": labels}


def measure(preset: str, batch: int, seq: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    config = make_config(preset)
    config.max_seq_len = max(config.max_seq_len, seq)
    model = OmniModel(config)
    data = train_batch(config, batch, seq)

    def step() -> None:
        out = model(data["input_ids"])
        loss = omni_loss(
            out.text_logits,
            out.audio_logits,
            data["text_labels"],
            data["audio_labels"],
            out.aux_loss,
        )
        loss.total.backward()
        model.zero_grad(set_to_none=True)

    seconds = best_time(step, repeats)
    positions = batch * seq
    return {
        "positions_per_s": positions / seconds,
        "step_s": seconds,
        "model_flops_per_s": positions * flops_per_position(model, seq) / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "reference"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    peak = gemm_peak_flops()
    figures: dict[str, float] = {"gemm_peak_gflops": peak / 1e9, "threads": torch.get_num_threads()}
    print(f"fp32 GEMM peak (4096^2): {peak / 1e9:.1f} GFLOP/s on {torch.get_num_threads()} threads")
    for preset in args.presets:
        result = measure(preset, args.batch, args.seq, args.repeats)
        mfu = result["model_flops_per_s"] / peak
        print(
            f"{preset:>9}: batch {args.batch} x {args.seq}"
            f"  {result['positions_per_s']:8.1f} positions/s"
            f"  step {result['step_s']:.3f} s  {result['model_flops_per_s'] / 1e9:6.1f} GFLOP/s"
            f"  MFU {mfu:.1%}"
        )
        figures[f"{preset}_positions_per_s"] = result["positions_per_s"]
        figures[f"{preset}_model_gflops"] = result["model_flops_per_s"] / 1e9
        figures[f"{preset}_mfu"] = mfu
    if "reference" in args.presets:
        print(f"judged ratio: reference MFU = {figures['reference_mfu']:.2f} (target >= 0.50)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
