"""Tests of bknumba.ffn: sparse FFN, SVD estimator, selection, config, FLOPs, I/O."""
from __future__ import annotations

import inspect
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from bknumba import ffn
from bknumba.ffn import (
    FFNEstimator,
    FFNWeights,
    SEED_FALLBACK_CONFIG,
    SEED_OPTIMIZED_CONFIG,
    SEED_ORIGINAL_CONFIG,
    SVDSparsityEstimator,
    apply_activation,
    average_sparsity,
    build_ffn_estimators,
    channel_recall,
    channels_kept,
    dense_ffn,
    get_layer_sparsity_ratio,
    load_ffn_weights,
    save_ffn_weights,
    seed_ffn_flop_table,
    select_ffn_channels,
    sparse_ffn,
    sparse_ffn_flops,
    synthetic_ffn_weights,
    warmup_factor,
)

ACTS = ["gelu", "gelu_tanh", "relu", "identity"]


def naive_sparse_ffn(x, W1, b1, W2, b2, channels, activation):
    """Loop reference: y[t] = b2 + sum_c act(W1[c] . x[t] + b1[c]) W2[:, c]."""
    x = np.asarray(x, np.float64)
    y = np.empty((x.shape[0], W2.shape[0]))
    for t in range(x.shape[0]):
        acc = np.array(b2, dtype=np.float64)
        for c in channels[t]:
            h = float(np.dot(W1[c].astype(np.float64), x[t])) + float(b1[c])
            a = float(apply_activation(np.array([h]), activation)[0])
            acc = acc + a * W2[:, c].astype(np.float64)
        y[t] = acc
    return y


def problem(n, d, d_ff, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(dtype)
    W1 = (rng.standard_normal((d_ff, d)) / math.sqrt(d)).astype(dtype)
    b1 = (0.1 * rng.standard_normal(d_ff)).astype(dtype)
    W2 = (rng.standard_normal((d, d_ff)) / math.sqrt(d_ff)).astype(dtype)
    b2 = (0.1 * rng.standard_normal(d)).astype(dtype)
    return x, W1, b1, W2, b2


def random_channels(rng, n, d_ff, k):
    if n == 0:
        return np.zeros((0, k), np.int64)
    return np.stack([np.sort(rng.choice(d_ff, size=k, replace=False)) for _ in range(n)])


# --------------------------------------------------------------------------- sparse FFN


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sparsity_zero_equals_dense(dtype):
    x, W1, b1, W2, b2 = problem(7, 24, 40, dtype=dtype)
    dense = dense_ffn(x, W1, b1, W2, b2)
    channels = select_ffn_channels(x @ W1.T + b1, 0.0)
    assert channels.shape == (7, 40)
    np.testing.assert_array_equal(sparse_ffn(x, W1, b1, W2, b2, channels), dense)
    np.testing.assert_array_equal(sparse_ffn(x, W1, b1, W2, b2, None), dense)
    # the Numba kernel itself, run on all channels, agrees with the dense BLAS path
    from bknumba.ffn.kernels import sparse_ffn_tiled

    out = np.empty((7, 24), dtype)
    W2t = np.ascontiguousarray(W2.T)
    sparse_ffn_tiled(x, W1, b1, W2t, b2, channels, 2, 3, out)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(out, dense, rtol=tol, atol=tol)
    ref = naive_sparse_ffn(x, W1, b1, W2, b2, channels, "gelu")
    np.testing.assert_allclose(dense, ref, rtol=tol, atol=tol)


@settings(deadline=None, max_examples=25)
@given(
    n=st.integers(0, 13),
    d=st.integers(1, 21),
    d_ff=st.integers(2, 30),
    frac=st.floats(0.0, 1.0),
    act=st.sampled_from(ACTS),
    tile=st.integers(1, 9),
    seed=st.integers(0, 2**16),
)
def test_sparse_ffn_matches_naive_loop(n, d, d_ff, frac, act, tile, seed):
    x, W1, b1, W2, b2 = problem(n, d, d_ff, seed=seed)
    rng = np.random.default_rng(seed)
    k = max(1, min(d_ff - 1, int(frac * d_ff)))
    channels = random_channels(rng, n, d_ff, k).reshape(n, k)
    got = sparse_ffn(x, W1, b1, W2, b2, channels, activation=act, tile=tile)
    ref = naive_sparse_ffn(x, W1, b1, W2, b2, channels, act)
    assert got.shape == (n, d)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_sparse_ffn_float32_unsorted_channels_and_single_token():
    x, W1, b1, W2, b2 = problem(5, 16, 32, seed=3, dtype=np.float32)
    rng = np.random.default_rng(3)
    channels = np.stack([rng.choice(32, size=9, replace=False) for _ in range(5)])  # unsorted
    got = sparse_ffn(x, W1, b1, W2, b2, channels)
    assert got.dtype == np.float32
    ref = naive_sparse_ffn(x, W1, b1, W2, b2, channels, "gelu")
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    one = sparse_ffn(x[2], W1, b1, W2, b2, channels[2])
    assert one.shape == (16,)
    np.testing.assert_allclose(one, got[2], rtol=1e-6, atol=1e-6)
    # float64 input anywhere -> float64 result
    assert sparse_ffn(x.astype(np.float64), W1, b1, W2, b2, channels).dtype == np.float64


def test_results_do_not_depend_on_threads():
    import numba

    x, W1, b1, W2, b2 = problem(40, 16, 48, seed=5)
    channels = random_channels(np.random.default_rng(5), 40, 48, 12)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = sparse_ffn(x, W1, b1, W2, b2, channels, tile=4)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = sparse_ffn(x, W1, b1, W2, b2, channels, tile=4)
    finally:
        numba.set_num_threads(old)
    np.testing.assert_array_equal(one, many)


def test_inputs_not_modified():
    x, W1, b1, W2, b2 = problem(6, 10, 20, seed=1)
    channels = random_channels(np.random.default_rng(1), 6, 20, 5)
    copies = [a.copy() for a in (x, W1, b1, W2, b2, channels)]
    sparse_ffn(x, W1, b1, W2, b2, channels)
    dense_ffn(x, W1, b1, W2, b2)
    est = FFNEstimator(W1, b1, rank=3)
    z = est.estimate(x)
    zc = z.copy()
    select_ffn_channels(z, 0.5)
    for a, c in zip((x, W1, b1, W2, b2, channels), copies):
        np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(z, zc)


def test_sparse_ffn_bad_inputs():
    x, W1, b1, W2, b2 = problem(4, 6, 10)
    ch = np.tile(np.arange(3), (4, 1))
    with pytest.raises(ValueError, match=r"W2 has shape \(10, 6\); expected \(d_model, d_ff\)"):
        sparse_ffn(x, W1, b1, W2.T, b2, ch)
    with pytest.raises(ValueError, match=r"x has shape \(4, 5\); its last axis must be d_model = 6"):
        sparse_ffn(x[:, :5], W1, b1, W2, b2, ch)
    with pytest.raises(ValueError, match=r"b1 has shape \(9,\); expected \(10,\)"):
        sparse_ffn(x, W1, b1[:9], W2, b2, ch)
    with pytest.raises(ValueError, match=r"b2 has shape"):
        sparse_ffn(x, W1, b1, W2, b2[:2], ch)
    with pytest.raises(ValueError, match=r"W1 must be 2-D"):
        sparse_ffn(x, W1[0], b1, W2, b2, ch)
    with pytest.raises(ValueError, match=r"channels has shape \(3, 3\); expected \(n_tokens, k\) = \(4, k\)"):
        sparse_ffn(x, W1, b1, W2, b2, ch[:3])
    with pytest.raises(ValueError, match=r"channels\[1, 2\] = 10 is outside \[0, d_ff = 10\)"):
        bad = ch.copy()
        bad[1, 2] = 10
        sparse_ffn(x, W1, b1, W2, b2, bad)
    with pytest.raises(ValueError, match="repeats a channel"):
        bad = ch.copy()
        bad[2, 1] = 0
        sparse_ffn(x, W1, b1, W2, b2, bad)
    with pytest.raises(TypeError, match="channels must be an integer array"):
        sparse_ffn(x, W1, b1, W2, b2, ch.astype(float))
    with pytest.raises(ValueError, match="non-finite"):
        xn = x.copy()
        xn[0, 0] = np.nan
        sparse_ffn(xn, W1, b1, W2, b2, ch)
    with pytest.raises(TypeError, match="real numeric"):
        sparse_ffn(x.astype(complex), W1, b1, W2, b2, ch)
    with pytest.raises(ValueError, match="activation='swish'"):
        sparse_ffn(x, W1, b1, W2, b2, ch, activation="swish")
    with pytest.raises(ValueError, match="tile must be a positive integer"):
        sparse_ffn(x, W1, b1, W2, b2, ch, tile=0)


def test_ffnweights_w2_is_a_free_transpose():
    x, W1, b1, W2, b2 = problem(3, 8, 12, dtype=np.float32)
    w = FFNWeights.from_arrays(W1, b1, W2, b2)
    assert w.W2t.flags.c_contiguous and w.W2.shape == (8, 12)
    assert not w.W1.flags.writeable
    assert W1.flags.writeable  # the caller's array is untouched
    np.testing.assert_array_equal(w.W2, W2)
    ch = random_channels(np.random.default_rng(0), 3, 12, 4)
    np.testing.assert_allclose(w.forward(x, ch), sparse_ffn(x, W1, b1, W2, b2, ch), rtol=1e-6)
    with pytest.raises(ValueError, match=r"W2 has shape \(12, 8\)"):
        FFNWeights.from_arrays(W1, b1, W2.T, b2)


# --------------------------------------------------------------------------- estimator


@pytest.mark.parametrize("shape", [(20, 8), (8, 20)])
def test_full_rank_estimator_equals_dense_preactivation(shape):
    rng = np.random.default_rng(0)
    W = rng.standard_normal(shape)
    b = rng.standard_normal(shape[0])
    x = rng.standard_normal((5, shape[1]))
    est = SVDSparsityEstimator(W, b, rank=min(shape))
    np.testing.assert_allclose(est.estimate(x), x @ W.T + b, rtol=1e-11, atol=1e-11)
    assert est.energy == pytest.approx(1.0)
    np.testing.assert_allclose(est.estimate(x[0]), x[0] @ W.T + b, rtol=1e-11, atol=1e-11)


def test_estimator_is_best_rank_r_approximation():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((30, 12))
    U, s, Vt = np.linalg.svd(W, full_matrices=False)
    errs = []
    for r in (1, 3, 6):
        est = SVDSparsityEstimator(W, None, rank=r)
        approx = est.left @ est.right
        np.testing.assert_allclose(approx, (U[:, :r] * s[:r]) @ Vt[:r], atol=1e-12)
        # Eckart-Young: the spectral error is the (r+1)-th singular value
        assert np.linalg.norm(W - approx, 2) == pytest.approx(s[r])
        errs.append(np.linalg.norm(W - approx))
        assert est.flops_per_token == 2 * r * (12 + 30) + 30
    assert errs == sorted(errs, reverse=True)


def test_estimator_errors_and_dtype():
    W = np.ones((6, 4), np.float32)
    with pytest.raises(ValueError, match=r"rank=5 is outside \[1, min\(out_features, in_features\) = 4\]"):
        SVDSparsityEstimator(W, None, rank=5)
    with pytest.raises(ValueError, match="rank=0"):
        FFNEstimator(W, None, rank=0)
    with pytest.raises(TypeError, match="rank must be an integer"):
        FFNEstimator(W, None, rank=2.5)
    with pytest.raises(ValueError, match=r"bias has shape \(5,\); expected \(6,\)"):
        FFNEstimator(W, np.zeros(5), rank=2)
    with pytest.raises(ValueError, match=r"x has shape \(2, 3\); its last axis must be in_features = 4"):
        FFNEstimator(W, None, rank=2).estimate(np.ones((2, 3)))
    est = FFNEstimator(W, None, rank=2)
    assert est.dtype == np.float32
    assert est.estimate(np.ones((2, 4), np.float32)).dtype == np.float32
    assert est.estimate(np.ones((2, 4))).dtype == np.float64


def test_build_ffn_estimators():
    w = synthetic_ffn_weights(3, 8, 16, seed=2)
    ests = build_ffn_estimators(w, {"layer.0": 2, "layer.1": 4, "layer.2": 8}, activation="relu")
    assert [e.rank for e in ests.values()] == [2, 4, 8]
    assert all(e.activation == "relu" for e in ests.values())
    seq = build_ffn_estimators([(w["layer.0"].W1, w["layer.0"].b1)], 3)
    assert list(seq) == ["layer.0"]
    np.testing.assert_allclose(seq["layer.0"].bias, w["layer.0"].b1)
    with pytest.raises(ValueError, match="rank has no entry for layer 'layer.2'"):
        build_ffn_estimators(w, {"layer.0": 2, "layer.1": 4})
    with pytest.raises(TypeError, match="layer 'a'"):
        build_ffn_estimators({"a": "nonsense"}, 2)


def test_estimator_recall_improves_with_rank():
    # decaying spectrum: the low-rank estimate carries most of the signal
    w = synthetic_ffn_weights(1, 32, 128, spectrum_decay=1.0, seed=4, dtype=np.float64)["layer.0"]
    x = np.random.default_rng(4).standard_normal((64, 32))
    recalls = [ffn.ffn_fidelity(x, w, FFNEstimator(w.W1, w.b1, r), 0.75)["recall"] for r in (1, 8, 32)]
    assert recalls[-1] == pytest.approx(1.0)
    assert recalls[0] < recalls[1] < recalls[2]
    res = ffn.ffn_fidelity(x, w, FFNEstimator(w.W1, w.b1, 32), 0.75)
    assert res["rel_error"] == pytest.approx(res["oracle_rel_error"])


# --------------------------------------------------------------------------- selection


@settings(deadline=None, max_examples=30)
@given(
    n=st.integers(1, 6),
    d_ff=st.integers(1, 50),
    sparsity=st.floats(0.0, 0.99),
    act=st.sampled_from(ACTS),
    seed=st.integers(0, 2**16),
    ties=st.booleans(),
)
def test_selection_count_and_topk(n, d_ff, sparsity, act, seed, ties):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d_ff))
    if ties:
        z = np.round(z)  # many equal magnitudes (and ReLU zeros)
    ch = select_ffn_channels(z, sparsity, activation=act)
    k = channels_kept(d_ff, sparsity)
    assert ch.shape == (n, k) and ch.dtype == np.int64
    mag = np.abs(apply_activation(z, act))
    for t in range(n):
        assert np.all(np.diff(ch[t]) > 0)  # sorted and distinct
        chosen = np.zeros(d_ff, bool)
        chosen[ch[t]] = True
        if k < d_ff:
            assert mag[t, chosen].min() >= mag[t, ~chosen].max() - 1e-12
            # ties go to the lower index
            thr = mag[t, chosen].min()
            tied = np.flatnonzero(np.abs(mag[t] - thr) <= 1e-12)
            tied_chosen = np.intersect1d(tied, ch[t])
            np.testing.assert_array_equal(tied_chosen, tied[: tied_chosen.size])


def test_selection_examples_and_errors():
    z = np.array([[0.1, -3.0, 2.0, 0.5], [4.0, 0.0, -0.2, 1.0]])
    np.testing.assert_array_equal(select_ffn_channels(z, 0.5, activation="relu"), [[2, 3], [0, 3]])
    # GELU(-3) ~ -0.004: a large negative pre-activation is not chosen
    np.testing.assert_array_equal(select_ffn_channels(z, 0.75)[0], [2])
    np.testing.assert_array_equal(select_ffn_channels(z[0], 0.0, k=1, activation=None), [1])
    assert select_ffn_channels(np.zeros((0, 5)), 0.5).shape == (0, 3)
    assert [channels_kept(3072, s) for s in (0.0, 0.2, 0.5, 0.7, 0.75, 0.95)] == [3072, 2458, 1536, 922, 768, 154]
    for bad in (1.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"outside \[0, 1\)"):
            select_ffn_channels(z, bad)
    with pytest.raises(TypeError, match="sparsity must be a real number"):
        select_ffn_channels(z, "0.5")
    with pytest.raises(ValueError, match=r"k=5 is outside \[1, d_ff=4\]"):
        select_ffn_channels(z, 0.5, k=5)
    with pytest.raises(ValueError, match="estimate must be 1-D or 2-D"):
        select_ffn_channels(np.zeros((2, 2, 2)), 0.5)
    assert channel_recall([[0, 1, 2]], [[1, 2, 3]]) == pytest.approx(2 / 3)


# --------------------------------------------------------------------------- config


SEED_TABLES = {
    "original": (SEED_ORIGINAL_CONFIG, [0.0, 0.2, 0.3, 0.5, 0.6, 0.7], 0.5, 0.1, 8),
    "optimized": (SEED_OPTIMIZED_CONFIG, [0.4, 0.5, 0.6, 0.8, 0.9, 0.95], 0.75, 0.2, 4),
    "fallback": (SEED_FALLBACK_CONFIG, [0.3, 0.4, 0.5, 0.7, 0.8, 0.9], 0.65, 0.2, 4),
}


@pytest.mark.parametrize("which", list(SEED_TABLES))
def test_layer_ratios_follow_seed_tables(which):
    cfg, ratios, default, warm, rank = SEED_TABLES[which]
    assert cfg["svd_rank"] == rank and cfg["sparse_warmup_ratio"] == warm
    for i, r in enumerate(ratios):
        assert get_layer_sparsity_ratio(f"layer.{i}", cfg) == r
        assert get_layer_sparsity_ratio(i, cfg) == r
        assert get_layer_sparsity_ratio(f"distilbert.transformer.layer.{i}.ffn", cfg) == r
    assert get_layer_sparsity_ratio("layer.6", cfg) == default
    assert get_layer_sparsity_ratio("classifier", cfg) == default
    # warm-up: linear from 0 over the first warm * total steps
    total = 1000
    ramp = warm * total
    for step in (0, 1, int(ramp // 2), int(ramp) - 1, int(ramp), int(ramp) + 1, total - 1):
        expected = ratios[3] * min(1.0, step / ramp)
        assert get_layer_sparsity_ratio("layer.3", cfg, step=step, total_steps=total) == pytest.approx(expected)


def test_seed_average_sparsity():
    assert round(100 * average_sparsity(SEED_ORIGINAL_CONFIG), 1) == 38.3
    assert round(100 * average_sparsity(SEED_OPTIMIZED_CONFIG), 1) == 69.2
    assert average_sparsity({"ffn_sparsity": 0.3}, n_layers=4) == pytest.approx(0.3)


def test_layer_name_matching_is_componentwise():
    cfg = {"ffn_sparsity": 0.1, "layer_sparsity": {"layer.1": 0.5, "layer.10": 0.9}}
    assert get_layer_sparsity_ratio("layer.10", cfg) == 0.9
    assert get_layer_sparsity_ratio("encoder.layer.10.ffn", cfg) == 0.9
    assert get_layer_sparsity_ratio("encoder.layer.1.ffn", cfg) == 0.5
    assert get_layer_sparsity_ratio("layer.100", cfg) == 0.1
    assert get_layer_sparsity_ratio("sublayer.1", cfg) == 0.1

    class Cfg:  # attribute-style configs work too
        ffn_sparsity = 0.25
        layer_sparsity = {"layer.0": 0.0}
        sparse_warmup_ratio = 0.5

    assert get_layer_sparsity_ratio("layer.2", Cfg(), step=25, total_steps=100) == pytest.approx(0.125)


def test_config_errors():
    with pytest.raises(ValueError, match=r"ffn_sparsity=1.0 is outside \[0, 1\)"):
        get_layer_sparsity_ratio("layer.0", {"ffn_sparsity": 1.0})
    with pytest.raises(ValueError, match=r"layer_sparsity\['layer.2'\]=-0.1 is outside"):
        get_layer_sparsity_ratio("layer.0", {"layer_sparsity": {"layer.2": -0.1}})
    with pytest.raises(ValueError, match=r"sparse_warmup_ratio=1.5 is outside \[0, 1\]"):
        get_layer_sparsity_ratio("layer.0", {"sparse_warmup_ratio": 1.5})
    with pytest.raises(ValueError, match="svd_rank must be a positive integer"):
        get_layer_sparsity_ratio("layer.0", {"svd_rank": 0})
    with pytest.raises(ValueError, match="give both step and total_steps"):
        get_layer_sparsity_ratio("layer.0", SEED_ORIGINAL_CONFIG, step=3)
    with pytest.raises(ValueError, match="step must be >= 0"):
        warmup_factor(-1, 10, 0.1)
    with pytest.raises(TypeError, match="layer_name must be a string or an int"):
        get_layer_sparsity_ratio(1.5, SEED_ORIGINAL_CONFIG)
    with pytest.raises(TypeError, match="layer_sparsity must be a mapping"):
        get_layer_sparsity_ratio("layer.0", {"layer_sparsity": [0.1]})
    assert warmup_factor(7, 10, 0.0) == 1.0


# --------------------------------------------------------------------------- FLOPs


def test_sparse_ffn_flops_signature_and_counts():
    sig = inspect.signature(sparse_ffn_flops)
    assert list(sig.parameters) == ["d_model", "d_ff", "rank", "sparsity", "both_sparse"]
    assert sig.parameters["both_sparse"].kind is inspect.Parameter.KEYWORD_ONLY
    assert sig.parameters["both_sparse"].default is True
    d, m = 768, 3072
    dense = sparse_ffn_flops(d, m, 8, 0.0)
    assert dense["estimator"] == dense["selection"] == 0
    assert dense["up_projection"] == 2 * d * m + m and dense["down_projection"] == 2 * d * m + d
    f = sparse_ffn_flops(d, m, 4, 0.75)
    k = 768
    assert f == {
        "estimator": 2 * 4 * (d + m) + m,
        "selection": 2 * m,
        "up_projection": 2 * k * d + k,
        "activation": k,
        "down_projection": 2 * k * d + d,
        "total": 2 * 4 * (d + m) + m + 2 * m + 2 * k * d + k + k + 2 * k * d + d,
    }
    g = sparse_ffn_flops(d, m, 4, 0.75, both_sparse=False)
    assert g["up_projection"] == dense["up_projection"] and g["down_projection"] == f["down_projection"]
    with pytest.raises(ValueError, match=r"outside \[0, 1\)"):
        sparse_ffn_flops(d, m, 4, 1.0)
    with pytest.raises(ValueError, match="d_ff must be an integer >= 1"):
        sparse_ffn_flops(d, 0, 4, 0.5)


def test_seed_flop_table_and_inconsistency():
    t = seed_ffn_flop_table()
    assert t["seed_table"][0][1:3] == (30720, 15360)
    assert t["seed_table"][2][1:3] == (3600384, 2194656)
    rec = t["recomputed_macs"]
    assert rec["dense"] == 4718592 == t["seed_theory"]["dense"]
    assert rec["svd_original"] == 30720 and rec["svd_optimized"] == 15360
    assert rec["original_global"] == 3569664 == t["seed_table"][1][1]
    assert rec["optimized_global"] == 2964480 != t["seed_table"][1][2]
    # the table's total counts the estimator twice
    assert t["seed_table"][2][1] == rec["original_global"] + rec["svd_original"]
    text = " ".join(t["inconsistencies"])
    assert "counted twice" in text and "2,964,480" in text and "2,179,296" in text
    rows = {r["config"]: r for r in t["comparison"]}
    ours = rows["bknumba optimized (rank 4), both sparse"]
    seeds = rows["seed optimized (rank 4), lin1 dense"]
    assert ours["total"] < seeds["total"] < rows["dense"]["total"]
    assert seeds["reduction"] < 0.5  # lin1 dense caps the reduction at 50 %


# --------------------------------------------------------------------------- I/O


def test_npz_roundtrip(tmp_path):
    w = synthetic_ffn_weights(2, 8, 16, seed=7, dtype=np.float64)
    path = tmp_path / "ffn.npz"
    save_ffn_weights(path, w)
    back = load_ffn_weights(path)
    assert list(back) == ["layer.0", "layer.1"]
    for name in w:
        for attr in ("W1", "b1", "W2t", "b2"):
            np.testing.assert_array_equal(getattr(back[name], attr), getattr(w[name], attr))


def test_load_from_named_arrays():
    rng = np.random.default_rng(0)
    bert = {
        "bert.encoder.layer.1.intermediate.dense.weight": rng.standard_normal((16, 4)),
        "bert.encoder.layer.1.intermediate.dense.bias": rng.standard_normal(16),
        "bert.encoder.layer.1.output.dense.weight": rng.standard_normal((4, 16)),
        "bert.encoder.layer.1.output.dense.bias": rng.standard_normal(4),
        "bert.encoder.layer.1.attention.output.dense.weight": rng.standard_normal((4, 4)),
    }
    w = load_ffn_weights(bert)["layer.1"]
    np.testing.assert_array_equal(w.W2, bert["bert.encoder.layer.1.output.dense.weight"])
    distil = {
        "distilbert.transformer.layer.0.ffn.lin1.weight": np.ones((16, 4), np.float32),
        "distilbert.transformer.layer.0.ffn.lin2.weight": np.ones((4, 16), np.float32),
    }
    w0 = load_ffn_weights(distil)["layer.0"]
    assert w0.dtype == np.float32 and np.all(w0.b1 == 0)
    with pytest.raises(ValueError, match="no FFN weights found"):
        load_ffn_weights({"foo": np.ones(3)})
    with pytest.raises(ValueError, match="layer.0 in the mapping lacks W2"):
        load_ffn_weights({"layer.0.W1": np.ones((4, 2))})
    with pytest.raises(ValueError, match="expected .npz or .safetensors"):
        load_ffn_weights(__file__)


def test_safetensors_roundtrip(tmp_path):
    st_numpy = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(0)
    tensors = {
        "transformer.layer.0.ffn.lin1.weight": rng.standard_normal((12, 4)).astype(np.float32),
        "transformer.layer.0.ffn.lin1.bias": rng.standard_normal(12).astype(np.float32),
        "transformer.layer.0.ffn.lin2.weight": rng.standard_normal((4, 12)).astype(np.float32),
        "transformer.layer.0.ffn.lin2.bias": rng.standard_normal(4).astype(np.float32),
    }
    path = tmp_path / "m.safetensors"
    st_numpy.save_file(tensors, str(path))
    w = load_ffn_weights(path)["layer.0"]
    np.testing.assert_array_equal(w.W1, tensors["transformer.layer.0.ffn.lin1.weight"])
    np.testing.assert_array_equal(w.W2, tensors["transformer.layer.0.ffn.lin2.weight"])


# --------------------------------------------------------------------------- imports


def test_imports_are_lazy():
    code = (
        "import sys, bknumba; assert 'bknumba.ffn' not in sys.modules; "
        "import bknumba.ffn; assert 'bknumba.ffn.kernels' not in sys.modules, 'kernels imported'; "
        "assert 'numba' not in sys.modules, 'numba imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(__file__).parents[1]))
