"""Where the time of one public GPU call goes (real GPU only; never under the simulator).

For device-resident inputs, ``bknumba.bk_core(a_d, k_d, 1.0, 1j, device="cuda")``
is timed whole (with and without ``check_finite``) and by stage: input
preparation (``bknumba.gpu.api._prepare_device``), the finiteness check of
``a``, the computation with and without a preallocated output (``compute``),
the allocations and the copy back of the per-row flags. Wall time around a
``cuda.synchronize()``, median of 20 after a warm-up call; milliseconds.

Usage::

    python benchmarks/bench_cuda_api.py
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from numba import cuda  # noqa: E402

import bknumba  # noqa: E402
from bknumba.gpu import api  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import sync_median  # noqa: E402

SHAPES = ((4096, 4096), (2**16, 256), (2**18, 256), (64, 2**20))


def sync_time(fn, reps=20):
    """Median wall time in ms of ``fn(); cuda.synchronize()`` after one warm-up call."""
    return sync_median(fn, reps) * 1e3


def main():
    print(cuda.get_current_device().name)
    rng = np.random.default_rng(0)
    c = api._cuda()
    for batch, n in SHAPES:
        a = -2 + rng.uniform(-3, 3, (batch, n))
        k = 1 + rng.uniform(-0.1, 0.1, (batch, n - 1))
        a_d, k_d = cuda.to_device(a), cuda.to_device(k)
        r = {
            "api_total": sync_time(lambda: bknumba.bk_core(a_d, k_d, 1.0, 1j, device="cuda")),
            "api_nocheck": sync_time(lambda: bknumba.bk_core(a_d, k_d, 1.0, 1j, device="cuda",
                                                             check_finite=False)),
            "prepare": sync_time(lambda: api._prepare_device(c, a_d, k_d, 1.0, 1j, None, True)),
            "prepare_nocheck": sync_time(
                lambda: api._prepare_device(c, a_d, k_d, 1.0, 1j, None, False)),
            "check_a": sync_time(lambda: api._check_device_finite(c, [("a", a_d, True)])),
        }
        dp = api._prepare_device(c, a_d, k_d, 1.0, 1j, None, False)
        r["compute"] = sync_time(lambda: api.compute(dp.a, dp.k, dp.z, None, method="ratio",
                                                     rec=False, comb=False))
        out = cuda.device_array((batch, n), dtype=np.complex128)
        r["compute_out"] = sync_time(lambda: api.compute(dp.a, dp.k, dp.z, None, method="ratio",
                                                         rec=False, comb=False, out=out))
        r["alloc_out"] = sync_time(lambda: cuda.device_array((batch, n), dtype=np.complex128))
        bad = cuda.device_array(batch, dtype=np.int64)
        r["flags_d2h"] = sync_time(lambda: bad.copy_to_host())
        rate = batch * n / 1e6  # elements per ms / 1e6 = G elements/s
        print(f"({batch}, {n}) kernel {rate / r['compute_out']:.1f} G elem/s, public call "
              f"{rate / r['api_total']:.1f} G elem/s; ms:",
              json.dumps({key: round(v, 3) for key, v in r.items()}), flush=True)
        del a_d, k_d, dp, out


if __name__ == "__main__":
    main()
