"""Grouped-query self-attention with per-head q/k RMSNorm, RoPE and a KV cache."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from omni_model.config import StackConfig
from omni_model.modules.norm import RMSNorm
from omni_model.modules.rope import RotaryEmbedding


class KVCache:
    """Preallocated keys and values of one attention layer.

    `length` counts the positions already written; a forward pass of T new positions
    writes them at [length, length + T) and attends to everything up to there.
    """

    def __init__(self, batch: int, kv_heads: int, max_len: int, head_dim: int, *, device, dtype):
        shape = (batch, kv_heads, max_len, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """keys, values: (B, kv_heads, T, head_dim); returns all cached positions."""
        end = self.length + keys.shape[2]
        if end > self.keys.shape[2]:
            raise ValueError(f"KV cache holds {self.keys.shape[2]} positions, asked for {end}")
        self.keys[:, :, self.length : end] = keys
        self.values[:, :, self.length : end] = values
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


class Attention(nn.Module):
    def __init__(self, config: StackConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        self.q_proj = nn.Linear(config.hidden, config.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden, config.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden, config.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(config.num_heads * self.head_dim, config.hidden, bias=False)
        self.q_norm = RMSNorm(self.head_dim, config.norm_eps)
        self.k_norm = RMSNorm(self.head_dim, config.norm_eps)

    def forward(
        self, x: torch.Tensor, rope: RotaryEmbedding, start: int, cache: KVCache | None
    ) -> torch.Tensor:
        """x: (B, T, hidden) at positions start..start+T-1 -> (B, T, hidden)."""
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(batch, length, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(batch, length, self.num_kv_heads, self.head_dim)
        q = rope(self.q_norm(q).transpose(1, 2), start)  # (B, heads, T, head_dim)
        k = rope(self.k_norm(k).transpose(1, 2), start)  # (B, kv_heads, T, head_dim)
        v = v.transpose(1, 2)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, kv_heads, start+T, head_dim)
        mask, is_causal = None, length > 1
        if length > 1 and k.shape[2] > length:
            # New positions see the whole cache plus themselves causally.
            mask = torch.ones(length, k.shape[2], dtype=torch.bool, device=x.device)
            mask = mask.tril(diagonal=k.shape[2] - length)
            is_causal = False
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=True
        )  # (B, heads, T, head_dim)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))
