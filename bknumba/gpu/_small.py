"""Element-wise helper kernels of the GPU API (validation, k = b * c, NaN rows)."""
from __future__ import annotations

import math

from numba import cuda


@cuda.jit
def first_nonfinite(x, res):
    i = cuda.grid(1)
    if i < x.size:
        v = x[i]
        if not (math.isfinite(v.real) and math.isfinite(v.imag)):
            cuda.atomic.min(res, 0, i)


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

