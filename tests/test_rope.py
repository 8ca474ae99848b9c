"""RoPE rotates by position only; YaRN keeps fast dimensions and stretches slow ones."""

import math

import torch

from omni_model.modules.rope import RotaryEmbedding, yarn_inverse_frequencies


def test_attention_scores_depend_only_on_relative_position():
    rope = RotaryEmbedding(head_dim=16, max_positions=64, theta=1e4)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)
    scores = [(rope(q, start + 5) * rope(k, start)).sum().item() for start in (0, 7, 30)]
    assert max(scores) - min(scores) < 1e-4
    assert torch.allclose(rope(q, 0).norm(), q.norm())


def test_yarn_keeps_high_and_interpolates_low_frequencies():
    inv_freq = 1.0 / 1e6 ** (torch.arange(0, 96, 2, dtype=torch.float64) / 96)
    scaled = yarn_inverse_frequencies(inv_freq, factor=4.0, original_max_positions=2048)
    assert torch.allclose(scaled[0], inv_freq[0])  # fastest dimension untouched
    assert torch.allclose(scaled[-1], inv_freq[-1] / 4.0)  # slowest divided by the factor
    assert ((scaled <= inv_freq + 1e-18) & (scaled >= inv_freq / 4.0 - 1e-18)).all()
    rope = RotaryEmbedding(96, 16, yarn_factor=4.0)
    plain = RotaryEmbedding(96, 16)
    expected_scale = 0.1 * math.log(4.0) + 1.0
    norm_ratio = (rope.cos[3] ** 2 + rope.sin[3] ** 2).sqrt() / (
        plain.cos[3] ** 2 + plain.sin[3] ** 2
    ).sqrt()
    assert torch.allclose(norm_ratio, torch.full_like(norm_ratio, expected_scale))
