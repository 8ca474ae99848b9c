"""Feed-forward layers: the SwiGLU MLP and its mixture-of-experts variant."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from omni_model.config import StackConfig


class SwiGLU(nn.Module):
    def __init__(self, hidden: int, inner: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inner, bias=False)
        self.up_proj = nn.Linear(hidden, inner, bias=False)
        self.down_proj = nn.Linear(inner, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoE(nn.Module):
    """Top-k routed SwiGLU experts with a Switch-style load-balancing loss.

    `aux_loss` after each forward is num_experts * sum_e(fraction routed to e * mean
    router probability of e): 1.0 when balanced, up to num_experts when collapsed.
    """

    def __init__(self, config: StackConfig):
        super().__init__()
        self.num_experts = config.num_experts
        self.top_k = config.experts_per_token
        self.router = nn.Linear(config.hidden, config.num_experts, bias=False)
        self.experts = nn.ModuleList(
            SwiGLU(config.hidden, config.mlp_hidden) for _ in range(config.num_experts)
        )
        self.aux_loss = torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])  # (N, hidden)
        probs = self.router(tokens).softmax(dim=-1)  # (N, experts)
        weights, chosen = probs.topk(self.top_k, dim=-1)  # (N, top_k)
        if self.top_k > 1:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(tokens)
        for expert_id, expert in enumerate(self.experts):
            rows, slot = (chosen == expert_id).nonzero(as_tuple=True)
            if rows.numel():
                out.index_add_(0, rows, expert(tokens[rows]) * weights[rows, slot, None])
        routed = F.one_hot(chosen, self.num_experts).float().sum(dim=1).mean(dim=0)  # (experts,)
        self.aux_loss = self.num_experts * (routed / self.top_k * probs.mean(dim=0)).sum()
        return out.view(shape)


def make_mlp(config: StackConfig) -> nn.Module:
    return MoE(config) if config.use_moe else SwiGLU(config.hidden, config.mlp_hidden)
