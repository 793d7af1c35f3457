"""Timing helper shared by the GPU benchmark scripts (imports neither bknumba nor
CUDA at import time, so a script can load it before choosing which bknumba to import)."""
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
