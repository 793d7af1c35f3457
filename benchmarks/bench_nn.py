"""Inference latency of bknumba.nn modules against PyTorch CPU eager.

For each module at d_model = 64, n_seq = 128, batch 32 (float32, eval,
``torch.no_grad()``), the median wall time of one forward call:

* ``torch eager (model)``: the PyTorch module as the spec describes it, with
  its own BK core (``optimized_sparse_bk_core`` for ``SparseBKCore`` /
  ``SparseMoEResNetBKLayer``, the per-row raw core elsewhere), i.e. what a
  PyTorch user runs today;
* ``torch eager (exact)``: the same modules with exact features from a
  batched dense ``torch.linalg.inv`` (a fast, correct torch baseline);
* ``bknumba`` default (``features="exact"``) and ``features="model"``
  (``num_threads=1``, the default of ``bknumba.nn.load``).

Times are the best of repeated calls (the machine may be shared); torch is
measured at 1 and 2 threads and the faster setting is reported.

Run:  python benchmarks/bench_nn.py [--quick] [--json out.json]
Needs torch (the reference modules live in tests/nn_torch_reference.py).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

import bknumba  # noqa: E402
import bknumba.nn as bnn  # noqa: E402
from tests import nn_torch_reference as ref  # noqa: E402

D, N, B, E = 64, 128, 32, 4


def cases():
    return [
        ("SparseBKCore", dict(d_model=D, n_seq=N, target_sparsity=0.5), "xv", "sparse_v1"),
        ("SparseMoELayer", dict(d_model=D, num_experts=E, top_k=1), "x", None),
        ("SparseMoEResNetBKLayer", dict(d_model=D, n_seq=N, num_experts=E, target_sparsity=0.5),
         "x", "sparse_v1"),
        ("LearnedSparsityG_ii", dict(d_model=D, n_seq=N, target_sparsity=0.6), "xv", "raw_v1"),
        ("SparseBKLayerWithMoE", dict(d_model=D, n_seq=N, num_experts=E, target_sparsity=0.6),
         "x", "raw_v1"),
        ("AdaptiveDownsampling", dict(d_model=D, n_seq=N), "x", None),
        ("AdaptiveUpsampling", dict(d_model=D, n_seq_down=N // 2), "x_half", None),
        ("MultiScaleBKLayer", dict(d_model=D, n_seq=N, num_experts=E, target_sparsity=0.6),
         "x", "raw_v1"),
    ]


def best_time(fn, budget, min_runs=3, max_runs=200):
    """Best (minimum) wall time of one call: the machine is shared, the minimum is the
    least disturbed estimate of the latency."""
    fn()  # warm-up (compilation, caches)
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < budget and len(times) < max_runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.min(times)), len(times)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="short time budget per measurement")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    budget = 0.3 if args.quick else 2.0
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, N, D, generator=g)
    inputs = {"x": (x,), "xv": (x, 0.5 * torch.randn(B, N, generator=g)),
              "x_half": (torch.randn(B, N // 2, D, generator=g),)}
    rows = []
    tmp = tempfile.mkdtemp()
    for kind, cfg, inp, model_core in cases():
        args_t = inputs[inp]
        args_n = tuple(a.numpy() for a in args_t)
        cls = getattr(ref, kind)
        has_core = model_core is not None
        t_model = cls(**cfg, core=model_core).eval() if has_core else cls(**cfg).eval()
        ref.randomize_(t_model, 1, scale=0.1)
        row = {"module": kind}
        with torch.no_grad():
            # torch at 1 and 2 threads; the faster one is the baseline
            best = {}
            for nt in (1, 2):
                torch.set_num_threads(nt)
                best[nt], _ = best_time(lambda: t_model(*args_t), budget)
            row["torch_threads"] = min(best, key=best.get)
            torch.set_num_threads(row["torch_threads"])
            row["torch_model_s"] = best[row["torch_threads"]]
            if has_core:
                t_exact = cls(**cfg, core="exact").eval()
                t_exact.load_state_dict(t_model.state_dict())
                row["torch_exact_s"], _ = best_time(lambda: t_exact(*args_t), budget)
        path = os.path.join(tmp, f"{kind}.npz")
        bnn.export_state_dict(t_model.state_dict(), path, kind, **cfg)
        m_exact = bnn.load(path)
        row["bknumba_exact_s"], _ = best_time(lambda: m_exact(*args_n), budget)
        if has_core:
            m_model = bnn.load(path, features="model")
            row["bknumba_model_s"], _ = best_time(lambda: m_model(*args_n), budget)
        rows.append(row)
        print(fmt_row(row), flush=True)
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__,
            "numpy": np.__version__, "bknumba": bknumba.__version__, "d_model": D, "n_seq": N,
            "batch": B, "num_experts": E}
    print(json.dumps(meta))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "rows": rows}, fh, indent=1)
    return 0


def fmt_row(r):
    def ms(k):
        return f"{r[k] * 1e3:9.3f}" if k in r else "        -"
    sp = r["torch_model_s"] / r["bknumba_exact_s"]
    return (f"{r['module']:24s} torch(model) {ms('torch_model_s')} ms | torch(exact) "
            f"{ms('torch_exact_s')} ms | bknumba exact {ms('bknumba_exact_s')} ms | "
            f"bknumba model {ms('bknumba_model_s')} ms | speed-up {sp:6.1f}x")


if __name__ == "__main__":
    sys.exit(main())
