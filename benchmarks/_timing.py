"""Timing helpers shared by the benchmark scripts (import neither bknumba nor CUDA at
import time, so a script can load them before choosing which bknumba to import)."""
from __future__ import annotations

import time

import numpy as np


def sync_median(fn, reps=20):
    """Median wall time in seconds of ``fn(); cuda.synchronize()`` after one warm-up call."""
    from numba import cuda

    fn()
    cuda.synchronize()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def best_s(fn, reps=200):
    """Fastest of ``reps`` wall times of ``fn()`` in seconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def best_ms(fn, reps=200):
    """:func:`best_s` in milliseconds."""
    return best_s(fn, reps) * 1e3
