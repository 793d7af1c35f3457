"""CPU kernel throughput without the public call's overheads: SIMD tiles vs scalar tiles.

The drivers of ``bknumba.cpu`` are called directly on validated float64 inputs
with a preallocated output (no validation, no allocation, no page faults), at 1
thread and at all of Numba's threads; the best of ``--repeats`` runs after a
warm-up (compile time excluded), over ``--rounds`` interleaved rounds. Same inputs as ``bknumba bench`` (the model's:
``a = -2 + U(-3, 3)``, ``k ~ U(0.5, 1.5)``, ``z = 1j``). A memory copy of the
same size (read + write) in the same run gives the machine's limit: the
kernels read ``a`` and ``k`` and write ``G``, 32 bytes per element (the copy
runs on the same number of threads). The last rows time the public
``bknumba.bk_core`` on the same inputs (validation, finiteness check, kernel,
singular check) with a fresh result array and with ``out=``.

Run:  python benchmarks/bench_cpu_kernels.py [--shape 4096 512] [--repeats 7]
"""
from __future__ import annotations

import argparse
import os
import sys

import numba
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import bknumba  # noqa: E402
from bknumba._config import simd_width  # noqa: E402
from bknumba.cpu import ratio, theta_phi  # noqa: E402
from bknumba.cpu.simd import lanes  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import best_s as best  # noqa: E402


@numba.njit(parallel=True)
def _copy(dst, src):
    for i in numba.prange(src.size):
        dst[i] = src[i]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", type=int, nargs=2, default=(4096, 512))
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--sparsity", type=float, default=0.5, help="for the local kernels")
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved rounds over all kernels (best kept: a noisy machine)")
    args = ap.parse_args(argv)
    batch, n = args.shape
    rng = np.random.default_rng(0)
    a = -2 + rng.uniform(-3, 3, (batch, n))
    k = rng.uniform(0.5, 1.5, (batch, n - 1))
    z = np.full(batch, 1j)
    mask = rng.random((batch, n)) >= args.sparsity
    out = np.empty((batch, n), dtype=np.complex128)
    bad = np.empty(batch, dtype=np.int64)
    fin = np.empty(batch)
    width = simd_width()
    proto = lanes(width)
    rtol2 = 1e-26
    tile = 4
    chunks = 4 * numba.config.NUMBA_NUM_THREADS
    src = np.ones(4 * batch * n)  # 32 B per element: a copy of the kernels' traffic
    dst = np.empty_like(src)
    kernels = {
        "ratio SIMD": lambda: ratio.ratio_simd_driver(a, k, z, None, out, bad, rtol2, chunks,
                                                      proto, fin),
        "ratio scalar tiles": lambda: ratio.ratio_driver(a, k, z, None, None, out, bad, rtol2,
                                                         tile, chunks),
        "theta_phi SIMD": lambda: theta_phi.theta_phi_simd_driver(
            a, k, z, out, bad, rtol2, chunks, theta_phi._POW, proto, fin),
        "theta_phi scalar tiles": lambda: theta_phi.theta_phi_driver(
            a, k, z, None, None, out, bad, rtol2, tile, chunks, theta_phi._POW,
            np.empty((3, 0, n + 1)), np.empty((3, 0, n))),
        f"local {args.sparsity:.0%} SIMD, every position": lambda: ratio.ratio_simd_driver(
            a, k, z, mask, out, bad, rtol2, chunks, proto, fin, mask),
        f"local {args.sparsity:.0%} SIMD, walk": lambda: ratio.local_simd_driver(
            a, k, z, mask, out, bad, rtol2, chunks, proto),
        f"local {args.sparsity:.0%} row kernel": lambda: ratio.local_driver(
            a, k, z, mask, out, bad, rtol2, chunks),
        # the public call: validation (finiteness fused into the SIMD sweeps), the
        # kernel, the singular check; a fresh result array, or out=
        "bk_core ratio": lambda: bknumba.bk_core(a, k, 1.0, 1j),
        "bk_core ratio, out=": lambda: bknumba.bk_core(a, k, 1.0, 1j, out=out),
        "bk_core theta_phi": lambda: bknumba.bk_core(a, k, 1.0, 1j, method="theta_phi"),
        "bk_core theta_phi, out=": lambda: bknumba.bk_core(a, k, 1.0, 1j, method="theta_phi",
                                                           out=out),
        f"sparse_bk_core local {args.sparsity:.0%}, out=": lambda: bknumba.sparse_bk_core(
            a, k, 1.0, mask, 1j, semantics="local", out=out),
        f"sparse_bk_core seed {args.sparsity:.0%}, out=": lambda: bknumba.sparse_bk_core(
            a, k, 1.0, mask, 1j, semantics="seed", out=out),
    }
    print(f"# ({batch}, {n}), SIMD width {width}, numba threads "
          f"{numba.config.NUMBA_NUM_THREADS}, {os.cpu_count()} CPUs")
    for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
        numba.set_num_threads(threads)
        times = {}
        for _ in range(args.rounds):
            for name, fn in [("copy", lambda: _copy(dst, src))] + list(kernels.items()):
                times[name] = min(times.get(name, np.inf), best(fn, args.repeats))
        gbs = 2 * src.nbytes / times.pop("copy") / 1e9
        print(f"threads {threads}: memory copy {gbs:.1f} GB/s "
              f"(= {gbs / 32 * 1e3:.0f} M elements/s at 32 B/element)")
        for name, t in times.items():
            rate = batch * n / t
            print(f"  {name:28s} {rate / 1e6:7.1f} M elements/s  {rate * 32 / 1e9:5.2f} GB/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
