"""The FLOP cost model: hand-checked values, scaling laws, the seeds' numbers.

(``test_flops_kernels.py`` checks the BK-Core counts against the kernels'
source, operation by operation.)
"""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from bknumba.sparsity import flops as F


# ------------------------------------------------------------- BK-Core, by hand
def test_ratio_by_hand_small():
    # n = 1: forward d (2 arith) + |d|^2 check (3 guard); backward d (2), scale (3 g),
    # m2 (3 g, no reciprocal), check (1 g); combine 10 arith (1 div) + 5 guard
    f = F.bk_core_flops(1)
    assert (f["arith"], f["guard"], f["scaling"], f["div"], f["total"]) == (14, 15, 0, 1, 29)
    # n = 2 with position 1 masked (local): see the per-event table in flops.py
    s = F.sparse_bk_core_flops(2, mask=[1, 0])
    assert (s["arith"], s["guard"], s["div"], s["total"]) == (32, 30, 2, 62)
    assert s["computed"] == 1 and s["sparsity"] == 0.5


def test_theta_phi_by_hand_small():
    f = F.bk_core_flops(1, method="theta_phi")
    # d (2) + 1/theta_N (6, 1 div) + combine (12 arith, 6 scaling)
    assert (f["arith"], f["guard"], f["scaling"], f["div"], f["total"]) == (20, 0, 6, 1, 26)
    f = F.bk_core_flops(2, method="theta_phi")
    assert (f["arith"], f["guard"], f["scaling"], f["total"]) == (56, 11, 22, 89)


@pytest.mark.parametrize("n", [2, 3, 10, 128, 1000])
def test_closed_forms(n):
    r = F.bk_core_flops(n)
    assert (r["total"], r["div"], r["arith"], r["guard"]) == (66 * n - 37, 3 * n - 2,
                                                              42 * n - 28, 24 * n - 9)
    t = F.bk_core_flops(n, method="theta_phi")
    assert (t["total"], t["div"], t["arith"], t["guard"], t["scaling"]) == (
        67 * n - 45, 1, 44 * n - 32, 7 * n - 3, 16 * n - 10)
    assert r["add"] + r["mul"] + r["div"] == r["total"]


@pytest.mark.parametrize("method", ["ratio", "theta_phi"])
def test_linear_in_n_and_batch(method):
    one = [F.bk_core_flops(n, method=method)["total"] for n in range(2, 40)]
    assert len(set(np.diff(one))) == 1                       # constant increment
    for b in (1, 3, 64):
        assert F.bk_core_flops(37, b, method=method)["total"] == b * one[35]
    assert F.bk_core_flops(0, 5, method=method)["total"] == 0
    assert F.bk_core_flops(10, 0, method=method)["total"] == 0
    # sparse: also linear in N and in B at fixed sparsity
    sp = [F.sparse_bk_core_flops(n, 4, sparsity=0.3, semantics="exact", method=method)["total"]
          for n in range(3, 30)]
    assert np.allclose(np.diff(sp), np.diff(sp)[0], rtol=0, atol=1e-9)


@pytest.mark.parametrize("semantics", ["local", "seed", "exact"])
def test_sparse_limits(semantics):
    method = "theta_phi" if semantics == "seed" else "ratio"
    n = 50
    full = F.bk_core_flops(n, 3, method=method)
    for zero in (F.sparse_bk_core_flops(n, 3, sparsity=0.0, semantics=semantics),
                 F.sparse_bk_core_flops(n, mask=np.ones((3, n)), semantics=semantics)):
        assert zero["total"] == full["total"] and zero["div"] == full["div"]
    allm = F.sparse_bk_core_flops(n, sparsity=1.0, semantics=semantics)
    if semantics == "local":
        assert (allm["total"], allm["div"]) == (18 * n - 4, 0)
    elif semantics == "exact":                                # full minus n combines
        assert allm["total"] == 66 * n - 37 - 15 * n
    else:  # no combine (18), forward coupling 15 -> masked guard 3, backward coupling 8
        assert allm["total"] == 67 * n - 45 - 18 * n - 12 * (n - 1) - 8 * (n - 2)
    assert allm["computed"] == 0


@pytest.mark.parametrize("semantics", ["local", "seed", "exact"])
def test_expected_counts_are_the_mask_average(semantics):
    """sparsity=s equals the Bernoulli(s)-weighted mean over all 2**n masks."""
    n, s = 6, 0.35
    exp = {"total": 0.0, "div": 0.0}
    for bits in itertools.product([0, 1], repeat=n):
        w = np.prod([(1 - s) if b else s for b in bits])
        c = F.sparse_bk_core_flops(n, mask=np.array(bits), semantics=semantics)
        exp["total"] += w * c["total"]
        exp["div"] += w * c["div"]
    got = F.sparse_bk_core_flops(n, sparsity=s, semantics=semantics)
    assert got["total"] == pytest.approx(exp["total"], rel=1e-12)
    assert got["div"] == pytest.approx(exp["div"], rel=1e-12)


def test_sparse_cost_falls_with_sparsity_and_speedups():
    tot = [F.sparse_bk_core_flops(256, sparsity=s)["total"] for s in np.linspace(0, 1, 11)]
    assert all(b < a for a, b in zip(tot, tot[1:]))
    # per position, large N: full 66, local 18 + 48 q (q = 1 - s)
    assert F.predicted_sparse_speedup(10**6, 0.5) == pytest.approx(66 / 42, rel=1e-4)
    assert F.predicted_sparse_speedup(10**6, 0.5, guards=False) == pytest.approx(42 / 23,
                                                                                  rel=1e-4)
    assert F.predicted_sparse_speedup(10**6, 0.5, semantics="exact") == pytest.approx(
        66 / (66 - 7.5), rel=1e-4)
    c = F.bk_core_flops(10)
    assert F.weighted_cost(c, 10.0) == c["total"] + 9 * c["div"]


def test_bk_core_validation():
    with pytest.raises(ValueError, match="method='lu'"):
        F.bk_core_flops(4, method="lu")
    with pytest.raises(ValueError, match="semantics='fast'"):
        F.sparse_bk_core_flops(4, semantics="fast")
    with pytest.raises(ValueError, match="semantics='local'.*'theta_phi'"):
        F.sparse_bk_core_flops(4, semantics="local", method="theta_phi")
    with pytest.raises(ValueError, match="either sparsity or mask"):
        F.sparse_bk_core_flops(4, sparsity=0.5, mask=[1, 1, 0, 1])
    with pytest.raises(ValueError, match=r"mask has shape \(3,\)"):
        F.sparse_bk_core_flops(4, mask=[1, 1, 0])
    with pytest.raises(ValueError, match="0 or 1"):
        F.sparse_bk_core_flops(2, mask=[0.5, 1])
    with pytest.raises(ValueError, match="sparsity"):
        F.sparse_bk_core_flops(4, sparsity=1.2)
    with pytest.raises(ValueError, match="n must be"):
        F.bk_core_flops(-1)
    with pytest.raises(TypeError, match="batch"):
        F.bk_core_flops(4, 2.0)


# ---------------------------------------------------------------------- layers
def test_layer_hand_values():
    assert F.linear_flops(3, 2) == 12 and F.linear_flops(3, 2, bias=False) == 10
    assert F.conv1d_flops(2, 16, 3, 1) == 192 and F.conv1d_flops(2, 16, 3, 5, bias=False) == 5 * 11 * 16
    assert F.interpolator_flops(1)["total"] == 192 + 1536 + 192
    assert F.interpolator_flops(1, kind="learned_g_ii")["total"] == 640 + 10240 + 640
    # SparseBKCore predictor Linear(64, 32) -> Linear(32, 1): 4096 + 64
    assert F.importance_predictor_flops(64, 1)["total"] == 4160
    # context predictor, d = 64, h = 32: 6*64*32 + 6*32*32 + 2*32*32 + 2*32
    assert F.importance_predictor_flops(64, 1, kind="context")["total"] == (
        12288 + 6144 + 2048 + 64)
    m = F.moe_flops(8, 10, num_experts=4, top_k=2)
    assert m["per_expert_token"] == 2 * 8 * 16 + 2 * 16 * 8 == 8 * 8 ** 2
    assert (m["router"], m["experts"], m["combine"]) == (640, 2 * 512 * 10, 3 * 8 * 10)
    assert F.moe_flops(8, 10, num_experts=2, top_k=5)["active_experts"] == 2
    assert F.upsampling_flops(8, 3)["total"] == 3 * 12 * 64
    assert F.refine_flops(8, 3, 2)["total"] == 6 * 4 * 64
    d = F.downsampling_flops(8, 6, 2)
    assert (d["pool"], d["refine"], d["scorer"]) == (3 * 3 * 8, 3 * 128, 6 * (64 + 8))


def second_difference(fn, d, step):
    return fn(d + 2 * step) - 2 * fn(d + step) + fn(d)


@pytest.mark.parametrize("d", [16, 64, 130])
def test_layers_quadratic_in_d_model(d):
    n = 32
    # exact d^2 coefficients: f(d + 2h) - 2 f(d + h) + f(d) = 2 A h^2
    assert second_difference(lambda x: F.moe_flops(x, n)["total"], d, 1) == 2 * 8 * n
    assert second_difference(lambda x: F.upsampling_flops(x, n)["total"], d, 1) == 2 * 12 * n
    assert second_difference(lambda x: F.refine_flops(x, n)["total"], d, 1) == 2 * 4 * n
    assert second_difference(lambda x: F.importance_predictor_flops(
        x, n, kind="context")["total"], d, 2) == 2 * 5 * n * 4
    assert second_difference(lambda x: F.moe_bk_layer_flops(x, n)["total"], d, 1) == 16 * n
    # multi-scale layer: 18.5 N d^2 (original-model.md section 7.2)
    assert second_difference(lambda x: F.multi_scale_bk_layer_flops(x, n)["total"], d, 2) == (
        2 * 18.5 * n * 4)
    # and the cost ratio tends to 18.5 / 8 for large d
    assert F.multi_scale_bk_layer_flops(4096, 64)["ratio"] == pytest.approx(18.5 / 8, rel=2e-3)


def test_layer_validation():
    with pytest.raises(ValueError, match="n=7"):
        F.multi_scale_bk_layer_flops(64, 7)
    with pytest.raises(ValueError, match="kind='rnn'"):
        F.interpolator_flops(8, kind="rnn")
    with pytest.raises(ValueError, match="in_features"):
        F.linear_flops(0, 3)
    with pytest.raises(ValueError, match="factor=4"):
        F.downsampling_flops(8, 6, 4)


# ------------------------------------------------------ the seeds' own numbers
def test_claimed_sparse_g_ii_reproduces_seed_002():
    c = F.claimed_sparse_g_ii_flops(128, 256, 0.6)
    assert (c["standard"], c["importance"], c["interpolation"]) == (5120, 65536, 65536)
    assert (c["sparse_compute"], c["total"]) == (2048, 133120)
    assert round(c["reduction_factor"], 2) == 2.50
    c = F.claimed_sparse_g_ii_flops(64, 128, 0.6)
    assert (c["standard"], c["total"]) == (2560, 33792)
    # the overhead alone is 13-26x the cost being "reduced" (defect 28)
    assert (c["importance"] + c["interpolation"]) / c["standard"] == 12.8


def test_claimed_multi_scale_reproduces_seed_002():
    c = F.claimed_multi_scale_bk_flops(64, 128)
    assert (c["standard_flops"], c["multi_scale_flops"]) == (526848, 311808)
    assert round(100 * c["reduction_pct"], 1) == 40.8
    c = F.claimed_multi_scale_bk_flops(128, 256)
    assert (c["standard_flops"], c["multi_scale_flops"]) == (4199424, 2294784)
    assert round(100 * c["reduction_pct"], 1) == 45.4
    assert round(c["speedup"], 2) == 1.83
    combined = F.claimed_sparse_g_ii_flops(128, 256)["reduction_factor"] * c["speedup"]
    assert round(combined, 2) == 4.57


def test_claimed_multi_scale_layer_and_bk_counter():
    c = F.claimed_multi_scale_flops(64, 128)
    assert round(c["speedup"], 3) == 0.663
    assert c["multi_scale_flops"] == 24704 * 128 and c["standard_flops"] == 16384 * 128
    b = F.claimed_bk_core_flops(100, 2)
    assert (b["forward"], b["backward"], b["sparse_g_ii_standard"]) == (6800, 5200, 4000)


def test_claimed_ffn_reproduces_seed_004():
    assert F.claimed_ffn_flops()["dense"] == 4718592
    c8 = F.claimed_ffn_flops(768, 3072, 8, 0.5)
    assert (c8["svd"], c8["total"], round(100 * c8["reduction"])) == (30720, 3569664, 24)
    c4 = F.claimed_ffn_flops(768, 3072, 4, 0.75)
    assert (c4["svd"], c4["total"], round(100 * c4["reduction"])) == (15360, 2964480, 37)


def test_honest_multi_scale_matches_spec():
    # original-model.md 7.2: 2.44x (d=64, N=128) and 2.33x (d=128, N=256) the standard
    assert round(F.multi_scale_bk_layer_flops(64, 128)["ratio"], 2) == 2.44
    assert round(F.multi_scale_bk_layer_flops(128, 256)["ratio"], 2) == 2.33
    f = F.multi_scale_bk_layer_flops(128, 256)
    assert f["refine"] == 256 * 4 * 128 ** 2 == 16777216    # the docs say 65 536
    g = F.learned_sparsity_g_ii_flops(128, 256, 0.6)
    assert g["bk_core"] == F.bk_core_flops(256)["total"]     # the model computes it all
    h = F.learned_sparsity_g_ii_flops(128, 256, 0.6, as_implemented=False)
    assert h["bk_core"] == F.sparse_bk_core_flops(256, sparsity=0.6)["total"]


# --------------------------------------------------------------- sparse FFN
def test_ffn_flops_is_the_ffn_module():
    mod = pytest.importorskip("bknumba.ffn.flops")
    got = F.ffn_flops(768, 3072, 8, 0.5, both_sparse=True)
    assert got == mod.sparse_ffn_flops(768, 3072, 8, 0.5, both_sparse=True)
    assert "total" in got


# ------------------------------------------------------------------ report/CLI
def test_report_rows_and_formats():
    rows = F.flops_rows()
    by = {(r["section"], r["component"], r["config"]): r for r in rows}
    r = by[("combined", "sparse G_ii x multi-scale (x)", "d=128 N=256 s=0.6 E=4")]
    assert round(r["claimed"], 2) == 4.57 and round(r["honest"], 2) == 0.43
    r = by[("multi-scale BK layer", "FLOP reduction (%)", "d=128 N=256 s=0.6 E=4")]
    assert round(r["claimed"], 1) == 45.4 and r["honest"] < -100
    r = by[("sparse G_ii", "BK-Core reduction (x)", "d=128 N=256 s=0.6")]
    assert r["claimed"] == 2.5 and r["honest"] == pytest.approx(16859 / 9505.6, rel=1e-4)
    md = F.flops_report(fmt="markdown")
    assert md.startswith("| section |") and "133,120" in md
    assert json.loads(F.flops_report(fmt="json"))[0]["section"] == "sparse G_ii"
    with pytest.raises(ValueError, match="fmt='html'"):
        F.flops_report(fmt="html")


def test_main(capsys):
    assert F.main([]) == 0
    out = capsys.readouterr().out
    assert "4,199,424" in out and "2,294,784" in out and "45.35" in out
    assert F.main(["--d-model", "32", "--n-seq", "64", "--format", "markdown"]) == 0
    assert "d=32 N=64" in capsys.readouterr().out
    assert F.main(["--speedups", "--length", "64", "--batch", "2"]) == 0
    assert "TBD" in capsys.readouterr().out
    assert F.main(["--sparsity", "2"]) == 2
    assert "sparsity" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        F.main(["--d-model", "64"])
