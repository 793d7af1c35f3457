"""Parity of bknumba.nn with PyTorch re-implementations of the original modules.

Each PyTorch module (``tests/nn_torch_reference.py``, written from the spec)
is randomised, its ``state_dict`` exported with bknumba's exporter, loaded
with ``bknumba.nn.load`` and both are run in eval mode on the same input.
Outputs must agree to float32 round-off (relative 1e-5, measured as
``max |a - b| / max |b|`` per output).
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import bknumba.nn as bnn  # noqa: E402

from . import nn_torch_reference as ref  # noqa: E402

pytestmark = pytest.mark.torch

RTOL = 1e-5
D, N, B = 16, 32, 4
MAX_REL = {}  # filled by the tests; printed by test_zz_report


def rel_err(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = np.max(np.abs(b)) if b.size else 0.0
    return float(np.max(np.abs(a - b)) / scale) if scale > 0 else float(np.max(np.abs(a - b), initial=0))


def compare(ours, theirs, name):
    """Compare nested outputs; returns the largest relative error."""
    if isinstance(theirs, torch.Tensor):
        if theirs.ndim == 0 and not isinstance(ours, np.ndarray):
            assert isinstance(ours, float), f"{name}: expected a Python float, got {type(ours)}"
            return compare(ours, float(theirs), name)
        assert isinstance(ours, np.ndarray), f"{name}: expected ndarray, got {type(ours)}"
        assert ours.dtype == np.float32, f"{name}: dtype {ours.dtype}"
        err = rel_err(ours, theirs.detach().numpy())
        assert err <= RTOL, f"{name}: relative error {err:.3g}"
        return err
    if isinstance(theirs, tuple):
        assert isinstance(ours, tuple) and len(ours) == len(theirs), name
        return max(compare(o, t, f"{name}[{i}]") for i, (o, t) in enumerate(zip(ours, theirs)))
    if isinstance(theirs, dict):
        assert isinstance(ours, dict) and set(ours) == set(theirs), (name, set(ours), set(theirs))
        return max(compare(ours[k], theirs[k], f"{name}[{k!r}]") for k in theirs)
    assert isinstance(ours, float), f"{name}: expected float, got {type(ours)}"
    err = abs(ours - float(theirs)) / max(abs(float(theirs)), 1e-30)
    assert err <= RTOL, f"{name}: {ours} vs {theirs}"
    return err


def roundtrip(tmp_path, tmod, kind, config, fmt="npz", **options):
    path = tmp_path / f"m.{fmt}"
    bnn.export_state_dict(tmod.state_dict(), path, kind, **config)
    return bnn.load(path, **options)


def inputs(seed, *, v=False, n=N):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, n, D, generator=g)
    if v:
        return x, 0.8 * torch.randn(B, n, generator=g)
    return (x,)


def check(tmp_path, name, make, kind, config, args, fmt="npz", **options):
    torch.manual_seed(zlib.crc32(name.encode()))  # deterministic default init
    tmod = make()
    ref.randomize_(tmod, seed=zlib.crc32(name.encode()) % 1000)
    tmod.eval()
    with torch.no_grad():
        expected = tmod(*args)
    mod = roundtrip(tmp_path, tmod, kind, config, fmt, **options)
    ours = mod(*[a.numpy() for a in args])
    err = compare(ours, expected, name)
    MAX_REL[name] = max(err, MAX_REL.get(name, 0.0))
    return mod, ours, expected


# core: "exact" -> bknumba default; "sparse_v1"/"raw_v1" -> features="model"
@pytest.mark.parametrize("core,fmt", [("exact", "npz"), ("sparse_v1", "safetensors")])
def test_sparse_bk_core(tmp_path, core, fmt):
    cfg = dict(d_model=D, n_seq=N, target_sparsity=0.5)
    opts = {} if core == "exact" else {"features": "model"}
    _, ours, exp = check(tmp_path, f"SparseBKCore[{core}]", lambda: ref.SparseBKCore(**cfg, core=core),
                         "SparseBKCore", cfg, inputs(1, v=True), fmt, **opts)
    m = ours[1]
    assert 0 < m.mean() < 1, "the test needs a partial mask"


@pytest.mark.parametrize("core", ["exact", "sparse_v1"])
def test_sparse_bk_core_full_path(tmp_path, core):
    cfg = dict(d_model=D, n_seq=N)
    torch.manual_seed(5)
    tmod = ref.randomize_(ref.SparseBKCore(**cfg, core=core), 5).eval()
    x, v = inputs(2, v=True)
    with torch.no_grad():
        exp = tmod(x, v, False)
    mod = roundtrip(tmp_path, tmod, "SparseBKCore", cfg,
                    **({} if core == "exact" else {"features": "model"}))
    MAX_REL[f"SparseBKCore(full path)[{core}]"] = compare(mod(x.numpy(), v.numpy(), False), exp, "full")


@pytest.mark.parametrize("top_k", [1, 2, 4])
def test_sparse_moe_layer(tmp_path, top_k):
    cfg = dict(d_model=D, num_experts=4, top_k=top_k, dropout_p=0.1)
    check(tmp_path, f"SparseMoELayer[top_k={top_k}]", lambda: ref.SparseMoELayer(**cfg), "SparseMoELayer",
          cfg, inputs(3))


@pytest.mark.parametrize("core", ["exact", "sparse_v1"])
def test_sparse_moe_resnet_bk_layer(tmp_path, core):
    cfg = dict(d_model=D, n_seq=N, num_experts=4, top_k=1, target_sparsity=0.5)
    mod, _, _ = check(tmp_path, f"SparseMoEResNetBKLayer[{core}]",
                      lambda: ref.SparseMoEResNetBKLayer(**cfg, core=core), "SparseMoEResNetBKLayer", cfg,
                      inputs(4), **({} if core == "exact" else {"features": "model"}))
    stats = mod.get_sparsity_stats()
    assert set(stats) == {"sparsity_ratio", "num_computed", "target_sparsity"}
    assert all(isinstance(v, float) for v in stats.values())


@pytest.mark.parametrize("core,method", [("exact", "learned"), ("raw_v1", "learned"),
                                         ("exact", "linear")])
def test_learned_sparsity_g_ii(tmp_path, core, method):
    cfg = dict(d_model=D, n_seq=N, target_sparsity=0.6, interpolation_method=method)
    _, ours, _ = check(tmp_path, f"LearnedSparsityG_ii[{core},{method}]",
                       lambda: ref.LearnedSparsityG_ii(**cfg, core=core), "LearnedSparsityG_ii", cfg,
                       inputs(6, v=True), **({} if core == "exact" else {"features": "model"}))
    assert np.all(ours[1].sum(axis=1) == int(N * 0.4))


@pytest.mark.parametrize("core", ["exact", "raw_v1"])
def test_sparse_bk_layer_with_moe(tmp_path, core):
    cfg = dict(d_model=D, n_seq=N, num_experts=4, target_sparsity=0.6)
    check(tmp_path, f"SparseBKLayerWithMoE[{core}]", lambda: ref.SparseBKLayerWithMoE(**cfg, core=core),
          "SparseBKLayerWithMoE", cfg, inputs(7), "safetensors",
          **({} if core == "exact" else {"features": "model"}))


def test_adaptive_downsampling(tmp_path):
    cfg = dict(d_model=D, n_seq=N, downsample_factor=2)
    check(tmp_path, "AdaptiveDownsampling", lambda: ref.AdaptiveDownsampling(**cfg), "AdaptiveDownsampling",
          cfg, inputs(8))


def test_adaptive_downsampling_factor4(tmp_path):
    cfg = dict(d_model=D, n_seq=N, downsample_factor=4)
    check(tmp_path, "AdaptiveDownsampling[f=4]", lambda: ref.AdaptiveDownsampling(**cfg),
          "AdaptiveDownsampling", cfg, inputs(9))


def test_adaptive_upsampling(tmp_path):
    cfg = dict(d_model=D, n_seq_down=N // 2, upsample_factor=2)
    check(tmp_path, "AdaptiveUpsampling", lambda: ref.AdaptiveUpsampling(**cfg), "AdaptiveUpsampling", cfg,
          inputs(10, n=N // 2))


@pytest.mark.parametrize("kind", ["AdaptiveUpsampling", "AdaptiveDownsampling", "SparseMoELayer",
                                  "SparseBKCore"])
def test_fused_two_layer_blocks_at_larger_batches(tmp_path, kind):
    """Batches large enough (>= 128 rows on two threads) for the fused two-layer region
    (layers.mlp): each module's Linear -> activation -> Linear block runs there (the
    other tests' 64-128 rows take the two-layer path)."""
    import numba

    n = N // 2 if kind == "AdaptiveUpsampling" else N
    cfg = {"AdaptiveUpsampling": dict(d_model=D, n_seq_down=n, upsample_factor=2),
           "AdaptiveDownsampling": dict(d_model=D, n_seq=n, downsample_factor=2),
           "SparseMoELayer": dict(d_model=D, num_experts=2, top_k=1, dropout_p=0.1),
           "SparseBKCore": dict(d_model=D, n_seq=n, target_sparsity=0.5)}[kind]
    g = torch.Generator().manual_seed(21)
    x = torch.randn(48, n, D, generator=g)
    args = (x, 0.8 * torch.randn(48, n, generator=g)) if kind == "SparseBKCore" else (x,)
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    try:
        check(tmp_path, f"{kind}[batch 48]", lambda: getattr(ref, kind)(**cfg), kind, cfg, args)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


@pytest.mark.parametrize("core,sparse", [("exact", True), ("raw_v1", True), ("exact", False)])
def test_multi_scale_bk_layer(tmp_path, core, sparse):
    cfg = dict(d_model=D, n_seq=N, num_experts=4, target_sparsity=0.6, use_sparse_g_ii=sparse)
    _, ours, _ = check(tmp_path, f"MultiScaleBKLayer[{core},sparse={sparse}]",
                       lambda: ref.MultiScaleBKLayer(**cfg, core=core), "MultiScaleBKLayer", cfg, inputs(11),
                       **({} if core == "exact" else {"features": "model"}))
    keys = {"importance_scores", "flops_saved_ratio"}
    if sparse:
        keys |= {"sparsity_ratio", "mask", "num_computed"}
    assert set(ours[1]) == keys


@pytest.mark.parametrize("hier", [False, True])
def test_multi_scale_resnet_bk_block(tmp_path, hier):
    cfg = dict(d_model=D, n_seq=N, num_experts=2, hierarchical=hier)
    check(tmp_path, f"MultiScaleResNetBKBlock[hierarchical={hier}]",
          lambda: ref.MultiScaleResNetBKBlock(**cfg), "MultiScaleResNetBKBlock", cfg, inputs(12))


def test_importance_predictor_no_context(tmp_path):
    cfg = dict(d_model=D, hidden_dim=8, use_context=False)
    check(tmp_path, "ImportancePredictor[no context]", lambda: ref.ImportancePredictor(**cfg),
          "ImportancePredictor", cfg, inputs(13))


def test_float64_option_close_to_torch(tmp_path):
    cfg = dict(d_model=D, n_seq=N, num_experts=4, target_sparsity=0.6)
    torch.manual_seed(3)
    tmod = ref.randomize_(ref.MultiScaleBKLayer(**cfg), 3).eval()
    (x,) = inputs(14)
    with torch.no_grad():
        exp, _ = tmod(x)
    mod = roundtrip(tmp_path, tmod, "MultiScaleBKLayer", cfg, dtype=np.float64)
    out, st = mod(x.numpy())
    assert out.dtype == np.float64 and st["mask"].dtype == np.float64
    assert rel_err(out, exp.numpy()) < 1e-4


def test_zzz_report():
    """Prints the largest relative error per module (``pytest -s`` shows it)."""
    for name, err in sorted(MAX_REL.items()):
        print(f"{name:55s} {err:.2e}")


def test_parity_detects_wrong_features(tmp_path):
    """The comparison is sensitive: the exact default does not match the model's sparse core."""
    cfg = dict(d_model=D, n_seq=N, target_sparsity=0.5)
    torch.manual_seed(1)
    tmod = ref.randomize_(ref.SparseBKCore(**cfg, core="sparse_v1"), 1).eval()
    x, v = inputs(1, v=True)
    with torch.no_grad():
        exp = tmod(x, v)[0].numpy()
    mod = roundtrip(tmp_path, tmod, "SparseBKCore", cfg)  # default: exact
    assert rel_err(mod(x.numpy(), v.numpy())[0], exp) > 0.1
