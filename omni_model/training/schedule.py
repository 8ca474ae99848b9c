"""The learning-rate schedule every training loop here uses (stages, encoder pretraining)."""

import math


def cosine_lr(step: int, total: int, base: float, warmup: int, min_ratio: float) -> float:
    """Linear warmup over `warmup` steps, then cosine from base to base * min_ratio."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
