"""The SIMD tiles (bknumba.cpu.simd) against the scalar tiles: the same bits.

The SIMD kernels perform the scalar kernels' IEEE operations in the same order,
lane by lane, so every result (and every pivot report) must be identical, not
merely close: the tests compare bit patterns.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bknumba
from bknumba._config import simd_width
from bknumba.cpu import ratio, theta_phi
from bknumba.cpu.simd import host_width, lanes
from bknumba.reference import bk_core_banded, relative_error

WIDTHS = (2, 4, 8, 16)


METHODS = ("ratio", "theta_phi")


def _simd(a, k, z, width, parallel=False, method="ratio", with_fin=False):
    batch, n = a.shape
    out = np.full((batch, n), np.nan + 0j)
    first_bad = np.full(batch, -7, dtype=np.int64)
    fin = np.full(batch, 7.0)
    if method == "ratio":
        driver = ratio.ratio_simd_driver if parallel else ratio._ratio_simd_driver_serial
        driver(a, k, z, None, out, first_bad, 1e-26, 3, lanes(width), fin)
    else:
        driver = (theta_phi.theta_phi_simd_driver if parallel
                  else theta_phi._theta_phi_simd_driver_serial)
        driver(a, k, z, out, first_bad, 1e-26, 3, theta_phi._POW, lanes(width), fin)
    return (out, first_bad, fin) if with_fin else (out, first_bad)


def _scalar(a, k, z, method="ratio"):
    if method == "ratio":
        return ratio.run_ratio(a, k, z, tile=3)
    return theta_phi.run_theta_phi(a, k, z, tile=3)


def _same_bits(x, y):
    """Identical complex128 arrays, bit for bit (+0 and -0 differ; NaN payloads too)."""
    return x.shape == y.shape and np.array_equal(x.view(np.uint64), y.view(np.uint64))


def _problem(rng, batch, n, cplx_a, cplx_k, scale=1.0):
    a = scale * (-2 + rng.uniform(-3, 3, (batch, n)))
    k = scale**2 * rng.uniform(0.5, 1.5, (batch, max(n - 1, 0)))
    if cplx_a:
        a = a + 1j * scale * rng.uniform(-1, 1, (batch, n))
    if cplx_k:
        k = k * np.exp(1j * rng.uniform(-0.5, 0.5, k.shape))
    z = scale * (rng.uniform(-1, 1, batch) + 1j * rng.uniform(0.1, 2, batch))
    return np.ascontiguousarray(a), np.ascontiguousarray(k), z.astype(np.complex128)


@settings(max_examples=60, deadline=None)
@given(batch=st.integers(1, 19), n=st.integers(0, 40), cplx_a=st.booleans(),
       cplx_k=st.booleans(), width=st.sampled_from(WIDTHS), method=st.sampled_from(METHODS),
       seed=st.integers(0, 2**32 - 1))
def test_simd_tiles_equal_scalar_tiles_bit_for_bit(batch, n, cplx_a, cplx_k, width, method,
                                                   seed):
    a, k, z = _problem(np.random.default_rng(seed), batch, n, cplx_a, cplx_k)
    g, bad = _simd(a, k, z, width, method=method)
    g0, bad0 = _scalar(a, k, z, method)
    assert _same_bits(g, g0)
    assert np.array_equal(bad, bad0)


@pytest.mark.parametrize("method, scale", [("ratio", s) for s in (1e-150, 1e-80, 1e100, 1e150)]
                         + [("theta_phi", s) for s in (1e-55, 1e-20, 1e20, 1e55)])
@pytest.mark.parametrize("width", [4, 8])
def test_simd_tiles_equal_scalar_at_extreme_scales(method, scale, width):
    """Scales where the scalar kernels are still accurate (ratio: 1e+-150,
    theta_phi: 1e+-55; the continuants' rescaling runs at every step here)."""
    a, k, z = _problem(np.random.default_rng(1), 21, 300, True, False, scale)
    g, bad = _simd(a, k, z, width, method=method)
    g0, bad0 = _scalar(a, k, z, method)
    assert _same_bits(g, g0)
    assert np.array_equal(bad, bad0) and (bad == 300).all()


@pytest.mark.parametrize("n", [1, 2, 700, 2000])
@pytest.mark.parametrize("width", [4, 8])
def test_simd_theta_phi_rescaling_and_long_rows(n, width):
    """Rows long enough for the continuants to be rescaled many times (and to
    overflow without it near N = 900), with one lane per scale of the entries."""
    rng = np.random.default_rng(n)
    a, k, z = _problem(rng, 2 * width, n, False, False)
    scales = 10.0 ** rng.uniform(-40, 40, 2 * width)
    a, k, z = a * scales[:, None], k * scales[:, None] ** 2, z * scales
    g, bad = _simd(a, k, z, width, method="theta_phi")
    g0, bad0 = _scalar(a, k, z, "theta_phi")
    assert _same_bits(g, g0) and np.array_equal(bad, bad0) and (bad == n).all()


@pytest.mark.parametrize("scale", [1e-55, 1e-20, 1.0, 1e20, 1e55])
def test_theta_phi_carried_magnitudes_stay_in_range(scale):
    """The continuants' rescaling (decided from each pair *before* its step):
    every carried mantissa stays below 2**300, the pair's larger magnitude
    at least 2**-300, so the combine's product of three mantissas cannot
    overflow or underflow (a threshold of 2**200 instead of 2**100 let them
    drift to 2**-383 at the scale 1e-55 and lost rows). Checked on the kept
    theta and phi of the scalar tiles, the SIMD tiles' arithmetic."""
    a, k, z = _problem(np.random.default_rng(5), 6, 900, True, True, scale)
    g, bad, th, ph = theta_phi.run_theta_phi(a, k, z, keep=True)
    assert (bad == 900).all()
    for parts in (th, ph[:, :, ::-1]):  # phi runs backwards
        mag = np.maximum(np.abs(parts[0]), np.abs(parts[1]))
        assert mag.max() < 2.0**300
        # the pair after each step: the new value and the previous one in the new scale
        prev = mag[:, :-1] * 2.0 ** (theta_phi.SHIFT * (parts[2][:, :-1] - parts[2][:, 1:]))
        assert np.maximum(mag[:, 1:], prev).min() > 2.0**-300
    # and the values are right: G against the ratio method at this scale
    g_ratio, _ = ratio.run_ratio(a, k, z)
    assert np.max(np.abs(g - g_ratio)) <= 1e-11 * np.max(np.abs(g_ratio))


@pytest.mark.parametrize("width", WIDTHS)
def test_full_recursions_order_of_operations_follows_the_range_of_k(width):
    """The full ratio recursions compute ``k conj(P)`` first only in rows whose
    ``max(|Re k|, |Im k|)`` stays in ``[K_LO, K_HI]`` (ratio.fast_row); a row with one
    entry outside, real or imaginary part, at any position, takes the reciprocal
    first. SIMD tiles holding both kinds of rows (redone one by one) and the
    remainder rows give the scalar tiles' bits, and every row is accurate."""
    rng = np.random.default_rng(11)
    n = 24
    lo, hi = ratio.K_LO, ratio.K_HI
    entries = [None, lo, hi, np.nextafter(lo, 0), np.nextafter(hi, np.inf), 1j * lo,
               1j * np.nextafter(hi, np.inf), 0.0]
    inside = [True, True, True, False, False, True, False, False]
    batch = 3 * width + 3
    a, k, z = _problem(rng, batch, n, True, True)
    want = np.ones(batch, dtype=bool)
    for r in range(batch):
        e = r % len(entries)
        if entries[e] is not None:
            k[r, (5 * r) % (n - 1)] = entries[e]
        want[r] = inside[e]
    assert [bool(ratio.fast_row(k, r)) for r in range(batch)] == list(want)
    assert want.any() and (~want).any()
    g, bad = _simd(a, k, z, width)
    g0, bad0 = _scalar(a, k, z)
    assert _same_bits(g, g0) and np.array_equal(bad, bad0) and (bad == n).all()
    for r in range(batch):
        ref = bk_core_banded(a[r], k[r], 1.0, z[r])
        assert relative_error(g[r], ref).max() <= 1e-12


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("width", WIDTHS)
def test_simd_tiles_report_the_same_first_bad_pivot(width, method):
    """An exact zero pivot at a different position in each lane of a tile (none
    in some lanes): the same first position as the scalar tiles, and the same
    bits in the rows without one."""
    n = 12
    batch = 2 * width + n + 2
    # z = 0, k = 1, a = (2, 2.5, 2.5, ...): every pivot L[i] = 2 exactly; a[p] = 0.5 makes L[p] = 0
    a = np.full((batch, n), 2.5)
    a[:, 0] = 2.0
    k = np.ones((batch, n - 1))
    z = np.zeros(batch, dtype=np.complex128)
    where = np.arange(batch) % (n + 1)  # n: no zero pivot in that row
    for r, p in enumerate(where):
        if p < n:
            a[r, p] = 0.5 if p > 0 else 0.0
    g, bad = _simd(a, k, z, width, method=method)
    g0, bad0 = _scalar(a, k, z, method)
    assert np.array_equal(bad, bad0)
    if method == "theta_phi":
        # the continuants pass through a singular leading block; they report only
        # det(T - zI) = 0, which these rows have when the zero pivot is the last one
        assert np.array_equal(bad0 < n, where == n - 1)
        return
    # a singular row is reported (at p, or earlier where the backward pivots vanish too)
    assert np.array_equal(bad0 < n, where < n) and (bad0 <= where).all()
    ok = bad0 == n
    assert ok.any() and _same_bits(g[ok], g0[ok])


def test_simd_parallel_driver_equals_serial_and_covers_the_remainder_rows():
    a, k, z = _problem(np.random.default_rng(4), 8 * 7 + 5, 33, False, True)
    for width, method in ((4, "ratio"), (8, "ratio"), (4, "theta_phi"), (8, "theta_phi")):
        g1, b1 = _simd(a, k, z, width, parallel=True, method=method)
        g2, b2 = _simd(a, k, z, width, method=method)
        g0, b0 = _scalar(a, k, z, method)
        assert _same_bits(g1, g0) and _same_bits(g2, g0)
        assert np.array_equal(b1, b0) and np.array_equal(b2, b0)


def test_public_bk_core_uses_simd_tiles_with_the_scalar_bits():
    """bk_core's default path (SIMD tiles on this CPU) gives the scalar tiles' bits,
    including rows with one z each and a batch that is not a multiple of the width."""
    assert simd_width() == host_width() >= 2
    rng = np.random.default_rng(5)
    a, k, z = _problem(rng, 3 * simd_width() + 1, 257, False, False)
    for method in METHODS:
        g = bknumba.bk_core(a, k, 1.0, z, method=method)
        g0, _ = _scalar(a, k, z, method)
        assert _same_bits(g, g0)


def test_simd_inputs_are_not_modified():
    a, k, z = _problem(np.random.default_rng(6), 9, 17, True, True)
    copies = [x.copy() for x in (a, k, z)]
    _simd(a, k, z, 4, parallel=True)
    _simd(a, k, z, 4, parallel=True, method="theta_phi")
    for x, c in zip((a, k, z), copies):
        assert _same_bits(x.astype(np.complex128), c.astype(np.complex128))


@settings(max_examples=50, deadline=None)
@given(batch=st.integers(1, 19), n=st.integers(0, 40), cplx_a=st.booleans(), cplx_k=st.booleans(),
       width=st.sampled_from(WIDTHS), density=st.sampled_from([0.0, 0.2, 0.5, 0.8, 1.0]),
       seed=st.integers(0, 2**32 - 1))
def test_simd_local_tiles_equal_local_rows_bit_for_bit(batch, n, cplx_a, cplx_k, width, density,
                                                       seed):
    """The "local" sparse kernel on SIMD tiles (each lane walking its row's computed
    positions, or every lane at every position with a select) against the
    row-by-row kernel: the same bits, the same reports."""
    rng = np.random.default_rng(seed)
    a, k, z = _problem(rng, batch, n, cplx_a, cplx_k)
    mask = rng.random((batch, n)) < density
    # the row kernel itself (run_local sends a mask without a masked position to
    # the full kernels, checked below)
    g0 = np.full((batch, n), np.nan + 0j)
    bad0 = np.full(batch, -7, dtype=np.int64)
    ratio._local_driver_serial(a, k, z, mask, g0, bad0, 1e-26, 2)
    if n >= 2:
        out = np.full((batch, n), np.nan + 0j)
        bad = np.full(batch, -7, dtype=np.int64)
        ratio._local_simd_driver_serial(a, k, z, mask, out, bad, 1e-26, 2, lanes(width))
        assert _same_bits(out, g0) and np.array_equal(bad, bad0)
    # the SIMD tiles over every position with a select (the remainder rows: row kernel)
    out = np.full((batch, n), np.nan + 0j)
    bad = np.full(batch, -7, dtype=np.int64)
    ratio._ratio_simd_driver_serial(a, k, z, mask, out, bad, 1e-26, 2, lanes(width),
                                    np.empty(batch), mask)
    assert _same_bits(out, g0) and np.array_equal(bad, bad0)
    g1, bad1 = ratio.run_local(a, k, z, mask, simd=False)
    g, bad = ratio.run_local(a, k, z, mask)  # the public path (any N)
    assert _same_bits(g, g1) and np.array_equal(bad, bad1)
    if mask.all():  # the full kernels' bits
        g2, bad2 = _scalar(a, k, z, "ratio")
        assert _same_bits(g, g2) and np.array_equal(bad, bad2)
    else:
        assert _same_bits(g, g0) and np.array_equal(bad, bad0)


@pytest.mark.parametrize("width", [4, 8])
def test_simd_local_reports_the_same_pivots_and_stays_in_bounds(width):
    """Zero pivots next to masked positions (the coupling to a masked neighbour's
    d = 0 is reported at the neighbour), lanes with very different numbers of
    computed positions (idle lanes), and the last row of the array (a read past
    a row's end would leave the array)."""
    n = 9
    batch = 3 * width + 3  # and remainder rows, which the tiles leave to the row kernel
    rng = np.random.default_rng(7)
    a = rng.uniform(1, 2, (batch, n))
    k = np.ones((batch, n - 1))
    z = np.zeros(batch, dtype=np.complex128)
    mask = rng.random((batch, n)) < 0.6
    mask[::3] = True
    mask[1::3, 1:] = False
    for r in range(0, batch, 2):
        p = r % n
        a[r, p] = 0.0
        mask[r, p] = False  # a masked zero d: reported when a computed neighbour couples to it
    # in a remainder row, a masked zero d that no computed neighbour divides by (not
    # reported) and one that a computed neighbour does (reported at it)
    a[-1, 4] = a[-1, 7] = 0.0
    mask[-1] = [True, False, False, False, False, False, True, False, False]
    g0, bad0 = ratio.run_local(a, k, z, mask, simd=False)
    out = np.full((batch, n), np.nan + 0j)
    bad = np.full(batch, -7, dtype=np.int64)
    ratio._local_simd_driver_serial(a, k, z, mask, out, bad, 1e-26, 1, lanes(width))
    assert np.array_equal(bad, bad0) and (bad0 < n).any() and (bad0 == n).any()
    ok = bad0 == n
    assert _same_bits(out[ok], g0[ok])
    # the SIMD tiles over every position (the public path at this density)
    out = np.full((batch, n), np.nan + 0j)
    bad = np.full(batch, -7, dtype=np.int64)
    ratio._ratio_simd_driver_serial(a, k, z, mask, out, bad, 1e-26, 1, lanes(width),
                                    np.empty(batch), mask)
    assert np.array_equal(bad, bad0)
    assert _same_bits(out[ok], g0[ok])


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 19), n=st.integers(0, 30), cplx=st.booleans(),
       width=st.sampled_from(WIDTHS), density=st.sampled_from([0.0, 0.3, 0.7, 1.0]),
       seed=st.integers(0, 2**32 - 1))
def test_simd_exact_semantics_equals_scalar_tiles(batch, n, cplx, width, density, seed):
    """The "exact" semantics (full recursions, G only where the mask is set) on
    SIMD tiles: the scalar tiles' bits and reports."""
    rng = np.random.default_rng(seed)
    a, k, z = _problem(rng, batch, n, cplx, cplx)
    mask = rng.random((batch, n)) < density
    g0, bad0 = ratio.run_ratio(a, k, z, None, mask, tile=3)
    out = np.full((batch, n), np.nan + 0j)
    bad = np.full(batch, -7, dtype=np.int64)
    ratio._ratio_simd_driver_serial(a, k, z, mask, out, bad, 1e-26, 2, lanes(width),
                                    np.empty(batch))
    assert _same_bits(out, g0) and np.array_equal(bad, bad0)


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 19), n=st.integers(0, 30), cplx=st.booleans(),
       width=st.sampled_from(WIDTHS), density=st.sampled_from([0.0, 0.3, 0.7, 1.0]),
       semantics=st.sampled_from(["seed", "exact"]), seed=st.integers(0, 2**32 - 1))
def test_simd_theta_phi_sparse_equals_scalar_tiles(batch, n, cplx, width, density, semantics,
                                                   seed):
    """theta/phi with masks on SIMD tiles, by selects: the "seed" semantics (the
    coupling dropped at masked positions, G there 0) and "exact" (G only where
    the mask is set): the scalar tiles' bits and reports, which skip the masked
    work per element."""
    rng = np.random.default_rng(seed)
    a, k, z = _problem(rng, batch, n, cplx, cplx)
    mask = rng.random((batch, n)) < density
    rec = mask if semantics == "seed" else None
    g0, bad0 = theta_phi.run_theta_phi(a, k, z, rec, mask, tile=3)
    out = np.full((batch, n), np.nan + 0j)
    bad = np.full(batch, -7, dtype=np.int64)
    theta_phi._theta_phi_simd_driver_serial(a, k, z, out, bad, 1e-26, 2, theta_phi._POW,
                                            lanes(width), np.empty(batch), rec, mask)
    assert _same_bits(out, g0) and np.array_equal(bad, bad0)


@settings(max_examples=60, deadline=None)
@given(batch=st.integers(1, 19), n=st.integers(0, 30), cplx_a=st.booleans(),
       cplx_k=st.booleans(), width=st.sampled_from(WIDTHS), method=st.sampled_from(METHODS),
       where=st.sampled_from(["none", "a", "k"]), imag=st.booleans(),
       value=st.sampled_from([np.nan, np.inf, -np.inf]), data=st.data())
def test_simd_fused_finiteness_flags(batch, n, cplx_a, cplx_k, width, method, where, imag,
                                     value, data):
    """The finiteness check fused into the SIMD sweeps (``fin``): 0.0 for every
    row whose ``a`` and ``k`` are finite, NaN exactly for the row holding a NaN or
    an infinity, at any position (first and last included), in the real or the
    imaginary part, in a SIMD tile or in the remainder rows; the results of the
    finite rows are unchanged (the scalar tiles' bits)."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    a, k, z = _problem(rng, batch, n, cplx_a, cplx_k)
    arr = {"a": a, "k": k}.get(where)
    bad_row = None
    if arr is not None and arr.shape[1] > 0:
        bad_row = data.draw(st.integers(0, batch - 1))
        pos = data.draw(st.integers(0, arr.shape[1] - 1))
        if imag and arr.dtype.kind == "c":
            arr[bad_row, pos] = arr[bad_row, pos].real + 1j * value
        else:
            arr[bad_row, pos] = value
    g, first_bad, fin = _simd(a, k, z, width, method=method, with_fin=True,
                              parallel=data.draw(st.booleans()))
    expect = np.zeros(batch)
    if bad_row is not None:
        expect[bad_row] = np.nan
    assert np.array_equal(fin, expect, equal_nan=True)
    g0, bad0 = _scalar(a, k, z, method)
    ok = np.ones(batch, dtype=bool)
    if bad_row is not None:
        ok[bad_row] = False
    assert _same_bits(g[ok], g0[ok]) and np.array_equal(first_bad[ok], bad0[ok])

