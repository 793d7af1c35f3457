"""Element-wise helper kernels of the GPU API (validation, k = b * c, NaN rows)."""
from __future__ import annotations

import math

from numba import cuda, types

#: Threads per block of :func:`first_nonfinite_blocks` (its shared buffer's size).
NF_THREADS = 128


@cuda.jit(device=True, inline=True)
def _finite(v):
    # x - x is 0 for finite x and NaN for NaN or +-inf; no branches
    return ((v.real - v.real) == 0.0) & ((v.imag - v.imag) == 0.0)


@cuda.jit
def first_nonfinite_blocks(x, flags):
    """``flags[block]`` = the first non-finite flat index among the positions this
    block visits (grid-stride), or ``x.size``. Every block writes its entry, so
    ``flags`` needs no initialisation; the host takes the minimum. Each thread
    keeps four loads in flight and no branch depends on the loaded values."""
    best_sh = cuda.shared.array(NF_THREADS, types.int64)
    tid = cuda.threadIdx.x
    size = x.size
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    best = size
    while i + 3 * stride < size:
        v0 = x[i]
        v1 = x[i + stride]
        v2 = x[i + 2 * stride]
        v3 = x[i + 3 * stride]
        # positions ascend within a thread, so the first bad one seen is its smallest
        if best == size:
            best = min(min(i if not _finite(v0) else size, i + stride if not _finite(v1) else size),
                       min(i + 2 * stride if not _finite(v2) else size,
                           i + 3 * stride if not _finite(v3) else size))
        i += 4 * stride
    while i < size:
        if best == size and not _finite(x[i]):
            best = i
        i += stride
    best_sh[tid] = best
    cuda.syncthreads()
    step = NF_THREADS // 2
    while step > 0:
        if tid < step and best_sh[tid + step] < best_sh[tid]:
            best_sh[tid] = best_sh[tid + step]
        cuda.syncthreads()
        step //= 2
    if tid == 0:
        flags[cuda.blockIdx.x] = best_sh[0]


@cuda.jit
def mask_check(x, out, res):
    # x (R, N) any numeric -> out (B, N) uint8, R in {1, B}; res: first bad flat index
    r0, i0 = cuda.grid(2)
    sr, si = cuda.gridsize(2)
    for r in range(r0, out.shape[0], sr):
        for i in range(i0, out.shape[1], si):
            rr = r if x.shape[0] > 1 else 0
            v = x[rr, i]
            if v != 0 and v != 1:
                cuda.atomic.min(res, 0, rr * out.shape[1] + i)
            out[r, i] = 1 if v != 0 else 0


@cuda.jit
def mul_k(b, c, k):
    r0, i0 = cuda.grid(2)
    sr, si = cuda.gridsize(2)
    for r in range(r0, k.shape[0], sr):
        for i in range(i0, k.shape[1], si):
            rb = r if b.shape[0] > 1 else 0
            ib = i if b.shape[1] > 1 else 0
            rc = r if c.shape[0] > 1 else 0
            ic = i if c.shape[1] > 1 else 0
            k[r, i] = b[rb, ib] * c[rc, ic]


@cuda.jit
def nan_rows(out, bad):
    r0, i0 = cuda.grid(2)
    sr, si = cuda.gridsize(2)
    for r in range(r0, out.shape[0], sr):
        if bad[r] < out.shape[1]:
            for i in range(i0, out.shape[1], si):
                out[r, i] = complex(math.nan, math.nan)


@cuda.jit
def normalise(parts, mant, expo):
    # parts (3, B, M) -> mantissa complex (B, M), exponent int64, like core._normalise
    r0, i0 = cuda.grid(2)
    sr, si = cuda.gridsize(2)
    for r in range(r0, mant.shape[0], sr):
        for i in range(i0, mant.shape[1], si):
            re = parts[0, r, i]
            im = parts[1, r, i]
            _, e = math.frexp(max(abs(re), abs(im)))
            expo[r, i] = int(parts[2, r, i]) * 200 + e
            mant[r, i] = complex(math.ldexp(re, -e), math.ldexp(im, -e))


@cuda.jit
def fill(x, v):
    i = cuda.grid(1)
    if i < x.size:
        x[i] = v

