"""Smoke tests of ``bknumba bench``: the registry, validation and rendering (no timing claims)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bknumba import _benchmarks_md as md
from bknumba import bench

ROOT = Path(__file__).resolve().parent.parent


def test_registry_names_unique_and_semantics_known():
    for registry in (bench.CORE_IMPLS, bench.GPU_IMPLS):
        names = [i.name for i in registry]
        assert len(names) == len(set(names))
        assert {i.semantics for i in registry} <= {"full", "seed", "local", "exact"}
    assert {i.semantics for i in bench.CORE_IMPLS} == {"full", "seed", "local", "exact"}
    assert all(i.device == "cuda" for i in bench.GPU_IMPLS)


def test_plan_respects_limits_and_availability(monkeypatch):
    jobs = bench.plan_core([(8, 64), (2, 4096)], (0.0, 0.5))
    labels = {(shape, impl.label(s)) for shape, impl, s in jobs}
    assert ((8, 64), "scipy banded") in labels
    assert ((2, 4096), "scipy banded") not in labels  # max_n 2048
    assert ((8, 64), "sparse exact 50%") in labels
    assert ((8, 64), "bknumba ratio 0%") not in labels  # full methods are not swept
    monkeypatch.setattr(bench, "_importable", lambda name: False)
    assert all(impl.name != "torch model loop"
               for _, impl, _ in bench.plan_core([(8, 64)], (0.0,)))


@pytest.mark.parametrize("impl", [i for i in bench.CORE_IMPLS if i.available()],
                         ids=lambda i: i.name)
def test_every_cpu_implementation_validates(impl):
    case = bench.make_case(6, 48, (0.0, 0.5))
    for s in ((0.0, 0.5) if impl.sparse else (0.0,)):
        rows = 3 if impl.max_rows else None
        g = impl.run(case, s, rows)
        assert g.shape == ((rows or 6), 48)
        assert bench.validate(impl, case, s, g, rows) <= impl.tol


def test_validation_rejects_a_wrong_result():
    case = bench.make_case(4, 32, (0.5,))
    impl = bench.CORE_IMPLS[0]
    g = impl.run(case, 0.0)
    g[1, 7] *= 1 + 1e-6
    with pytest.raises(AssertionError, match="failed validation"):
        bench.validate(impl, case, 0.0, g)
    sparse = next(i for i in bench.CORE_IMPLS if i.semantics == "local")
    with pytest.raises(AssertionError):  # a full result is not the local one
        bench.validate(sparse, case, 0.5, impl.run(case, 0.0))


def test_tolerance_grows_with_n_only_for_continuants():
    tp = next(i for i in bench.CORE_IMPLS if i.name == "bknumba theta_phi")
    ratio = bench.CORE_IMPLS[0]
    assert bench.tolerance(tp, 2 * 10**6) == pytest.approx(20 * tp.tol)
    assert bench.tolerance(ratio, 2 * 10**6) == ratio.tol
    assert bench.tolerance(tp, 1000) == tp.tol


def test_torch_model_loop_matches_reference_and_overflows_late():
    pytest.importorskip("torch")
    case = bench.make_case(3, 300)
    g = bench.torch_model_loop_baseline(case.a, case.k, case.z)
    assert bench.validate(bench.CORE_IMPLS[-1], case, 0.0, g) < 1e-12
    long = bench.make_case(1, 3000)
    with np.errstate(all="ignore"):
        g = bench.torch_model_loop_baseline(long.a, long.k, long.z)
    assert not np.all(np.isfinite(g))  # the raw continuants overflow: why max_n is 512


def test_run_cpu_bench_rows_and_markdown(monkeypatch):
    monkeypatch.setattr(bench, "copy_bandwidth", lambda: 1e10)
    impls = [i for i in bench.CORE_IMPLS if i.group == "bknumba" or i.name == "numpy vectorised"]
    meta, rows = bench.run_cpu_bench([(4, 64)], (0.0, 0.5), repeats=1, min_time=0.0,
                                     impls=impls)
    assert {r["impl"] for r in rows} >= {"bknumba ratio", "sparse seed 50%", "numpy vectorised"}
    assert all(r["elements_per_s"] > 0 and r["error"] < 1e-10 for r in rows)
    report = {"meta": meta, "rows": rows, "mode": "quick",
              "gpu": {"skipped": "no GPU"}, "layers": {"skipped": "torch is not installed"}}
    text = md.render(report, title="CPU")
    assert text.startswith("## CPU")
    assert "| (4, 64) |" in text and "not measured (no GPU)" in text
    print(bench.format_table(meta, rows))
    json.dumps(report)


def test_main_gpu_section_skips_cleanly(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "gpu_available", lambda: False)
    out = tmp_path / "r.json"
    assert bench.main(["--sections", "gpu", "--quiet", "--json", str(out),
                       "--markdown", str(tmp_path / "r.md")]) == 0
    assert json.loads(out.read_text())["gpu"]["skipped"]
    assert "GPU: not measured" in (tmp_path / "r.md").read_text()
    with pytest.raises(SystemExit):
        bench.main(["--sections", "cpu"])


def test_ffn_section_small():
    pytest.importorskip("bknumba.ffn")
    sec = bench.run_ffn_bench(quick=True, d_model=32, d_ff=128, tokens=8, rank=4)
    assert sec["rows"][0]["impl"] == "dense BLAS"
    assert all(r["seconds"] > 0 for r in sec["rows"])
    assert "Sparse FFN" in md.render_ffn(sec)[0]


@pytest.mark.torch
def test_layer_section_agrees_with_torch():
    pytest.importorskip("torch")
    sec = bench.run_layer_bench(quick=True, d_model=16, n_seq=32, batch=4)
    assert len(sec["rows"]) == 3
    assert all(r["error"] < 1e-3 and r["mask_agreement"] >= 0.99 for r in sec["rows"])


@pytest.mark.parametrize("name", ["bench_gpu.json", "bench_gpu_api.json",
                                  "bench_gpu_api_h200_2026-12-01.json",
                                  "bench_cuda_h200_2026-12-01.json",
                                  "bench_cuda_h200_2026-12-02b.json"])
def test_render_stored_gpu_json(name):
    # the stored GPU results are committed (BENCHMARKS.md and notebook 04 use them)
    path = ROOT / "notebooks" / "data" / name
    assert path.exists(), f"missing stored GPU results {path}"
    text = md.render_file(path)
    assert "G elem/s" in text and text.count("\n|") > 5


@pytest.mark.parametrize("name", ["bench_cpu.json", "bench_core_2026-12-01b.json",
                                  "bench_core_2026-12-02.json"])
def test_render_stored_cpu_json(name):
    # the stored CPU runs are committed (BENCHMARKS.md section 1 and notebook 04 use them)
    path = ROOT / "notebooks" / "data" / name
    assert path.exists(), f"missing stored CPU results {path}"
    text = md.render_file(path)
    assert "Melem/s" in text and "(4096, 512)" in text and text.count("\n|") > 50
