"""Scaled theta / phi continuants on the CPU (the seeds' method, overflow-free).

    theta[0] = 1, theta[1] = d[0], theta[i+1] = d[i] theta[i] - k[i-1] theta[i-1]
    phi[N-1] = 1, phi[N-2] = d[N-1], phi[i] = d[i+1] phi[i+1] - k[i+1] phi[i+2]
    G[i] = theta[i] phi[i] / theta[N]

Raw continuants overflow complex128 near N = 900 for the model's inputs. Here
each sweep carries its last two values with a shared power-of-two scale
``2**(SHIFT * count)``: before each step, if the larger magnitude of the pair
has left ``[2**(-SHIFT/2), 2**(SHIFT/2)]``, the step's two new values are
multiplied by ``2**-+SHIFT`` and ``count`` moves by one. The test reads the
pair *before* the step, so it runs beside the step's arithmetic instead of
after it (the recursion's dependency chain is shorter: 1.1-1.4x faster than
testing the new values); half the shift as the threshold keeps the same range:
one step multiplies the pair's magnitude by at most ``max(1, |d| + |k|)``, so
for ``|d|, |k|`` up to ``2**200`` the pair's magnitude stays below ``2**100``
before a step and below ``2**300`` after it (small magnitudes are scaled up
alike), within what the three-factor combine ``theta * phi / theta[N]`` can
take (about ``2**+-340``). Rescaling by a power of two is exact, so the recursion is
the raw one, bit for bit, only never overflows (beyond that range a step can
outgrow the rescaling, and the row is reported, never returned as inf / nan).

Masked positions (``rec_mask`` False; the seed's sparse semantics) drop the
coupling term of the step that produces them:
``theta[i+1] = d[i] theta[i]`` and ``phi[i-1] = d[i] phi[i]``.

Layout and levels are as in :mod:`bknumba.cpu.ratio`.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from .._config import (options, parallel_jit_kwargs, pick_driver, serial_jit_kwargs, serial_twin,
                       simd_width)
from ._chunks import chunk_tiles
from .ratio import fin_rows
from .simd import (couple, diag, fin_acc, flag_col, keep_where, lanes, put_c, put_rows, sel_gt,
                   sel_le, sel_lt, splat, vabs, vadd, vload, vmax, vmin, vmul, vpow2, vstore, vsub,
                   z_lanes)

__all__ = ["SHIFT", "theta_phi_driver", "theta_phi_simd_tile", "theta_phi_simd_driver",
           "run_theta_phi"]

SHIFT = 200
_BIG = 2.0 ** SHIFT
_SMALL = 2.0 ** -SHIFT
# a pair is rescaled (by 2**-+SHIFT) when its magnitude before a step leaves
# [_LO, _HI]: half the shift, so that one step's growth cannot outrun it
_HI = 2.0 ** (SHIFT // 2)
_LO = 2.0 ** -(SHIFT // 2)
_MAX = float(np.finfo(np.float64).max)
# below _SQ_LOW the squares of the last step lose bits or vanish; scaling by
# _UP (exact) brings them back into range for the cancellation test
_SQ_LOW = 2.0 ** -900
_UP = 2.0 ** 600
# 2**(SHIFT * m) for m = -5 .. 5 (all normal doubles)
_POW = np.array([2.0 ** (SHIFT * m) for m in range(-5, 6)])


@njit(error_model="numpy", **serial_jit_kwargs())
def _rescale(s):
    """(factor, count step) for a pair of magnitude ``s`` (taken before a step)."""
    if s > _HI:
        return _SMALL, 1.0
    if s < _LO and s > 0.0:
        return _BIG, -1.0
    return 1.0, 0.0


@njit(error_model="numpy", **serial_jit_kwargs())
def _pow2(count, pow_table):
    """2**(SHIFT * count) for integer-valued ``count`` in [-10, 10], saturating."""
    c1 = min(5.0, max(-5.0, count))
    c2 = min(5.0, max(-5.0, count - c1))
    return pow_table[int(c1) + 5] * pow_table[int(c2) + 5]


@njit(error_model="numpy", **serial_jit_kwargs())
def _inv_theta_n(tr, ti, cnt):
    """``1 / theta[N]`` from its mantissa ``tr + 1j ti`` and scale count ``cnt``.

    The mantissa is first brought to ``>= 2**-SHIFT`` (exactly, by powers of two,
    ``cnt`` following) so that ``|theta[N]|^2`` cannot underflow. Returns
    ``(tr, ti, cnt, inv_re, inv_im, zero)``, ``zero`` for an exact zero (reported
    by the callers): the inverse mantissa only; its scale goes into the exponent.
    """
    s = max(abs(tr), abs(ti))
    zero = s == 0.0
    while s < _SMALL and s > 0.0:
        tr *= _BIG
        ti *= _BIG
        s *= _BIG
        cnt -= 1.0
    s = 1.0 / (tr * tr + ti * ti)
    return tr, ti, cnt, tr * s, -ti * s, zero


@njit(error_model="numpy", **serial_jit_kwargs())
def theta_phi_tile(a, k, z, r0, w, rec_mask, combine_mask, out, first_bad, rtol2,
                   th_re, th_im, th_cnt, lane, pow_table, phi_re, phi_im, phi_cnt):
    """Scaled theta/phi BK-Core for rows ``r0 .. r0 + w - 1`` (serial worker).

    ``th_re, th_im, th_cnt`` are ``(N + 1, >= w)`` scratch holding theta's
    mantissa and scale count. If ``out`` has zero rows, no ``G`` is combined;
    if ``phi_re`` has rows, phi is stored there (position-major, like theta).
    ``first_bad[r]`` is set to ``N - 1`` when ``theta[N] = det(T - zI)``
    came out (near) zero by cancellation in its last step (or exactly zero),
    to the first position ``i`` where ``G[i]`` leaves the float64 range (or
    is NaN after an overflow of the continuants), else to ``N``.
    """
    n = a.shape[1]
    zr = lane[0]
    zi = lane[1]
    pr = lane[2]   # theta[i-1] or phi[i+1] (mantissa)
    pi = lane[3]
    cr = lane[4]   # theta[i] or phi[i] (mantissa)
    ci = lane[5]
    cnt = lane[6]  # shared scale count of the pair
    bad = lane[7]
    combine = out.shape[0] > 0
    store_phi = phi_re.shape[0] > 0
    for j in range(w):
        zr[j] = z[r0 + j].real
        zi[j] = z[r0 + j].imag
        bad[j] = n
        th_re[0, j] = 1.0
        th_im[0, j] = 0.0
        th_cnt[0, j] = 0.0
    if n == 0:
        for j in range(w):
            first_bad[r0 + j] = 0
        return
    for j in range(w):
        x = a[r0 + j, 0]
        pr[j] = 1.0
        pi[j] = 0.0
        cr[j] = x.real - zr[j]
        ci[j] = x.imag - zi[j]
        cnt[j] = 0.0
        th_re[1, j] = cr[j]
        th_im[1, j] = ci[j]
        th_cnt[1, j] = 0.0
        if n == 1 and cr[j] == 0.0 and ci[j] == 0.0:
            bad[j] = 0
    # forward: theta[i + 1] for i = 1 .. N - 1
    for i in range(1, n):
        for j in range(w):
            # this step's scaling, from the pair before it
            s = max(max(abs(pr[j]), abs(pi[j])), max(abs(cr[j]), abs(ci[j])))
            f, dc = _rescale(s)
            x = a[r0 + j, i]
            dr = x.real - zr[j]
            di = x.imag - zi[j]
            ur = dr * cr[j] - di * ci[j]
            ui = dr * ci[j] + di * cr[j]
            if rec_mask is not None and not rec_mask[r0 + j, i]:
                nr = ur
                ni = ui
                vr = 0.0
                vi = 0.0
                scale = ur * ur + ui * ui
            else:
                kk = k[r0 + j, i - 1]
                vr = kk.real * pr[j] - kk.imag * pi[j]
                vi = kk.real * pi[j] + kk.imag * pr[j]
                nr = ur - vr
                ni = ui - vi
                scale = ur * ur + ui * ui + vr * vr + vi * vi
            if i == n - 1:
                if scale < _SQ_LOW:
                    # the squares underflow: compare exactly rescaled copies
                    nr2 = nr * _UP
                    ni2 = ni * _UP
                    ur2 = ur * _UP
                    ui2 = ui * _UP
                    vr2 = vr * _UP
                    vi2 = vi * _UP
                    if nr2 * nr2 + ni2 * ni2 <= rtol2 * (ur2 * ur2 + ui2 * ui2 + vr2 * vr2
                                                         + vi2 * vi2):
                        bad[j] = n - 1
                elif nr * nr + ni * ni <= rtol2 * scale:
                    bad[j] = n - 1
            pr[j] = cr[j] * f
            pi[j] = ci[j] * f
            cr[j] = nr * f
            ci[j] = ni * f
            cnt[j] += dc
            th_re[i + 1, j] = cr[j]
            th_im[i + 1, j] = ci[j]
            th_cnt[i + 1, j] = cnt[j]
    # backward: phi[i] for i = N - 1 .. 0, combined with theta on the fly
    for j in range(w):
        tr, ti, tc, lane[8, j], lane[9, j], zero = _inv_theta_n(th_re[n, j], th_im[n, j],
                                                                th_cnt[n, j])
        if zero:
            bad[j] = n - 1
        th_re[n, j] = tr
        th_im[n, j] = ti
        th_cnt[n, j] = tc
    for j in range(w):
        pr[j] = 0.0
        pi[j] = 0.0
        cr[j] = 1.0
        ci[j] = 0.0
        cnt[j] = 0.0
    for i in range(n - 1, -1, -1):
        for j in range(w):
            if i < n - 1:
                # phi[i] = d[i+1] phi[i+1] - k[i+1] phi[i+2]
                s = max(max(abs(pr[j]), abs(pi[j])), max(abs(cr[j]), abs(ci[j])))
                f, dc = _rescale(s)
                x = a[r0 + j, i + 1]
                dr = x.real - zr[j]
                di = x.imag - zi[j]
                ur = dr * cr[j] - di * ci[j]
                ui = dr * ci[j] + di * cr[j]
                if i == n - 2 or (rec_mask is not None and not rec_mask[r0 + j, i + 1]):
                    nr = ur
                    ni = ui
                else:
                    kk = k[r0 + j, i + 1]
                    nr = ur - (kk.real * pr[j] - kk.imag * pi[j])
                    ni = ui - (kk.real * pi[j] + kk.imag * pr[j])
                pr[j] = cr[j] * f
                pi[j] = ci[j] * f
                cr[j] = nr * f
                ci[j] = ni * f
                cnt[j] += dc
            if store_phi:
                phi_re[i, j] = cr[j]
                phi_im[i, j] = ci[j]
                phi_cnt[i, j] = cnt[j]
            if combine:
                if combine_mask is not None and not combine_mask[r0 + j, i]:
                    out[r0 + j, i] = 0.0
                else:
                    # G = theta[i] * phi[i] / theta[N]
                    ar = th_re[i, j]
                    ai = th_im[i, j]
                    br = ar * cr[j] - ai * ci[j]
                    bi = ar * ci[j] + ai * cr[j]
                    gr = br * lane[8, j] - bi * lane[9, j]
                    gi = br * lane[9, j] + bi * lane[8, j]
                    f = _pow2(th_cnt[i, j] + cnt[j] - th_cnt[n, j], pow_table)
                    gr *= f
                    gi *= f
                    # beyond the float64 range (or NaN after an overflow): report
                    if not (max(abs(gr), abs(gi)) <= _MAX):
                        bad[j] = min(bad[j], i)
                    out[r0 + j, i] = complex(gr, gi)
    for j in range(w):
        first_bad[r0 + j] = np.int64(bad[j])


@njit(**parallel_jit_kwargs())
def theta_phi_driver(a, k, z, rec_mask, combine_mask, out, first_bad, rtol2, tile, chunks,
                     pow_table, theta_out, phi_out):
    """``prange`` over chunks of tiles.

    ``theta_out`` ``(3, B, N + 1)`` and ``phi_out`` ``(3, B, N)`` receive
    (mantissa re, mantissa im, count) when they have rows; else only ``G``.
    """
    batch, n = a.shape
    ntiles = (batch + tile - 1) // tile
    keep = theta_out.shape[1] > 0
    for c in prange(chunks):
        t0, t1 = chunk_tiles(c, chunks, ntiles)
        if t0 >= t1:
            continue
        th_re = np.empty((n + 1, tile))
        th_im = np.empty((n + 1, tile))
        th_cnt = np.empty((n + 1, tile))
        lane = np.empty((10, tile))
        nphi = n if keep else 0
        phi_re = np.empty((nphi, tile))
        phi_im = np.empty((nphi, tile))
        phi_cnt = np.empty((nphi, tile))
        for t in range(t0, t1):
            r0 = t * tile
            w = min(tile, batch - r0)
            theta_phi_tile(a, k, z, r0, w, rec_mask, combine_mask, out, first_bad, rtol2,
                           th_re, th_im, th_cnt, lane, pow_table, phi_re, phi_im, phi_cnt)
            if keep:
                for j in range(w):
                    for i in range(n + 1):
                        theta_out[0, r0 + j, i] = th_re[i, j]
                        theta_out[1, r0 + j, i] = th_im[i, j]
                        theta_out[2, r0 + j, i] = th_cnt[i, j]
                    for i in range(n):
                        phi_out[0, r0 + j, i] = phi_re[i, j]
                        phi_out[1, r0 + j, i] = phi_im[i, j]
                        phi_out[2, r0 + j, i] = phi_cnt[i, j]


@njit(inline="always", error_model="numpy", **serial_jit_kwargs())
def _vrescale(s, proto):
    """:func:`_rescale` lane-wise: ``(factor, count step)``."""
    one = splat(1.0, proto)
    zero = splat(0.0, proto)
    up = sel_lt(s, splat(_LO, proto), sel_gt(s, zero, splat(_BIG, proto), one), one)
    f = sel_gt(s, splat(_HI, proto), splat(_SMALL, proto), up)
    dn = sel_lt(s, splat(_LO, proto), sel_gt(s, zero, splat(-1.0, proto), zero), zero)
    dc = sel_gt(s, splat(_HI, proto), one, dn)
    return f, dc


@njit(inline="always", error_model="numpy", **serial_jit_kwargs())
def _vmag(nr, ni, cr, ci):
    """``max(max(|nr|, |ni|), max(|cr|, |ci|))`` lane-wise (Numba's ``max``)."""
    return vmax(vmax(vabs(nr), vabs(ni)), vmax(vabs(cr), vabs(ci)))


@njit(error_model="numpy", **serial_jit_kwargs())
def theta_phi_simd_tile(a, k, z, r0, out, first_bad_out, rtol2, th, lane, proto, fin_out,
                        rec_mask=None, combine_mask=None):
    """:func:`theta_phi_tile` (``G`` only, not the continuants) on rows
    ``r0 .. r0 + W - 1``, ``W = len(proto)``, the rows in the lanes of vector
    registers (:mod:`bknumba.cpu.simd`): the same operations in the same order,
    so the same bits.

    ``th`` : float64 scratch of at least ``4 W (N + 1)`` (theta mantissa and count,
    position-major, then the ``rec_mask`` flags); ``lane`` : float64 scratch of at
    least ``3 W``.

    ``rec_mask`` (the seed's sparse recursions) drops the coupling term of the
    step that produces a masked position, ``combine_mask`` gives ``G = 0`` there
    (its range not checked), as in :func:`theta_phi_tile`: by selects, every lane
    doing every step's arithmetic.
    ``fin_out`` : the rows' input finiteness, as in :func:`~bknumba.cpu.ratio.ratio_simd_tile`.
    """
    W = len(proto)
    n = a.shape[1]
    if n == 0:
        for j in range(W):
            first_bad_out[r0 + j] = 0
            fin_out[r0 + j] = 0.0
        return
    zr, zi = z_lanes(z, r0, proto)
    zero = splat(0.0, proto)
    one = splat(1.0, proto)
    di0 = vsub(zero, zi)
    r2 = splat(rtol2, proto)
    nm1 = splat(n - 1, proto)
    bad = splat(n, proto)
    # theta[0] = 1, theta[1] = d[0]
    vstore(th, 0, one)
    vstore(th, W, zero)
    vstore(th, 2 * W, zero)
    pr = one
    pi = zero
    cr, ci = diag(a, r0, 0, zr, zi, di0)
    fin = fin_acc(zero, a, r0, 0)
    cnt = zero
    vstore(th, 3 * W, cr)
    vstore(th, 4 * W, ci)
    vstore(th, 5 * W, zero)
    if n == 1:
        bad = sel_le(vmax(vabs(cr), vabs(ci)), zero, zero, bad)  # d[0] == 0: reported at 0
    fl = 3 * W * (n + 1)  # the rec_mask flags, position-major
    # forward: theta[i + 1] for i = 1 .. N - 1
    for i in range(1, n):
        # this step's scaling, from the pair before it (off the dependency chain)
        f, dc = _vrescale(_vmag(pr, pi, cr, ci), proto)
        dr, di = diag(a, r0, i, zr, zi, di0)
        fin = fin_acc(fin_acc(fin, a, r0, i), k, r0, i - 1)
        ur = vsub(vmul(dr, cr), vmul(di, ci))
        ui = vadd(vmul(dr, ci), vmul(di, cr))
        vr, vi = couple(k, r0, i - 1, pr, pi)
        if rec_mask is not None:
            on = flag_col(rec_mask, r0, i, proto)
            vstore(th, fl + W * i, on)
            vr = sel_gt(on, zero, vr, zero)
            vi = sel_gt(on, zero, vi, zero)
        nr = vsub(ur, vr)
        ni = vsub(ui, vi)
        if i == n - 1:
            # the last step cancelled to (near) zero: det(T - zI) ~ 0
            scale = vadd(vadd(vadd(vmul(ur, ur), vmul(ui, ui)), vmul(vr, vr)), vmul(vi, vi))
            hit = sel_le(vadd(vmul(nr, nr), vmul(ni, ni)), vmul(r2, scale), nm1, bad)
            up = splat(_UP, proto)
            nr2 = vmul(nr, up)
            ni2 = vmul(ni, up)
            ur2 = vmul(ur, up)
            ui2 = vmul(ui, up)
            vr2 = vmul(vr, up)
            vi2 = vmul(vi, up)
            hit2 = sel_le(vadd(vmul(nr2, nr2), vmul(ni2, ni2)),
                          vmul(r2, vadd(vadd(vadd(vmul(ur2, ur2), vmul(ui2, ui2)),
                                             vmul(vr2, vr2)), vmul(vi2, vi2))), nm1, bad)
            bad = sel_lt(scale, splat(_SQ_LOW, proto), hit2, hit)
        pr = vmul(cr, f)
        pi = vmul(ci, f)
        cr = vmul(nr, f)
        ci = vmul(ni, f)
        cnt = vadd(cnt, dc)
        o = 3 * W * (i + 1)
        vstore(th, o, cr)
        vstore(th, o + W, ci)
        vstore(th, o + 2 * W, cnt)
    # 1 / theta[N], lane by lane (as in theta_phi_tile)
    vstore(lane, 0, bad)
    o = 3 * W * n
    for j in range(W):
        th[o + j], th[o + W + j], th[o + 2 * W + j], lane[W + j], lane[2 * W + j], zero_det = \
            _inv_theta_n(th[o + j], th[o + W + j], th[o + 2 * W + j])
        if zero_det:
            lane[j] = n - 1
    bad = vload(lane, 0, proto)
    t8 = vload(lane, W, proto)
    t9 = vload(lane, 2 * W, proto)
    tcnt = vload(th, o + 2 * W, proto)
    big = splat(_MAX, proto)
    # backward: phi[i] for i = N - 1 .. 0, combined with theta[i] on the fly
    pr = zero
    pi = zero
    cr = one
    ci = zero
    cnt = zero
    for i in range(n - 1, -1, -1):
        if i < n - 1:
            f, dc = _vrescale(_vmag(pr, pi, cr, ci), proto)
            dr, di = diag(a, r0, i + 1, zr, zi, di0)
            ur = vsub(vmul(dr, cr), vmul(di, ci))
            ui = vadd(vmul(dr, ci), vmul(di, cr))
            if i == n - 2:
                nr = ur
                ni = ui
            else:
                vr, vi = couple(k, r0, i + 1, pr, pi)
                if rec_mask is not None:
                    on = vload(th, fl + W * (i + 1), proto)
                    vr = sel_gt(on, zero, vr, zero)
                    vi = sel_gt(on, zero, vi, zero)
                nr = vsub(ur, vr)
                ni = vsub(ui, vi)
            pr = vmul(cr, f)
            pi = vmul(ci, f)
            cr = vmul(nr, f)
            ci = vmul(ni, f)
            cnt = vadd(cnt, dc)
        # G = theta[i] * phi[i] / theta[N]
        o = 3 * W * i
        ar = vload(th, o, proto)
        ai = vload(th, o + W, proto)
        br = vsub(vmul(ar, cr), vmul(ai, ci))
        bi = vadd(vmul(ar, ci), vmul(ai, cr))
        gr = vsub(vmul(br, t8), vmul(bi, t9))
        gi = vadd(vmul(br, t9), vmul(bi, t8))
        f = vpow2(vsub(vadd(vload(th, o + 2 * W, proto), cnt), tcnt))
        gr = vmul(gr, f)
        gi = vmul(gi, f)
        # beyond the float64 range (or NaN after an overflow): report
        pos = splat(i, proto)
        nb = sel_le(vmax(vabs(gr), vabs(gi)), big, bad, vmin(bad, pos))
        if combine_mask is not None:
            bad, gr, gi = keep_where(flag_col(combine_mask, r0, i, proto), nb, bad, gr, gi, zero)
        else:
            bad = nb
        put_c(out, r0, i, gr, gi)
    put_rows(first_bad_out, r0, bad)
    put_rows(fin_out, r0, fin)


@njit(**parallel_jit_kwargs())
def theta_phi_simd_driver(a, k, z, out, first_bad, rtol2, chunks, pow_table, proto, fin,
                          rec_mask=None, combine_mask=None):
    """``prange`` over chunks of ``W``-row SIMD tiles (:func:`theta_phi_simd_tile`);
    the last ``B mod W`` rows go through the scalar :func:`theta_phi_tile`."""
    W = len(proto)
    batch, n = a.shape
    ntiles = batch // W
    for c in prange(chunks):
        t0, t1 = chunk_tiles(c, chunks, ntiles)
        if t0 >= t1:
            continue
        th = np.empty(4 * W * (n + 1))
        lane = np.empty(3 * W)
        for t in range(t0, t1):
            theta_phi_simd_tile(a, k, z, t * W, out, first_bad, rtol2, th, lane, proto, fin,
                                rec_mask, combine_mask)
    rest = batch - ntiles * W
    if rest > 0:
        th_re = np.empty((n + 1, rest))
        th_im = np.empty((n + 1, rest))
        th_cnt = np.empty((n + 1, rest))
        lane10 = np.empty((10, rest))
        nophi = np.empty((0, rest))
        theta_phi_tile(a, k, z, ntiles * W, rest, rec_mask, combine_mask, out, first_bad, rtol2,
                       th_re, th_im, th_cnt, lane10, pow_table, nophi, nophi, nophi)
        fin_rows(a, k, ntiles * W, fin)


def _chunks(batch, tile):
    ntiles = (batch + tile - 1) // tile
    return min(ntiles, 4 * numba.get_num_threads())


def run_theta_phi(a, k, z, rec_mask=None, combine_mask=None, tile=None, keep=False, fin=None,
                  out=None):
    """Run the scaled theta/phi kernels.

    Returns ``(G, first_bad)``, or with ``keep=True``
    ``(G, first_bad, theta_parts, phi_parts)`` where the parts are
    ``(3, B, N + 1)`` and ``(3, B, N)`` float64 arrays: mantissa real part,
    mantissa imaginary part and scale count (the value is
    ``(re + 1j * im) * 2**(SHIFT * count)``).

    The SIMD tiles (:func:`theta_phi_simd_tile`) run unless ``keep`` or ``tile``
    is given, ``BKNUMBA_SIMD`` rules them out or the batch is smaller than a
    tile; with masks they compute every lane and select (the scalar tiles,
    :func:`theta_phi_tile`, skip the masked work per element, and give the same
    bits).

    ``fin`` : optional float64 ``(B,)``, written by the SIMD tiles as in
    :func:`~bknumba.cpu.ratio.run_ratio`; ``out`` as there.
    """
    batch, n = a.shape
    if out is None:
        out = np.empty((batch, n), dtype=np.complex128)
    first_bad = np.empty(batch, dtype=np.int64)
    theta_out = np.empty((3, batch if keep else 0, n + 1))
    phi_out = np.empty((3, batch if keep else 0, n))
    width = simd_width()
    if batch > 0 and tile is None and not keep and width >= 2 and batch >= width:
        rtol = options["pivot_rtol"]
        driver = pick_driver(theta_phi_simd_driver, _theta_phi_simd_driver_serial, batch * n)
        chunks = min(batch // width, 4 * numba.get_num_threads())
        if fin is None:
            fin = np.empty(batch)
        driver(a, k, z, out, first_bad, rtol * rtol, chunks, _POW, lanes(width), fin, rec_mask,
               combine_mask)
        return out, first_bad
    if batch > 0:
        if tile is None:
            tile = options["tile"]
        tile = max(1, min(tile, batch))
        rtol = options["pivot_rtol"]
        driver = pick_driver(theta_phi_driver, _theta_phi_driver_serial, batch * n)
        driver(a, k, z, rec_mask, combine_mask, out, first_bad, rtol * rtol, tile,
                         _chunks(batch, tile), _POW, theta_out, phi_out)
    if keep:
        return out, first_bad, theta_out, phi_out
    return out, first_bad


_theta_phi_driver_serial = serial_twin(theta_phi_driver)
_theta_phi_simd_driver_serial = serial_twin(theta_phi_simd_driver)
