"""Helpers shared by the benchmarks: timing and in-process hardware peaks."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def best_time(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Best wall time of `repeats` calls after `warmup` calls (noise only adds time)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def gemm_peak_flops(size: int = 4096, repeats: int = 5) -> float:
    """fp32 matmul FLOP/s of a size x size GEMM, best of `repeats`."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    return 2 * size**3 / best_time(lambda: a @ b, repeats)


def memory_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes/s of a large tensor copy (read + write), best of `repeats`."""
    source = torch.empty(megabytes * 2**20 // 4)
    target = torch.empty_like(source)
    return 2 * source.numel() * 4 / best_time(lambda: target.copy_(source), repeats)


def matvec_bandwidth(dtype: torch.dtype = torch.float32, megabytes: int = 256) -> float:
    """Weight bytes/s that torch's batch-1 matrix-vector product reads, best of 5: what a
    decoding step can reach at most with these kernels (often well under a plain copy)."""
    columns = 768
    rows = megabytes * 2**20 // (torch.empty((), dtype=dtype).element_size() * columns)
    weight = torch.randn(rows, columns).to(dtype)
    vector = torch.randn(1, columns).to(dtype)
    seconds = best_time(lambda: torch.nn.functional.linear(vector, weight), repeats=5)
    return weight.numel() * weight.element_size() / seconds
