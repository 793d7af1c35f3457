"""Sequence-parallel CUDA kernels: chunked recursions, Moebius-map scan.

Each row is cut into chunks of ``C`` positions, one chunk per thread; a
block of ``T`` threads owns a *segment* of ``T`` consecutive chunks
(``T * C`` positions), staged through shared memory with coalesced loads and
stores.

Per chunk, the forward recursion (``L`` / ``theta``) and the backward one
(``R`` / ``phi``) are composed into two 2x2 complex matrices (Moebius maps,
see :mod:`bknumba.gpu._device`), rescaled by exact powers of two so that
nothing overflows and a masked position (rank-1 map, determinant 0) is no
special case. The chunk maps are combined by a scan to give every chunk the
exact carry-in of both recursions; each chunk then re-runs its recursions
from those carries, checks every pivot and writes ``G``.

Two layouts:

``fused`` (a row has at most ``T`` chunks)
    A block holds ``T // nc`` whole rows: load, chunk maps, in-block carry
    propagation, re-run, store, in one kernel. Device memory traffic is the
    minimum: read ``a`` and ``k`` once, write ``G`` once (32 B per element for
    real inputs).
``global`` (longer rows)
    Kernel 1 reads each segment, composes and scans its chunk maps, and
    writes the segment's composed maps and its scanned chunk maps (a device
    workspace of 144 B per chunk, 9 B per position at the default chunk of
    16, kept between calls at the largest size needed so far:
    :func:`clear_workspace` frees it); a hierarchical
    scan over the segment maps (groups of ``GROUP``, a few tiny kernels)
    gives every segment its carries; kernel 2 reads the segment again, loads
    its scanned chunk maps (rather than composing and scanning them again),
    propagates the segment carries to its chunks and re-runs them. ``G`` at
    position 0 depends on the whole row, so a row larger than the chip's
    on-chip memory must be read twice: 48 B per element for real inputs, plus
    the 18 B of chunk maps written and read.

Under a recursion mask (the "local" and "seed" sparse semantics) a masked
position uses the rank-1 map ``[[d, 0], [1, 0]]``: the coupling is not
multiplied, the combine step (and its reciprocal) is skipped, and ``0`` is
written for ``G``. Loads are not skipped: masked positions are scattered
below the 32-byte sector size, so skipping them saves no memory traffic,
and unconditional (clamped) loads keep four loads per array in flight.

Under the "local" semantics a masked position also restarts the recursions
*exactly* (``L = R = d`` there), and so do the row's ends: in the fused
layout, a block whose every chunk finds a restart within ``2 C`` positions
before and after it (block-uniform vote; tried only where at least half of
the block's threads staged a sixth or more masked positions, so that a mask
with few of them does not pay for a failed search) skips the chunk maps and the scan,
and each chunk gets its carries by running the recursions from those
restarts (a few steps at moderate sparsity; the same operations as the
chunks that own those positions). Other blocks, rows with rescaled
couplings, and the global layout take the map path.

Loads are staged with clamped, branch-free indices so that each thread has
several loads in flight; the in-block scan over the chunk maps is a
Hillis-Steele scan in shared memory with ``syncthreads`` (no warp shuffles,
so it runs in Numba's CUDA simulator).

The kernels are bound by the instructions they issue and by how many warps
fit on an SM (BENCHMARKS.md, section 3), so: the chunk maps share their
shared-memory space with the re-run's values (dead by then), real factors
multiply complex values as two products (:func:`~bknumba.gpu._device.rmul`),
staged slots are stepped rather than divided out, shared-memory indices
are unsigned (:func:`~bknumba.gpu._device.ix`: no negative-index code), and
the chunk-map loops take two steps per iteration (the map's rows change places
without register copies), each testing the magnitude of its new row only
(:func:`~bknumba.gpu._device.renorm_rows`).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numba import cuda, types

from . import _device as dv
from ._device import SHIFT  # noqa: F401  (re-exported for the API)

__all__ = ["run_sequence", "GROUP", "segment_threads", "workspace", "large_workspace",
           "clear_workspace"]

#: Maps composed per thread in the hierarchical segment scan.
GROUP = 32
#: Shared-memory budget per block of the segment kernels (bytes).
SHARED_BUDGET = 48 * 1024 - 512
_F64 = types.float64
_U8 = types.uint8
_MAP = 18  # forward map (9 float64) + backward map (9)
_CAR = 10  # forward carry vector (5) + backward carry vector (5)


def _maps_share(chunk: int, theta: bool) -> bool:
    """Whether a thread's chunk maps (``_MAP`` float64) fit in its slots of the
    re-run's ``L`` / ``G`` (and theta's counts), which they then share: the maps
    are dead once the re-run writes there (a ``syncthreads`` lies between)."""
    return (chunk + 1) * (3 if theta else 2) >= _MAP


def segment_threads(tpb: int, chunk: int, cplx_a: bool, cplx_k: bool, theta: bool,
                    masked: bool) -> int:
    """Threads per block of the segment kernels: ``<= tpb``, a power of two,
    within the shared-memory budget."""
    per_slot = (16 if cplx_a else 8) + (16 if cplx_k else 8) + (1 if masked else 0)
    lg = (chunk + 1) * (24 if theta else 16)
    per_thread = (chunk + 1) * per_slot + lg + (0 if _maps_share(chunk, theta) else _MAP * 8) + 24
    t = 1
    while t * 2 <= tpb and t * 2 * per_thread <= SHARED_BUDGET:
        t *= 2
    return t


@lru_cache(maxsize=None)
def _segment_kernel(C, T, cplx_a, cplx_k, theta, rec, comb, keep, mode):
    """Compile-time specialised segment kernel.

    mode 0: fused (``group`` = rows per block); mode 1: global kernel 1
    (segment maps into ``mc``); mode 2: global kernel 2 (carries from ``mc``,
    ``group`` = segments per row).
    """
    P = C + 1
    SA = T * P
    SAI = SA if cplx_a else 1
    SKI = SA if cplx_k else 1
    masked = rec or comb
    SM = SA if masked else 1
    SL = SA if mode != 1 else 1
    SC = SA if (theta and mode != 1) else 1
    ld_a = dv.ld_cplx if cplx_a else dv.ld_real
    ld_k = dv.ld_cplx if cplx_k else dv.ld_real
    kmul = dv.cmul if cplx_k else dv.rmul  # coupling times complex
    TC = T % C == 0
    QT = T + T // C  # slot distance of positions T apart (when C divides T)
    write_g = (mode != 1) and not keep
    # "local" semantics on whole staged rows: carries from the nearest restart
    # (see the comment at the look-back in the kernel)
    LOOK = mode == 0 and rec and not theta
    LB = 2 * C  # longest look-back, positions
    zero_k = 0j if cplx_k else 0.0
    O_AR = 0
    O_AI = O_AR + SA
    O_KR = O_AI + SAI
    O_KI = O_KR + SA
    O_LR = O_KI + SKI
    O_LI = O_LR + SL
    O_C = O_LI + SL
    O_MAP = O_LR if mode != 1 and _maps_share(C, theta) else O_C + SC
    O_ROW = max(O_C + SC, O_MAP + T * _MAP)
    O_M8 = (O_ROW + T * 3) * 8

    @cuda.jit(device=True, inline=True)
    def slot(qrow, off):
        """Shared-memory slot of the staged position ``off`` (from the first staged
        one): chunk ``off // C`` at stride ``P = C + 1``, i.e. ``off + off // C``."""
        return qrow * P + off + off // C

    @cuda.jit(device=True, inline=True)
    def put(sa_re, sa_im, sk_re, sk_im, sm, q, x, y, m):
        """Store one staged position at slot ``q``."""
        sa_re[dv.ix(q)] = x.real
        if cplx_a:
            sa_im[dv.ix(q)] = x.imag
        sk_re[dv.ix(q)] = y.real
        if cplx_k:
            sk_im[dv.ix(q)] = y.imag
        if masked:
            sm[dv.ix(q)] = m

    @cuda.jit(device=True, inline=True)
    def restart(sm, qrow, p, stop, step):
        """The nearest restart from position ``p`` on, walking by ``step`` (-1 or +1):
        a masked position, or ``stop`` (the row's first or last position), within
        ``LB`` steps; returns ``(position, 1 if found else 0)``."""
        cnt = 0
        while p != stop and sm[dv.ix(slot(qrow, p))] != 0 and cnt < LB:
            p += step
            cnt += 1
        return p, 1 if p == stop or sm[dv.ix(slot(qrow, p))] == 0 else 0

    @cuda.jit(device=True, inline=True)
    def map_step(sa_re, sa_im, sk_re, sk_im, q, zz, kk, tau, drop, bal, m00, m01, m10, m11, mc,
                 s1):
        """One step of a chunk map at slot ``q``: the new first row is ``d * row0 - kk *
        row1`` (``d * row0`` when ``drop``), the second row the old first times ``tau``
        (balancing), rescaled (:func:`~bknumba.gpu._device.renorm_rows`; ``s1`` is the
        magnitude of the first row, as returned for it)."""
        d = ld_a(sa_re, sa_im, q) - zz
        if drop:
            n00 = d * m00
            n01 = d * m01
        else:
            n00 = d * m00 - kmul(kk, m10)
            n01 = d * m01 - kmul(kk, m11)
        if bal:
            m00 = dv.rmul(tau, m00)
            m01 = dv.rmul(tau, m01)
            s1 = s1 * tau
        return dv.renorm_rows(n00, n01, m00, m01, mc, s1)

    @cuda.jit(device=True, inline=True)
    def fwd_step(sa_re, sa_im, sk_re, sk_im, sm, q, zz, kt, bal, f00, f01, f10, f11, fc, mf):
        """Forward chunk-map step at slot ``q`` (:func:`map_step` with the coupling
        ``kt`` of the position before); returns the balanced coupling of this
        position for the next step, and the map."""
        kt_next, tau = dv.balance_if(ld_k(sk_re, sk_im, q), bal)
        f00, f01, f10, f11, fc, mf = map_step(sa_re, sa_im, sk_re, sk_im, q, zz, kt, tau,
                                              rec and sm[dv.ix(q)] == 0, bal,
                                              f00, f01, f10, f11, fc, mf)
        return kt_next, f00, f01, f10, f11, fc, mf

    @cuda.jit(device=True, inline=True)
    def bwd_step(sa_re, sa_im, sk_re, sk_im, sm, q, i, last, zz, kt, kt_in, tau_in, bal,
                 g00, g01, g10, g11, gc, mg):
        """Backward chunk-map step at the chunk's ``i``-th position (slot ``q``; ``last``:
        the row's last position, which has no coupling to the right); returns the
        balanced coupling ``k[p-1]`` (staged at ``q - 1``, or the chunk's incoming
        one at ``i = 0``) for the next step, and the map."""
        if i > 0:
            kt_prev, tau = dv.balance_if(ld_k(sk_re, sk_im, q - 1), bal)
        else:
            kt_prev = kt_in
            tau = tau_in
        g00, g01, g10, g11, gc, mg = map_step(sa_re, sa_im, sk_re, sk_im, q, zz, kt, tau,
                                              last or (rec and sm[dv.ix(q)] == 0), bal,
                                              g00, g01, g10, g11, gc, mg)
        return kt_prev, g00, g01, g10, g11, gc, mg

    @cuda.jit
    def kern(a, k, z, mask, out, bad, mc, pm, thn, th, ph, n, nc, group, rtol2):
        # one dynamic shared buffer (sizes are compile-time constants; numba
        # types a closure int as int64, not as a literal, so static shapes fail)
        dyn = cuda.shared.array(0, _F64)
        dyn8 = cuda.shared.array(0, _U8)
        sa_re = dyn[O_AR:O_AR + SA]
        sa_im = dyn[O_AI:O_AI + SAI]
        sk_re = dyn[O_KR:O_KR + SA]
        sk_im = dyn[O_KI:O_KI + SKI]
        sl_re = dyn[O_LR:O_LR + SL]
        sl_im = dyn[O_LI:O_LI + SL]
        scnt = dyn[O_C:O_C + SC]
        smap = dyn[O_MAP:O_MAP + T * _MAP]
        srow = dyn[O_ROW:O_ROW + T * 3]
        sm = dyn8[O_M8:O_M8 + SM]

        tid = cuda.threadIdx.x
        blk = cuda.blockIdx.x
        nrows = a.shape[0]
        if mode == 0:
            row0 = blk * group
            rl = tid // nc
            j = tid - rl * nc
            r = row0 + rl
            active = rl < group and r < nrows
            sg = 0
        else:
            row0 = blk // group
            sg = blk - row0 * group
            rl = 0
            r = row0
            j = sg * T + tid
            active = j < nc

        # rows staged by this block: mode 0 whole rows row0 .. row0 + group - 1,
        # modes 1 / 2 positions [pstart, pend) of one row
        if mode == 0:
            nslots = group
            pstart = 0
            pend = n
        else:
            nslots = 1
            pstart = sg * T * C
            pend = min(n, pstart + T * C)

        # ---- stage a, k, mask: coalesced, branch-free clamped loads, 4 per array in flight;
        # note any coupling outside dv.balance's untouched range
        wild = 0
        nmasked = 0  # LOOK: how many of the positions this thread staged are masked
        for rl2 in range(nslots):
            r2 = row0 + rl2
            if r2 < nrows:
                qrow = rl2 * nc if mode == 0 else 0
                p = pstart + tid
                while p < pend:
                    pb = p + T
                    pc = pb + T
                    pd = pc + T
                    xa = a[dv.ix(r2), dv.ix(p)]
                    xb = a[dv.ix(r2), dv.ix(min(pb, pend - 1))]
                    xc = a[dv.ix(r2), dv.ix(min(pc, pend - 1))]
                    xd = a[dv.ix(r2), dv.ix(min(pd, pend - 1))]
                    ya = zero_k
                    yb = zero_k
                    yc = zero_k
                    yd = zero_k
                    if n > 1:
                        ya = k[dv.ix(r2), dv.ix(min(p, n - 2))]
                        yb = k[dv.ix(r2), dv.ix(min(pb, n - 2))]
                        yc = k[dv.ix(r2), dv.ix(min(pc, n - 2))]
                        yd = k[dv.ix(r2), dv.ix(min(pd, n - 2))]
                        if not (dv.moderate(ya) and dv.moderate(yb) and dv.moderate(yc)
                                and dv.moderate(yd)):
                            wild = 1
                    ma = 1
                    mb = 1
                    mc_ = 1
                    md = 1
                    if masked:
                        ma = 1 if mask[dv.ix(r2), dv.ix(p)] else 0
                        mb = 1 if mask[dv.ix(r2), dv.ix(min(pb, pend - 1))] else 0
                        mc_ = 1 if mask[dv.ix(r2), dv.ix(min(pc, pend - 1))] else 0
                        md = 1 if mask[dv.ix(r2), dv.ix(min(pd, pend - 1))] else 0
                    # slots T positions apart are QT apart when C divides T
                    q = slot(qrow, p - pstart)
                    put(sa_re, sa_im, sk_re, sk_im, sm, q, xa, ya, ma)
                    if pb < pend:
                        q = q + QT if TC else slot(qrow, pb - pstart)
                        put(sa_re, sa_im, sk_re, sk_im, sm, q, xb, yb, mb)
                    if pc < pend:
                        q = q + QT if TC else slot(qrow, pc - pstart)
                        put(sa_re, sa_im, sk_re, sk_im, sm, q, xc, yc, mc_)
                    if pd < pend:
                        q = q + QT if TC else slot(qrow, pd - pstart)
                        put(sa_re, sa_im, sk_re, sk_im, sm, q, xd, yd, md)
                    if LOOK:  # the clamped loads past pend are not counted
                        nmasked += ((1 - ma) + (1 - mb if pb < pend else 0)
                                    + (1 - mc_ if pc < pend else 0) + (1 - md if pd < pend else 0))
                    p += 4 * T
        # every coupling of the block moderate: dv.balance is the identity on all of
        # them, and the chunk-map loops skip it (a warp-uniform branch)
        bal = cuda.syncthreads_or(wild)

        s = j * C
        nv = min(C, n - s)
        base = tid * P
        zz = z[r] if active else 0j
        o = tid * _MAP
        e_last = s + nv - 1
        qown = rl * nc  # slot row of this thread's row (whole rows staged: mode 0)

        # ---- "local" semantics: a masked position restarts both recursions
        # (L = R = d there), and so does the row's end. A chunk's carries L[s-1] and
        # R[e+1] then follow from the nearest restart before and after it, a few
        # positions away at moderate sparsity, by the recursions themselves (the
        # same operations as the chunks that own those positions, so the same
        # bits). When every chunk of the block finds both restarts within LB
        # positions of the staged row, the block skips the chunk maps and the scan
        # (block-uniform: the scan has barriers); else, and with rescaled
        # couplings (bal), it takes the map path below.
        # A block with few masked positions would fail the look-back (at 10 %
        # sparsity a chunk finds no restart within 32 positions with probability
        # 0.9**32 = 3 %, so one of 64 chunks nearly always fails) and pay for it:
        # the block tries it only when at least half of its threads staged a sixth
        # or more masked positions (a vote, taken with the staging's counts; at
        # 1/6 sparsity a chunk fails with probability 0.3 %). Either way the
        # results are the same: the map path is exact at any sparsity.
        dense = False
        if LOOK and not bal:
            # positions this thread staged: pstart + tid, + T, ... below pend, per staged row
            nstaged = (max(0, min(nslots, nrows - row0))
                       * max(0, (pend - pstart - tid + T - 1) // T))
            dense = 2 * cuda.syncthreads_count(1 if 6 * nmasked >= nstaged else 0) >= T
        lb = False
        fm = 0
        bm = 0
        if dense:
            # the restarts before the chunks first; after them only if all were found
            # (a mask with few masked positions then wastes one look-back, not two)
            ok = 1
            if active and s > 0:
                fm, ok = restart(sm, qown, s - 1, 0, -1)
            lb = cuda.syncthreads_and(ok) != 0
            if lb:
                ok = 1
                if active and e_last < n - 1:
                    bm, ok = restart(sm, qown, e_last + 1, n - 1, 1)
                lb = cuda.syncthreads_and(ok) != 0
        # couplings at the chunk's ends, balanced (dv.balance): k[s-1] (read from
        # device memory: staged by the previous chunk) and k[e]; computed again
        # for the re-run rather than kept live across the scan (registers)
        kt_in = zero_k
        tau_in = 1.0
        kt_out = zero_k
        if active and mode != 2:
            kt_in, tau_in = dv.balance(k[dv.ix(r), dv.ix(s - 1)] if s > 0 else zero_k)
            kt_out, _ = dv.balance(ld_k(sk_re, sk_im, base + nv - 1))
        # ---- chunk maps (forward: F = A_e ... A_s; backward: B = A'_s ... A'_e),
        # in balanced coordinates: the second component scaled by t (dv.balance)
        f00 = 1.0 + 0j
        f01 = 0j
        f10 = 0j
        f11 = 1.0 + 0j
        fc = 0.0
        g00 = 1.0 + 0j
        g01 = 0j
        g10 = 0j
        g11 = 1.0 + 0j
        gc = 0.0
        if active and mode != 2 and not lb:
            # forward step at p: [[d[p], -k[p-1] / t[p-1]], [t[p], 0]]; two steps per
            # iteration, so that the rows change places without register copies
            kt = kt_in
            mf = 1.0  # magnitude of the first row (dv.renorm_rows)
            i = 0
            while i < nv:
                q = base + i
                kt, f00, f01, f10, f11, fc, mf = fwd_step(
                    sa_re, sa_im, sk_re, sk_im, sm, q, zz, kt, bal, f00, f01, f10, f11, fc, mf)
                if i + 1 < nv:
                    kt, f00, f01, f10, f11, fc, mf = fwd_step(
                        sa_re, sa_im, sk_re, sk_im, sm, q + 1, zz, kt, bal,
                        f00, f01, f10, f11, fc, mf)
                i += 2
            # backward step at p: [[d[p], -k[p] / t[p]], [t[p-1], 0]]; two steps per
            # iteration (only the first can be the row's last position)
            kt = kt_out
            mg = 1.0
            i = nv - 1
            while i >= 0:
                q = base + i
                kt, g00, g01, g10, g11, gc, mg = bwd_step(
                    sa_re, sa_im, sk_re, sk_im, sm, q, i, s + i == n - 1, zz, kt, kt_in, tau_in,
                    bal, g00, g01, g10, g11, gc, mg)
                if i > 0:
                    kt, g00, g01, g10, g11, gc, mg = bwd_step(
                        sa_re, sa_im, sk_re, sk_im, sm, q - 1, i - 1, False, zz, kt, kt_in,
                        tau_in, bal, g00, g01, g10, g11, gc, mg)
                i -= 2
            dv.write_mat(smap, o, f00, f01, f10, f11, fc)
            dv.write_mat(smap, o + 9, g00, g01, g10, g11, gc)

        # ---- in-block scan of the chunk maps (Hillis-Steele, shared memory)
        if mode == 0:
            span = nc
            jj = j
        else:
            span = min(T, nc - sg * T)
            jj = tid
        cuda.syncthreads()
        if mode == 2:
            # kernel 1 stored this segment's scanned chunk maps (pm): load them
            # (coalesced) instead of computing the chunk maps and the scan again
            idx = tid
            while idx < span * _MAP:
                smap[dv.ix(idx)] = pm[dv.ix(r), dv.ix(sg), dv.ix(idx)]
                idx += T
            cuda.syncthreads()
        elif not lb:
            dd = 1
            while dd < span:
                upd_f = active and jj >= dd
                upd_b = active and jj + dd < span
                if upd_f:
                    p00, p01, p10, p11, pcn = dv.read_mat(smap, o - dd * _MAP)
                if upd_b:
                    q00, q01, q10, q11, qcn = dv.read_mat(smap, o + dd * _MAP + 9)
                cuda.syncthreads()
                if upd_f:
                    f00, f01, f10, f11, fc = dv.mat_mul(f00, f01, f10, f11, fc,
                                                        p00, p01, p10, p11, pcn)
                    dv.write_mat(smap, o, f00, f01, f10, f11, fc)
                if upd_b:
                    g00, g01, g10, g11, gc = dv.mat_mul(g00, g01, g10, g11, gc,
                                                        q00, q01, q10, q11, qcn)
                    dv.write_mat(smap, o + 9, g00, g01, g10, g11, gc)
                cuda.syncthreads()
                dd *= 2

        # ---- carries
        if mode == 1:
            if active and jj == span - 1:
                dv.write_mat(mc[r, sg], 0, f00, f01, f10, f11, fc)
            if active and jj == 0:
                dv.write_mat(mc[r, sg], 9, g00, g01, g10, g11, gc)
            # the scanned chunk maps of the segment, for kernel 2 (coalesced)
            idx = tid
            while idx < span * _MAP:
                pm[dv.ix(r), dv.ix(sg), dv.ix(idx)] = smap[dv.ix(idx)]
                idx += T
            return
        fx = 1.0 + 0j
        fy = 0j
        fcnt = 0.0
        gx = 1.0 + 0j
        gy = 0j
        gcnt = 0.0
        if active and not lb:
            if mode == 2:
                fx, fy, fcnt = dv.read_vec(mc[r, sg], 0)
                gx, gy, gcnt = dv.read_vec(mc[r, sg], 5)
            if jj > 0:
                p00, p01, p10, p11, pcn = dv.read_mat(smap, o - _MAP)
                fx, fy, fcnt = dv.mat_vec(p00, p01, p10, p11, pcn, fx, fy, fcnt)
            if jj < span - 1:
                q00, q01, q10, q11, qcn = dv.read_mat(smap, o + _MAP + 9)
                gx, gy, gcnt = dv.mat_vec(q00, q01, q10, q11, qcn, gx, gy, gcnt)
            if mode == 0 and theta and jj == span - 1:
                tnx, tny, tnc = dv.renorm2(f00, f10, fc)
                srow[dv.ix(rl * 3)] = tnx.real
                srow[dv.ix(rl * 3 + 1)] = tnx.imag
                srow[dv.ix(rl * 3 + 2)] = tnc
        cuda.syncthreads()

        # ---- re-run each chunk from its carries
        bb = n
        if active:
            kt_in, _ = dv.balance(k[dv.ix(r), dv.ix(s - 1)] if s > 0 else zero_k)
            kt_out, _ = dv.balance(ld_k(sk_re, sk_im, base + nv - 1))
            if not theta:
                # forward: L[p] = d[p] - k[p-1] / L[p-1]; the balanced carry gives
                # w = t[s-1] / L[s-1] = fy / fx, and k[s-1] / L[s-1] = (k[s-1] / t[s-1]) w
                if lb:
                    # L from the restart fm (masked, or the row's start) up to s - 1
                    # (no rescaled couplings here: t = 1); pivots there are the
                    # owning chunks' to check
                    w = 0j
                    if s > 0:
                        lv = ld_a(sa_re, sa_im, slot(qown, fm)) - zz
                        for p in range(fm + 1, s):
                            d = ld_a(sa_re, sa_im, slot(qown, p)) - zz
                            lv = d - kmul(ld_k(sk_re, sk_im, slot(qown, p - 1)), dv.inv(lv))
                        w = dv.inv(lv)
                else:
                    if s > 0 and fx.real == 0.0 and fx.imag == 0.0:
                        bb = min(bb, s - 1)
                    w = dv.ratio(fy, fx) if s > 0 else 0j
                for i in range(nv):
                    q = base + i
                    d = ld_a(sa_re, sa_im, q) - zz
                    if rec and sm[dv.ix(q)] == 0:
                        lv = d
                        sc = dv.abs2(d)
                    else:
                        if i == 0:
                            kk = kt_in
                        else:
                            kk = ld_k(sk_re, sk_im, q - 1)
                        qv = kmul(kk, w)
                        lv = d - qv
                        sc = dv.abs2(d) + dv.abs2(qv)
                    if dv.small_pivot(dv.abs2(lv), sc, rtol2):
                        bb = min(bb, s + i)
                    sl_re[dv.ix(q)] = lv.real
                    sl_im[dv.ix(q)] = lv.imag
                    w = dv.inv(lv)
                # backward: R[p] = d[p] - k[p] / R[p+1]; from the balanced carry
                # u = t[e] / R[e+1] = gy / gx, used with k[e] / t[e] (kt_out)
                if lb:
                    # R from the restart bm (masked, or the row's end) down to e + 1
                    u = 0j
                    if e_last < n - 1:
                        rv = ld_a(sa_re, sa_im, slot(qown, bm)) - zz
                        for p in range(bm - 1, e_last, -1):
                            d = ld_a(sa_re, sa_im, slot(qown, p)) - zz
                            rv = d - kmul(ld_k(sk_re, sk_im, slot(qown, p)), dv.inv(rv))
                        u = dv.inv(rv)
                else:
                    if e_last < n - 1 and gx.real == 0.0 and gx.imag == 0.0:
                        bb = min(bb, e_last + 1)
                    u = dv.ratio(gy, gx) if e_last < n - 1 else 0j
                for i in range(nv - 1, -1, -1):
                    q = base + i
                    p = s + i
                    d = ld_a(sa_re, sa_im, q) - zz
                    unmasked = True
                    if masked:
                        unmasked = sm[dv.ix(q)] != 0
                    if p == n - 1 or (rec and not unmasked):
                        rv = d
                        sc = dv.abs2(d)
                    else:
                        qv = kmul(kt_out if i == nv - 1 else ld_k(sk_re, sk_im, q), u)
                        rv = d - qv
                        sc = dv.abs2(d) + dv.abs2(qv)
                    m2 = dv.abs2(rv)
                    if dv.small_pivot(m2, sc, rtol2):
                        bb = min(bb, p)
                    u = dv.inv(rv)
                    if comb and not unmasked:
                        sl_re[dv.ix(q)] = 0.0
                        sl_im[dv.ix(q)] = 0.0
                    else:
                        lv = complex(sl_re[dv.ix(q)], sl_im[dv.ix(q)])
                        ev = lv + rv - d
                        if dv.small_pivot(dv.abs2(ev), dv.abs2(lv) + m2, rtol2):
                            bb = min(bb, p)
                        gv = dv.inv(ev)
                        sl_re[dv.ix(q)] = gv.real
                        sl_im[dv.ix(q)] = gv.imag
            else:
                # forward theta: (theta[p+1], theta[p]) from (theta[p], theta[p-1]);
                # the carry is balanced, ty = t[s-1] theta[s-1], used with kt_in
                tx = fx
                ty = fy
                tc = fcnt
                if keep and s == 0:
                    th[0, r, 0] = 1.0
                    th[1, r, 0] = 0.0
                    th[2, r, 0] = 0.0
                for i in range(nv):
                    q = base + i
                    p = s + i
                    sl_re[dv.ix(q)] = tx.real
                    sl_im[dv.ix(q)] = tx.imag
                    scnt[dv.ix(q)] = tc
                    d = ld_a(sa_re, sa_im, q) - zz
                    uv = d * tx
                    if p == 0 or (rec and sm[dv.ix(q)] == 0):
                        nx = uv
                        vv = 0j
                    else:
                        if i == 0:
                            kk = kt_in
                        else:
                            kk = ld_k(sk_re, sk_im, q - 1)
                        vv = kmul(kk, ty)
                        nx = uv - vv
                    if p == n - 1 and dv.cancelled(nx, uv, vv, rtol2):
                        bb = n - 1
                    tx, ty, tc = dv.renorm2(nx, tx, tc)
                    if keep:
                        th[0, r, p + 1] = tx.real
                        th[1, r, p + 1] = tx.imag
                        th[2, r, p + 1] = tc
                # backward phi: phi[p] known; step at p gives phi[p-1]
                if write_g:
                    if mode == 0:
                        nre = srow[dv.ix(rl * 3)]
                        nim = srow[dv.ix(rl * 3 + 1)]
                        ncnt = srow[dv.ix(rl * 3 + 2)]
                    else:
                        nre = thn[r, 0]
                        nim = thn[r, 1]
                        ncnt = thn[r, 2]
                    # theta[N] alone into range, so that 1 / theta[N] is finite
                    tnv, _, ncnt = dv.renorm2(complex(nre, nim), 0j, ncnt)
                    if tnv.real == 0.0 and tnv.imag == 0.0:
                        bb = n - 1
                    tinv = dv.inv(tnv)
                px = gx
                py = gy
                pc = gcnt
                for i in range(nv - 1, -1, -1):
                    q = base + i
                    p = s + i
                    if keep:
                        ph[0, r, p] = px.real
                        ph[1, r, p] = px.imag
                        ph[2, r, p] = pc
                    if write_g:
                        if comb and sm[dv.ix(q)] == 0:
                            sl_re[dv.ix(q)] = 0.0
                            sl_im[dv.ix(q)] = 0.0
                        else:
                            gv = complex(sl_re[dv.ix(q)], sl_im[dv.ix(q)]) * px * tinv
                            f = dv.pow2(scnt[dv.ix(q)] + pc - ncnt)
                            gv = complex(gv.real * f, gv.imag * f)
                            if dv.out_of_range(gv):
                                bb = min(bb, p)
                            sl_re[dv.ix(q)] = gv.real
                            sl_im[dv.ix(q)] = gv.imag
                    if i > 0:
                        d = ld_a(sa_re, sa_im, q) - zz
                        uv = d * px
                        if p == n - 1 or (rec and sm[dv.ix(q)] == 0):
                            nx = uv
                        else:
                            # the first step from the balanced carry: py = t[e] phi[e+1]
                            kk = kt_out if i == nv - 1 else ld_k(sk_re, sk_im, q)
                            nx = uv - kmul(kk, py)
                        px, py, pc = dv.renorm2(nx, px, pc)
            if bb < n:
                cuda.atomic.min(bad, r, bb)
        if not write_g:
            return
        cuda.syncthreads()
        # ---- store G (coalesced)
        for rl2 in range(nslots):
            r2 = row0 + rl2
            if r2 < nrows:
                qrow = rl2 * nc if mode == 0 else 0
                p = pstart + tid
                q = slot(qrow, tid)
                while p < pend:
                    out[dv.ix(r2), dv.ix(p)] = complex(sl_re[dv.ix(q)], sl_im[dv.ix(q)])
                    q = q + QT if TC else slot(qrow, p + T - pstart)
                    p += T

    return kern, O_M8 + SM


@cuda.jit
def _compose_groups(mi, mo, m, g):
    """Thread per (row, group of ``g`` maps): compose the group's maps."""
    t = cuda.grid(1)
    ng = (m + g - 1) // g
    if t >= mi.shape[0] * ng:
        return
    r = t // ng
    gi = t - r * ng
    lo = gi * g
    hi = min(m, lo + g)
    f00 = 1.0 + 0j
    f01 = 0j
    f10 = 0j
    f11 = 1.0 + 0j
    fc = 0.0
    for c in range(lo, hi):
        b00, b01, b10, b11, bc = dv.read_mat(mi[r, c], 0)
        f00, f01, f10, f11, fc = dv.mat_mul(b00, b01, b10, b11, bc, f00, f01, f10, f11, fc)
    dv.write_mat(mo[r, gi], 0, f00, f01, f10, f11, fc)
    f00 = 1.0 + 0j
    f01 = 0j
    f10 = 0j
    f11 = 1.0 + 0j
    fc = 0.0
    for c in range(hi - 1, lo - 1, -1):
        b00, b01, b10, b11, bc = dv.read_mat(mi[r, c], 9)
        f00, f01, f10, f11, fc = dv.mat_mul(b00, b01, b10, b11, bc, f00, f01, f10, f11, fc)
    dv.write_mat(mo[r, gi], 9, f00, f01, f10, f11, fc)


@cuda.jit
def _carries(mi, cup, car, thn, m, g, top):
    """Thread per (row, group): carry vectors of each map of the group.

    With ``top`` (one group per row) the carries start from the row ends
    ``(1, 0)`` and the row total ``theta[N]`` goes into ``thn``; else from
    the group's carries ``cup``.
    """
    t = cuda.grid(1)
    ng = (m + g - 1) // g
    if t >= mi.shape[0] * ng:
        return
    r = t // ng
    gi = t - r * ng
    lo = gi * g
    hi = min(m, lo + g)
    if top:
        vx = 1.0 + 0j
        vy = 0j
        vc = 0.0
        wx = 1.0 + 0j
        wy = 0j
        wc = 0.0
    else:
        vx, vy, vc = dv.read_vec(cup[r, gi], 0)
        wx, wy, wc = dv.read_vec(cup[r, gi], 5)
    for c in range(lo, hi):
        dv.write_vec(car[r, c], 0, vx, vy, vc)
        b00, b01, b10, b11, bc = dv.read_mat(mi[r, c], 0)
        vx, vy, vc = dv.mat_vec(b00, b01, b10, b11, bc, vx, vy, vc)
    if top:
        thn[r, 0] = vx.real
        thn[r, 1] = vx.imag
        thn[r, 2] = vc
    for c in range(hi - 1, lo - 1, -1):
        dv.write_vec(car[r, c], 5, wx, wy, wc)
        b00, b01, b10, b11, bc = dv.read_mat(mi[r, c], 9)
        wx, wy, wc = dv.mat_vec(b00, b01, b10, b11, bc, wx, wy, wc)


_WORKSPACE: dict = {}


def workspace(name, shape, dtype=np.float64):
    """A device scratch array reused between calls of the same shape."""
    key = (name, tuple(shape), np.dtype(dtype).str)
    arr = _WORKSPACE.get(key)
    if arr is None:
        if len(_WORKSPACE) > 64:
            _WORKSPACE.clear()
        arr = _WORKSPACE[key] = cuda.device_array(shape, dtype=dtype)
    return arr


#: Growing flat buffers behind :func:`large_workspace`, one per name.
_LARGE: dict = {}


def large_workspace(name, shape, dtype=np.float64):
    """A device scratch array of ``shape`` viewed from one flat buffer per ``name``,
    replaced only by a larger one: for scratch that grows with ``B * N``, so that
    calls of many shapes hold the largest size needed so far, not the sum over
    shapes (:func:`workspace` keeps one array per shape)."""
    count = math.prod(shape)
    dt = np.dtype(dtype)
    buf = _LARGE.get(name)
    if buf is None or buf.dtype != dt or buf.shape[0] < count:
        _LARGE.pop(name, None)  # free the old one first
        buf = _LARGE[name] = cuda.device_array(max(count, 1), dtype=dt)
    return buf[:count].reshape(tuple(shape))


def clear_workspace():
    """Free the cached device scratch arrays."""
    _WORKSPACE.clear()
    _LARGE.clear()


def _grid(count, tpb):
    return max(1, (count + tpb - 1) // tpb)


def _scan(maps, thn, tpb):
    """Carries ``(B, m, 10)`` of the segment maps ``(B, m, 18)``; fills ``thn``."""
    batch, m, _ = maps.shape
    levels = [maps]
    while levels[-1].shape[1] > GROUP:
        mi = levels[-1]
        mm = mi.shape[1]
        ng = (mm + GROUP - 1) // GROUP
        mo = workspace(f"maps{len(levels)}", (batch, ng, _MAP))
        _compose_groups[_grid(batch * ng, tpb), tpb](mi, mo, mm, GROUP)
        levels.append(mo)
    cup = None
    for lvl in reversed(levels):
        mm = lvl.shape[1]
        car = workspace(f"car{mm}", (batch, mm, _CAR))
        if cup is None:
            _carries[_grid(batch, tpb), tpb](lvl, car, car, thn, mm, max(mm, 1), True)
        else:
            ng = (mm + GROUP - 1) // GROUP
            _carries[_grid(batch * ng, tpb), tpb](lvl, cup, car, thn, mm, GROUP, False)
        cup = car
    return cup


def run_sequence(a, k, z, mask, rec, comb, theta, out, bad, *, keep_arrays=None,
                 chunk, tpb, rtol, dummies):
    """Launch the sequence-parallel kernels (device arrays in, results written).

    Parameters
    ----------
    a, k, z : device arrays ``(B, N)``, ``(B, N - 1)``, ``(B,)``.
    mask : device ``(B, N)`` bool or the dummy; ``rec`` / ``comb`` say
        whether it masks the recursions and/or the combine step.
    theta : bool, theta/phi method (else ratio).
    out : device ``(B, N)`` complex128 (written) or the dummy with
        ``keep_arrays`` ``(th, ph)`` ``(3, B, N + 1)`` / ``(3, B, N)``.
    bad : device ``(B,)`` int64, preset to ``N``; first bad position per row.
    """
    batch, n = a.shape
    C = chunk
    cplx_a = a.dtype.kind == "c"
    cplx_k = k.dtype.kind == "c"
    keep = keep_arrays is not None
    th, ph = keep_arrays if keep else (dummies["th"], dummies["th"])
    T = segment_threads(tpb, C, cplx_a, cplx_k, theta, rec or comb)
    nc = (n + C - 1) // C
    rtol2 = rtol * rtol
    if nc <= T:
        rpb = T // nc
        kern, shm = _segment_kernel(C, T, cplx_a, cplx_k, theta, rec, comb, keep, 0)
        kern[_grid(batch, rpb), T, 0, shm](a, k, z, mask, out, bad, dummies["maps"],
                                           dummies["maps"], dummies["thn"], th, ph, n, nc, rpb,
                                           rtol2)
        return
    nseg = (nc + T - 1) // T
    maps = workspace("maps0", (batch, nseg, _MAP))
    k1, shm1 = _segment_kernel(C, T, cplx_a, cplx_k, theta, rec, comb, keep, 1)
    # the scanned chunk maps of every segment (18 float64 per chunk), kept from
    # kernel 1 for kernel 2
    pm = large_workspace("chunkmaps", (batch, nseg, T * _MAP))
    k1[batch * nseg, T, 0, shm1](a, k, z, mask, out, bad, maps, pm, dummies["thn"], th, ph, n, nc,
                                 nseg, rtol2)
    thn = workspace("thn", (batch, 3))
    car = _scan(maps, thn, min(tpb, 128))
    k2, shm2 = _segment_kernel(C, T, cplx_a, cplx_k, theta, rec, comb, keep, 2)
    k2[batch * nseg, T, 0, shm2](a, k, z, mask, out, bad, car, pm, thn, th, ph, n, nc, nseg,
                                 rtol2)
