"""Token sampling: temperature, top-p, top-k and a repetition penalty, batched over rows.

A generation step samples the text token and all 8 codebooks; doing the codebooks as one
(8, vocab) batch costs one set of tensor ops instead of eight, which matters at batch 1
where a step is only a few milliseconds of matrix work.
"""

from __future__ import annotations

import torch


def sample(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """logits: (..., vocab) -> ids (...,) long; temperature 0 means greedy."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    vocab = logits.shape[-1]
    rows = logits.reshape(-1, vocab).float() / temperature  # (N, vocab)
    if top_k > 0:
        kth = torch.topk(rows, min(top_k, vocab), dim=-1).values[:, -1:]  # (N, 1)
        rows = rows.masked_fill(rows < kth, float("-inf"))
    probs = rows.softmax(dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    ids = torch.multinomial(probs, 1, generator=generator)  # (N, 1)
    return ids.view(logits.shape[:-1])


def penalize_repeats(logits: torch.Tensor, recent: list[list[int]], penalty: float) -> torch.Tensor:
    """logits: (rows, vocab); make each row's recently emitted ids less likely (CTRL-style:
    divide positive logits, multiply negative ones by the penalty)."""
    if penalty == 1.0 or not any(recent):
        return logits
    repeated = torch.zeros_like(logits, dtype=torch.bool)  # (rows, vocab)
    for row, ids in enumerate(recent):
        repeated[row, ids] = True
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(repeated, penalized, logits)
