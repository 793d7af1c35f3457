"""Correctness of the CPU BK-Core against SciPy, a naive loop and extended precision."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import bknumba
from bknumba.reference import bk_core_banded, bk_core_extended, relative_error

from . import naive

METHODS = ["ratio", "theta_phi"]
SPARSE_COMBOS = [("seed", "theta_phi"), ("local", "ratio"), ("exact", "ratio"),
                 ("exact", "theta_phi")]

finite = dict(allow_nan=False, allow_infinity=False)


def _min_pivot_ratio(a, b, c, z):
    """Smallest |pivot| / scale over L, R and L + R - d (one row).

    The scale is the size of row i of T - zI (|d|, |b|, |c| around i) plus the
    coupling terms, so a pivot that is small only because the whole row is
    small still counts, but a pivot that is tiny next to its off-diagonals
    (b = 0, |d| = 3e-8, c = 1: the inverse grows like |d|^-N and SciPy's
    reference overflows) is rejected as ill-posed.
    """
    try:
        left, right, d = naive.pivots(a, b, c, z)
    except ZeroDivisionError:
        return 0.0
    n = len(d)
    off = np.zeros(n)
    if n > 1:
        edge = np.abs(b) + np.abs(c)
        off[:-1] += edge
        off[1:] += edge
    worst = np.inf
    for i in range(n):
        den = left[i] + right[i] - d[i]
        scale = (abs(d[i]) + off[i] + abs(left[i] - d[i]) + abs(right[i] - d[i]))
        for p in (left[i], right[i], den):
            # below 1.5e-154 a pivot's square underflows: reported by design
            worst = min(worst, abs(p) / max(scale, 1e-300) if abs(p) > 1e-150 else 0.0)
    return worst


@st.composite
def general_problems(draw, max_n=120):
    """Complex a, non-symmetric non-constant b, c, per-row z; pivots away from 0."""
    batch = draw(st.integers(1, 6))
    n = draw(st.integers(1, max_n))
    real = hnp.arrays(np.float64, (batch, n), elements=st.floats(-3, 3, **finite))
    a = draw(real) + 1j * draw(hnp.arrays(np.float64, (batch, n),
                                          elements=st.floats(-1, 1, **finite)))
    off = st.floats(-1.5, 1.5, **finite)
    b = draw(hnp.arrays(np.float64, (batch, max(n - 1, 0)), elements=off))
    c = draw(hnp.arrays(np.float64, (batch, max(n - 1, 0)), elements=off))
    if draw(st.booleans()):
        b = b + 0.5j * draw(hnp.arrays(np.float64, b.shape, elements=off))
    z = draw(hnp.arrays(np.complex128, (batch,), elements=st.complex_numbers(
        min_magnitude=0.0, max_magnitude=3.0, **finite)))
    z = z.real + 1j * (0.5 + np.abs(z.imag))
    for r in range(batch):
        assume(_min_pivot_ratio(a[r], b[r], c[r], z[r]) > 1e-2)
    return a, b, c, z


@st.composite
def model_problems(draw, max_n=400):
    """The model's own inputs: a = -2 + v, |v| <= 3, b = c = 1, z = 1j."""
    batch = draw(st.integers(1, 8))
    n = draw(st.integers(1, max_n))
    v = draw(hnp.arrays(np.float64, (batch, n), elements=st.floats(-3, 3, **finite)))
    return -2.0 + v, np.ones((batch, max(n - 1, 0))), np.ones((batch, max(n - 1, 0))), 1j


@st.composite
def masked_problems(draw):
    a, b, c, z = draw(general_problems(max_n=40))
    mask = draw(hnp.arrays(np.bool_, a.shape))
    # the seed semantics' raw theta[N] must stay away from 0 for the naive reference
    return a, b, c, z, mask


@pytest.mark.parametrize("method", METHODS)
@settings(deadline=None, max_examples=60)
@given(problem=general_problems())
def test_general_matches_scipy(method, problem):
    a, b, c, z = problem
    g = bknumba.bk_core(a, b, c, z, method=method)
    ref = bk_core_banded(a, b, c, z)
    assert g.dtype == np.complex128 and g.shape == a.shape
    assert relative_error(g, ref).max() <= 1e-11


@pytest.mark.parametrize("method", METHODS)
def test_decoupled_small_pivots_exact_where_scipy_fails(method):
    # Found by Hypothesis in CI: b = 0, c = 1, |a - z| = 3e-8. The inverse's
    # off-diagonal entries grow like |d|^-N (SciPy's banded solve overflows or
    # calls the matrix singular), but its diagonal is exactly 1 / d_i and each
    # pivot is d_i itself, large next to its zero coupling: nothing to report.
    n = 43
    a = np.full((1, n), 0.49999997j)
    z = np.array([0.5j])
    g = bknumba.bk_core(a, np.zeros((1, n - 1)), np.ones((1, n - 1)), z, method=method)
    assert relative_error(g, np.full((1, n), 1.0 / (a[0, 0] - z[0]))).max() <= 4e-16


@pytest.mark.parametrize("method", METHODS)
@settings(deadline=None, max_examples=40)
@given(problem=model_problems())
def test_model_inputs_match_scipy(method, problem):
    a, b, c, z = problem
    g = bknumba.bk_core(a, b, c, z, method=method)
    ref = bk_core_banded(a, b, c, z)
    assert relative_error(g, ref).max() <= 1e-12
    # Hermitian T, Im z = 1: |G| <= 1 / Im z and Im G > 0
    assert np.all(np.abs(g) <= 1 + 1e-12) and np.all(g.imag > 0)


@pytest.mark.parametrize("method", METHODS)
@settings(deadline=None, max_examples=40)
@given(problem=general_problems(max_n=60))
def test_full_matches_naive_loop(method, problem):
    a, b, c, z = problem
    g = bknumba.bk_core(a, b, c, z, method=method)
    for r in range(a.shape[0]):
        fn = naive.g_ratio if method == "ratio" else naive.g_theta_phi
        ref = np.array(fn(a[r], b[r], c[r], z[r]))
        assert relative_error(g[r], ref)[0] <= 1e-11


@pytest.mark.parametrize("semantics,method", SPARSE_COMBOS)
@settings(deadline=None, max_examples=50)
@given(problem=masked_problems())
def test_sparse_matches_naive_loop(semantics, method, problem):
    a, b, c, z, mask = problem
    if semantics == "seed":
        # the approximate scheme has its own pivots; keep its determinant away from 0
        for r in range(a.shape[0]):
            theta, _ = naive.theta_phi(a[r], b[r], c[r], z[r], mask[r])
            assume(abs(theta[-1]) > 1e-6 * max(abs(t) for t in theta))
    elif semantics == "local":
        for r in range(a.shape[0]):
            try:
                left, right, d = naive.pivots(a[r], b[r], c[r], z[r], mask[r])
            except ZeroDivisionError:
                assume(False)
            assume(min(abs(x) for x in left + right) > 1e-3)
            assume(min(abs(left[i] + right[i] - d[i]) for i in range(len(d))) > 1e-3)
    g = bknumba.sparse_bk_core(a, b, c, mask, z, semantics=semantics, method=method)
    assert np.all(g[~mask] == 0)
    for r in range(a.shape[0]):
        ref = np.array(naive.sparse_g(a[r], b[r], c[r], z[r], mask[r], semantics))
        assert relative_error(g[r], ref)[0] <= 1e-10


@pytest.mark.parametrize("semantics,method", SPARSE_COMBOS)
def test_sparse_all_ones_equals_full_bitwise(semantics, method, rng):
    a = rng.normal(size=(5, 300)) + 0.3j * rng.normal(size=(5, 300))
    b = rng.uniform(0.5, 1.5, size=(5, 299))
    c = rng.uniform(0.5, 1.5, size=(5, 299))
    z = 0.3 + 1j
    full = bknumba.bk_core(a, b, c, z, method=method)
    sparse = bknumba.sparse_bk_core(a, b, c, np.ones(a.shape, bool), z,
                                    semantics=semantics, method=method)
    assert np.array_equal(full, sparse)


@pytest.mark.parametrize("semantics,method", SPARSE_COMBOS)
def test_mask_is_per_element(semantics, method, rng):
    a = -2 + rng.uniform(-3, 3, size=(4, 64))
    mask = rng.random((4, 64)) < 0.6
    g0 = bknumba.sparse_bk_core(a, 1.0, 1.0, mask, semantics=semantics, method=method)
    mask2 = mask.copy()
    mask2[1, 10] = ~mask2[1, 10]
    mask2[1, 40] = ~mask2[1, 40]
    g1 = bknumba.sparse_bk_core(a, 1.0, 1.0, mask2, semantics=semantics, method=method)
    others = [0, 2, 3]
    assert np.array_equal(g0[others], g1[others])
    if semantics != "exact":
        assert not np.array_equal(g0[1], g1[1])


def test_sparse_error_levels_match_spec(rng):
    """The spec's table: seed error O(1), local ~0.1, exact 0 (model inputs, N = 128)."""
    a = -2 + rng.uniform(-3, 3, size=(20, 128))
    full = bknumba.bk_core(a, 1.0, 1.0)
    for sparsity in (0.1, 0.5):
        mask = rng.random(a.shape) >= sparsity
        err = {}
        for sem in ("seed", "local", "exact"):
            g = bknumba.sparse_bk_core(a, 1.0, 1.0, mask, semantics=sem)
            err[sem] = np.median(np.max(np.abs(g - full) * mask, axis=1)
                                 / np.max(np.abs(full), axis=1))
        assert err["exact"] == 0.0
        assert 0.01 < err["local"] < 0.5
        assert err["seed"] > 0.3


# --- long rows against extended precision ------------------------------------------

@pytest.mark.parametrize("n", [100_000, 1_000_000])
@pytest.mark.parametrize("method", METHODS)
def test_long_rows_extended_precision(n, method, rng):
    a = -2 + rng.uniform(-3, 3, size=(2, n))
    b = rng.uniform(0.5, 1.5, size=(2, n - 1))
    g = bknumba.bk_core(a, b, b, 0.1j + 0.2, method=method)
    ref = bk_core_extended(a, b, b, 0.1j + 0.2)
    assert np.all(np.isfinite(g))
    assert relative_error(g, ref).max() <= 1e-12


def test_extended_reference_matches_scipy(rng):
    a = rng.normal(size=(3, 200)) + 0.2j * rng.normal(size=(3, 200))
    b = rng.uniform(0.5, 1.5, size=(3, 199))
    c = rng.uniform(0.5, 1.5, size=(3, 199))
    ref = bk_core_banded(a, b, c, 1j)
    assert relative_error(bk_core_extended(a, b, c, 1j, chunk=7), ref).max() <= 1e-13


def test_no_overflow_where_raw_continuants_do(rng):
    a = -2 + rng.uniform(-3, 3, size=(2, 3000))
    naive_theta, _ = naive.theta_phi(a[0], np.ones(2999), np.ones(2999), 1j)
    assert not np.isfinite(naive_theta[-1])  # the raw recursion overflows
    ref = bk_core_banded(a, 1.0, 1.0)
    for method in METHODS:
        assert relative_error(bknumba.bk_core(a, 1.0, 1.0, method=method), ref).max() < 1e-12


# --- theta_phi ----------------------------------------------------------------------

def test_theta_phi_matches_raw_recursion(rng):
    a = rng.normal(size=(3, 30)) + 0.5j
    b = rng.uniform(0.5, 1.5, size=(3, 29))
    c = rng.uniform(0.5, 1.5, size=(3, 29))
    mask = rng.random((3, 30)) < 0.5
    for m in (None, mask):
        tp = bknumba.theta_phi(a, b, c, 0.2 + 1j, mask=m)
        for r in range(3):
            theta, phi = naive.theta_phi(a[r], b[r], c[r], 0.2 + 1j, None if m is None else m[r])
            np.testing.assert_allclose(tp.theta[r], theta, rtol=1e-12)
            np.testing.assert_allclose(tp.phi[r], phi, rtol=1e-12)
        mmax = np.maximum(np.abs(tp.theta_mantissa.real), np.abs(tp.theta_mantissa.imag))
        assert np.all((mmax >= 0.5) & (mmax < 1))


def test_theta_phi_long_row_log_scale():
    n = 5000
    tp = bknumba.theta_phi(np.full(n, -2.0), 1.0, 1.0, 1j)
    # |theta_m| grows like |lambda|^m, lambda the larger root of x^2 - (-2 - 1j) x + 1
    lam = np.max(np.abs(np.roots([1, 2 + 1j, 1])))
    slope = (tp.log_abs_theta()[-1] - tp.log_abs_theta()[n // 2]) / (n - n // 2)
    assert abs(slope - np.log(lam)) < 1e-6
    assert relative_error(tp.g(), bknumba.bk_core(np.full(n, -2.0), 1.0, 1.0))[0] < 1e-12


# --- edge cases ---------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_empty_and_tiny(method):
    assert bknumba.bk_core(np.zeros(0), [], [], method=method).shape == (0,)
    assert bknumba.bk_core(np.zeros((3, 0)), np.zeros((3, 0)), 1.0, method=method).shape == (3, 0)
    assert bknumba.bk_core(np.zeros((0, 5)), 1.0, 1.0, method=method).shape == (0, 5)
    g1 = bknumba.bk_core([0.5], [], [], 2j, method=method)
    assert g1.shape == (1,) and g1[0] == pytest.approx(1 / (0.5 - 2j), rel=1e-15)
    a, b, c, z = [1.0, -0.5], [2.0], [0.25], 0.1 + 1j
    T = np.array([[1.0, 2.0], [0.25, -0.5]]) - z * np.eye(2)
    np.testing.assert_allclose(bknumba.bk_core(a, b, c, z, method=method),
                               np.diag(np.linalg.inv(T)), rtol=1e-14)


def test_batch_of_one_and_lists_and_scalars():
    a = [[-2.0, -1.0, -2.5, 0.3]]
    g = bknumba.bk_core(a, [[1.0, 2.0, 0.5]], [[1.0, 1.0, 1.0]], [1j])
    ref = bk_core_banded(np.array(a), np.array([[1.0, 2.0, 0.5]]), 1.0, 1j)
    assert g.shape == (1, 4)
    np.testing.assert_allclose(g, ref, rtol=1e-13)
    g1 = bknumba.bk_core(a[0], [1.0, 2.0, 0.5], 1.0, 1j)
    assert g1.shape == (4,)
    np.testing.assert_array_equal(g1, g[0])


def test_integer_and_float32_inputs():
    g = bknumba.bk_core(np.array([-2, -1, -3], dtype=np.int32), np.int64(1), np.float32(1.0))
    ref = bk_core_banded(np.array([-2.0, -1.0, -3.0]), 1.0, 1.0)
    np.testing.assert_allclose(g, ref, rtol=1e-14)


@pytest.mark.parametrize("method", METHODS)
def test_inputs_not_modified_readonly_noncontiguous(method, rng):
    base = rng.normal(size=(6, 40)) + 0.1j
    a = base[::2, ::2]  # non-contiguous (3, 20)
    b = rng.normal(size=(3, 38))[:, ::2][:, :19]
    c = np.asfortranarray(rng.normal(size=(3, 19)))
    z = np.array([1j, 0.5 + 1j, 2j])
    mask = rng.random((3, 20)) < 0.5
    for arr in (a, b, c, z, mask):
        arr.flags.writeable = False
    copies = [x.copy() for x in (a, b, c, z, mask)]
    g = bknumba.bk_core(a, b, c, z, method=method)
    bknumba.sparse_bk_core(a, b, c, mask, z, semantics="exact", method=method)
    bknumba.theta_phi(a, b, c, z, mask=mask)
    for x, y in zip((a, b, c, z, mask), copies):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_allclose(g, bk_core_banded(np.ascontiguousarray(a), b, c, z), rtol=1e-12)


def test_mask_forms(rng):
    a = -2 + rng.uniform(-3, 3, size=(3, 10))
    m = rng.random(10) < 0.5
    g_bool = bknumba.sparse_bk_core(a, 1.0, 1.0, m)
    g_int = bknumba.sparse_bk_core(a, 1.0, 1.0, m.astype(int))
    g_float = bknumba.sparse_bk_core(a, 1.0, 1.0, np.tile(m.astype(float), (3, 1)))
    assert np.array_equal(g_bool, g_int) and np.array_equal(g_bool, g_float)


# --- errors -------------------------------------------------------------------------

@pytest.mark.parametrize("args,match", [
    ((np.zeros((2, 5)), np.ones((2, 3)), 1.0), r"b has shape \(2, 3\); expected \(2, 4\)"),
    ((np.zeros((2, 5)), 1.0, np.ones(5)), r"c has shape \(5,\); expected \(4,\)"),
    ((np.zeros((2, 2, 2)), 1.0, 1.0), r"a must have shape \(N,\) or \(B, N\)"),
    ((np.zeros(5), np.ones((1, 4)), 1.0), r"b has shape \(1, 4\)"),
])
def test_shape_errors(args, match):
    with pytest.raises(ValueError, match=match):
        bknumba.bk_core(*args)


def test_z_shape_and_type_errors():
    with pytest.raises(ValueError, match=r"z has shape \(3,\); expected a scalar or one value per row, shape \(2,\)"):
        bknumba.bk_core(np.zeros((2, 4)), 1.0, 1.0, z=np.ones(3) * 1j)
    with pytest.raises(TypeError, match="a must be numeric"):
        bknumba.bk_core(["x", "y"], 1.0, 1.0)
    with pytest.raises(TypeError, match="z must be numeric"):
        bknumba.bk_core([1.0, 2.0], 1.0, 1.0, z="1j")
    with pytest.raises(TypeError, match="a must be numeric"):
        bknumba.bk_core(np.array([True, False]), 1.0, 1.0)


def test_nonfinite_errors():
    a = np.zeros((2, 4))
    a[1, 2] = np.nan
    with pytest.raises(ValueError, match="a contains a non-finite value .* at row 1, position 2"):
        bknumba.bk_core(a, 1.0, 1.0)
    with pytest.raises(ValueError, match="b contains a non-finite value .* at position 1"):
        bknumba.bk_core(np.zeros(4), [1.0, np.inf, 1.0], 1.0)
    g = bknumba.bk_core(a, 1.0, 1.0, check_finite=False, on_singular="nan")
    assert np.all(np.isfinite(g[0])) and np.all(np.isnan(g[1]))


@pytest.fixture
def full_check_calls(monkeypatch):
    """The arrays the full finiteness check (``_first_nonfinite``) runs on, in order."""
    from bknumba import _validation

    calls = []
    real = _validation._first_nonfinite

    def spy(name, arr, batched):
        calls.append(name)
        return real(name, arr, batched)

    monkeypatch.setattr(_validation, "_first_nonfinite", spy)
    return calls


@pytest.mark.parametrize("density", [0.6, 0.1, 0.005])
def test_local_semantics_check_fused_or_not(density, full_check_calls):
    """The "local" semantics on the SIMD tiles over every position (most positions
    computed) verifies the input while reading it, like the full kernels; walking
    the computed positions (few computed) does not, and the full check runs. Both
    name a NaN's array, row and position, and give the row kernel's bits."""
    from bknumba.cpu import ratio

    calls = full_check_calls
    rng = np.random.default_rng(4)
    batch, n = 21, 40
    a = -2 + rng.uniform(-3, 3, (batch, n))
    b = rng.uniform(0.5, 1.5, (batch, n - 1))
    mask = rng.random((batch, n)) < density
    g = bknumba.sparse_bk_core(a, b, 1.0, mask, semantics="local")
    fused = (np.count_nonzero(mask) >= ratio.LOCAL_WALK_BELOW_CHECKED * mask.size
             and bknumba._config.simd_width() >= 2)
    assert fused == (density > 0.05)  # both paths are exercised
    assert ("a" in calls) != fused and ("b" in calls) != fused
    g0, _ = ratio.run_local(a, b, np.full(batch, 1j), mask, simd=False)
    assert np.array_equal(g.view(np.uint64), g0.view(np.uint64))
    x = a.copy()
    x[7, 33] = np.nan
    with pytest.raises(ValueError, match="a contains a non-finite value .* at row 7, position 33"):
        bknumba.sparse_bk_core(x, b, 1.0, mask, semantics="local")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("batch", [1, 13, 64])
def test_nonfinite_found_with_the_check_fused_into_the_kernels(method, batch, full_check_calls):
    """With SIMD tiles the kernels verify finiteness while they read (no separate
    pass): for finite input the full check does not run; for a NaN or an infinity
    in a, b or c (any row, in a tile or in the remainder rows) it runs and names
    the array, row and position, as before."""
    calls = full_check_calls
    rng = np.random.default_rng(batch)
    a = -2 + rng.uniform(-3, 3, (batch, 40))
    b = rng.uniform(0.5, 1.5, (batch, 39))
    c = rng.uniform(0.5, 1.5, (batch, 39))
    g = bknumba.bk_core(a, b, c, method=method)
    fused = batch >= bknumba._config.simd_width() >= 2
    assert calls == (["z"] if fused else ["z", "a", "b", "c"])
    assert np.array_equal(g, bknumba.bk_core(a, b, c, method=method, check_finite=False))
    for name, arr in (("a", a), ("b", b), ("c", c)):
        for value in (np.nan, np.inf):
            x = arr.copy()
            row, pos = batch - 1, arr.shape[1] - 1
            x[row, pos] = value
            args = {"a": a, "b": b, "c": c, name: x}
            with pytest.raises(ValueError, match=f"{name} contains a non-finite value .* at "
                                                 f"row {row}, position {pos}"):
                bknumba.bk_core(args["a"], args["b"], args["c"], method=method)
            ok = bknumba.bk_core(args["a"], args["b"], args["c"], method=method,
                                 check_finite=False, on_singular="nan")
            assert np.array_equal(ok[:-1], g[:-1])
    # a finite b * c that overflows is not an input error
    big = b.copy()
    big[0, 3] = 1e300
    cc = c.copy()
    cc[0, 3] = 1e300
    with np.errstate(over="ignore"):
        g2 = bknumba.bk_core(a, big, cc, method=method, on_singular="nan")
    assert np.array_equal(g2[1:], g[1:])


@pytest.mark.parametrize("method", METHODS)
def test_out_argument(method, rng):
    """``out=``: G written into the caller's array (returned as is), bit for bit
    the result without it, for the full methods and every sparse semantics, one
    row or a batch; singular rows marked NaN there with on_singular='nan'."""
    a = -2 + rng.uniform(-3, 3, (13, 30))
    b = rng.uniform(0.5, 1.5, (13, 29))
    out = np.full((13, 30), 5.0 + 5j)
    assert bknumba.bk_core(a, b, 1.0, method=method, out=out) is out
    assert np.array_equal(out, bknumba.bk_core(a, b, 1.0, method=method))
    one = np.full(30, 5.0 + 5j)
    assert bknumba.bk_core(a[3], b[3], 1.0, method=method, out=one) is one
    assert np.array_equal(one, out[3])
    mask = rng.random((13, 30)) < 0.5
    for semantics, m in SPARSE_COMBOS:
        if m != method:
            continue
        out.fill(5.0 + 5j)
        got = bknumba.sparse_bk_core(a, b, 1.0, mask, semantics=semantics, out=out)
        assert got is out
        assert np.array_equal(out, bknumba.sparse_bk_core(a, b, 1.0, mask, semantics=semantics))
    sing = a.copy()
    sing[2] = 0.0
    sing[2, 0] = 1e-300  # a (near-)zero first pivot with z = 0
    z = np.full(13, 0.5j)
    z[2] = 0.0
    out.fill(5.0 + 5j)
    bknumba.bk_core(sing, 0.0, 0.0, z, method=method, on_singular="nan", out=out)
    assert np.all(np.isnan(out[2])) and np.all(np.isfinite(np.delete(out, 2, axis=0)))


def test_out_argument_errors(rng):
    a = -2 + rng.uniform(-3, 3, (4, 6))
    b = np.ones((4, 5))
    ac = a.astype(np.complex128)
    cases = [
        (np.empty((4, 5), complex), ValueError, r"out has shape \(4, 5\); expected \(4, 6\)"),
        (np.empty((4, 6)), TypeError, "out must have dtype complex128, got float64"),
        (np.empty((6, 4), complex).T, ValueError, "out must be C-contiguous"),
        ([[0j] * 6] * 4, TypeError, "out must be a NumPy array, got list"),
    ]
    for out, exc, match in cases:
        with pytest.raises(exc, match=match):
            bknumba.bk_core(a, b, 1.0, out=out)
    ro = np.empty((4, 6), complex)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        bknumba.bk_core(a, b, 1.0, out=ro)
    before = ac.copy()
    with pytest.raises(ValueError, match="out shares memory with the input a"):
        bknumba.bk_core(ac, b, 1.0, out=ac)
    assert np.array_equal(ac, before)
    out = np.zeros((4, 6), complex)
    with pytest.raises(ValueError, match=r"out shares memory with the input b \* c"):
        bknumba.bk_core(a, out.view(np.float64).ravel()[:5], 1.0, out=out)  # k is a view of b
    with pytest.raises(ValueError, match="out shares memory with the input b"):
        bknumba.bk_core(a, out.real[:, :5], 2.0, out=out)  # k = 2 b, a new array
    out[:] = 1j  # z may live in out: it is copied before G is written
    assert bknumba.bk_core(a, b, 1.0, out[:, 0], out=out) is out
    assert np.array_equal(out, bknumba.bk_core(a, b, 1.0, 1j))
    with pytest.raises(ValueError, match="out= is supported for device='cpu'"):
        bknumba.bk_core(a, b, 1.0, device="cuda", out=np.empty((4, 6), complex))


def test_option_errors():
    a = np.zeros(4)
    with pytest.raises(ValueError, match="method='lu' is not one of"):
        bknumba.bk_core(a, 1.0, 1.0, method="lu")
    with pytest.raises(ValueError, match="semantics='approx' is not one of"):
        bknumba.sparse_bk_core(a, 1.0, 1.0, np.ones(4), semantics="approx")
    with pytest.raises(ValueError, match="semantics='seed' is defined for method 'theta_phi'"):
        bknumba.sparse_bk_core(a, 1.0, 1.0, np.ones(4), semantics="seed", method="ratio")
    with pytest.raises(ValueError, match="device='tpu'"):
        bknumba.bk_core(a, 1.0, 1.0, device="tpu")
    with pytest.raises(ValueError, match="mask must contain only 0 and 1; found 2 at row 0, position 3"):
        bknumba.sparse_bk_core(a, 1.0, 1.0, [1, 1, 0, 2])
    with pytest.raises(ValueError, match=r"mask has shape \(3,\); expected \(4,\)"):
        bknumba.sparse_bk_core(a, 1.0, 1.0, [1, 1, 0])


def test_singular_pivot_reported():
    # row 1: T - zI = 0 at position 2 (a = z, decoupled), so G is infinite there
    a = np.full((3, 5), -2.0)
    b = np.ones((3, 4))
    b[1, 1:3] = 0.0
    a[1, 2] = 0.0
    with pytest.raises(bknumba.SingularResolventError, match="batch row 1 at position 2") as exc:
        bknumba.bk_core(a, b, 1.0, z=0.0)
    assert isinstance(exc.value, np.linalg.LinAlgError)
    assert list(exc.value.rows) == [1] and list(exc.value.positions) == [2]
    g = bknumba.bk_core(a, b, 1.0, z=0.0, on_singular="nan")
    assert np.all(np.isnan(g[1]))
    ref = bk_core_banded(a[[0, 2]], b[[0, 2]], 1.0, 0.0)
    np.testing.assert_allclose(g[[0, 2]], ref, rtol=1e-12)
    with pytest.raises(bknumba.SingularResolventError, match=r"det\(T - zI\)"):
        bknumba.bk_core(a, b, 1.0, z=0.0, method="theta_phi")


def test_singular_pivot_reported_local_semantics():
    # mask [1, 1, 0, 1, 1, 1]: the segment at 3..5 restarts at 3 with
    # L[3] = d[3] - k / d[2] = 1 - 1 / 1 = 0 (z = 0), a zero pivot at position 3
    a = np.array([[-2.0, -2.0, 1.0, 1.0, -2.0, -2.0], [-2.0] * 6])
    mask = np.array([1, 1, 0, 1, 1, 1], bool)
    with pytest.raises(bknumba.SingularResolventError, match="batch row 0 at position 3"):
        bknumba.sparse_bk_core(a, 1.0, 1.0, mask, z=0.0, semantics="local")
    g = bknumba.sparse_bk_core(a, 1.0, 1.0, mask, z=0.0, semantics="local", on_singular="nan")
    assert np.all(np.isnan(g[0])) and not np.any(np.isnan(g[1]))
    # the same row with the zero pivot masked away is regular
    mask2 = mask.copy()
    mask2[3] = False
    g2 = bknumba.sparse_bk_core(a, 1.0, 1.0, mask2, z=0.0, semantics="local")
    assert np.all(np.isfinite(g2)) and np.all(g2[:, [2, 3]] == 0)


def test_singular_leading_block_theta_phi_recovers():
    # [[0, 1], [1, 0]]: the first pivot is 0 but the matrix is invertible
    with pytest.raises(bknumba.SingularResolventError, match="method='theta_phi' may still"):
        bknumba.bk_core([0.0, 0.0], 1.0, 1.0, z=0.0)
    g = bknumba.bk_core([0.0, 0.0], 1.0, 1.0, z=0.0, method="theta_phi")
    np.testing.assert_array_equal(g, [0.0, 0.0])


@st.composite
def extreme_problems(draw):
    """Entries whose magnitudes span 1e-320 (subnormal) .. 1e100, zeros included."""
    batch = draw(st.integers(1, 3))
    n = draw(st.integers(1, 12))
    mag = st.one_of(st.just(0.0), st.floats(1e-320, 1e-300), st.floats(1e-170, 1e-140),
                    st.floats(1e-30, 1e30), st.floats(1e90, 1e100))
    signed = st.builds(lambda m, s: m if s else -m, mag, st.booleans())
    re = draw(hnp.arrays(np.float64, (batch, n), elements=signed))
    im = draw(hnp.arrays(np.float64, (batch, n), elements=signed))
    k = draw(hnp.arrays(np.float64, (batch, max(n - 1, 0)), elements=signed))
    z = complex(draw(signed), draw(signed))
    return re + 1j * im, k, z


#: every (semantics, method) pair; None is the full bk_core
ALL_COMBOS = [(None, "ratio"), (None, "theta_phi")] + SPARSE_COMBOS


def _engine(semantics, method, mask_seed, shape):
    """``bk_core`` (semantics None) or ``sparse_bk_core`` with a random 70 % mask."""
    if semantics is None:
        return lambda a, b, c, z, **kw: bknumba.bk_core(a, b, c, z, method=method, **kw)
    mask = np.random.default_rng(mask_seed).random(shape) < 0.7
    return lambda a, b, c, z, **kw: bknumba.sparse_bk_core(a, b, c, mask, z, semantics=semantics,
                                                           method=method, **kw)


@pytest.mark.parametrize("semantics,method", ALL_COMBOS)
@settings(deadline=None, max_examples=80)
@given(problem=extreme_problems(), mask_seed=st.integers(0, 2**32 - 1))
def test_never_silently_nonfinite(semantics, method, problem, mask_seed):
    # Whatever the magnitudes, a result is finite or its row is reported:
    # tiny pivots whose squares underflow, huge ones whose squares overflow.
    a, k, z = problem
    engine = _engine(semantics, method, mask_seed, a.shape)

    def run(**kw):
        return engine(a, k, 1.0, z, **kw)

    g = run(on_singular="nan")
    bad_rows = ~np.isfinite(g).all(axis=-1)
    assert np.all(np.isnan(g[bad_rows]))  # a reported row is NaN throughout
    if bad_rows.any():
        with pytest.raises(bknumba.SingularResolventError) as exc:
            run()
        assert list(exc.value.rows) == list(np.flatnonzero(bad_rows))
    else:
        np.testing.assert_array_equal(run(), g)


#: exponents e for which T - zI scaled by 10**e is computed without loss: the
#: ratio method down to pivots of 1.5e-154 (and up to squares of 1e308),
#: theta/phi while one step stays within its 2**200 rescaling factor
SCALE_RANGE = {"ratio": 150, "theta_phi": 55}


@pytest.mark.parametrize("semantics,method", ALL_COMBOS)
@settings(deadline=None, max_examples=30)
@given(problem=general_problems(max_n=30), mask_seed=st.integers(0, 2**32 - 1),
       data=st.data())
def test_scale_invariance(semantics, method, problem, mask_seed, data):
    # G(s T, s z) = G(T, z) / s exactly in real arithmetic; in float64 to round-off
    # over the documented range of scales
    a, b, c, z = problem
    e = data.draw(st.integers(-SCALE_RANGE[method], SCALE_RANGE[method]), label="exponent")
    sc = 10.0 ** e
    run = _engine(semantics, method, mask_seed, a.shape)
    try:
        g1 = run(a, b, c, z)
    except bknumba.SingularResolventError:
        assume(False)  # the seed scheme's own determinant may vanish
    g = run(a * sc, b * sc, c * sc, z * sc)
    assert relative_error(g * sc, g1).max() <= 1e-13


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("tiny", [1e-150, 1e-160, 1e-300, 5e-324])
def test_tiny_pivots_exact_or_reported(method, tiny):
    # a decoupled row [1, tiny, 1] - z: G = 1 / d exactly where it is a float64;
    # the ratio method reports pivots below 1.5e-154 (their squares underflow),
    # theta/phi rescales and is exact down to the subnormals
    z = 0.5j
    a = np.array([1.0 + z, tiny + z, 1.0 + z])
    want = np.array([1.0, 1.0 / tiny, 1.0])
    exact = tiny >= (1.5e-154 if method == "ratio" else 1e-300)
    for run in (lambda **kw: bknumba.bk_core(a, 0.0, 0.0, z, method=method, **kw),
                lambda **kw: bknumba.sparse_bk_core(a, 0.0, 0.0, [1, 1, 1], z,
                                                    semantics="exact", method=method, **kw)):
        if exact:
            assert relative_error(run(), want).max() <= 1e-15
            continue
        with pytest.raises(bknumba.SingularResolventError, match="position 1"):
            run()
        assert np.all(np.isnan(run(on_singular="nan")))
    if method == "ratio":
        # local semantics: the same pivots, segment by segment
        g = lambda **kw: bknumba.sparse_bk_core(a, 0.0, 0.0, [1, 1, 0], z,  # noqa: E731
                                                 semantics="local", **kw)
        if exact:
            assert relative_error(g(), [1.0, 1.0 / tiny, 0.0]).max() <= 1e-15
        else:
            with pytest.raises(bknumba.SingularResolventError, match="position 1"):
                g()


def test_near_singular_real_z_on_eigenvalue():
    a = np.full(6, -2.0)
    ev = np.linalg.eigvalsh(np.diag(a) + np.diag(np.ones(5), 1) + np.diag(np.ones(5), -1))
    for method in METHODS:
        with pytest.raises(bknumba.SingularResolventError):
            bknumba.bk_core(a, 1.0, 1.0, z=ev[2], method=method)


# --- package hygiene ----------------------------------------------------------------

def test_import_compiles_nothing_and_skips_cuda():
    code = (
        "import sys, bknumba; "
        "bad = [m for m in sys.modules if m.startswith(('numba.cuda', 'bknumba.cpu', "
        "'bknumba.gpu', 'bknumba.nn', 'dask', 'torch'))]; "
        "print(bad); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_config_defaults():
    from bknumba import _config

    assert _config.DEFAULTS == {"cache": True, "cache_parallel": False, "fastmath": False,
                                "tile": 4, "threads_per_block": 128, "pivot_rtol": 1e-13,
                                "serial_below": 65536, "simd": "auto"}
    assert _config.parallel_jit_kwargs()["parallel"] is True


@pytest.mark.parametrize("value, expect", [("0", 0), ("off", 0), ("4", 4), ("8", 8), ("16", 16)])
def test_simd_option(monkeypatch, value, expect):
    from bknumba import _config

    monkeypatch.setitem(_config.options, "simd", value)
    assert _config.simd_width() == expect


@pytest.mark.parametrize("value", ["3", "wide", "-8"])
def test_simd_option_rejects_bad_values(monkeypatch, value):
    from bknumba import _config

    monkeypatch.setitem(_config.options, "simd", value)
    with pytest.raises(ValueError, match="BKNUMBA_SIMD"):
        _config.simd_width()
