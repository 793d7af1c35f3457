"""Tests of the numba.cuda kernels (``device="cuda"``).

Run in their own process, because ``NUMBA_ENABLE_CUDASIM`` must be set before
numba is imported::

    NUMBA_ENABLE_CUDASIM=1 BKNUMBA_THREADS_PER_BLOCK=8 python -m pytest -m cuda tests/test_cuda.py

Under the simulator the shapes are small and the chunk length is shrunk to 4
positions, so that the multi-chunk, multi-block, multi-segment and
multi-level-scan paths all run; on a real GPU the same tests use larger
shapes. Without a GPU and without the simulator every test is skipped.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bknumba
from bknumba.errors import SingularResolventError
from bknumba.reference import bk_core_banded

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


def _usable():
    try:
        from numba import cuda
    except Exception as exc:  # numba-cuda missing
        return False, f"numba.cuda cannot be imported ({exc})"
    try:
        ok = cuda.is_available()
    except Exception as exc:  # pragma: no cover
        return False, f"numba.cuda.is_available() failed ({exc})"
    if not ok:
        return False, "no CUDA GPU here and NUMBA_ENABLE_CUDASIM is not set to 1"
    return True, ""


_OK, _WHY = _usable()
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not _OK, reason=_WHY),
    # zero pivots under the simulator: NumPy warns where the GPU silently gives inf/nan
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]

if _OK:
    from numba import cuda

    from bknumba.gpu import api, options
    from bknumba.gpu import sequence as seq


@pytest.fixture(autouse=True)
def _few_check_blocks(monkeypatch):
    """Under the simulator every GPU thread is a Python thread: two blocks keep the
    finiteness check quick, and every test then runs its strided, unrolled path."""
    if SIM and _OK:
        monkeypatch.setattr(api, "_NF_BLOCKS", 2)


# (B, N) shapes: under the simulator with chunk 4 and T <= 8 threads: one chunk,
# several chunks in one block (fused), several segments (global scan)
if SIM:
    SHAPES = [(3, 1), (4, 3), (5, 13), (2, 40), (1, 70)]
    LONG = (1, 150)
else:
    SHAPES = [(3, 1), (7, 3), (300, 33), (64, 1000), (3, 5000), (1, 100_000), (4096, 64)]
    LONG = (2, 300_000)


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Short chunks under the simulator so that every path runs on small shapes."""
    if SIM:
        monkeypatch.setitem(options, "chunk", 4)
    yield
    if _OK:
        seq.clear_workspace()


def _inputs(batch, n, cplx=False, seed=0):
    rng = np.random.default_rng(seed + 1000 * batch + n)
    a = -2.0 + rng.uniform(-3.0, 3.0, (batch, n))
    b = 1.0 + 0.3 * rng.standard_normal((batch, max(n - 1, 0)))
    c = 1.0 + 0.3 * rng.standard_normal((batch, max(n - 1, 0)))
    if cplx:
        a = a + 0.3j * rng.standard_normal((batch, n))
        b = b + 0.2j * rng.standard_normal(b.shape)
    z = 1j + 0.5 * rng.standard_normal(batch)
    return a, b, c, z


def _err(g, ref):
    g, ref = np.atleast_2d(g), np.atleast_2d(ref)
    den = np.maximum(np.max(np.abs(ref), axis=-1), 1e-300)
    return float(np.max(np.max(np.abs(g - ref), axis=-1) / den))


def _full(a, b, c, z, method, kernel):
    return api.bk_core_cuda(a, b, c, z, method=method, check_finite=True,
                            on_singular="raise", kernel=kernel)


def _sparse(a, b, c, mask, z, semantics, method, kernel, on_singular="raise"):
    return api.sparse_bk_core_cuda(a, b, c, mask, z, semantics=semantics, method=method,
                                   check_finite=True, on_singular=on_singular, kernel=kernel)


@pytest.mark.parametrize("kernel", ["sequence", "batch"])
@pytest.mark.parametrize("method", ["ratio", "theta_phi"])
@pytest.mark.parametrize("cplx", [False, True])
def test_full_matches_cpu(kernel, method, cplx):
    tol = 1e-12
    for batch, n in SHAPES:
        if kernel == "batch" and n > 5000:
            continue  # one thread per row: slow for long rows, nothing new to test
        a, b, c, z = _inputs(batch, n, cplx)
        a0 = a.copy()
        g = _full(a, b, c, z, method, kernel)
        ref = bknumba.bk_core(a, b, c, z, method=method, device="cpu")
        assert g.shape == a.shape and g.dtype == np.complex128
        assert _err(g, ref) < tol, (batch, n)
        np.testing.assert_array_equal(a, a0)  # inputs never modified


def test_matches_banded_reference():
    a, b, c, z = _inputs(3, 60 if SIM else 1500)
    for method in ("ratio", "theta_phi"):
        g = _full(a, b, c, z, method, "auto")
        assert _err(g, bk_core_banded(a, b, c, z)) < 1e-11


@pytest.mark.parametrize("method", ["ratio", "theta_phi"])
def test_multilevel_scan(monkeypatch, method):
    """Long rows: many segments, scanned through several levels."""
    monkeypatch.setattr(seq, "GROUP", 2 if SIM else 4)
    a, b, c, z = _inputs(*LONG)
    g = _full(a, b, c, z, method, "sequence")
    ref = bknumba.bk_core(a, b, c, z, method=method, device="cpu")
    assert _err(g, ref) < 1e-12


def test_large_workspaces_grow_and_are_reused():
    """The two-pass rows' scanned chunk maps and the batch kernel's theta counts live
    in one growing buffer per name (sequence.large_workspace): shapes in turn, larger
    and smaller, reuse it (a view of its front) and hold the largest size needed so far;
    the results stay exact."""
    seq.clear_workspace()
    long_b, long_n = LONG
    sizes = []
    for batch, n in ((long_b, long_n), (long_b, long_n // 2), (long_b + 1, long_n)):
        a, b, c, z = _inputs(batch, n)
        for method in ("ratio", "theta_phi"):
            g = _full(a, b, c, z, method, "sequence")
            assert _err(g, bknumba.bk_core(a, b, c, z, method=method, device="cpu")) < 1e-12
        sizes.append(seq._LARGE["chunkmaps"].shape[0])
    assert sizes[1] == sizes[0] < sizes[2]  # the smaller shape reused the buffer
    first = seq._LARGE["chunkmaps"]
    a, b, c, z = _inputs(long_b, long_n)
    _full(a, b, c, z, "ratio", "sequence")
    assert seq._LARGE["chunkmaps"] is first  # not reallocated for a smaller need
    a, b, c, z = _inputs(2, 60)
    g = _full(a, b, c, z, "theta_phi", "batch")
    assert _err(g, bknumba.bk_core(a, b, c, z, method="theta_phi", device="cpu")) < 1e-12
    assert seq._LARGE["batch_cnt"].shape[0] == 2 * 60
    seq.clear_workspace()
    assert not seq._LARGE


@pytest.mark.parametrize("chunk", [3, 5])
def test_chunk_not_dividing_the_block(monkeypatch, chunk):
    """Chunk lengths that do not divide the block's threads: the staged slots are
    computed per position, not stepped (``sequence.slot``); fused and two-pass rows."""
    monkeypatch.setitem(options, "chunk", chunk)
    rng = np.random.default_rng(7)
    for batch, n in ([(5, 13), (2, 40), (1, 70)] if SIM else [(300, 33), (64, 1000), (3, 5000)]):
        a, b, c, z = _inputs(batch, n)
        for method in ("ratio", "theta_phi"):
            g = _full(a, b, c, z, method, "sequence")
            assert _err(g, bknumba.bk_core(a, b, c, z, method=method, device="cpu")) < 1e-12
        mask = rng.random((batch, n)) >= 0.4
        g = _sparse(a, b, c, mask, z, "local", "ratio", "sequence")
        ref = bknumba.sparse_bk_core(a, b, c, mask, z, semantics="local", device="cpu")
        assert _err(g, ref) < 1e-12, (batch, n)


_finite = st.floats(allow_nan=False, allow_infinity=False)


@pytest.mark.skipif(not SIM, reason="device functions are called from Python in the simulator")
@settings(max_examples=300, deadline=None)
@given(st.lists(_finite, min_size=8, max_size=8), st.integers(-3, 3))
def test_renorm_rows_rescales_like_a_plain_loop(parts, count):
    """The chunk maps' rescaling with the second row's magnitude carried
    (``_device.renorm_rows``, and ``renorm4`` built on it) against a plain NumPy
    loop over the eight parts, bit for bit, over the whole float64 range
    (subnormals, zeros, both directions); it also returns the first row's
    magnitude after rescaling."""
    from bknumba.gpu import _device as dv

    n00, n01, m00, m01 = (complex(parts[i], parts[i + 1]) for i in range(0, 8, 2))
    v = np.array(parts, dtype=np.float64)
    s, c = np.abs(v).max(), float(count)
    while dv.BIG < s <= dv.MAXF:
        v, s, c = v * dv.SMALL, s * dv.SMALL, c + 1.0
    while 0.0 < s < dv.SMALL:
        v, s, c = v * dv.BIG, s * dv.BIG, c - 1.0

    def bits(vals):
        return np.array([v for x in vals for v in ((x.real, x.imag) if isinstance(x, complex)
                                                  else (x,))]).view(np.int64).tolist()

    want = bits([complex(v[i], v[i + 1]) for i in range(0, 8, 2)] + [c])
    got = dv.renorm_rows(n00, n01, m00, m01, float(count), max(map(abs, parts[4:])))
    assert bits(got[:5]) == want
    assert got[5] == max(abs(got[0].real), abs(got[0].imag), abs(got[1].real), abs(got[1].imag))
    assert bits(dv.renorm4(n00, n01, m00, m01, float(count))) == want


def test_one_row_squeezed_and_scalar_offdiagonals():
    n = 37 if SIM else 20_000
    a = -2.0 + np.linspace(-1, 1, n)
    g = bknumba.bk_core(a, 1.0, 1.0, device="cpu")
    g2 = api.bk_core_cuda(a, 1.0, 1.0, 1j, method="ratio", check_finite=True,
                          on_singular="raise")
    assert g2.shape == (n,)
    assert _err(g2, g) < 1e-12


def test_long_rows_do_not_overflow():
    """Raw continuants overflow near N = 900; the scaled / ratio forms must not."""
    n = 1200 if SIM else 200_000
    a = np.full((1, n), -2.0)
    ref = bknumba.bk_core(a, 1.0, 1.0, 1j, device="cpu")
    for method in ("ratio", "theta_phi"):
        g = _full(a, 1.0, 1.0, 1j, method, "sequence")
        assert np.isfinite(g).all()
        assert _err(g, ref) < 1e-11


SPARSE = [("local", "ratio"), ("exact", "ratio"), ("exact", "theta_phi"),
          ("seed", "theta_phi")]


@pytest.mark.parametrize("kernel", ["sequence", "batch"])
@pytest.mark.parametrize("semantics,method", SPARSE)
def test_sparse_matches_cpu(kernel, semantics, method):
    rng = np.random.default_rng(5)
    for batch, n in SHAPES[1:4] + [LONG if kernel == "sequence" and SIM else SHAPES[-2]]:
        a, b, c, z = _inputs(batch, n, cplx=batch % 2 == 1)
        for sparsity in (0.3, 0.7):
            mask = rng.random((batch, n)) >= sparsity
            m0 = mask.copy()
            g = _sparse(a, b, c, mask, z, semantics, method, kernel)
            ref = bknumba.sparse_bk_core(a, b, c, mask, z, semantics=semantics,
                                         method=method, device="cpu")
            np.testing.assert_array_equal(g[~mask], 0)
            tol = 1e-9 if semantics == "seed" else 1e-12
            assert _err(g, ref) < tol, (batch, n, sparsity)
            np.testing.assert_array_equal(mask, m0)


@pytest.mark.parametrize("kernel", ["sequence", "batch"])
@pytest.mark.parametrize("semantics,method", SPARSE)
def test_sparse_without_masked_positions_is_full_bit_for_bit(kernel, semantics, method):
    batch, n = SHAPES[3]
    a, b, c, z = _inputs(batch, n)
    full = _full(a, b, c, z, method, kernel)
    g = _sparse(a, b, c, np.ones((batch, n), dtype=bool), z, semantics, method, kernel)
    np.testing.assert_array_equal(g, full)


def test_mask_is_per_element():
    batch, n = SHAPES[3]
    a, b, c, z = _inputs(batch, n)
    mask = np.ones((batch, n), dtype=bool)
    g0 = _sparse(a, b, c, mask, z, "local", "ratio", "sequence")
    mask[1, n // 2] = False
    g1 = _sparse(a, b, c, mask, z, "local", "ratio", "sequence")
    np.testing.assert_array_equal(g1[[0] + list(range(2, batch))],
                                  g0[[0] + list(range(2, batch))])
    assert g1[1, n // 2] == 0 and not np.array_equal(g1[1], g0[1])


def test_mask_validation():
    a, b, c, z = _inputs(2, 10)
    with pytest.raises(ValueError, match="only 0 and 1"):
        _sparse(a, b, c, np.full((2, 10), 2), z, "local", "ratio", "auto")
    with pytest.raises(ValueError, match=r"mask has shape \(3,\)"):
        _sparse(a, b, c, np.ones(3, dtype=bool), z, "local", "ratio", "auto")
    with pytest.raises(ValueError, match="mask is required"):
        _sparse(a, b, c, None, z, "local", "ratio", "auto")


def test_device_mask_dtypes():
    # a (B, N) bool device mask is used as is; uint8, 1-D and host masks are converted
    a, b, c, z = _inputs(3, 12)
    k = b * c
    mask = np.random.default_rng(5).random((3, 12)) > 0.4
    ref = bknumba.sparse_bk_core(a, k, 1.0, mask, z, semantics="local")

    def run(m):
        return api.sparse_bk_core_cuda(cuda.to_device(a), cuda.to_device(k), 1.0, m, z,
                                       semantics="local", method="ratio", check_finite=True,
                                       on_singular="raise").copy_to_host()

    for m in (cuda.to_device(mask), cuda.to_device(mask.astype(np.uint8)), mask):
        assert _err(run(m), ref) < 1e-12
    row = np.tile(mask[1], (3, 1))
    ref_row = bknumba.sparse_bk_core(a, k, 1.0, row, z, semantics="local")
    assert _err(run(cuda.to_device(mask[1])), ref_row) < 1e-12
    bad = mask.astype(np.int64)
    bad[2, 7] = 2
    with pytest.raises(ValueError, match="only 0 and 1; found 2 at row 2, position 7"):
        run(cuda.to_device(bad))


def _singular_inputs():
    # row 1 has a zero left pivot at position 2: L0 = d0 = 1, L1 = 2 - 1/1 = 1, L2 = 1 - 1 = 0
    n = 9
    a = np.full((3, n), -2.0)
    a[1, :3] = [1.0, 2.0, 1.0]
    z = np.array([1j, 0.0, 1j])
    return a, np.ones((3, n - 1)), np.ones((3, n - 1)), z


@pytest.mark.parametrize("kernel", ["sequence", "batch"])
def test_singular_pivot_reported_like_cpu(kernel):
    a, b, c, z = _singular_inputs()
    with pytest.raises(SingularResolventError) as cpu:
        bknumba.bk_core(a, b, c, z, device="cpu")
    with pytest.raises(SingularResolventError, match="batch row 1 at position") as gpu:
        _full(a, b, c, z, "ratio", kernel)
    np.testing.assert_array_equal(gpu.value.rows, cpu.value.rows)
    np.testing.assert_array_equal(gpu.value.positions, cpu.value.positions)
    g = api.bk_core_cuda(a, b, c, z, method="ratio", check_finite=True, on_singular="nan",
                         kernel=kernel)
    ref = bknumba.bk_core(a, b, c, z, device="cpu", on_singular="nan")
    assert np.isnan(g[1]).all()
    assert _err(g[[0, 2]], ref[[0, 2]]) < 1e-12


def test_singular_determinant_theta_phi():
    a = np.array([[1.0, 1.0], [-2.0, -2.0]])  # row 0 with z = 0: [[1, 1], [1, 1]], det 0
    z = np.array([0.0, 1j])
    with pytest.raises(SingularResolventError) as cpu:
        bknumba.bk_core(a, 1.0, 1.0, z, method="theta_phi", device="cpu")
    for kernel in ("sequence", "batch"):
        with pytest.raises(SingularResolventError) as gpu:
            _full(a, 1.0, 1.0, z, "theta_phi", kernel)
        np.testing.assert_array_equal(gpu.value.rows, cpu.value.rows)
        np.testing.assert_array_equal(gpu.value.positions, cpu.value.positions)


@pytest.mark.parametrize("kernel", ["sequence", "batch"])
@pytest.mark.parametrize("method", ["ratio", "theta_phi"])
def test_tiny_pivots_like_cpu(kernel, method):
    """Pivots whose squares underflow: reported, or exact (theta/phi), as on the CPU;
    never a silent inf / nan."""
    n = 13 if SIM else 3000
    z = 0.5j
    a = np.ones((5, n)) + z
    a[0, n // 2] = 1e-160 + z
    a[1, n // 2] = 1e-300 + z
    a[2, n - 1] = 1e-170 + z
    a[3, 0] = 5e-324 + z
    k = np.zeros((5, n - 1))
    k[4] = 0.1  # a regular coupled row (0.25 is near-singular at this N)
    ref = bknumba.bk_core(a, k, 1.0, z, method=method, device="cpu", on_singular="nan")
    g = api.bk_core_cuda(a, k, 1.0, z, method=method, check_finite=True, on_singular="nan",
                         kernel=kernel)
    bad = np.isnan(ref).all(axis=1)
    assert bad[3] and (bad[0] == (method == "ratio"))  # the CPU's rules, see test_core
    np.testing.assert_array_equal(np.isnan(g).all(axis=1), bad)
    assert np.isfinite(g[~bad]).all()
    assert _err(g[~bad], ref[~bad]) < 1e-14


@pytest.mark.parametrize("kernel", ["sequence", "batch"])
@pytest.mark.parametrize("method,exponent", [
    # the CPU's range of scales (test_core.SCALE_RANGE); before the sequence kernel's
    # chunk maps were balanced (dv.balance) they failed past 1e+-70
    ("ratio", -150), ("ratio", -80), ("ratio", 100), ("ratio", 150),
    ("theta_phi", -55), ("theta_phi", 55)])
def test_scaled_problems_like_cpu(kernel, method, exponent):
    """G(sT, sz) = G(T, z) / s over the CPU's range of scales, full and sparse."""
    batch, n = LONG if kernel == "sequence" else SHAPES[-2]
    a, b, c, z = _inputs(batch, n, cplx=True)
    mask = np.random.default_rng(11).random((batch, n)) < 0.7
    semantics = "local" if method == "ratio" else "exact"
    sc = 10.0 ** exponent
    g1 = bknumba.bk_core(a, b, c, z, method=method, device="cpu")
    s1 = bknumba.sparse_bk_core(a, b, c, mask, z, semantics=semantics, method=method,
                                device="cpu")
    g = _full(a * sc, b * sc, c * sc, z * sc, method, kernel)
    gs = _sparse(a * sc, b * sc, c * sc, mask, z * sc, semantics, method, kernel)
    assert _err(g * sc, g1) < 1e-13
    assert _err(gs * sc, s1) < 1e-13


@pytest.mark.parametrize("kernel", ["sequence", "batch"])
@pytest.mark.parametrize("lo,hi", [(-140, 140), (100, -100), (-40, 40)])
def test_graded_scales_like_cpu(kernel, lo, hi):
    """Entries whose scale runs from 10**lo to 10**hi along the row (the ratio
    method): every position to round-off against the CPU, full and "local".
    (-40, 40): blocks whose couplings all lie within 2**+-100 (dv.balance's fast
    path) next to blocks that balance."""
    batch, n = LONG if kernel == "sequence" else SHAPES[-2]
    a, b, c, z = _inputs(batch, n, cplx=True)
    sc = 10.0 ** np.linspace(lo, hi, n)
    a = (a - z[:, None]) * sc  # z folded into a: a scalar shift cannot follow the grading
    z = np.zeros(batch, complex)
    b = b * np.sqrt(sc[:-1] * sc[1:])
    c = c * np.sqrt(sc[:-1] * sc[1:])
    mask = np.random.default_rng(12).random((batch, n)) < 0.7
    for got, want in (
            (_full(a, b, c, z, "ratio", kernel), bknumba.bk_core(a, b, c, z, device="cpu")),
            (_sparse(a, b, c, mask, z, "local", "ratio", kernel),
             bknumba.sparse_bk_core(a, b, c, mask, z, semantics="local", device="cpu"))):
        keep = want != 0
        np.testing.assert_array_equal(got != 0, keep)
        assert np.max(np.abs(got - want)[keep] / np.abs(want)[keep]) < 1e-13


def _local_case_masks(batch, n, chunk):
    """Masks for the "local" look-back (rows staged whole, fused kernel): row 0 with
    every third position masked (restarts close to every chunk), row 1 with one run
    of 3 * chunk computed positions in the middle (longer than the look-back: that
    block takes the map path), row 2 computed at both ends up to 2 * chunk positions
    in (the restarts are the row's start and end), other rows random at 50 %."""
    rng = np.random.default_rng(11)
    mask = rng.random((batch, n)) >= 0.5
    mask[0] = np.arange(n) % 3 != 1
    mask[1] = np.arange(n) % 2 == 0
    mid = n // 2 - (3 * chunk) // 2
    mask[1, mid:mid + 3 * chunk] = True
    mask[2] = np.arange(n) % 2 == 0
    mask[2, :2 * chunk] = True
    mask[2, n - 2 * chunk:] = True
    return mask


def test_local_carries_from_the_nearest_restart():
    """Under the "local" semantics a masked position restarts both recursions, so the
    fused sequence kernel takes a chunk's carries from the nearest restarts before and
    after it (no chunk maps, no scan) when every chunk of a block finds them within
    its look-back: against the CPU engine where it does (rows of restarts every few
    positions, restarts at the row's ends), where one chunk of the block does not
    (a long computed run: the map path) and for rows of one block each."""
    chunk = options["chunk"]
    # whole rows in a block (the fused kernel): at most T chunks per row
    n = 8 * chunk if SIM else 1000
    batch = 6 if SIM else 300
    a, b, c, z = _inputs(batch, n, cplx=False, seed=3)
    mask = _local_case_masks(batch, n, chunk)
    for aa, bb in ((a, b), (a + 0.2j, b + 0.1j)):
        g = _sparse(aa, bb, c, mask, z, "local", "ratio", "sequence")
        ref = bknumba.sparse_bk_core(aa, bb, c, mask, z, semantics="local", device="cpu")
        np.testing.assert_array_equal(g[~mask], 0)
        assert _err(g, ref) < 1e-13
        # one row at a time (one block per row, the decision per block)
        for r in range(3):
            g1 = _sparse(aa[r:r + 1], bb[r:r + 1], c[r:r + 1], mask[r:r + 1], z[r:r + 1],
                         "local", "ratio", "sequence")
            assert _err(g1, ref[r:r + 1]) < 1e-13


@settings(max_examples=12 if SIM else 40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 32), st.floats(0.0, 1.0), st.integers(0, 2**31),
       st.booleans())
def test_local_matches_cpu_at_any_sparsity(batch, n, sparsity, seed, cplx):
    """Whole rows in one block (the fused kernel, which takes its carries from the
    nearest restarts or from the chunk maps, per block): the "local" semantics at any
    sparsity against the CPU engine, zero at masked positions, NaN rows alike."""
    if not SIM:
        n *= 32  # up to 1024 positions: still rows done whole in one block
    a, b, c, z = _inputs(batch, n, cplx=cplx, seed=seed % 1000)
    mask = np.random.default_rng(seed).random((batch, n)) >= sparsity
    g = _sparse(a, b, c, mask, z, "local", "ratio", "sequence", on_singular="nan")
    ref = bknumba.sparse_bk_core(a, b, c, mask, z, semantics="local", device="cpu",
                                 on_singular="nan")
    bad = np.isnan(ref).all(axis=-1)
    np.testing.assert_array_equal(np.isnan(g).all(axis=-1), bad)
    ok = ~bad
    np.testing.assert_array_equal(g[ok][~mask[ok]], 0)
    if ok.any():
        assert _err(g[ok], ref[ok]) < 1e-12


def test_local_zero_pivot_after_a_restart_in_the_previous_chunk():
    """A zero pivot whose recursion starts at a masked position in the chunk before
    (the carry comes from the look-back) is reported at the CPU engine's row and
    position; with on_singular="nan" only that row is NaN."""
    chunk = options["chunk"]
    n = 4 * chunk if SIM else 512
    s = 2 * chunk  # a chunk boundary
    a = np.full((3, n), -2.0)
    mask = np.ones((3, n), dtype=bool)
    mask[:, 1::3] = False
    mask[1, s - 3:s + 1] = [True, False, True, True]
    # row 1: L[s-2] = d = 1 (masked), L[s-1] = 2 - 1/1 = 1, L[s] = 1 - 1/1 = 0
    a[1, s - 2:s + 1] = [1.0, 2.0, 1.0]
    z = np.array([1j, 0.0, 1j])
    k = np.ones((3, n - 1))
    with pytest.raises(SingularResolventError) as cpu:
        bknumba.sparse_bk_core(a, k, 1.0, mask, z, semantics="local", device="cpu")
    with pytest.raises(SingularResolventError) as gpu:
        _sparse(a, k, np.ones((3, n - 1)), mask, z, "local", "ratio", "sequence")
    np.testing.assert_array_equal(gpu.value.rows, cpu.value.rows)
    np.testing.assert_array_equal(gpu.value.positions, cpu.value.positions)
    g = _sparse(a, k, np.ones((3, n - 1)), mask, z, "local", "ratio", "sequence",
                on_singular="nan")
    ref = bknumba.sparse_bk_core(a, k, 1.0, mask, z, semantics="local", device="cpu",
                                 on_singular="nan")
    assert np.isnan(g[1]).all() and not np.isnan(g[[0, 2]]).any()
    assert _err(g[[0, 2]], ref[[0, 2]]) < 1e-13


def test_singular_in_a_later_chunk():
    """A zero pivot past the first chunk / segment is found at the right position."""
    n = 60 if SIM else 50_000
    a = np.full((2, n), -2.0 + 0j)
    p = n - 7
    a[1, p] = 0.0
    # make L[p] exactly 0: L[p] = d[p] - 1 / L[p-1], with d[p] = 1 / L[p-1]
    z = np.array([1j, 1j])
    d = a[1] - 1j
    lp = d[0]
    for i in range(1, p):
        lp = d[i] - 1.0 / lp
    a[1, p] = 1.0 / lp + 1j
    with pytest.raises(SingularResolventError) as cpu:
        bknumba.bk_core(a, 1.0, 1.0, z, device="cpu")
    with pytest.raises(SingularResolventError) as gpu:
        _full(a, 1.0, 1.0, z, "ratio", "sequence")
    np.testing.assert_array_equal(gpu.value.rows, cpu.value.rows)
    assert abs(int(gpu.value.positions[0]) - int(cpu.value.positions[0])) <= 1


def test_theta_phi_continuants():
    for batch, n in [(2, 30), (1, 1000 if SIM else 100_000)]:
        a, b, c, z = _inputs(batch, n)
        rng = np.random.default_rng(3)
        for mask in (None, rng.random((batch, n)) > 0.3):
            tp = api.theta_phi_cuda(a, b, c, z, mask=mask, check_finite=True)
            ref = bknumba.theta_phi(a, b, c, z, mask=mask, device="cpu")
            for got, want in ((tp.theta_mantissa, ref.theta_mantissa),
                              (tp.phi_mantissa, ref.phi_mantissa)):
                assert got.shape == want.shape
            np.testing.assert_allclose(tp.log_abs_theta(), ref.log_abs_theta(), rtol=1e-11,
                                       atol=1e-9)
            np.testing.assert_allclose(tp.log_abs_phi(), ref.log_abs_phi(), rtol=1e-11,
                                       atol=1e-9)
            assert _err(tp.g(), ref.g()) < 1e-10


def test_device_arrays_stay_on_device():
    batch, n = SHAPES[3]
    a, b, c, z = _inputs(batch, n)
    k = b * c
    a_d, k_d = cuda.to_device(a), cuda.to_device(k)
    ref = bknumba.bk_core(a, b, c, z, device="cpu")
    g_d = api.bk_core_cuda(a_d, k_d, 1.0, z, method="ratio", check_finite=True,
                           on_singular="raise")
    assert not isinstance(g_d, np.ndarray) and hasattr(g_d, "copy_to_host")
    assert _err(g_d.copy_to_host(), ref) < 1e-12
    np.testing.assert_array_equal(a_d.copy_to_host(), a)  # input untouched
    # b and c on the device, z on the device, 1-D a
    g1 = api.bk_core_cuda(cuda.to_device(a[0]), cuda.to_device(b[0]), cuda.to_device(c[0]),
                          cuda.to_device(np.array(z[0])), method="theta_phi",
                          check_finite=True, on_singular="raise")
    assert g1.shape == (n,)
    assert _err(g1.copy_to_host(), bknumba.bk_core(a[0], b[0], c[0], z[0])) < 1e-12
    # sparse with a device mask
    mask = np.random.default_rng(0).random((batch, n)) > 0.4
    gs = api.sparse_bk_core_cuda(a_d, k_d, 1.0, cuda.to_device(mask), z, semantics="local",
                                 method="ratio", check_finite=True, on_singular="raise")
    refs = bknumba.sparse_bk_core(a, k, 1.0, mask, z, semantics="local")
    assert _err(gs.copy_to_host(), refs) < 1e-12
    # theta_phi on the device
    tp = api.theta_phi_cuda(a_d, k_d, 1.0, z, mask=None, check_finite=True)
    assert hasattr(tp.theta_mantissa, "copy_to_host")
    ref_tp = bknumba.theta_phi(a, k, 1.0, z)
    got = bknumba.ThetaPhi(*(x.copy_to_host() for x in (tp.theta_mantissa, tp.theta_exponent,
                                                        tp.phi_mantissa, tp.phi_exponent)))
    assert _err(got.g(), ref_tp.g()) < 1e-10


def test_device_singular_nan_rows_on_device():
    a, b, c, z = _singular_inputs()
    g = api.bk_core_cuda(cuda.to_device(a), cuda.to_device(b * c), 1.0, z, method="ratio",
                         check_finite=True, on_singular="nan").copy_to_host()
    assert np.isnan(g[1]).all() and np.isfinite(g[[0, 2]]).all()
    with pytest.raises(SingularResolventError, match="batch row 1"):
        api.bk_core_cuda(cuda.to_device(a), cuda.to_device(b * c), 1.0, z, method="ratio",
                         check_finite=True, on_singular="raise")


def test_device_validation_messages():
    a = np.full((2, 5), -2.0)
    a_d = cuda.to_device(a)
    with pytest.raises(ValueError, match=r"b has shape \(3,\)"):
        api.bk_core_cuda(a_d, cuda.to_device(np.ones(3)), 1.0, 1j, method="ratio",
                         check_finite=True, on_singular="raise")
    with pytest.raises(ValueError, match=r"c has shape \(2, 5\)"):
        api.bk_core_cuda(a_d, 1.0, np.ones((2, 5)), 1j, method="ratio",
                         check_finite=True, on_singular="raise")
    with pytest.raises(TypeError, match="float64 or complex128"):
        api.bk_core_cuda(cuda.to_device(a.astype(np.float32)), 1.0, 1.0, 1j, method="ratio",
                         check_finite=True, on_singular="raise")
    bad = a.copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="a contains a non-finite value.*row 1, position 3"):
        api.bk_core_cuda(cuda.to_device(bad), 1.0, 1.0, 1j, method="ratio",
                         check_finite=True, on_singular="raise")
    with pytest.raises(ValueError, match=r"z has shape \(3,\)"):
        api.bk_core_cuda(a_d, 1.0, 1.0, np.ones(3), method="ratio", check_finite=True,
                         on_singular="raise")
    # host input goes through the shared validator: same messages as the CPU
    with pytest.raises(ValueError, match=r"b has shape \(3,\)"):
        api.bk_core_cuda(a, np.ones(3), 1.0, 1j, method="ratio", check_finite=True,
                         on_singular="raise")


def test_device_finite_check_first_position_and_fast_paths():
    # several blocks of the finiteness kernel: the first non-finite value is reported
    rng = np.random.default_rng(3)
    a = -2 + rng.uniform(-1, 1, (3, 300))
    k = rng.uniform(0.5, 1.5, (3, 299))
    bad = k.copy()
    bad[2, 250] = np.inf
    bad[2, 290] = np.nan
    with pytest.raises(ValueError, match=r"b contains a non-finite value \(inf\) at row 2, "
                                         r"position 250"):
        api.bk_core_cuda(cuda.to_device(a), cuda.to_device(bad), 1.0, 1j, method="ratio",
                         check_finite=True, on_singular="raise")
    with pytest.raises(ValueError, match="c contains a non-finite value.*row 2, position 250"):
        api.bk_core_cuda(cuda.to_device(a), 1, cuda.to_device(bad), 1j, method="ratio",
                         check_finite=True, on_singular="raise")
    # k = b * c is taken as is when the other factor is the scalar 1 (b or c), and the
    # caller's array is not modified; scalar z values are cached per (z, B) correctly
    a, k = a[:, :24].copy(), k[:, :23].copy()  # short rows: the simulator is slow
    k_d = cuda.to_device(k)
    for z, (b, c) in ((1j, (k_d, 1.0)), (0.5 + 1j, (1, k_d)), (1j, (k_d, np.float64(1.0)))):
        g = api.bk_core_cuda(cuda.to_device(a), b, c, z, method="ratio", check_finite=True,
                             on_singular="raise").copy_to_host()
        assert _err(g, bknumba.bk_core(a, k, 1.0, z)) < 1e-12
    np.testing.assert_array_equal(k_d.copy_to_host(), k)
    # a complex 1 still multiplies (complex k), matching the CPU
    g = api.bk_core_cuda(cuda.to_device(a), k_d, 1 + 0j, 1j, method="ratio", check_finite=True,
                         on_singular="raise").copy_to_host()
    assert _err(g, bknumba.bk_core(a, k, 1 + 0j, 1j)) < 1e-12


@pytest.mark.parametrize("blocks", [1, 3])
def test_device_finite_check_unrolled_stride(monkeypatch, blocks):
    # few blocks, so that each thread strides over several groups of four loads
    monkeypatch.setattr(api, "_NF_BLOCKS", blocks)
    a = np.full((2, 700), -2.0)
    cases = [([(1, 699)], "row 1, position 699"),          # the last element (tail loop)
             ([(0, 0), (1, 699)], "row 0, position 0"),
             ([(1, 3), (0, 650), (0, 651)], "row 0, position 650")]
    for positions, want in cases:
        bad = a.copy()
        for r, i in positions:
            bad[r, i] = np.nan if i % 2 else -np.inf
        with pytest.raises(ValueError, match=want):
            api.bk_core_cuda(cuda.to_device(bad), 1.0, 1.0, 1j, method="ratio",
                             check_finite=True, on_singular="raise")
    api._check_device_finite(api._cuda(), [("a", cuda.to_device(a), True)])  # all finite


@pytest.mark.parametrize("kernel", ["batch", "sequence"])
@pytest.mark.parametrize("method", ["ratio", "theta_phi"])
def test_nonfinite_input_without_the_check_terminates(kernel, method):
    """check_finite=False with an infinity or a NaN in the input: the kernels finish
    (the rescaling loops once never ended on an infinite entry: the GPU hung), the
    rows holding them are not silently finite, the other rows are the CPU's."""
    rng = np.random.default_rng(11)
    batch, n = 5, 24 if SIM else 300
    a = -2 + rng.uniform(-3, 3, (batch, n))
    k = rng.uniform(0.5, 1.5, (batch, n - 1))
    a[1, 5] = np.inf
    k[3, 7] = np.nan
    k[4, 20] = 1e300  # finite, but its products overflow
    z = np.full(batch, 1j)
    g = api.bk_core_cuda(cuda.to_device(a), cuda.to_device(k), 1.0, z, method=method,
                         check_finite=False, on_singular="nan", kernel=kernel).copy_to_host()
    for r in (1, 3):
        assert not np.isfinite(g[r]).all()
    ref = bknumba.bk_core(a, k, 1.0, z, method=method, check_finite=False, on_singular="nan")
    assert _err(g[[0, 2]], ref[[0, 2]]) < 1e-10


def test_kernel_choice():
    with pytest.raises(ValueError, match="kernel='warp'"):
        api.bk_core_cuda(np.ones(4), 1.0, 1.0, 1j, method="ratio", check_finite=True,
                         on_singular="raise", kernel="warp")
    assert api.choose_kernel("batch", 1, 10) == "batch"
    assert api.choose_kernel("sequence", 10 ** 6, 4) == "sequence"
    assert api.choose_kernel("auto", 1, 2 ** 20) == "sequence"


def test_unavailable_cuda_raises_clear_error(monkeypatch):
    monkeypatch.setattr(cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="no CUDA GPU is usable"):
        api.bk_core_cuda(np.ones(4), 1.0, 1.0, 1j, method="ratio", check_finite=True,
                         on_singular="raise")


def test_empty_shapes():
    g = api.bk_core_cuda(np.zeros((0, 5)), 1.0, 1.0, 1j, method="ratio", check_finite=True,
                         on_singular="raise")
    assert g.shape == (0, 5)
    g = api.bk_core_cuda(np.zeros((2, 0)), 1.0, 1.0, 1j, method="ratio", check_finite=True,
                         on_singular="raise")
    assert g.shape == (2, 0)


def _core_wired():
    import inspect

    import bknumba.core as core

    return ".gpu.api" in inspect.getsource(core)


@pytest.mark.skipif(not _core_wired(), reason="bknumba.core does not dispatch to "
                    "bknumba.gpu.api yet (it imports .cuda.api, which numba-cuda's import "
                    "hook breaks)")
def test_public_api_device_cuda():
    a, b, c, z = _inputs(*SHAPES[3])
    mask = np.random.default_rng(2).random(a.shape) > 0.5
    np.testing.assert_allclose(bknumba.bk_core(a, b, c, z, device="cuda"),
                               bknumba.bk_core(a, b, c, z), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(
        bknumba.sparse_bk_core(a, b, c, mask, z, semantics="seed", device="cuda"),
        bknumba.sparse_bk_core(a, b, c, mask, z, semantics="seed"), rtol=1e-9, atol=1e-11)
    tp = bknumba.theta_phi(a, b, c, z, device="cuda")
    assert _err(tp.g(), bknumba.theta_phi(a, b, c, z).g()) < 1e-10


def test_verify_on_the_gpu(capsys):
    # `bknumba verify --device cuda`: every method and semantics through the GPU
    # kernels, against SciPy and the longdouble recursion computed on the CPU
    from bknumba import verify

    sizes, scipy_max = (["9", "24"], "12") if SIM else (["1000", "100000"], "2048")
    assert verify.main(["--sizes", *sizes, "--rows", "2", "--scipy-max-n", scipy_max,
                        "--device", "cuda"]) == 0
    text = capsys.readouterr().out
    assert "scipy" in text and "longdouble" in text and "0 failed" in text
