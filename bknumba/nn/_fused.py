"""Linear layers with their element passes, row blocks on Numba's threads (float32).

At the layers' sizes (a few thousand tokens, 64-256 features) OpenBLAS's own
threading gains little, and bknumba's serial element passes (bias, ReLU,
LayerNorm, GELU) left the second core idle, while alternating OpenBLAS's thread
pool with Numba's costs more than it saves (BENCHMARKS.md section 4). Here one
parallel region does a whole layer: ``prange`` over row blocks, each block a
single-threaded GEMM of NumPy's own OpenBLAS (the CBLAS ``sgemm`` of the
``libscipy_openblas64_`` that NumPy's wheels bundle, its thread-local thread
count set to 1 for the call with ``openblas_set_num_threads_local`` and then
restored) followed by the block's element pass, so that one pool runs
everything and both cores work through the element passes too.

:func:`available` is False where that library or those symbols are missing (a
NumPy built against MKL or a system BLAS, OpenBLAS older than 0.3.27) or with
``BKNUMBA_NN_GEMM=numpy``; :mod:`bknumba.nn.layers` then keeps its NumPy path.
Nothing is loaded or compiled at import.
"""
from __future__ import annotations

import ctypes
import glob
import os
from functools import lru_cache

import numpy as np

__all__ = ["available", "linear_rows", "MIN_ROWS_PER_THREAD"]

#: Fewer rows than this per thread: the NumPy path (one BLAS call) instead.
MIN_ROWS_PER_THREAD = 64

#: Element passes of :func:`linear_rows`.
BIAS, RELU, GELU, LN_GELU = 0, 1, 2, 3

# CBLAS enumerations (row-major storage, no transpose, transpose)
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


@lru_cache(maxsize=None)
def _library():
    """``(sgemm, set_num_threads_local)`` of NumPy's bundled OpenBLAS, or None."""
    if os.environ.get("BKNUMBA_NN_GEMM", "").strip().lower() == "numpy":
        return None
    base = os.path.dirname(np.__file__)
    patterns = (os.path.join(base, os.pardir, "numpy.libs", "libscipy_openblas64_*"),
                os.path.join(base, ".dylibs", "libscipy_openblas64_*"))
    i32, i64, f32, vp = ctypes.c_int, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            try:
                lib = ctypes.CDLL(path)
                sgemm = lib.scipy_cblas_sgemm64_
                set_local = lib.openblas_set_num_threads_local
            except (OSError, AttributeError):
                continue
            sgemm.argtypes = [i32, i32, i32, i64, i64, i64, f32, vp, i64, vp, i64, f32, vp, i64]
            sgemm.restype = None
            set_local.argtypes = [i32]
            set_local.restype = i32
            return sgemm, set_local
    return None


def available() -> bool:
    """Whether :func:`linear_rows` can run (NumPy's OpenBLAS found, see the module docstring)."""
    return _library() is not None


@lru_cache(maxsize=None)
def _kernel():
    """The parallel kernel, compiled on first use (not cached on disk: it holds the
    library's function addresses, which change between processes)."""
    sgemm, set_local = _library()
    from numba import njit, prange

    from ._kernels import _SERIAL, gelu_f32

    f32 = np.float32
    opts = dict(_SERIAL, parallel=True, cache=False)

    @njit(inline="always", **_SERIAL)
    def _rowsum(v, c, sq):  # pragma: no cover - compiled
        """``sum(v - c)`` or (``sq``) ``sum((v - c)**2)`` in float64, eight partial sums."""
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
        n8 = v.size - v.size % 8
        for j in range(0, n8, 8):
            x0, x1, x2_, x3 = v[j] - c, v[j + 1] - c, v[j + 2] - c, v[j + 3] - c
            x4, x5, x6, x7 = v[j + 4] - c, v[j + 5] - c, v[j + 6] - c, v[j + 7] - c
            if sq:
                x0, x1, x2_, x3 = x0 * x0, x1 * x1, x2_ * x2_, x3 * x3
                x4, x5, x6, x7 = x4 * x4, x5 * x5, x6 * x6, x7 * x7
            a0 += x0
            a1 += x1
            a2 += x2_
            a3 += x3
            a4 += x4
            a5 += x5
            a6 += x6
            a7 += x7
        tot = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
        for j in range(n8, v.size):
            x = v[j] - c
            tot += x * x if sq else x
        return tot

    @njit(**opts)
    def rows(x2, w, bias, ln_w, ln_b, eps, mode, out, parts):  # pragma: no cover - compiled
        m, kd = x2.shape
        n = w.shape[0]
        inv_n = 1.0 / n
        for p in prange(parts):
            r0 = p * m // parts
            r1 = (p + 1) * m // parts
            if r1 <= r0:
                continue
            old = set_local(1)
            sgemm(_ROW_MAJOR, _NO_TRANS, _TRANS, r1 - r0, n, kd, f32(1.0), x2[r0:].ctypes.data, kd,
                  w.ctypes.data, kd, f32(0.0), out[r0:].ctypes.data, n)
            set_local(old)
            for i in range(r0, r1):
                if mode == BIAS:
                    for j in range(n):
                        out[i, j] += bias[j]
                elif mode == RELU:
                    for j in range(n):
                        v = out[i, j] + bias[j]
                        out[i, j] = f32(0.0) if v < f32(0.0) else v  # NaN propagates
                elif mode == GELU:
                    for j in range(n):
                        out[i, j] = gelu_f32(out[i, j] + bias[j])
                else:  # LN_GELU
                    # LayerNorm of the row (float64 statistics, eight partial sums so
                    # that the additions do not form one chain), then GELU
                    for j in range(n):
                        out[i, j] += bias[j]
                    mean = _rowsum(out[i], 0.0, False) * inv_n
                    inv = 1.0 / np.sqrt(_rowsum(out[i], mean, True) * inv_n + eps)
                    mf = f32(mean)
                    sf = f32(inv)
                    for j in range(n):
                        out[i, j] = gelu_f32((out[i, j] - mf) * sf * ln_w[j] + ln_b[j])

    return rows


def linear_rows(x2, weight, bias, mode, out, ln_w=None, ln_b=None, eps=1e-5):
    """``out = pass(x2 @ weight.T + bias)`` for float32 C-contiguous 2-D operands, the
    pass one of :data:`BIAS`, :data:`RELU`, :data:`GELU` (exact-erf GELU) or
    :data:`LN_GELU` (LayerNorm with ``ln_w``, ``ln_b``, ``eps``, then GELU). Returns
    False (and does nothing) when the fused path does not apply: library missing,
    one Numba thread, or fewer than :data:`MIN_ROWS_PER_THREAD` rows per thread."""
    if not available():
        return False
    import numba

    parts = min(numba.get_num_threads(), x2.shape[0] // MIN_ROWS_PER_THREAD)
    if parts < 2:
        return False
    d = weight.shape[0]
    bias = np.zeros(d, np.float32) if bias is None else np.ascontiguousarray(bias)
    if ln_w is None:
        ln_w = ln_b = bias
    _kernel()(x2, np.ascontiguousarray(weight), bias, np.ascontiguousarray(ln_w),
              np.ascontiguousarray(ln_b), float(eps), int(mode), out, parts)
    return True
