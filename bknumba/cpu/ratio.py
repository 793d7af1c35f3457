"""Ratio-form (pivot) recursions on the CPU: the recursive Green's function.

    L[0] = d[0],      L[i] = d[i] - k[i-1] / L[i-1]
    R[N-1] = d[N-1],  R[i] = d[i] - k[i]   / R[i+1]
    G[i] = 1 / (L[i] + R[i] - d[i]),   d = a - z

Three levels, as in the rest of bknumba:

* :func:`ratio_tile` is the serial worker for one tile of ``w`` rows. The
  rows of a tile are advanced together, position by position, with the row
  index innermost, so that LLVM turns the lane loop into SIMD instructions
  (the recursion itself is a dependent chain and cannot be vectorised along
  the sequence).
* :func:`ratio_driver` is the ``parallel=True`` driver: ``prange`` over
  chunks of tiles, with per-chunk scratch (no races, no atomics).
* :mod:`bknumba.core` validates and dispatches.

Complex arithmetic is written out in real arithmetic: a reciprocal is
``conj(y) / |y|^2``, which vectorises, avoids Numba's branching complex
division and lets the pivot test be explicit (``bk-core.md`` section 7).

Two orders of operations for the coupling ``q = k / P`` (``P`` the previous
pivot). The full recursions (no recursion mask: the full problem and the
"exact" semantics) compute ``(k conj(P)) * (1 / |P|^2)``: the product with ``k``
runs beside the division, so each step's dependency chain is ``|P|^2``, the
division, one product and one subtraction (1.04-1.23x faster on the SIMD tiles
than the reciprocal first, BENCHMARKS.md section 1). ``k conj(P)`` stays a normal float64 only while
``|k|`` is moderate (see :data:`K_LO`), so a row whose ``k`` leaves that range,
and the sparse "local" recursions, whose coupling may divide by a masked
neighbour's ``d``, take the reciprocal first: ``k * (conj(P) / |P|^2)``, exact
for pivots from 1.5e-154 to 1.3e154 whatever ``k``. :func:`fast_row` decides,
per row; every kernel applies the same rule, so a row's bits do not depend on
the kernel that computed it.

Sparse work (``mask`` not None) skips, at a masked position, the coupling
term (and the reciprocal it would need); with ``combine_mask`` the combine
step and the write of ``G`` are skipped at masked positions.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from .._config import (options, parallel_jit_kwargs, pick_driver, serial_jit_kwargs, serial_twin,
                       simd_width)
from ._chunks import chunk_tiles
from .simd import (col, col_couple, col_diag, col_fin, col_span, couple, diag, first_bad,
                   flag_col, fma, keep_where, lanes, put_c, put_c_at, put_rows, sel_eq, sel_gt,
                   sel_lt, splat, stash, unstash, vadd, vdiv, vfma, vload, vmax, vmin, vmul, vneg,
                   vstore, vsub, z_lanes)

__all__ = ["ratio_driver", "ratio_tile", "ratio_simd_tile", "ratio_simd_driver", "TINY"]

#: Smallest normal float64. A pivot whose squared magnitude falls below it is
#: reported like a zero pivot: its reciprocal ``conj(y) / |y|^2`` would
#: overflow (``|y| < 1.5e-154``). A squared magnitude that overflows makes the
#: relative test ``|y|^2 <= rtol^2 * scale`` read ``inf <= inf``: reported too.
TINY = float(np.finfo(np.float64).tiny)

#: The full recursions compute ``k conj(P)`` before dividing by ``|P|^2`` when
#: every ``k`` of the row has ``K_LO <= max(|Re k|, |Im k|) <= K_HI``
#: (:func:`fast_row`). A pivot that is not reported has ``2**-511 <= |P| <
#: 2**512.5`` (its square is at least TINY, and a square that overflows is
#: reported unless ``|d|^2 + |q|^2`` stays below 2**1024), so ``k conj(P)`` is
#: then a normal float64, at most 2**1013. Other rows take the reciprocal first.
K_LO = 2.0 ** -500
K_HI = 2.0 ** 500


@njit(inline="always", error_model="numpy", **serial_jit_kwargs())
def fast_row(k, r):
    """Whether row ``r`` of ``k`` suits the full recursions' order of operations
    (:data:`K_LO`): the scalar twin of the SIMD tiles' per-lane
    :func:`~bknumba.cpu.simd.col_span` (a NaN entry is skipped by both)."""
    lo = np.inf
    hi = 0.0
    for i in range(k.shape[1]):
        x = k[r, i]
        m = abs(x.real)
        mi = abs(x.imag)
        if mi > m:
            m = mi
        if m < lo:
            lo = m
        if m > hi:
            hi = m
    return not (lo < K_LO) and not (hi > K_HI)


@njit(inline="always", error_model="numpy", **serial_jit_kwargs())
def _coupling(pr, pi, kk):
    """``q = k * (1 / P)`` for :func:`local_row`, the arithmetic of :func:`ratio_tile`'s
    sweeps (which spell it out for the FLOP-counting test); returns
    ``(q_re, q_im, |P|^2)``. The reciprocal comes first: ``|1 / P| = 1 / |P|``
    stays in range, where ``k * conj(P)`` would underflow for entries near 1e-100."""
    p2 = pr * pr + pi * pi
    s = 1.0 / p2
    inv_re = pr * s
    inv_im = -pi * s
    return kk.real * inv_re - kk.imag * inv_im, kk.real * inv_im + kk.imag * inv_re, p2


@njit(inline="always", error_model="numpy", **serial_jit_kwargs())
def _full_coupling(kk, pr, pi, s, dr, di):
    """One step of the full recursions in :func:`ratio_tile`: ``x = d - q`` with
    ``q = (k conj(P)) s``, ``s = 1 / |P|^2``; returns ``(x_re, x_im, |d|^2 + |q|^2)``
    (the pivot test's scale). :func:`_full_step` is its SIMD twin."""
    npi = -pi
    tr = kk.real * pr - kk.imag * npi
    ti = kk.real * npi + kk.imag * pr
    qr = tr * s
    qi = ti * s
    return dr - qr, di - qi, fma(qi, qi, fma(qr, qr, fma(dr, dr, di * di)))


@njit(inline="always", error_model="numpy", **serial_jit_kwargs())
def _full_step(kv, pr, pi, s, dr, di):
    """:func:`_full_coupling` on SIMD lanes (``kv`` a column of ``k``, :func:`col`)."""
    tr, ti = col_couple(kv, pr, vneg(pi))
    qr = vmul(tr, s)
    qi = vmul(ti, s)
    return vsub(dr, qr), vsub(di, qi), vfma(qi, qi, vfma(qr, qr, vfma(dr, dr, vmul(di, di))))


@njit(error_model="numpy", **serial_jit_kwargs())
def ratio_tile(a, k, z, r0, w, rec_mask, combine_mask, out, first_bad, rtol2,
               left_re, left_im, lane):
    """Ratio-form BK-Core for rows ``r0 .. r0 + w - 1`` (serial worker).

    Parameters
    ----------
    a : (B, N) float64 or complex128
    k : (B, N - 1) float64 or complex128, ``b * c``
    z : (B,) complex128
    rec_mask : (B, N) bool or None
        Where False, the recursions drop their coupling term ("local").
    combine_mask : (B, N) bool or None
        Where False, ``G`` is not combined and 0 is written.
    out : (B, N) complex128, written.
    first_bad : (B,) int64, written: first position of a (near-)zero pivot
        or combine denominator, ``N`` if none.
    rtol2 : float, squared relative pivot tolerance.
    left_re, left_im : (N, >= w) float64 scratch (the left pivots).
    lane : (8, >= w) float64 scratch (per-lane state).
    """
    n = a.shape[1]
    zr = lane[0]
    zi = lane[1]
    inv_re = lane[2]  # 1 / R[i+1]; for a fast row R[i+1] itself
    inv_im = lane[3]
    bad = lane[4]
    fast = lane[5]  # 1.0: the full recursions' order (fast_row), else 0.0
    sr = lane[6]  # a fast row's 1 / |R[i+1]|^2
    for j in range(w):
        zr[j] = z[r0 + j].real
        zi[j] = z[r0 + j].imag
        bad[j] = n
        fast[j] = 1.0 if rec_mask is None and fast_row(k, r0 + j) else 0.0
    if n == 0:
        for j in range(w):
            first_bad[r0 + j] = 0
        return
    # forward sweep: left pivots L[i]
    for j in range(w):
        x = a[r0 + j, 0]
        dr = x.real - zr[j]
        di = x.imag - zi[j]
        left_re[0, j] = dr
        left_im[0, j] = di
        if dr * dr + di * di < TINY:
            bad[j] = 0.0
    for i in range(1, n):
        for j in range(w):
            x = a[r0 + j, i]
            dr = x.real - zr[j]
            di = x.imag - zi[j]
            pr = left_re[i - 1, j]
            pi = left_im[i - 1, j]
            kk = k[r0 + j, i - 1]
            if fast[j] != 0.0:
                # q = (k conj(L[i-1])) / |L[i-1]|^2 (the SIMD tiles' full recursions)
                lr, li, scale = _full_coupling(kk, pr, pi, 1.0 / fma(pr, pr, pi * pi), dr, di)
                l2 = fma(lr, lr, li * li)
            else:
                if rec_mask is not None and not rec_mask[r0 + j, i]:
                    lr = dr
                    li = di
                    scale = dr * dr + di * di
                else:
                    s = 1.0 / (pr * pr + pi * pi)
                    # q = k * (1 / L[i-1]), the reciprocal first (see _coupling)
                    ir = pr * s
                    ii = -pi * s
                    qr = kk.real * ir - kk.imag * ii
                    qi = kk.real * ii + kk.imag * ir
                    lr = dr - qr
                    li = di - qi
                    scale = dr * dr + di * di + qr * qr + qi * qi
                l2 = lr * lr + li * li
            left_re[i, j] = lr
            left_im[i, j] = li
            if l2 <= rtol2 * scale or l2 < TINY:
                bad[j] = min(bad[j], i)
    # backward sweep: right pivots R[i], combined with L[i] on the fly
    for i in range(n - 1, -1, -1):
        for j in range(w):
            x = a[r0 + j, i]
            dr = x.real - zr[j]
            di = x.imag - zi[j]
            fj = fast[j] != 0.0
            if i == n - 1 or (rec_mask is not None and not rec_mask[r0 + j, i]):
                rr = dr
                ri = di
                scale = dr * dr + di * di
            elif fj:
                # q = (k conj(R[i+1])) / |R[i+1]|^2
                rr, ri, scale = _full_coupling(k[r0 + j, i], inv_re[j], inv_im[j], sr[j], dr, di)
            else:
                kk = k[r0 + j, i]
                qr = kk.real * inv_re[j] - kk.imag * inv_im[j]
                qi = kk.real * inv_im[j] + kk.imag * inv_re[j]
                rr = dr - qr
                ri = di - qi
                scale = dr * dr + di * di + qr * qr + qi * qi
            m2 = fma(rr, rr, ri * ri) if fj else rr * rr + ri * ri
            if m2 <= rtol2 * scale or m2 < TINY:
                bad[j] = min(bad[j], i)
            if i > 0 and (rec_mask is None or rec_mask[r0 + j, i - 1]):
                # 1 / R[i] (a fast row: R[i] and 1 / |R[i]|^2) for the next coupled step
                s = 1.0 / m2
                if fj:
                    sr[j] = s
                    inv_re[j] = rr
                    inv_im[j] = ri
                else:
                    inv_re[j] = rr * s
                    inv_im[j] = -ri * s
            if combine_mask is not None and not combine_mask[r0 + j, i]:
                out[r0 + j, i] = 0.0
            else:
                lr = left_re[i, j]
                li = left_im[i, j]
                er = lr + rr - dr
                ei = li + ri - di
                if fj:
                    e2 = fma(er, er, ei * ei)
                    thr = rtol2 * fma(lr, lr, fma(li, li, m2))
                else:
                    e2 = er * er + ei * ei
                    thr = rtol2 * (lr * lr + li * li + m2)
                if e2 <= thr or e2 < TINY:
                    bad[j] = min(bad[j], i)
                s = 1.0 / e2
                out[r0 + j, i] = complex(er * s, -ei * s)
    for j in range(w):
        first_bad[r0 + j] = np.int64(bad[j])


@njit(**parallel_jit_kwargs())
def ratio_driver(a, k, z, rec_mask, combine_mask, out, first_bad, rtol2, tile, chunks):
    """``prange`` over chunks of ``tile``-row tiles; scratch per chunk."""
    batch, n = a.shape
    ntiles = (batch + tile - 1) // tile
    for c in prange(chunks):
        t0, t1 = chunk_tiles(c, chunks, ntiles)
        if t0 >= t1:
            continue
        left_re = np.empty((n, tile))
        left_im = np.empty((n, tile))
        lane = np.empty((8, tile))
        for t in range(t0, t1):
            r0 = t * tile
            w = min(tile, batch - r0)
            ratio_tile(a, k, z, r0, w, rec_mask, combine_mask, out, first_bad, rtol2,
                       left_re, left_im, lane)


@njit(error_model="numpy", **serial_jit_kwargs())
def ratio_simd_tile(a, k, z, r0, out, first_bad_out, rtol2, sl, proto, combine_mask, fin_out,
                    fast_out, rec_mask=None):
    """:func:`ratio_tile` on rows ``r0 .. r0 + W - 1``, ``W = len(proto)``, with the
    rows in the lanes of vector registers
    (:mod:`bknumba.cpu.simd`). The same operations in the same order as
    :func:`ratio_tile`, so the same bits.

    With ``combine_mask`` (the "exact" sparse semantics) a masked position gets
    ``G = 0`` and its combine is not checked, as in :func:`ratio_tile`; but the
    combine is computed in every lane (a vector instruction cannot skip a lane),
    so masked positions save no arithmetic here.

    With ``rec_mask`` (the "local" semantics) a masked position restarts both
    sweeps, ``L = R = d`` there, and gets ``G = 0``, as :func:`ratio_tile` with
    ``rec_mask`` and ``combine_mask`` both that mask (``combine_mask`` is then
    not read): a select per lane, every lane still does every step's arithmetic
    (see :func:`run_local` for when this beats walking the computed positions
    only). The flags read in the forward sweep are kept in ``sl`` for the
    backward sweep.

    ``sl`` : float64 scratch of at least ``7 W N`` (position-major: the left pivots,
    the ``rec_mask`` flags, then the columns of ``a`` and ``k`` as read by the forward
    sweep, two slots of ``W`` per position, for the backward sweep).
    ``fin_out[r0 + j]`` : 0.0 if row ``r0 + j`` of ``a`` and ``k`` is finite, else NaN
    (:func:`~bknumba.cpu.simd.fin_acc`, accumulated in the forward sweep).
    ``fast_out[j]`` : written 1.0 if lane ``j``'s row suits the full recursions'
    order of operations (:func:`fast_row`), else 0.0: the caller must then redo
    that row with :func:`ratio_tile` (without ``rec_mask`` only; with it every
    lane is 1.0).
    """
    W = len(proto)
    n = a.shape[1]
    if n == 0:
        for j in range(W):
            first_bad_out[r0 + j] = 0
            fin_out[r0 + j] = 0.0
            fast_out[j] = 1.0
        return
    zr, zi = z_lanes(z, r0, proto)
    zero = splat(0.0, proto)
    di0 = vsub(zero, zi)  # the imaginary part of d for a real a
    one = splat(1.0, proto)
    r2 = splat(rtol2, proto)
    bad = splat(n, proto)
    # forward sweep: left pivots L[i] into sl (position-major); the columns of a and k
    # read here are kept in sl too, for the backward sweep (vector loads, not gathers)
    xa = 3 * W * n
    xk = 5 * W * n
    av = col(a, r0, 0, proto)
    stash(sl, xa, av)
    dr, di = col_diag(av, zr, zi, di0)
    fin = col_fin(zero, av)
    lr = dr
    li = di
    minus1 = splat(-1.0, proto)
    nb = first_bad(vadd(vmul(dr, dr), vmul(di, di)), minus1, splat(0.0, proto), bad)
    vstore(sl, 0, lr)
    vstore(sl, W, li)
    fl = 2 * W * n  # the rec_mask flags, position-major
    if rec_mask is not None:
        # a masked position's pivot d is tested only where a computed neighbour
        # divides by it (as in local_row), so its test waits for that neighbour
        on_prev = flag_col(rec_mask, r0, 0, proto)
        vstore(sl, fl, on_prev)
        bad = sel_gt(on_prev, zero, nb, bad)
    else:
        on_prev = one
        bad = nb
    # the range of |k| (per lane) that decides whether the full recursions' order of
    # operations is exact here (see K_LO); L[0]'s squared magnitude for their first step
    klo = splat(np.inf, proto)
    khi = zero
    l2 = vfma(lr, lr, vmul(li, li))
    for i in range(1, n):
        av = col(a, r0, i, proto)
        kv = col(k, r0, i - 1, proto)
        stash(sl, xa + 2 * W * i, av)
        stash(sl, xk + 2 * W * (i - 1), kv)
        dr, di = col_diag(av, zr, zi, di0)
        fin = col_fin(col_fin(fin, av), kv)
        if rec_mask is None:
            # q = (k conj(L[i-1])) / |L[i-1]|^2: the product with k runs beside the
            # division, off the recursion's dependency chain (module docstring)
            klo, khi = col_span(klo, khi, kv)
            lr, li, scale = _full_step(kv, lr, li, vdiv(one, l2), dr, di)
            l2 = vfma(lr, lr, vmul(li, li))
            bad = first_bad(l2, vmul(r2, scale), splat(i, proto), bad)
        else:
            p2 = vadd(vmul(lr, lr), vmul(li, li))
            s = vdiv(one, p2)
            qr, qi = col_couple(kv, vmul(lr, s), vmul(vneg(li), s))
            on = flag_col(rec_mask, r0, i, proto)
            vstore(sl, fl + W * i, on)
            lr = sel_gt(on, zero, vsub(dr, qr), dr)
            li = sel_gt(on, zero, vsub(di, qi), di)
            scale = sel_gt(on, zero,
                           vadd(vadd(vadd(vmul(dr, dr), vmul(di, di)), vmul(qr, qr)), vmul(qi, qi)),
                           vadd(vmul(dr, dr), vmul(di, di)))
            nb = first_bad(vadd(vmul(lr, lr), vmul(li, li)), vmul(r2, scale), splat(i, proto), bad)
            # the masked neighbour's d, now divided by
            nb = sel_gt(on_prev, zero, nb, first_bad(p2, minus1, splat(i - 1, proto), nb))
            bad = sel_gt(on, zero, nb, bad)
            on_prev = on
        vstore(sl, 2 * W * i, lr)
        vstore(sl, 2 * W * i + W, li)
    # backward sweep: right pivots R[i], combined with L[i] on the fly
    dr, di = col_diag(unstash(sl, xa + 2 * W * (n - 1), a, proto), zr, zi, di0)
    rr = dr
    ri = di
    scale = vadd(vmul(dr, dr), vmul(di, di))
    ur = splat(0.0, proto)
    ui = ur
    sr = one  # 1 / |R[i + 1]|^2 (the full recursion)
    m2 = one
    on = one
    for i in range(n - 1, -1, -1):
        if rec_mask is not None:
            on_next = on  # the flags of position i + 1 (unused at i = N - 1)
            on = vload(sl, fl + W * i, proto)
        if i < n - 1:
            dr, di = col_diag(unstash(sl, xa + 2 * W * i, a, proto), zr, zi, di0)
            kv = unstash(sl, xk + 2 * W * i, k, proto)
            if rec_mask is None:
                # q = (k conj(R[i+1])) / |R[i+1]|^2, as in the forward sweep
                rr, ri, scale = _full_step(kv, rr, ri, sr, dr, di)
            else:
                qr, qi = col_couple(kv, ur, ui)
                rr = sel_gt(on, zero, vsub(dr, qr), dr)
                ri = sel_gt(on, zero, vsub(di, qi), di)
                scale = sel_gt(on, zero, vadd(vadd(vadd(vmul(dr, dr), vmul(di, di)),
                                                   vmul(qr, qr)), vmul(qi, qi)),
                               vadd(vmul(dr, dr), vmul(di, di)))
        r2_next = m2  # |R[i + 1]|^2
        pos = splat(i, proto)
        lr = vload(sl, 2 * W * i, proto)
        li = vload(sl, 2 * W * i + W, proto)
        er = vsub(vadd(lr, rr), dr)
        ei = vsub(vadd(li, ri), di)
        if rec_mask is None:
            m2 = vfma(rr, rr, vmul(ri, ri))
            bad = first_bad(m2, vmul(r2, scale), pos, bad)
            sr = vdiv(one, m2)
            e2 = vfma(er, er, vmul(ei, ei))
            nb = first_bad(e2, vmul(r2, vfma(lr, lr, vfma(li, li, m2))), pos, bad)
        else:
            m2 = vadd(vmul(rr, rr), vmul(ri, ri))
            nb = first_bad(m2, vmul(r2, scale), pos, bad)
            if i < n - 1:  # the masked neighbour's d, now divided by
                nb = sel_gt(on_next, zero, nb,
                            first_bad(r2_next, minus1, splat(i + 1, proto), nb))
            bad = sel_gt(on, zero, nb, bad)
            s = vdiv(one, m2)
            ur = vmul(rr, s)
            ui = vmul(vneg(ri), s)
            e2 = vadd(vmul(er, er), vmul(ei, ei))
            nb = first_bad(e2, vmul(r2, vadd(vadd(vmul(lr, lr), vmul(li, li)), m2)), pos, bad)
        s = vdiv(one, e2)
        gr = vmul(er, s)
        gi = vmul(vneg(ei), s)
        if rec_mask is not None or combine_mask is not None:
            if rec_mask is None:
                on = flag_col(combine_mask, r0, i, proto)
            bad, gr, gi = keep_where(on, nb, bad, gr, gi, zero)
        else:
            bad = nb
        put_c(out, r0, i, gr, gi)
    # lanes whose |k| left the range of the full recursions' order: 0.0 (redone by
    # the caller with ratio_tile, which takes the other order for them)
    vstore(fast_out, 0, sel_lt(klo, splat(K_LO, proto), zero,
                               sel_gt(khi, splat(K_HI, proto), zero, one)))
    put_rows(first_bad_out, r0, bad)
    put_rows(fin_out, r0, fin)


@njit(error_model="numpy", **serial_jit_kwargs())
def fin_rows(a, k, r0, fin_out):
    """``fin_out[r] = 0.0`` if row ``r`` (``r >= r0``) of ``a`` and ``k`` is finite,
    else NaN: the SIMD tiles' fused check for the rows they leave to a scalar tile."""
    for r in range(r0, a.shape[0]):
        acc = 0.0
        for i in range(a.shape[1]):
            x = a[r, i]
            acc += x.real - x.real
            acc += x.imag - x.imag
        for i in range(k.shape[1]):
            x = k[r, i]
            acc += x.real - x.real
            acc += x.imag - x.imag
        fin_out[r] = acc


@njit(**parallel_jit_kwargs())
def ratio_simd_driver(a, k, z, combine_mask, out, first_bad, rtol2, chunks, proto, fin,
                      rec_mask=None):
    """``prange`` over chunks of ``W``-row SIMD tiles (:func:`ratio_simd_tile`; a row
    whose ``|k|`` leaves the range of the full recursions' order is redone with
    :func:`ratio_tile`, see :data:`K_LO`); the last ``B mod W`` rows go through the
    scalar :func:`ratio_tile`. ``fin`` (``(B,)``
    float64) receives the rows' finiteness (0.0 finite, NaN not)."""
    W = len(proto)
    batch, n = a.shape
    ntiles = batch // W
    for c in prange(chunks):
        t0, t1 = chunk_tiles(c, chunks, ntiles)
        if t0 >= t1:
            continue
        sl = np.empty(7 * W * max(n, 1))
        fast = np.empty(W)
        left = np.empty((2, max(n, 1), 1))
        lane8 = np.empty((8, 1))
        for t in range(t0, t1):
            ratio_simd_tile(a, k, z, t * W, out, first_bad, rtol2, sl, proto, combine_mask, fin,
                            fast, rec_mask)
            for j in range(W):
                if fast[j] == 0.0:  # |k| out of the full recursions' range: the other order
                    ratio_tile(a, k, z, t * W + j, 1, None, combine_mask, out, first_bad, rtol2,
                               left[0], left[1], lane8)
    rest = batch - ntiles * W
    if rest > 0:
        if rec_mask is not None:
            # "local": the row kernel, whose pivot reports the tiles follow
            starts = np.empty(n + 1, dtype=np.int64)
            ends = np.empty(n + 1, dtype=np.int64)
            left = np.empty((2, max(n, 1)))
            for r in range(ntiles * W, batch):
                local_row(a, k, z, rec_mask, out, first_bad, r, rtol2, starts, ends, left[0],
                          left[1])
        else:
            left_re = np.empty((n, rest))
            left_im = np.empty((n, rest))
            lane8 = np.empty((8, rest))
            ratio_tile(a, k, z, ntiles * W, rest, None, combine_mask, out, first_bad, rtol2,
                       left_re, left_im, lane8)
        fin_rows(a, k, ntiles * W, fin)


def run_ratio(a, k, z, rec_mask=None, combine_mask=None, tile=None, fin=None, out=None):
    """Run the ratio kernels; returns ``(G, first_bad)``.

    Without a recursion mask (the full problem and the "exact" semantics) the
    SIMD tiles run (:func:`ratio_simd_tile`) when ``BKNUMBA_SIMD`` allows (see
    :mod:`bknumba._config`) and ``tile`` is not given; a recursion mask and
    ``tile=...`` run the scalar tiles.

    ``fin`` : optional float64 ``(B,)``. When the SIMD tiles run they write each
    row's input finiteness there (0.0: every entry of the row of ``a`` and ``k``
    finite, NaN: not); on the other paths it is left as it was.
    ``out`` : optional C-contiguous complex128 ``(B, N)`` for ``G`` (else a new array).
    """
    batch, n = a.shape
    if out is None:
        out = np.empty((batch, n), dtype=np.complex128)
    first_bad = np.empty(batch, dtype=np.int64)
    if batch == 0:
        return out, first_bad
    width = simd_width()
    if rec_mask is None and tile is None and width >= 2 and batch >= width:
        chunks = min(batch // width, 4 * numba.get_num_threads())
        rtol = options["pivot_rtol"]
        driver = pick_driver(ratio_simd_driver, _ratio_simd_driver_serial, batch * n)
        if fin is None:
            fin = np.empty(batch)
        driver(a, k, z, combine_mask, out, first_bad, rtol * rtol, chunks, lanes(width), fin)
        return out, first_bad
    if tile is None:
        tile = options["tile"]
    tile = max(1, min(tile, batch))
    ntiles = (batch + tile - 1) // tile
    chunks = min(ntiles, 4 * numba.get_num_threads())
    rtol = options["pivot_rtol"]
    driver = pick_driver(ratio_driver, _ratio_driver_serial, batch * n)
    driver(a, k, z, rec_mask, combine_mask, out, first_bad, rtol * rtol, tile, chunks)
    return out, first_bad


@njit(error_model="numpy", **serial_jit_kwargs())
def local_row(a, k, z, mask, out, first_bad, r, rtol2, starts, ends, left_re, left_im):
    """Sparse "local" semantics for row ``r``, segment by segment.

    A masked position restarts both sweeps (``L = R = d`` there), so the
    computed positions fall into independent *segments* (maximal runs of
    computed positions). One branch-free pass writes the zeros of ``G`` and
    lists the segments (``d = a - z`` is recomputed where needed, cheaper
    than storing it); the sweeps then run segment by
    segment: the first pivot of a segment couples to the masked neighbour's
    ``d``, the others to the previous pivot, which stays in registers. The
    only dependency chain is within a segment, so consecutive segments
    overlap in the CPU (a select on the neighbour's pivot would have chained
    every computed position to the previous one). Divisions, pivot work and
    the combine scale with the number of computed positions. The arithmetic is
    that of :func:`ratio_tile`, so an all-ones mask gives the full result bit
    for bit.
    """
    n = a.shape[1]
    zr = z[r].real
    zi = z[r].imag
    ns = 0
    ne = 0
    prev = False
    for i in range(n):
        out[r, i] = 0.0
        m = mask[r, i]
        starts[ns] = i
        ns += 1 if (m and not prev) else 0
        ends[ne] = i
        ne += 1 if (prev and not m) else 0
        prev = m
    if prev:
        ends[ne] = n
    bad = n
    lr = 0.0
    li = 0.0
    # forward: L[i] = d[i] - k[i-1] / P, P = d[i-1] at a segment's start, else L[i-1]
    for sg in range(ns):
        i0 = starts[sg]
        for i in range(i0, ends[sg]):
            dr = a[r, i].real - zr
            di = a[r, i].imag - zi
            if i == 0:
                lr = dr
                li = di
                scale = dr * dr + di * di
            else:
                if i == i0:
                    pr = a[r, i - 1].real - zr
                    pi = a[r, i - 1].imag - zi
                else:
                    pr = lr
                    pi = li
                qr, qi, p2 = _coupling(pr, pi, k[r, i - 1])
                if p2 < TINY:
                    bad = min(bad, i - 1)
                lr = dr - qr
                li = di - qi
                scale = dr * dr + di * di + qr * qr + qi * qi
            left_re[i] = lr
            left_im[i] = li
            l2 = lr * lr + li * li
            if l2 <= rtol2 * scale or l2 < TINY:
                bad = min(bad, i)
    # backward: R[i] = d[i] - k[i] / P, P = d[i+1] at a segment's end, else R[i+1]; combine
    rr = 0.0
    ri = 0.0
    for sg in range(ns - 1, -1, -1):
        i1 = ends[sg] - 1
        for i in range(i1, starts[sg] - 1, -1):
            dr = a[r, i].real - zr
            di = a[r, i].imag - zi
            if i == n - 1:
                rr = dr
                ri = di
                scale = dr * dr + di * di
            else:
                if i == i1:
                    pr = a[r, i + 1].real - zr
                    pi = a[r, i + 1].imag - zi
                else:
                    pr = rr
                    pi = ri
                qr, qi, p2 = _coupling(pr, pi, k[r, i])
                if p2 < TINY:
                    bad = min(bad, i + 1)
                rr = dr - qr
                ri = di - qi
                scale = dr * dr + di * di + qr * qr + qi * qi
            m2 = rr * rr + ri * ri
            if m2 <= rtol2 * scale or m2 < TINY:
                bad = min(bad, i)
            lr = left_re[i]
            li = left_im[i]
            er = lr + rr - dr
            ei = li + ri - di
            e2 = er * er + ei * ei
            if e2 <= rtol2 * (lr * lr + li * li + m2) or e2 < TINY:
                bad = min(bad, i)
            s = 1.0 / e2
            out[r, i] = complex(er * s, -ei * s)
    first_bad[r] = bad


@njit(inline="always", error_model="numpy", **serial_jit_kwargs())
def _local_pivot(a, k, r0, pos, nbr, dpos, kpos, prev, cr, ci, edge, bad, zr, zi, di0, r2, one,
                 zero, tiny):
    """One step of :func:`local_simd_tile`'s sweeps (forward or backward) at the lanes'
    positions ``pos``: the pivot ``x = d[pos] - k[kpos] / p``, where ``p`` is the sweep's
    previous pivot ``cr + 1j ci`` if the previous computed position ``prev`` is the
    neighbour ``nbr``, else the masked neighbour's ``d[dpos]``; ``x = d[pos]`` where
    ``edge`` (the row's end: no coupling). Returns ``(xr, xi, dr, di, |x|^2, nb)``,
    ``nb`` the lanes' first bad position after this step's tests: ``p`` too small to
    invert (reported at ``nbr``) and ``x`` (near) zero against its scale (at ``pos``).
    """
    dr, di = diag(a, r0, pos, zr, zi, di0)
    nr, ni = diag(a, r0, dpos, zr, zi, di0)  # the masked neighbour's d
    pr = sel_eq(prev, nbr, cr, nr)
    pi = sel_eq(prev, nbr, ci, ni)
    p2 = vadd(vmul(pr, pr), vmul(pi, pi))
    sv = vdiv(one, p2)
    qr, qi = couple(k, r0, kpos, vmul(pr, sv), vmul(vneg(pi), sv))
    xr = sel_gt(edge, zero, dr, vsub(dr, qr))
    xi = sel_gt(edge, zero, di, vsub(di, qi))
    d2 = vadd(vmul(dr, dr), vmul(di, di))
    scale = sel_gt(edge, zero, d2, vadd(vadd(d2, vmul(qr, qr)), vmul(qi, qi)))
    nb = sel_lt(p2, tiny, sel_gt(edge, zero, bad, vmin(bad, nbr)), bad)
    x2 = vadd(vmul(xr, xr), vmul(xi, xi))
    nb = first_bad(x2, vmul(r2, scale), pos, nb)
    return xr, xi, dr, di, x2, nb


@njit(error_model="numpy", **serial_jit_kwargs())
def local_simd_tile(a, k, z, mask, out, first_bad_out, r0, rtol2, sl, ix, lane, proto):
    """:func:`local_row` for rows ``r0 .. r0 + W - 1`` (``W = len(proto)``), the rows
    in the lanes of vector registers (:mod:`bknumba.cpu.simd`).

    Each lane walks the list of its row's *computed* positions (built branch-free
    in a first pass, which also writes the zeros of ``G``), so a masked position
    costs no arithmetic at all; at step ``s`` lane ``j`` is at its ``s``-th
    computed position. A step couples to the previous pivot when the previous
    computed position is the neighbour, else to the masked neighbour's ``d``
    (a select, as in :func:`local_row`: the same operations, so the same bits).
    Lanes whose row has fewer computed positions idle (masked out) at the end.

    ``sl`` : float64 scratch ``>= 2 W N``; ``ix`` : float64 scratch ``>= W (N + 1)``
    (positions, lane-interleaved); ``lane`` : float64 scratch ``>= W``. Needs
    ``N >= 2`` (every load is then inside the row).
    """
    W = len(proto)
    n = a.shape[1]
    maxc = 0
    for j in range(W):
        r = r0 + j
        for i in range(n):
            out[r, i] = 0.0
        c = 0
        fi = 0.0
        for i in range(n):
            ix[c * W + j] = fi
            c += np.int64(mask[r, i])
            fi += 1.0
        lane[j] = c
        maxc = max(maxc, c)
    zr, zi = z_lanes(z, r0, proto)
    cnt = vload(lane, 0, proto)
    zero = splat(0.0, proto)
    one = splat(1.0, proto)
    di0 = vsub(zero, zi)
    r2 = splat(rtol2, proto)
    tiny = splat(TINY, proto)
    last = splat(n - 1, proto)
    klast = splat(n - 2, proto)
    bad = splat(n, proto)
    lr = zero
    li = zero
    prev = splat(-2.0, proto)
    # forward: L at the computed positions, compacted into sl
    for s in range(maxc):
        act = sel_lt(splat(s, proto), cnt, one, zero)
        pos = sel_gt(act, zero, vload(ix, s * W, proto), zero)  # idle lanes read position 0
        pm1 = vsub(pos, one)
        pc = vmax(pm1, zero)
        start = sel_eq(pos, zero, one, zero)  # position 0: no coupling
        lr, li, _, _, _, nb = _local_pivot(a, k, r0, pos, pm1, pc, pc, prev, lr, li, start, bad,
                                           zr, zi, di0, r2, one, zero, tiny)
        bad = sel_gt(act, zero, nb, bad)
        vstore(sl, 2 * W * s, lr)
        vstore(sl, 2 * W * s + W, li)
        prev = pos
    # backward: R at the computed positions, combined with L; G written
    rr = zero
    ri = zero
    nxt = splat(-2.0, proto)
    for s in range(maxc - 1, -1, -1):
        act = sel_lt(splat(s, proto), cnt, one, zero)
        pos = sel_gt(act, zero, vload(ix, s * W, proto), zero)
        pp1 = vadd(pos, one)
        end = sel_eq(pos, last, one, zero)  # position N - 1: no coupling
        # k[i] (k[N - 2] for i = N - 1, where it is not used: the read stays in the row)
        rr, ri, dr, di, m2, nb = _local_pivot(a, k, r0, pos, pp1, vmin(pp1, last),
                                              vmin(pos, klast), nxt, rr, ri, end, bad,
                                              zr, zi, di0, r2, one, zero, tiny)
        lr = vload(sl, 2 * W * s, proto)
        li = vload(sl, 2 * W * s + W, proto)
        er = vsub(vadd(lr, rr), dr)
        ei = vsub(vadd(li, ri), di)
        e2 = vadd(vmul(er, er), vmul(ei, ei))
        nb = first_bad(e2, vmul(r2, vadd(vadd(vmul(lr, lr), vmul(li, li)), m2)), pos, nb)
        bad = sel_gt(act, zero, nb, bad)
        sv = vdiv(one, e2)
        put_c_at(out, r0, pos, vmul(er, sv), vmul(vneg(ei), sv), act)
        # an idle lane's next step (if any) is its first computed one: never coupled
        nxt = sel_gt(act, zero, pos, splat(-2.0, proto))
    put_rows(first_bad_out, r0, bad)


@njit(**parallel_jit_kwargs())
def local_simd_driver(a, k, z, mask, out, first_bad, rtol2, chunks, proto):
    """``prange`` over chunks of ``W``-row SIMD tiles (:func:`local_simd_tile`); the
    last ``B mod W`` rows go through the scalar :func:`local_row`."""
    W = len(proto)
    batch, n = a.shape
    ntiles = batch // W
    for c in prange(chunks):
        t0, t1 = chunk_tiles(c, chunks, ntiles)
        if t0 >= t1:
            continue
        sl = np.empty(2 * W * max(n, 1))
        ix = np.empty(W * (n + 1))
        lane = np.empty(W)
        for t in range(t0, t1):
            local_simd_tile(a, k, z, mask, out, first_bad, t * W, rtol2, sl, ix, lane, proto)
    if ntiles * W < batch:
        starts = np.empty(n + 1, dtype=np.int64)
        ends = np.empty(n + 1, dtype=np.int64)
        left_re = np.empty(n)
        left_im = np.empty(n)
        for r in range(ntiles * W, batch):
            local_row(a, k, z, mask, out, first_bad, r, rtol2, starts, ends, left_re, left_im)


@njit(**parallel_jit_kwargs())
def local_driver(a, k, z, mask, out, first_bad, rtol2, chunks):
    """``prange`` over chunks of rows for :func:`local_row`; scratch per chunk."""
    batch, n = a.shape
    for c in prange(chunks):
        r0, r1 = chunk_tiles(c, chunks, batch)  # tiles of one row
        if r0 >= r1:
            continue
        starts = np.empty(n + 1, dtype=np.int64)
        ends = np.empty(n + 1, dtype=np.int64)
        left_re = np.empty(n)
        left_im = np.empty(n)
        for r in range(r0, r1):
            local_row(a, k, z, mask, out, first_bad, r, rtol2, starts, ends, left_re, left_im)


#: The "local" kernel for a mask with at least this fraction of computed
#: positions runs the SIMD tiles over every position with a select per lane
#: (:func:`ratio_simd_tile` with ``rec_mask``; 0.84-1.05x the full kernel at any
#: sparsity, its input check fused); below it each lane walks its computed
#: positions only (:func:`local_simd_tile`, which wins from about 80 %
#: sparsity; at 75 % the two are even). Measured at (4096, 512), BENCHMARKS.md section 1.
LOCAL_WALK_BELOW = 0.2
#: The same threshold when the input check is pending (``fin`` given): the walk
#: does not read every entry, so it leaves the check to a separate pass over
#: ``a`` and ``k``, which the tiles over every position save.
LOCAL_WALK_BELOW_CHECKED = 0.01


def run_local(a, k, z, mask, simd=True, out=None, fin=None):
    """Sparse "local" semantics (ratio form); returns ``(G, first_bad)``.

    On the SIMD tiles when ``BKNUMBA_SIMD`` allows and ``simd``: over every
    position with selects (:func:`ratio_simd_tile` with ``rec_mask``) when at
    least :data:`LOCAL_WALK_BELOW` (with ``fin``: :data:`LOCAL_WALK_BELOW_CHECKED`)
    of the positions are computed, else walking the computed positions
    (:func:`local_simd_tile`); otherwise row by row
    (:func:`local_row`). The same bits on every path. A mask without a masked
    position runs the full kernels (:func:`run_ratio`): the full result, bit for
    bit. ``out`` as in :func:`run_ratio`; ``fin`` as there (written by the first
    path only).
    """
    batch, n = a.shape
    if mask.all():
        # nothing masked: the full recursions, whose order of operations differs
        # from the local ones' (module docstring), so that the result is the full
        # one bit for bit
        return run_ratio(a, k, z, out=out, fin=fin, tile=None if simd else options["tile"])
    if out is None:
        out = np.empty((batch, n), dtype=np.complex128)
    first_bad = np.empty(batch, dtype=np.int64)
    if batch == 0:
        return out, first_bad
    rtol = options["pivot_rtol"]
    width = simd_width() if simd else 0
    if width >= 2 and batch >= width and n >= 2:
        chunks = min(batch // width, 4 * numba.get_num_threads())
        walk_below = LOCAL_WALK_BELOW if fin is None else LOCAL_WALK_BELOW_CHECKED
        if np.count_nonzero(mask) >= walk_below * mask.size:
            driver = pick_driver(ratio_simd_driver, _ratio_simd_driver_serial, batch * n)
            if fin is None:
                fin = np.empty(batch)
            driver(a, k, z, mask, out, first_bad, rtol * rtol, chunks, lanes(width), fin, mask)
            return out, first_bad
        driver = pick_driver(local_simd_driver, _local_simd_driver_serial, batch * n)
        driver(a, k, z, mask, out, first_bad, rtol * rtol, chunks, lanes(width))
        return out, first_bad
    chunks = min(batch, 4 * numba.get_num_threads())
    driver = pick_driver(local_driver, _local_driver_serial, batch * n)
    driver(a, k, z, mask, out, first_bad, rtol * rtol, chunks)
    return out, first_bad


_ratio_driver_serial = serial_twin(ratio_driver)
_ratio_simd_driver_serial = serial_twin(ratio_simd_driver)
_local_driver_serial = serial_twin(local_driver)
_local_simd_driver_serial = serial_twin(local_simd_driver)
