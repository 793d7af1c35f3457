"""bknumba.nn without torch: layers, masks, compat recursion, export/load, validation, input errors."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import zipfile

import numpy as np
import pytest
from scipy.special import erf

import bknumba
import bknumba.nn as bnn
from bknumba.nn import compat, layers, masks
from bknumba.nn.interp import linear_interpolate


# ------------------------------------------------------------------------------------------------
# helpers: a random, valid state dict for any module, built from its declared specs
# ------------------------------------------------------------------------------------------------
def random_state(kind, config, seed=0):
    rng = np.random.default_rng(seed)
    mod = bnn.build(kind, config)
    sd = {}
    for key, spec in mod.specs().items():
        if spec.kind == "c":
            sd[key] = np.array(1j, dtype=np.complex64)
        elif spec.kind == "i":
            sd[key] = np.array(3, dtype=np.int64)
        elif key.endswith("h0_diag_base"):
            sd[key] = np.full(spec.shape, -2.0, np.float32)
        elif key.endswith(("h0_sub_base", "h0_super_base")):
            sd[key] = np.ones(spec.shape, np.float32)
        else:
            sd[key] = (0.3 * rng.standard_normal(spec.shape)).astype(np.float32)
    return sd


D, N = 8, 16
CORE_CFG = dict(d_model=D, n_seq=N, target_sparsity=0.5)


@pytest.fixture
def core_file(tmp_path):
    path = tmp_path / "core.npz"
    bnn.export_state_dict(random_state("SparseBKCore", CORE_CFG), path, "SparseBKCore", **CORE_CFG)
    return path


# ------------------------------------------------------------------------------------------------
# layers
# ------------------------------------------------------------------------------------------------
def test_gelu_float32_matches_erf():
    x = np.linspace(-9, 9, 20001).astype(np.float32)
    exact = 0.5 * x.astype(np.float64) * (1 + erf(x.astype(np.float64) / np.sqrt(2)))
    got = layers.gelu(x)
    assert got.dtype == np.float32
    assert np.max(np.abs(got - exact)) <= 3e-7 * np.max(np.abs(exact))
    big = np.abs(exact) > 1e-3
    assert np.max(np.abs(got[big] - exact[big]) / np.abs(exact[big])) < 1e-6


def test_conv1d_matches_direct_sum(rng):
    x = rng.standard_normal((2, 7, 3))
    w = rng.standard_normal((4, 3, 5))
    b = rng.standard_normal(4)
    xp = np.pad(x, ((0, 0), (2, 2), (0, 0)))
    direct = np.stack([np.einsum("bjc,ocj->bo", xp[:, i:i + 5], w) for i in range(7)], 1) + b
    np.testing.assert_allclose(layers.conv1d(x, w, b), direct, rtol=1e-12)


def test_layer_norm_does_not_modify_input(rng):
    x = rng.standard_normal((3, 5)).astype(np.float32)
    x0 = x.copy()
    y = layers.layer_norm(x, np.ones(5, np.float32), np.zeros(5, np.float32))
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_relu_and_linear_ln_gelu_match_numpy(rng, dtype):
    # float32 takes the Numba kernels, float64 the NumPy path: both against plain NumPy
    x = rng.standard_normal((3, 7, 6)).astype(dtype)
    w = rng.standard_normal((5, 6)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    g, beta = rng.standard_normal(5).astype(dtype), rng.standard_normal(5).astype(dtype)
    x0 = x.copy()
    y64 = x.astype(np.float64) @ w.T.astype(np.float64) + b
    got = layers.linear_relu(x, w, b)
    assert got.dtype == dtype and got.shape == (3, 7, 5)
    np.testing.assert_allclose(got, np.maximum(y64, 0), rtol=2e-6, atol=2e-6)
    mu = y64.mean(-1, keepdims=True)
    ln = (y64 - mu) / np.sqrt(((y64 - mu) ** 2).mean(-1, keepdims=True) + 1e-5) * g + beta
    gelu64 = 0.5 * ln * (1 + erf(ln / np.sqrt(2)))
    np.testing.assert_allclose(layers.linear_ln_gelu(x, w, b, g, beta), gelu64,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(x, x0)


@pytest.mark.parametrize("rows", [128, 131, 1000])
@pytest.mark.parametrize("width", [5, 64, 133])
def test_fused_row_block_layers_match_float64(rows, width, monkeypatch):
    """The layers as one parallel region over row blocks (nn._fused: a single-threaded
    GEMM of NumPy's OpenBLAS per block, then the block's element pass), for every
    pass, odd row counts and widths: float64 references within float32 round-off, the
    NumPy path (BKNUMBA_NN_GEMM=numpy) to the same tolerance, inputs unchanged."""
    import glob
    import os

    import numba

    from bknumba.nn import _fused

    # NumPy's wheels (what CI installs) bundle the library: then the path must be found
    bundled = glob.glob(os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs",
                                     "libscipy_openblas64_*"))
    assert _fused.available() or not bundled or os.environ.get("BKNUMBA_NN_GEMM") == "numpy"
    if not _fused.available() or numba.config.NUMBA_NUM_THREADS < 2:
        # no bundled OpenBLAS, or a one-core machine: the fused path declines, the
        # layers take the NumPy path (checked against float64 in the test above)
        x = np.ones((256, 4), np.float32)
        out = np.full((256, 3), np.nan, np.float32)
        assert not _fused.linear_rows(x, np.ones((3, 4), np.float32), None, _fused.BIAS, out)
        assert np.isnan(out).all()
        return
    rng = np.random.default_rng(rows + width)
    x = rng.standard_normal((rows, 48)).astype(np.float32)
    w = (rng.standard_normal((width, 48)) / 7).astype(np.float32)
    b, g, beta = (rng.standard_normal(width).astype(np.float32) for _ in range(3))
    x0 = x.copy()
    y64 = x.astype(np.float64) @ w.T.astype(np.float64) + b
    mu = y64.mean(-1, keepdims=True)
    ln = (y64 - mu) / np.sqrt(((y64 - mu) ** 2).mean(-1, keepdims=True) + 1e-5) * g + beta
    want = {"BIAS": y64, "RELU": np.maximum(y64, 0), "GELU": 0.5 * y64 * (1 + erf(y64 / 2**0.5)),
            "LN_GELU": 0.5 * ln * (1 + erf(ln / 2**0.5))}
    calls = {"BIAS": lambda: layers.linear(x, w, b), "RELU": lambda: layers.linear_relu(x, w, b),
             "GELU": lambda: layers.linear_gelu(x, w, b),
             "LN_GELU": lambda: layers.linear_ln_gelu(x, w, b, g, beta)}
    numba.set_num_threads(2)
    for mode, call in calls.items():
        out = np.full((rows, width), np.nan, np.float32)
        assert _fused.linear_rows(x, w, b, getattr(_fused, mode), out, g, beta)
        np.testing.assert_allclose(out, want[mode], rtol=2e-5, atol=2e-5, err_msg=mode)
        got = call()
        assert got.dtype == np.float32 and got.shape == (rows, width)
        np.testing.assert_allclose(got, out, rtol=0, atol=0, err_msg=mode)  # the fused path
        monkeypatch.setenv("BKNUMBA_NN_GEMM", "numpy")
        _fused._library.cache_clear()
        try:
            assert not _fused.available()
            np.testing.assert_allclose(call(), out, rtol=2e-5, atol=2e-5, err_msg=mode)
        finally:
            monkeypatch.delenv("BKNUMBA_NN_GEMM")
            _fused._library.cache_clear()
    np.testing.assert_array_equal(x, x0)
    # one Numba thread while the library has two, or too few rows per thread: the
    # NumPy path (nothing written); one Numba thread and one library thread: one
    # serial block, the same results
    set_threads = _fused._library()[1]
    blas_before = set_threads(2)
    out = np.full((rows, width), np.nan, np.float32)
    numba.set_num_threads(1)
    try:
        assert not _fused.linear_rows(x, w, b, _fused.BIAS, out)
        assert np.isnan(out).all()
        set_threads(1)
        for mode, call in calls.items():
            out = np.full((rows, width), np.nan, np.float32)
            assert _fused.linear_rows(x, w, b, getattr(_fused, mode), out, g, beta)
            np.testing.assert_allclose(out, want[mode], rtol=2e-5, atol=2e-5, err_msg=mode)
            np.testing.assert_allclose(call(), out, rtol=0, atol=0, err_msg=mode)
        assert _fused.blas_threads() == 1
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        set_threads(blas_before)
    set_threads(2)
    try:
        assert not _fused.linear_rows(x[:100], w, b, _fused.BIAS, out[:100])
    finally:
        set_threads(blas_before)


def test_fused_layers_restore_the_blas_thread_count(rng):
    """NumPy's OpenBLAS has one process-wide thread count (its "local" setter sets the
    global count in the pthreads builds NumPy ships). A fused call sets it to 1 around
    its region and restores it: setting and restoring it inside the region, per row
    block, raced between the threads and left it at 1 after about half of all calls
    (every later numpy.matmul then ran on one thread)."""
    import numba

    from bknumba.nn import _fused

    x = rng.standard_normal((512, 24)).astype(np.float32)
    w = rng.standard_normal((16, 24)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    before = _fused.blas_threads()
    if before is None:  # no bundled OpenBLAS (checked in the test above): nothing to restore
        assert not _fused.available()
        return
    set_threads = _fused._library()[1]
    set_threads(3)  # a count no other code sets
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    try:
        for _ in range(60):
            layers.linear_relu(x, w, b)
            assert _fused.blas_threads() == 3
            _fused.linear_rows(x, w, b, _fused.LN_GELU, np.empty((512, 16), np.float32),
                               np.ones(16, np.float32), np.zeros(16, np.float32))
            assert _fused.blas_threads() == 3
    finally:
        set_threads(before)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


def test_element_kernels_ask_llvm_for_512_bit_vectors():
    """The float32 element kernels carry the function attribute that lets LLVM use
    512-bit vectors (nn._kernels.wide_vectors; LLVM's default for AVX-512 Intel cores
    is 256): in a plain kernel and, inlined through the pass, in the prange body of
    the fused layers (a function of its own). The attribute is set through llvmlite's
    internals, which swallow a failure: this is where a failure would show."""
    import numba

    from bknumba.nn import _fused
    from bknumba.nn import _kernels as kernels

    attr = '"prefer-vector-width"="512"'
    x = np.linspace(-3, 3, 40).astype(np.float32)
    out = np.empty_like(x)
    # compiled afresh: Numba does not show the IR of code loaded from its disk cache
    plain = numba.njit(**dict(kernels._SERIAL, cache=False))(kernels.gelu_flat.py_func)
    plain(x, out)
    np.testing.assert_array_equal(out, layers.gelu(x))
    assert attr in plain.inspect_llvm(plain.signatures[0])
    if not _fused.available():
        return
    w = np.ones((16, 40), np.float32) / 40
    y = np.empty((2, 16), np.float32)
    _fused._kernel()(x.reshape(2, 20).repeat(2, 1), w, np.zeros(16, np.float32),
                     np.ones(16, np.float32), np.zeros(16, np.float32), 1e-5, _fused.GELU, y, 1)
    rows = _fused._kernel()
    ir = rows.inspect_llvm(rows.signatures[0])
    assert attr in ir and "__numba_parfor_gufunc" in ir
    np.testing.assert_allclose(y, layers.gelu(x.reshape(2, 20).repeat(2, 1) @ w.T), rtol=1e-6,
                               atol=1e-7)


@pytest.mark.parametrize("rows", [100, 257, 1000])
@pytest.mark.parametrize("act", ["relu", "gelu", "ln_gelu"])
def test_mlp_matches_float64_and_the_two_layers(rows, act):
    """layers.mlp (both layers in one parallel region where it applies) against a
    float64 reference within float32 round-off, and bit for bit against the two
    layers called one after the other (the same row blocks, the same kernels); 100
    rows on two threads is below the fused path's minimum (the two calls run); the
    inputs unchanged."""
    import numba

    from bknumba.nn import _fused

    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, 40)).astype(np.float32)
    w1 = (rng.standard_normal((72, 40)) / 6).astype(np.float32)
    w2 = (rng.standard_normal((33, 72)) / 8).astype(np.float32)
    b1, g, beta = (rng.standard_normal(72).astype(np.float32) for _ in range(3))
    b2 = rng.standard_normal(33).astype(np.float32)
    x0 = x.copy()
    h64 = x.astype(np.float64) @ w1.T.astype(np.float64) + b1
    if act == "ln_gelu":
        mu = h64.mean(-1, keepdims=True)
        h64 = (h64 - mu) / np.sqrt(((h64 - mu) ** 2).mean(-1, keepdims=True) + 1e-5) * g + beta
    h64 = np.maximum(h64, 0) if act == "relu" else 0.5 * h64 * (1 + erf(h64 / 2**0.5))
    want = h64 @ w2.T.astype(np.float64) + b2
    first = {"relu": lambda: layers.linear_relu(x, w1, b1),
             "gelu": lambda: layers.linear_gelu(x, w1, b1),
             "ln_gelu": lambda: layers.linear_ln_gelu(x, w1, b1, g, beta)}[act]
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    try:
        got = layers.mlp(x, w1, b1, act, w2, b2, ln_weight=g, ln_bias=beta)
        two = layers.linear(first(), w2, b2)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert got.dtype == np.float32 and got.shape == (rows, 33)
    np.testing.assert_allclose(got, want, rtol=3e-5, atol=3e-5)
    np.testing.assert_array_equal(got, two)
    np.testing.assert_array_equal(x, x0)
    # float64 takes the two-layer path, to float64 round-off
    got64 = layers.mlp(x.astype(np.float64), w1.astype(np.float64), b1, act,
                       w2.astype(np.float64), b2, ln_weight=g, ln_bias=beta)
    assert got64.dtype == np.float64
    np.testing.assert_allclose(got64, want, rtol=1e-5, atol=1e-5)  # the float32 weights
    assert _fused.mlp_rows(x[:0], w1, b1, _fused.RELU, np.empty((0, 72), np.float32), w2, b2,
                           _fused.BIAS, np.empty((0, 33), np.float32)) is None
    with pytest.raises(ValueError, match="act"):
        layers.mlp(x, w1, b1, "tanh", w2, b2)
    with pytest.raises(ValueError, match="ln_weight"):
        layers.mlp(x, w1, b1, "ln_gelu", w2, b2)


@pytest.mark.parametrize("rows", [60, 300])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_mlp_reports_a_non_finite_input_anywhere(rows, where, value, rng):
    """With check_finite, the fused kernel's threads test their own input rows for NaN
    and infinity (a bit test): one such value in the first row, the middle or the
    last, on the fused path (300 rows) and the NumPy path (60 rows), is reported;
    finite input is not; a module raises naming its input."""
    import numba

    x = rng.standard_normal((rows, 24)).astype(np.float32)
    w1, w2 = rng.standard_normal((32, 24)).astype(np.float32), rng.standard_normal((8, 32))
    w2 = w2.astype(np.float32)
    b1, b2 = np.zeros(32, np.float32), np.zeros(8, np.float32)
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    try:
        assert layers._mlp(x, w1, b1, "relu", w2, b2, check_finite=True)[1] is True
        i = {"first": 0, "middle": rows // 2, "last": rows - 1}[where]
        bad = x.copy()
        bad[i, 23 if where == "last" else 5] = value
        assert layers._mlp(bad, w1, b1, "relu", w2, b2, check_finite=True)[1] is False
        with np.errstate(invalid="ignore", over="ignore"):
            assert layers._mlp(bad, w1, b1, "relu", w2, b2)[1] is True  # not asked
        up = bnn.AdaptiveUpsampling(12, rows // 2 * 2, 2)
        up.load_state_dict(random_state("AdaptiveUpsampling", up.config))
        xu = rng.standard_normal((2, rows // 2 * 2, 12)).astype(np.float32)
        assert np.isfinite(up(xu)).all()
        xu[-1 if where == "last" else 0, i // 2, 3] = value
        with pytest.raises(ValueError, match="AdaptiveUpsampling: x contains NaN or infinity"):
            up(xu)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


def test_derived_values_follow_a_reload(rng):
    """AdaptiveUpsampling keeps its folded bias (Linear bias + position embedding)
    between calls: a new load_state_dict replaces it."""
    cfg = dict(d_model=8, n_seq_down=16, upsample_factor=2)
    up = bnn.AdaptiveUpsampling(**cfg)
    sd = random_state("AdaptiveUpsampling", cfg)
    x = rng.standard_normal((2, 16, 8)).astype(np.float32)
    first = up.load_state_dict(sd)(x)
    sd["position_embed"] = sd["position_embed"] + 1.0
    np.testing.assert_allclose(up.load_state_dict(sd)(x), first + 1.0, rtol=1e-5, atol=1e-5)


def test_thread_limit_sets_and_restores_counts():
    """thread_limit sets Numba's count (and the BLAS pools') for the call only, leaves
    them alone when nested or None, and restores them when the body raises."""
    import numba

    from bknumba.nn._base import _blas_pools, thread_limit

    top = numba.config.NUMBA_NUM_THREADS
    blas = [get() for _, get in _blas_pools()]
    with thread_limit(1):
        assert numba.get_num_threads() == 1
        assert all(get() == 1 for _, get in _blas_pools())
        with thread_limit(top):  # nested: no change
            assert numba.get_num_threads() == 1
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == top
    assert [get() for _, get in _blas_pools()] == blas
    with pytest.raises(KeyError):
        with thread_limit(1):
            raise KeyError("body")
    assert numba.get_num_threads() == top
    assert [get() for _, get in _blas_pools()] == blas
    with thread_limit(None):
        assert numba.get_num_threads() == top


def test_scratch_arrays_never_leak_into_results(rng, monkeypatch):
    # intermediates live in per-thread work arrays (layers._scratch); results are fresh
    x = rng.standard_normal((4, 8, 6)).astype(np.float32)
    w, b = rng.standard_normal((5, 6)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    g, beta = np.ones(5, np.float32), np.zeros(5, np.float32)
    first = layers.linear_ln_gelu(x, w, b, g, beta)
    kept = first.copy()
    second = layers.linear_ln_gelu(2 * x, w, b, g, beta)
    third = layers.linear_gelu(x, w, b)
    assert not np.shares_memory(first, second) and not np.shares_memory(first, third)
    np.testing.assert_array_equal(first, kept)  # later calls do not overwrite it
    a1 = layers._scratch("t", (3, 4))
    assert a1.shape == (3, 4) and a1.flags.c_contiguous
    assert layers._scratch("t", (3, 4)) is a1  # the same request: the same view, kept
    assert layers._scratch("t", [3, 4]).shape == (3, 4)  # a list as the shape
    assert np.shares_memory(layers._scratch("t", (4, 3)), a1)  # same buffer (16 elements)
    assert not np.shares_memory(layers._scratch("t", (5, 4)), a1)  # 32: another buffer
    assert not np.shares_memory(layers._scratch("u", (3, 4)), a1)  # another tag
    other = []
    thread = threading.Thread(target=lambda: other.append(layers._scratch("t", (3, 4))))
    thread.start()
    thread.join()
    assert not np.shares_memory(other[0], a1)  # one set per thread
    monkeypatch.setattr(layers, "SCRATCH_MAX_BYTES", 40)
    assert not np.shares_memory(layers._scratch("big", (3, 4)), layers._scratch("big", (3, 4)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_propagates_nan(dtype):
    x = np.array([[-1.0, np.nan, 2.0, -np.inf]], dtype)
    got = layers._relu_(x.copy(), np.zeros(4, dtype))
    np.testing.assert_array_equal(got, np.array([[0.0, np.nan, 2.0, 0.0]], dtype))


def test_num_threads_option(core_file, rng):
    import numba

    x = rng.standard_normal((2, N, D)).astype(np.float32)
    v = rng.standard_normal((2, N)).astype(np.float32)
    default = bnn.load(core_file)
    assert default.num_threads is None
    before = numba.get_num_threads()
    one = bnn.load(core_file, num_threads=1)
    np.testing.assert_allclose(one(x, v)[0], default(x, v)[0], rtol=1e-6, atol=1e-7)
    assert numba.get_num_threads() == before  # restored after the call
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="num_threads"):
            bnn.load(core_file, num_threads=bad)


# ------------------------------------------------------------------------------------------------
# masks
# ------------------------------------------------------------------------------------------------
def test_topk_mask_count_and_ties():
    logits = np.array([[1.0, 3.0, 3.0, 0.0, 3.0]], np.float32)
    m = masks.topk_mask(logits, 2)
    np.testing.assert_array_equal(m, [[0, 1, 1, 0, 0]])
    assert masks.topk_count(128, 0.6) == 51 and masks.topk_count(100, 0.9) == 9
    assert masks.topk_mask(logits, 0).sum() == 0


def test_gumbel_mask_seeded_and_biased():
    logits = np.zeros((200, 200), np.float32)
    m1 = masks.gumbel_sigmoid_mask(logits, rng=1)
    m2 = masks.gumbel_sigmoid_mask(logits, rng=1)
    np.testing.assert_array_equal(m1, m2)
    assert set(np.unique(m1)) <= {0.0, 1.0}
    # one Gumbel sample: P(keep | logit 0) = 1 - 1/e, not 1/2
    assert abs(m1.mean() - (1 - np.exp(-1))) < 0.01


def test_linear_interpolation_rules():
    f = np.zeros((3, 5, 2))
    f[0, 1] = [1, 1]
    f[0, 3] = [3, 5]
    m = np.array([[0, 1, 0, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], float)
    out = linear_interpolate(f, m)
    np.testing.assert_allclose(out[0], [[1, 1], [1, 1], [2, 3], [3, 5], [3, 5]])
    np.testing.assert_array_equal(out[1], 0)


# ------------------------------------------------------------------------------------------------
# compat: the original sparse recursion keeps its defects
# ------------------------------------------------------------------------------------------------
def _dense_inverse(a, b=1.0, c=1.0, z=1j):
    n = a.size
    t = np.diag(a.astype(complex)) + np.diag(np.full(n - 1, b), 1) + np.diag(np.full(n - 1, c), -1)
    return np.linalg.inv(t - z * np.eye(n))


def test_sparse_v1_defects(rng):
    a = -2 + 0.5 * rng.standard_normal((2, 12))
    one = np.ones((2, 11))
    full = compat.sparse_v1_g(a, one, one, 1j, np.ones((2, 12)))
    inv = _dense_inverse(a[0])
    # zero sparsity: 1 - b G[i, i-1] (and exactly 1 at i = 0), not G[i, i]
    expected = np.concatenate([[1.0], 1 - np.diag(inv, -1)])
    np.testing.assert_allclose(full[0], expected, rtol=1e-10)
    assert np.max(np.abs(full[0] - np.diag(inv))) > 0.3
    # every position masked: identically 1
    np.testing.assert_allclose(compat.sparse_v1_g(a, one, one, 1j, np.zeros((2, 12))), 1.0)
    # batch-wide masking: masking row 1 changes row 0
    m = np.ones((2, 12))
    m[1, 5] = 0
    assert np.max(np.abs(compat.sparse_v1_g(a, one, one, 1j, m)[0] - full[0])) > 1e-3


def test_clip_magnitude():
    g = np.array([100.0 + 0j, 3 + 4j, 0.5j])
    out = compat.clip_magnitude(g, 4.0)
    np.testing.assert_allclose(np.abs(out), [4.0, 4.0, 0.5], rtol=1e-8)
    assert g[0] == 100.0


# ------------------------------------------------------------------------------------------------
# modules without torch: exact features, defaults, options
# ------------------------------------------------------------------------------------------------
def test_sparse_bk_core_exact_features(core_file, rng):
    mod = bnn.load(core_file)
    x = rng.standard_normal((3, N, D)).astype(np.float32)
    v = (0.5 * rng.standard_normal((3, N))).astype(np.float32)
    x0, v0 = x.copy(), v.copy()
    final, mask, ratio = mod(x, v)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(v, v0)
    assert final.shape == (3, N, 2) and final.dtype == np.float32 and isinstance(ratio, float)
    keep = mask > 0.5
    assert 0 < keep.mean() < 1
    np.testing.assert_array_equal(mask, (mod.importance_logits(x) > 0).astype(np.float32))
    g = bknumba.bk_core((-2 + v).astype(np.float64), 1.0, 1.0, 1j)
    np.testing.assert_allclose(final[..., 0][keep], g.real[keep], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(final[..., 1][keep], g.imag[keep], rtol=1e-6, atol=1e-7)
    assert ratio == pytest.approx(1 - keep.mean())
    # model-compat differs from the exact default at computed positions
    model = bnn.load(core_file, features="model")
    assert np.max(np.abs(model(x, v)[0] - final)[keep]) > 0.05
    # deterministic
    np.testing.assert_array_equal(mod(x, v)[0], final)


def test_float64_and_explicit_mask(core_file, rng):
    mod = bnn.load(core_file, dtype=np.float64)
    x = rng.standard_normal((2, N, D))
    v = rng.standard_normal((2, N))
    m = np.ones((2, N))
    out, mask, ratio = mod(x, v, mask=m)
    assert out.dtype == np.float64 and ratio == 0.0
    g = bknumba.bk_core(-2 + v, 1.0, 1.0, 1j)
    np.testing.assert_allclose(out[..., 0] + 1j * out[..., 1], g, rtol=1e-12)


@pytest.mark.parametrize("features", ["local", "seed"])
def test_other_semantics(core_file, rng, features):
    mod = bnn.load(core_file, features=features)
    x = rng.standard_normal((2, N, D))
    v = rng.standard_normal((2, N))
    out, mask, _ = mod(x, v)
    g = bknumba.sparse_bk_core(-2 + v.astype(np.float32).astype(np.float64), 1.0, 1.0, mask > 0.5,
                               semantics=features)
    keep = mask > 0.5
    np.testing.assert_allclose(out[..., 0][keep], g.real[keep], rtol=1e-5, atol=1e-6)


def test_bad_inputs(core_file):
    mod = bnn.load(core_file)
    x = np.zeros((2, N, D), np.float32)
    v = np.zeros((2, N), np.float32)
    with pytest.raises(ValueError, match="shape"):
        mod(x[0], v)
    with pytest.raises(ValueError, match="d_model=8"):
        mod(np.zeros((2, N, D + 1)), v)
    with pytest.raises(ValueError, match="n_seq=16"):
        mod(np.zeros((2, N + 2, D)), np.zeros((2, N + 2)))
    bad = x.copy()
    bad[0, 3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        mod(bad, v)
    with pytest.raises(ValueError, match="batch"):
        mod(x, np.zeros((3, N)))
    with pytest.raises(TypeError, match="numeric"):
        mod(x.astype(complex), v)
    with pytest.raises(ValueError, match="features"):
        bnn.load(core_file, features="nonsense")
    with pytest.raises(TypeError, match="unknown option"):
        bnn.load(core_file, colour="red")


def test_unloaded_module_raises():
    with pytest.raises(RuntimeError, match="no weights"):
        bnn.SparseBKCore(8, 16)(np.zeros((1, 16, 8)), np.zeros((1, 16)))


def test_learned_sparsity_gumbel_training_mode(tmp_path, rng):
    cfg = dict(d_model=D, n_seq=N, target_sparsity=0.6)
    path = tmp_path / "g.safetensors"
    bnn.export_state_dict(random_state("LearnedSparsityG_ii", cfg), path, "LearnedSparsityG_ii", **cfg)
    x = rng.standard_normal((4, N, D))
    v = rng.standard_normal((4, N))
    a = bnn.load(path, rng=7)(x, v, True)[1]
    b = bnn.load(path, rng=7)(x, v, True)[1]
    np.testing.assert_array_equal(a, b)
    topk = bnn.load(path)(x, v)[1]
    assert np.all(topk.sum(1) == int(N * 0.4))


# ------------------------------------------------------------------------------------------------
# export / load
# ------------------------------------------------------------------------------------------------
ALL = [
    ("SparseBKCore", CORE_CFG),
    ("SparseMoELayer", dict(d_model=D, num_experts=3, top_k=2)),
    ("SparseMoEResNetBKLayer", dict(d_model=D, n_seq=N, num_experts=2)),
    ("LearnedSparsityG_ii", dict(d_model=D, n_seq=N)),
    ("SparseBKLayerWithMoE", dict(d_model=D, n_seq=N, num_experts=2)),
    ("AdaptiveDownsampling", dict(d_model=D, n_seq=N)),
    ("AdaptiveUpsampling", dict(d_model=D, n_seq_down=N)),
    ("MultiScaleBKLayer", dict(d_model=D, n_seq=N, num_experts=2)),
    ("MultiScaleResNetBKBlock", dict(d_model=D, n_seq=N, num_experts=2, hierarchical=True)),
]


@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
@pytest.mark.parametrize("kind,cfg", ALL, ids=[k for k, _ in ALL])
def test_roundtrip_identical(tmp_path, kind, cfg, fmt):
    sd = random_state(kind, cfg, seed=3)
    path = tmp_path / f"m.{fmt}"
    meta = bnn.export_state_dict(sd, path, kind, source={"note": "test"}, **cfg)
    mod = bnn.load(path)
    assert mod.kind == kind and mod.metadata["config"] == cfg
    assert meta["bknumba_version"] == bknumba.__version__ and meta["source"]["note"] == "test"
    ignored = set(bnn.IGNORED_BUFFERS)
    back = mod.state_dict()
    assert set(back) == {k for k in sd if k.rsplit(".", 1)[-1] not in ignored}
    for k, val in back.items():
        np.testing.assert_array_equal(val, sd[k].astype(val.dtype))
    arrays, _ = bnn.read_file(path)  # the file itself: identical keys, dtypes, shapes, values
    assert set(arrays) == set(sd)
    for k, val in arrays.items():
        assert val.dtype == sd[k].dtype and val.shape == sd[k].shape
        np.testing.assert_array_equal(val, sd[k])


def test_ignored_buffers_optional(tmp_path):
    cfg = dict(d_model=D, n_seq=N)
    sd = random_state("LearnedSparsityG_ii", cfg)
    del sd["total_flops_saved"], sd["total_forward_calls"]
    bnn.export_state_dict(sd, tmp_path / "a.npz", "LearnedSparsityG_ii", **cfg)
    bnn.load(tmp_path / "a.npz")


def test_all_problems_reported_at_once(tmp_path):
    sd = random_state("SparseBKCore", CORE_CFG)
    del sd["interpolator.0.bias"]
    sd["extra.weight"] = np.zeros(3, np.float32)
    sd["interpolator.2.weight"] = np.zeros((16, 16, 5), np.float32)
    sd["importance_predictor.0.weight"] = sd["importance_predictor.0.weight"].astype(np.int32)
    sd["interpolator.4.bias"] = np.array([np.nan, 0], np.float32)
    with pytest.raises(bnn.StateDictError) as ei:
        bnn.export_state_dict(sd, tmp_path / "x.npz", "SparseBKCore", **CORE_CFG)
    text = str(ei.value)
    assert len(ei.value.problems) == 5
    for part in ("missing key 'interpolator.0.bias'", "unexpected key 'extra.weight'",
                 "(16, 16, 5)", "dtype int32", "non-finite"):
        assert part in text
    # the same problems are found on load of a file written without validation
    bnn.export_state_dict(sd, tmp_path / "x.npz", "SparseBKCore", validate=False, **CORE_CFG)
    with pytest.raises(bnn.StateDictError) as ei2:
        bnn.load(tmp_path / "x.npz")
    assert sorted(ei2.value.problems) == sorted(ei.value.problems)


def test_unknown_kind_and_bad_config(tmp_path):
    with pytest.raises(bnn.StateDictError, match="unknown module kind 'Nope'"):
        bnn.export_state_dict({}, tmp_path / "x.npz", "Nope")
    with pytest.raises(bnn.StateDictError, match="no constructor argument 'colour'"):
        bnn.export_state_dict({}, tmp_path / "x.npz", "SparseBKCore", d_model=8, n_seq=16, colour=1)
    with pytest.raises(bnn.StateDictError, match="needs the constructor argument 'n_seq'"):
        bnn.export_state_dict({}, tmp_path / "x.npz", "SparseBKCore", d_model=8)


def test_mismatched_config_on_load(core_file, tmp_path):
    # same weights, declared with another n_seq -> shape errors
    sd = random_state("SparseBKCore", CORE_CFG)
    bad = dict(CORE_CFG, n_seq=N * 2)
    bnn.export_state_dict(sd, tmp_path / "m.npz", "SparseBKCore", validate=False, **bad)
    with pytest.raises(bnn.StateDictError, match="h0_diag_base"):
        bnn.load(tmp_path / "m.npz")


@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
def test_truncated_and_corrupted(tmp_path, fmt):
    path = tmp_path / f"m.{fmt}"
    bnn.export_state_dict(random_state("SparseBKCore", CORE_CFG), path, "SparseBKCore", **CORE_CFG)
    data = path.read_bytes()
    trunc = tmp_path / f"t.{fmt}"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(bnn.FileFormatError, match="corrupted or truncated"):
        bnn.load(trunc)
    junk = tmp_path / f"j.{fmt}"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(bnn.FileFormatError):
        bnn.load(junk)


def test_foreign_and_pickled_npz(tmp_path):
    np.savez(tmp_path / "plain.npz", a=np.zeros(2))
    with pytest.raises(bnn.FileFormatError, match="no bknumba metadata"):
        bnn.load(tmp_path / "plain.npz")
    np.savez(tmp_path / "obj.npz", a=np.array([{"x": 1}], dtype=object),
             __bknumba_metadata__=np.array("{}"))
    with pytest.raises(bnn.FileFormatError):
        bnn.load(tmp_path / "obj.npz")
    with pytest.raises(ValueError, match="extension"):
        bnn.load(tmp_path / "x.pt")


def test_bad_metadata(tmp_path):
    np.savez(tmp_path / "m.npz", __bknumba_metadata__=np.array("{not json"))
    with pytest.raises(bnn.FileFormatError, match="JSON"):
        bnn.load(tmp_path / "m.npz")
    meta = {"format": "bknumba.nn", "format_version": 1, "kind": "Unknown", "config": {}}
    np.savez(tmp_path / "k.npz", __bknumba_metadata__=np.array(json.dumps(meta)))
    with pytest.raises(bnn.StateDictError, match="unknown module kind"):
        bnn.load(tmp_path / "k.npz")


def test_import_does_not_import_torch():
    code = "import sys, bknumba.nn; assert 'torch' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_doctests():
    import doctest

    from bknumba.nn import compat as c
    from bknumba.nn import export, interp, io, modules

    for m in (layers, masks, c, interp, io, export, modules):
        res = doctest.testmod(m, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert res.failed == 0, m.__name__
