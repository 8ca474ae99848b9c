"""Projector from a side encoder's features into the Thinker's hidden space."""

import torch
from torch import nn


class Projector(nn.Module):
    """LayerNorm -> Linear -> GELU -> Linear, as in DESIGN.md section 2."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.fc1 = nn.Linear(in_dim, out_dim)
        self.fc2 = nn.Linear(out_dim, out_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features: (..., in_dim) -> (..., out_dim), in this projector's dtype (the encoder
        may run in float32 under a bfloat16 model)."""
        features = features.to(self.fc1.weight.dtype)
        return self.fc2(nn.functional.gelu(self.fc1(self.norm(features))))
