"""Linear layers with their element passes, row blocks on Numba's threads (float32).

At the layers' sizes (a few thousand tokens, 64-256 features) OpenBLAS's own
threading gains little, and bknumba's serial element passes (bias, ReLU,
LayerNorm, GELU) left the second core idle, while alternating OpenBLAS's thread
pool with Numba's costs more than it saves (BENCHMARKS.md section 4). Here one
parallel region does a whole layer: ``prange`` over row blocks, each block a
single-threaded GEMM of NumPy's own OpenBLAS (the CBLAS ``sgemm`` of the
``libscipy_openblas64_`` that NumPy's wheels bundle) followed by the block's
element pass, so that one pool runs everything and both cores work through the
element passes too. The library's thread count is set to 1 for the region and
restored after it. That count is process-wide (``openblas_set_num_threads_local``
sets the global count in the pthreads builds NumPy ships), so it is set once
around the region, one fused call at a time (a lock); NumPy calls made by other
Python threads during a fused call run single-threaded.

:func:`available` is False where that library or those symbols are missing (a
NumPy built against MKL or a system BLAS, OpenBLAS older than 0.3.27) or with
``BKNUMBA_NN_GEMM=numpy``; :mod:`bknumba.nn.layers` then keeps its NumPy path.
Nothing is loaded or compiled at import.
"""
from __future__ import annotations

import ctypes
import glob
import os
import threading
from functools import lru_cache

import numpy as np

__all__ = ["available", "blas_threads", "linear_rows", "MIN_ROWS_PER_THREAD"]

#: Fewer rows than this per thread: the NumPy path (one BLAS call) instead.
MIN_ROWS_PER_THREAD = 64

#: Element passes of :func:`linear_rows`.
BIAS, RELU, GELU, LN_GELU = 0, 1, 2, 3

# one fused call at a time (see linear_rows)
_LOCK = threading.Lock()

# CBLAS enumerations (row-major storage, no transpose, transpose)
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


@lru_cache(maxsize=None)
def _library():
    """``(sgemm, set_num_threads_local, get_num_threads)`` of NumPy's bundled OpenBLAS,
    or None."""
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
                get_threads = lib.scipy_openblas_get_num_threads64_
            except (OSError, AttributeError):
                continue
            sgemm.argtypes = [i32, i32, i32, i64, i64, i64, f32, vp, i64, vp, i64, f32, vp, i64]
            sgemm.restype = None
            set_local.argtypes = [i32]
            set_local.restype = i32
            get_threads.argtypes = []
            get_threads.restype = i32
            return sgemm, set_local, get_threads
    return None


def blas_threads():
    """The thread count of NumPy's bundled OpenBLAS (process-wide), or None without it."""
    lib = _library()
    return None if lib is None else int(lib[2]())


def available() -> bool:
    """Whether :func:`linear_rows` can run (NumPy's OpenBLAS found, see the module docstring)."""
    return _library() is not None


@lru_cache(maxsize=None)
def _kernel():
    """The parallel kernel, compiled on first use (not cached on disk: it holds the
    library's function addresses, which change between processes)."""
    sgemm = _library()[0]
    from numba import njit, prange

    from ._kernels import _SERIAL, gelu_f32, wide_vectors

    f32 = np.float32
    opts = dict(_SERIAL, parallel=True, cache=False)

    # row sums for the LayerNorm statistics, in float64 with the additions free to be
    # reordered (fastmath "reassoc"): LLVM vectorises them (3.5x faster than eight
    # scalar partial sums); the order is fixed by the compiled code, not by the threads
    fm = dict(_SERIAL, fastmath={"reassoc", "contract"})

    @njit(**fm)
    def _sum(v):  # pragma: no cover - compiled
        """``sum(v)`` in float64."""
        wide_vectors()
        s = 0.0
        for j in range(v.size):
            s += v[j]
        return s

    @njit(**fm)
    def _sumsq(v, c):  # pragma: no cover - compiled
        """``sum((v - c)**2)`` in float64."""
        wide_vectors()
        s = 0.0
        for j in range(v.size):
            x = v[j] - c
            s += x * x
        return s

    @njit(inline="always", **_SERIAL)
    def _gemm(a, b, c, m):  # pragma: no cover - compiled
        """``c[:m] = a[:m] @ b.T``, one single-threaded sgemm (C-contiguous operands)."""
        kd = a.shape[1]
        n = b.shape[0]
        sgemm(_ROW_MAJOR, _NO_TRANS, _TRANS, m, n, kd, f32(1.0), a.ctypes.data, kd,
              b.ctypes.data, kd, f32(0.0), c.ctypes.data, n)

    @njit(inline="always", **_SERIAL)
    def _pass(y, i0, i1, bias, ln_w, ln_b, eps, mode):  # pragma: no cover - compiled
        """The element pass ``mode`` on rows ``i0:i1`` of ``y``, in place."""
        wide_vectors()  # inlined: sets the width of the prange body's function
        n = y.shape[1]
        inv_n = 1.0 / n
        for i in range(i0, i1):
            if mode == BIAS:
                for j in range(n):
                    y[i, j] += bias[j]
            elif mode == RELU:
                for j in range(n):
                    v = y[i, j] + bias[j]
                    y[i, j] = f32(0.0) if v < f32(0.0) else v  # NaN propagates
            elif mode == GELU:
                for j in range(n):
                    y[i, j] = gelu_f32(y[i, j] + bias[j])
            else:  # LN_GELU
                # LayerNorm of the row (float64 statistics), then GELU
                for j in range(n):
                    y[i, j] += bias[j]
                mean = _sum(y[i]) * inv_n
                inv = 1.0 / np.sqrt(_sumsq(y[i], mean) * inv_n + eps)
                mf = f32(mean)
                sf = f32(inv)
                for j in range(n):
                    y[i, j] = gelu_f32((y[i, j] - mf) * sf * ln_w[j] + ln_b[j])

    @njit(**opts)
    def rows(x2, w, bias, ln_w, ln_b, eps, mode, out, parts):  # pragma: no cover - compiled
        m = x2.shape[0]
        for p in prange(parts):
            r0 = p * m // parts
            r1 = (p + 1) * m // parts
            if r1 > r0:
                _gemm(x2[r0:], w, out[r0:], r1 - r0)
                _pass(out, r0, r1, bias, ln_w, ln_b, eps, mode)

    return rows


def _parts(rows):
    """Row blocks for ``rows`` rows (one per Numba thread), or 0 where the fused path
    does not apply: library missing; fewer than :data:`MIN_ROWS_PER_THREAD` rows per
    thread; one Numba thread while the library has more (its own threads then do the
    GEMM faster). With one Numba thread and one library thread the layer runs as one
    serial block: its GEMM, then its pass on rows still in cache."""
    if not available() or rows < 1:
        return 0
    import numba

    threads = numba.get_num_threads()
    if threads == 1:
        return 1 if blas_threads() == 1 else 0
    parts = min(threads, rows // MIN_ROWS_PER_THREAD)
    return parts if parts >= 2 else 0


def linear_rows(x2, weight, bias, mode, out, ln_w=None, ln_b=None, eps=1e-5):
    """``out = pass(x2 @ weight.T + bias)`` for float32 C-contiguous 2-D operands, the
    pass one of :data:`BIAS`, :data:`RELU`, :data:`GELU` (exact-erf GELU) or
    :data:`LN_GELU` (LayerNorm with ``ln_w``, ``ln_b``, ``eps``, then GELU). Returns
    False (and does nothing) when the fused path does not apply (:func:`_parts`):
    library missing, with several Numba threads fewer than
    :data:`MIN_ROWS_PER_THREAD` rows per thread, with one Numba thread a library
    running on more."""
    parts = _parts(x2.shape[0])
    if not parts:
        return False
    bias = np.zeros(weight.shape[0], np.float32) if bias is None else np.ascontiguousarray(bias)
    if ln_w is None:
        ln_w = ln_b = bias
    args = (x2, np.ascontiguousarray(weight), bias, np.ascontiguousarray(ln_w),
            np.ascontiguousarray(ln_b), float(eps), int(mode), out, parts)
    kernel = _kernel()
    set_threads = _library()[1]
    # the library's thread count is process-wide (openblas_set_num_threads_local sets
    # the global count in the pthreads builds NumPy ships): set once around the whole
    # region, never inside it, and one fused call at a time, so that it is restored
    with _LOCK:
        old = set_threads(1)
        try:
            kernel(*args)
        finally:
            set_threads(old)
    return True

