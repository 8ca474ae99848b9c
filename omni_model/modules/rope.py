"""Rotary position embeddings, with optional YaRN scaling for longer contexts.

YaRN keeps high-frequency dimensions as trained, interpolates low-frequency ones by
`factor`, blends linearly between them, and scales cos/sin by 0.1 * ln(factor) + 1.
"""

import math

import torch
from torch import nn


def yarn_inverse_frequencies(
    inv_freq: torch.Tensor,
    factor: float,
    original_max_positions: int,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
) -> torch.Tensor:
    """Blend trained and `factor`-interpolated frequencies per dimension."""
    # Number of full rotations each dimension makes over the original context.
    rotations = original_max_positions * inv_freq / (2 * math.pi)
    # keep = 1 where a dimension rotates fast (kept), 0 where slow (interpolated).
    keep = ((rotations - beta_slow) / (beta_fast - beta_slow)).clamp(0.0, 1.0)
    return inv_freq * keep + (inv_freq / factor) * (1.0 - keep)


class RotaryEmbedding(nn.Module):
    """Precomputed cos/sin tables; `forward` rotates q or k at absolute positions."""

    def __init__(
        self,
        head_dim: int,
        max_positions: int,
        theta: float = 1e6,
        yarn_factor: float = 1.0,
        yarn_original_max_positions: int = 2048,
    ):
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        attention_scale = 1.0
        if yarn_factor > 1.0:
            inv_freq = yarn_inverse_frequencies(inv_freq, yarn_factor, yarn_original_max_positions)
            attention_scale = 0.1 * math.log(yarn_factor) + 1.0
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float64), inv_freq)
        # (max_positions, head_dim / 2), stored in float32 and excluded from checkpoints.
        self.register_buffer("cos", (angles.cos() * attention_scale).float(), persistent=False)
        self.register_buffer("sin", (angles.sin() * attention_scale).float(), persistent=False)

    def forward(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """x: (B, heads, T, head_dim) at positions start..start+T-1."""
        length = x.shape[-2]
        if start + length > self.cos.shape[0]:
            raise ValueError(
                f"position {start + length} is past the RoPE table ({self.cos.shape[0]}); "
                "raise max_seq_len or use YaRN scaling"
            )
        cos = self.cos[start : start + length].to(x.dtype)  # (T, head_dim/2)
        sin = self.sin[start : start + length].to(x.dtype)
        first, second = x.chunk(2, dim=-1)  # rotate-half convention
        return torch.cat((first * cos - second * sin, first * sin + second * cos), dim=-1)
