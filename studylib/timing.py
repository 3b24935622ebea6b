"""The one timing helper: wall time of a call after untimed warm-up calls, and the rate it implies. Used by the
latency and throughput of the benchmark table (``measure``), feature-extraction speed (``features``), the
retraining estimate (``estimate``) and the benchmarks (``benchmarks.timing`` re-exports it).

    time_call(lambda: model(x), warmup=10, repeats=50)["median_s"]   # seconds per call
    rate(lambda: model(batch), len(batch), warmup=1, repeats=3)       # images per second

Warm-up calls matter on these CPUs: the first call of a shape builds oneDNN primitives and allocates.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable


def time_call(fn: Callable[[], object], *, warmup: int = 2, repeats: int = 5,
              sync: Callable[[], None] | None = None) -> dict:
    """Wall time of ``fn()`` in seconds after ``warmup`` untimed calls, over ``repeats`` timed calls:
    {"median_s", "min_s", "total_s", "all_s"}. ``sync`` runs after every call (e.g. torch.cuda.synchronize)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        fn()
        if sync:
            sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "total_s": sum(times), "all_s": times}


def rate(fn: Callable[[], object], work_per_call: float, *, warmup: int = 1, repeats: int = 1) -> float:
    """Work units (images, FLOPs) per second of ``fn()``, which does ``work_per_call`` units per call: total
    over ``repeats`` timed calls after ``warmup`` untimed ones."""
    return repeats * work_per_call / time_call(fn, warmup=warmup, repeats=repeats)["total_s"]
