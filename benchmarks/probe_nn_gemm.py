"""Probe: the layers' GEMMs as row blocks on Numba's threads, each a single-threaded
call of NumPy's own OpenBLAS, against ``numpy.matmul`` on OpenBLAS's threads.

The mechanism of :mod:`bknumba.nn._fused` (BENCHMARKS.md section 4), GEMM alone;
kept to reproduce the measurement. Needs a NumPy wheel that bundles ``libscipy_openblas64_`` with
``openblas_set_num_threads_local`` (OpenBLAS >= 0.3.27).

Run:  python benchmarks/probe_nn_gemm.py
"""
from __future__ import annotations

import os
import sys

import numba
import numpy as np
from numba import njit, prange

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
from _timing import best_ms as best  # noqa: E402

from bknumba.nn import _fused  # noqa: E402

# NumPy's bundled OpenBLAS, as bknumba.nn._fused loads it (ctypes functions, which
# Numba calls from compiled code)
SGEMM, SET_LOCAL, GET_THREADS = _fused._library()


@njit(parallel=True)
def rows_gemm_relu(x, w, y, parts):
    """``y = relu(x @ w.T)``, ``parts`` row blocks, each one single-threaded sgemm."""
    m, kd = x.shape
    n = w.shape[0]
    for p in prange(parts):
        r0 = p * m // parts
        r1 = (p + 1) * m // parts
        SGEMM(101, 111, 112, r1 - r0, n, kd, np.float32(1.0), x[r0:].ctypes.data, kd,
              w.ctypes.data, kd, np.float32(0.0), y[r0:].ctypes.data, n)
        for i in range(r0, r1):
            for j in range(n):
                y[i, j] = max(y[i, j], np.float32(0.0))


def blocks(x, w, y):
    """:func:`rows_gemm_relu` with the library's thread count at 1 for the region. The
    count is process-wide (``openblas_set_num_threads_local`` sets the global count in
    NumPy's pthreads builds): set and restored outside the region, never inside it."""
    old = SET_LOCAL(1)
    try:
        rows_gemm_relu(x, w, y, numba.get_num_threads())
    finally:
        SET_LOCAL(old)


def main():
    rng = np.random.default_rng(0)
    print(f"OpenBLAS threads for numpy.matmul: {GET_THREADS()}")
    print(f"numba threads {numba.get_num_threads()}, threading layer: ", end="")
    for m, kd, n in [(2048, 64, 128), (2048, 128, 128), (4096, 64, 128), (4096, 128, 64)]:
        x = rng.standard_normal((m, kd)).astype(np.float32)
        w = rng.standard_normal((n, kd)).astype(np.float32)
        y = np.empty((m, n), np.float32)
        blocks(x, w, y)
        if m == 2048 and kd == 64:
            print(numba.threading_layer())
        assert np.allclose(y, np.maximum(x @ w.T, 0), rtol=1e-5, atol=1e-5)
        res = [(best(lambda: np.matmul(x, w.T, out=y)),
                best(lambda: blocks(x, w, y)))
               for _ in range(3)]
        print(f"({m}, {kd}) x ({kd}, {n}): numpy.matmul {min(r[0] for r in res):.3f} ms, "
              f"row blocks + ReLU {min(r[1] for r in res):.3f} ms (best of 3 x 200)")


if __name__ == "__main__":
    main()
