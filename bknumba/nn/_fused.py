"""Linear layers with their element passes, row blocks on Numba's threads (float32).

At the layers' sizes (a few thousand tokens, 64-256 features) OpenBLAS's own
threading gains little, and bknumba's serial element passes (bias, ReLU,
LayerNorm, GELU) left the second core idle, while alternating OpenBLAS's thread
pool with Numba's costs more than it saves (BENCHMARKS.md section 4). Here one
parallel region does a whole layer: ``prange`` over row blocks, each block a
single-threaded GEMM of NumPy's own OpenBLAS (the CBLAS ``sgemm`` of the
``libscipy_openblas64_`` that NumPy's wheels bundle) followed by the block's
element pass, so that one pool runs everything and both cores work through the
element passes too. Two layers in a row (Linear, pass, Linear, pass: the
MLP blocks of the modules) run as one region (:func:`mlp_rows`): each block
takes its rows through both layers, with one kernel call and the Python around
it instead of two. The library's thread count is set to 1 for the region and
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

__all__ = ["available", "blas_threads", "linear_rows", "mlp_rows", "MIN_ROWS_PER_THREAD"]

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
def _blocks():
    """The row-block steps ``(gemm, pass, max_bits)`` the parallel kernels inline
    (defined on first use: the GEMM holds the library's function address)."""
    sgemm = _library()[0]
    from numba import njit

    from ._kernels import _SERIAL, gelu_f32, wide_vectors

    f32 = np.float32

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

    @njit(inline="always", **_SERIAL)
    def _max_bits(xb, i0, i1):  # pragma: no cover - compiled
        """The largest ``bits & 0x7fffffff`` of rows ``i0:i1`` of the int32 view of
        float32 data: ``>= 0x7f800000`` exactly when one of them is NaN or infinite."""
        wide_vectors()
        acc = np.int32(0)
        for i in range(i0, i1):
            for j in range(xb.shape[1]):
                acc = max(acc, xb[i, j] & np.int32(0x7FFFFFFF))
        return acc

    return _gemm, _pass, _max_bits


#: ``bits & 0x7fffffff`` of a float32 at or above this: NaN or infinite.
NONFINITE_BITS = 0x7F800000


@lru_cache(maxsize=None)
def _kernel():
    """The one-layer parallel kernel, compiled on first use (not cached on disk: it
    holds the library's function addresses, which change between processes)."""
    from numba import njit, prange

    from ._kernels import _SERIAL

    _gemm, _pass, _ = _blocks()

    @njit(**dict(_SERIAL, parallel=True, cache=False))
    def rows(x2, w, bias, ln_w, ln_b, eps, mode, out, parts):  # pragma: no cover - compiled
        m = x2.shape[0]
        for p in prange(parts):
            r0 = p * m // parts
            r1 = (p + 1) * m // parts
            if r1 > r0:
                _gemm(x2[r0:], w, out[r0:], r1 - r0)
                _pass(out, r0, r1, bias, ln_w, ln_b, eps, mode)

    return rows


@lru_cache(maxsize=None)
def _mlp_kernel():
    """The two-layer parallel kernel (see :func:`mlp_rows`), compiled on first use."""
    from numba import njit, prange

    from ._kernels import _SERIAL

    _gemm, _pass, _max_bits = _blocks()

    @njit(**dict(_SERIAL, parallel=True, cache=False))
    def mlp(x2, xb, w1, b1, ln_w, ln_b, eps, mode1, h, w2, b2, mode2, out, bad,
            parts):  # pragma: no cover - compiled
        m = x2.shape[0]
        for p in prange(parts):
            r0 = p * m // parts
            r1 = (p + 1) * m // parts
            if r1 > r0:
                if bad.size:
                    bad[p] = _max_bits(xb, r0, r1)
                # the block's hidden rows depend on its input rows only: no barrier
                _gemm(x2[r0:], w1, h[r0:], r1 - r0)
                _pass(h, r0, r1, b1, ln_w, ln_b, eps, mode1)
                _gemm(h[r0:], w2, out[r0:], r1 - r0)
                _pass(out, r0, r1, b2, b2, b2, eps, mode2)

    return mlp


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
    _run(_kernel(), x2, np.ascontiguousarray(weight), bias, np.ascontiguousarray(ln_w),
         np.ascontiguousarray(ln_b), float(eps), int(mode), out, parts)
    return True


def mlp_rows(x2, weight1, bias1, mode1, hidden, weight2, bias2, mode2, out, ln_w=None,
             ln_b=None, eps=1e-5, check_finite=False):
    """Two layers in one parallel region: ``hidden = pass1(x2 @ weight1.T + bias1)``
    (``mode1`` and the LayerNorm arguments as in :func:`linear_rows`), then
    ``out = pass2(hidden @ weight2.T + bias2)``. Each thread's row block goes through
    both layers (a block's hidden rows depend on its input rows only), so one kernel
    call replaces two and the block's hidden rows are still in cache for the second
    GEMM. With ``check_finite``, each block first tests its input rows for NaN and
    infinity (a bit test on rows about to be read anyway).

    Returns None (and does nothing) where the fused path does not apply
    (:func:`_parts`), else whether every input value was finite (True without
    ``check_finite``). ``hidden`` and ``out`` are float32 C-contiguous work arrays of
    ``(rows, hidden features)`` and ``(rows, out features)``.
    """
    parts = _parts(x2.shape[0])
    if not parts:
        return None
    if ln_w is None:
        ln_w = ln_b = bias1
    bad = np.zeros(parts if check_finite else 0, np.int32)
    _run(_mlp_kernel(), x2, x2.view(np.int32), weight1, bias1, ln_w, ln_b, float(eps),
         int(mode1), hidden, weight2, bias2, int(mode2), out, bad, parts)
    return not check_finite or int(bad.max()) < NONFINITE_BITS


def _run(kernel, *args):
    """``kernel(*args)`` with the library on one thread (the kernel's blocks are the
    threads). Its thread count is process-wide (``openblas_set_num_threads_local``
    sets the global count in the pthreads builds NumPy ships): set once around the
    whole region, never inside it, and one fused call at a time, so that it is
    restored."""
    set_threads = _library()[1]
    with _LOCK:
        old = set_threads(1)
        try:
            kernel(*args)
        finally:
            set_threads(old)

