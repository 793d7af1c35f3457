"""Batch-parallel CUDA kernels: one thread per row.

Thread ``r`` runs row ``r``'s forward recursion (``L`` or ``theta``),
keeping it in the output buffer, then the backward one (``R`` or ``phi``),
combining on the fly. Consecutive threads take consecutive rows, so at each
step a warp reads 32 rows at one position (position-major order); with the
``(B, N)`` row-major layout these reads are strided by ``N`` and each warp
touches 32 sectors per step, which the L1 cache turns into reuse over the
next three positions. The forward values go through device memory
(about 80 B per element for real inputs), and a small batch cannot fill the
GPU: this kernel is the simple baseline; :mod:`bknumba.gpu.sequence` is
faster for every shape measured (see ``docs/benchmarks-cuda.md``).
"""
from __future__ import annotations

from functools import lru_cache

from numba import cuda

from . import _device as dv

__all__ = ["run_batch"]


@lru_cache(maxsize=None)
def _batch_kernel(theta, rec, comb):
    @cuda.jit
    def kern(a, k, z, mask, out, bad, scnt, rtol2):
        r = cuda.grid(1)
        nrows, n = a.shape
        if r >= nrows:
            return
        zz = z[r]
        bb = n
        if not theta:
            w = 0j
            for p in range(n):
                d = a[r, p] - zz
                if rec and not mask[r, p]:
                    lv = d
                    sc = dv.abs2(d)
                else:
                    if p > 0:
                        qv = k[r, p - 1] * w
                    else:
                        qv = 0j
                    lv = d - qv
                    sc = dv.abs2(d) + dv.abs2(qv)
                if dv.small_pivot(dv.abs2(lv), sc, rtol2):
                    bb = min(bb, p)
                out[r, p] = lv
                w = dv.inv(lv)
            u = 0j
            for p in range(n - 1, -1, -1):
                d = a[r, p] - zz
                unmasked = True
                if rec or comb:
                    unmasked = mask[r, p]
                if p == n - 1 or (rec and not unmasked):
                    rv = d
                    sc = dv.abs2(d)
                else:
                    qv = k[r, p] * u
                    rv = d - qv
                    sc = dv.abs2(d) + dv.abs2(qv)
                m2 = dv.abs2(rv)
                if dv.small_pivot(m2, sc, rtol2):
                    bb = min(bb, p)
                u = dv.inv(rv)
                if comb and not unmasked:
                    out[r, p] = 0j
                else:
                    lv = out[r, p]
                    ev = lv + rv - d
                    if dv.small_pivot(dv.abs2(ev), dv.abs2(lv) + m2, rtol2):
                        bb = min(bb, p)
                    out[r, p] = dv.inv(ev)
        else:
            tx = 1.0 + 0j
            ty = 0j
            tc = 0.0
            for p in range(n):
                out[r, p] = tx
                scnt[r, p] = tc
                d = a[r, p] - zz
                uv = d * tx
                if p == 0 or (rec and not mask[r, p]):
                    nx = uv
                    vv = 0j
                else:
                    vv = k[r, p - 1] * ty
                    nx = uv - vv
                if p == n - 1 and dv.cancelled(nx, uv, vv, rtol2):
                    bb = n - 1
                tx, ty, tc = dv.renorm2(nx, tx, tc)
            # theta[N] alone into range, so that 1 / theta[N] is finite
            tx, _, ncnt = dv.renorm2(tx, 0j, tc)
            if tx.real == 0.0 and tx.imag == 0.0:
                bb = n - 1
            tinv = dv.inv(tx)
            px = 1.0 + 0j
            py = 0j
            pc = 0.0
            for p in range(n - 1, -1, -1):
                if comb and not mask[r, p]:
                    out[r, p] = 0j
                else:
                    gv = out[r, p] * px * tinv
                    f = dv.pow2(scnt[r, p] + pc - ncnt)
                    gv = complex(gv.real * f, gv.imag * f)
                    if dv.out_of_range(gv):
                        bb = min(bb, p)
                    out[r, p] = gv
                if p > 0:
                    d = a[r, p] - zz
                    uv = d * px
                    if p == n - 1 or (rec and not mask[r, p]):
                        nx = uv
                    else:
                        nx = uv - k[r, p] * py
                    px, py, pc = dv.renorm2(nx, px, pc)
        bad[r] = bb

    return kern


def run_batch(a, k, z, mask, rec, comb, theta, out, bad, *, tpb, rtol, dummies):
    """Launch the one-thread-per-row kernel (device arrays; results written)."""
    batch, n = a.shape
    if theta:
        from .sequence import large_workspace

        scnt = large_workspace("batch_cnt", (batch, n))
    else:
        scnt = dummies["cnt"]
    kern = _batch_kernel(theta, rec, comb)
    kern[max(1, (batch + tpb - 1) // tpb), tpb](a, k, z, mask, out, bad, scnt, rtol * rtol)
