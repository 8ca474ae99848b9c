"""Pre-norm transformer block and a stack of them sharing one rotary table."""

from __future__ import annotations

import torch
from torch import nn

from omni_model.config import StackConfig
from omni_model.modules.attention import Attention, KVCache
from omni_model.modules.mlp import MoE, make_mlp
from omni_model.modules.norm import RMSNorm
from omni_model.modules.rope import RotaryEmbedding


class Block(nn.Module):
    def __init__(self, config: StackConfig):
        super().__init__()
        self.attn_norm = RMSNorm(config.hidden, config.norm_eps)
        self.attn = Attention(config)
        self.mlp_norm = RMSNorm(config.hidden, config.norm_eps)
        self.mlp = make_mlp(config)

    def forward(
        self, x: torch.Tensor, rope: RotaryEmbedding, start: int, cache: KVCache | None
    ) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), rope, start, cache)
        return x + self.mlp(self.mlp_norm(x))


class Stack(nn.Module):
    """`num_layers` blocks; `forward` can also return the output of one inner layer."""

    def __init__(self, config: StackConfig, max_positions: int):
        super().__init__()
        self.config = config
        self.rope = RotaryEmbedding(
            config.head_dim,
            max_positions,
            config.rope_theta,
            config.yarn_factor,
            config.yarn_original_max_positions,
        )
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_layers))

    def new_cache(self, batch: int, max_len: int, device, dtype) -> list[KVCache]:
        c = self.config
        return [
            KVCache(batch, c.num_kv_heads, max_len, c.head_dim, device=device, dtype=dtype)
            for _ in self.layers
        ]

    def forward(
        self,
        x: torch.Tensor,
        start: int = 0,
        cache: list[KVCache] | None = None,
        tap_layer: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, T, hidden) -> (last layer output, output of layer `tap_layer` or None)."""
        tapped = None
        for index, layer in enumerate(self.layers):
            x = layer(x, self.rope, start, None if cache is None else cache[index])
            if index == tap_layer:
                tapped = x
        return x, tapped

    def aux_loss(self) -> torch.Tensor:
        """Sum of the MoE balancing losses of the last forward (0 for dense stacks)."""
        losses = [layer.mlp.aux_loss for layer in self.layers if isinstance(layer.mlp, MoE)]
        return torch.stack(losses).sum() if losses else torch.zeros(())
