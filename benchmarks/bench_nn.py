"""Inference latency of bknumba.nn modules against PyTorch CPU eager.

For each module at d_model = 64, n_seq = 128, batch 32 (float32, eval,
``torch.no_grad()``), the median wall time of one forward call:

* ``torch eager (model)``: the PyTorch module as the spec describes it, with
  its own BK core (``optimized_sparse_bk_core`` for ``SparseBKCore`` /
  ``SparseMoEResNetBKLayer``, the per-row raw core elsewhere), i.e. what a
  PyTorch user runs today;
* ``torch eager (exact)``: the same modules with exact features from a
  batched dense ``torch.linalg.inv`` (a fast, correct torch baseline);
* ``bknumba`` default (``features="exact"``) and ``features="model"``.

Both libraries are measured at 1 and 2 threads (torch: ``torch.set_num_threads``;
bknumba: ``load(..., num_threads=n)``, which bounds Numba and the BLAS). The table
reports each library's faster setting ("best vs best") and, separately, the ratio
at one thread each ("same thread count"). Measurements are interleaved in rounds
and the minimum over all rounds is kept: the machine is shared, and the minimum is
the least disturbed estimate of the latency.

Run:  python benchmarks/bench_nn.py [--quick] [--rounds 4] [--only A,B] [--json out.json]
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
    """Best (minimum) wall time of one call within ``budget`` seconds."""
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < budget and len(times) < max_runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.min(times))


def interleaved_best(fns, budget, rounds=4):
    """Minimum time per entry of ``fns`` ({label: (prepare, call)}), measured in
    ``rounds`` interleaved rounds so that a noisy period hits every entry alike."""
    for prepare, call in fns.values():  # warm-up (compilation, caches)
        prepare()
        call()
    best = dict.fromkeys(fns, np.inf)
    for _ in range(rounds):
        for label, (prepare, call) in fns.items():
            prepare()
            best[label] = min(best[label], best_time(call, budget / rounds))
    return best


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="short time budget per measurement")
    ap.add_argument("--json", default=None)
    ap.add_argument("--only", default=None, help="comma-separated module names to run")
    ap.add_argument("--rounds", type=int, default=4,
                    help="interleaved rounds (more on a noisy machine; same total time)")
    args = ap.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    budget = 0.3 if args.quick else 2.0
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, N, D, generator=g)
    inputs = {"x": (x,), "xv": (x, 0.5 * torch.randn(B, N, generator=g)),
              "x_half": (torch.randn(B, N // 2, D, generator=g),)}
    rows = []
    tmp = tempfile.mkdtemp()
    for kind, cfg, inp, model_core in cases():
        if only is not None and kind not in only:
            continue
        args_t = inputs[inp]
        args_n = tuple(a.numpy() for a in args_t)
        cls = getattr(ref, kind)
        has_core = model_core is not None
        t_model = cls(**cfg, core=model_core).eval() if has_core else cls(**cfg).eval()
        ref.randomize_(t_model, 1, scale=0.1)
        row = {"module": kind}
        path = os.path.join(tmp, f"{kind}.npz")
        bnn.export_state_dict(t_model.state_dict(), path, kind, **cfg)
        fns = {}
        for nt in (1, 2):
            fns[f"torch{nt}"] = (lambda nt=nt: torch.set_num_threads(nt),
                                 lambda: t_model(*args_t))
            m = bnn.load(path, num_threads=nt)
            fns[f"bk{nt}"] = (lambda: None, lambda m=m: m(*args_n))
        if has_core:
            t_exact = cls(**cfg, core="exact").eval()
            t_exact.load_state_dict(t_model.state_dict())
            m_model = bnn.load(path, features="model")
            fns["bk_model"] = (lambda: None, lambda: m_model(*args_n))
        with torch.no_grad():
            best = interleaved_best(fns, budget, rounds=args.rounds)
        row["torch_1t_s"], row["torch_2t_s"] = best["torch1"], best["torch2"]
        row["bknumba_1t_s"], row["bknumba_2t_s"] = best["bk1"], best["bk2"]
        row["torch_threads"] = 1 if best["torch1"] <= best["torch2"] else 2
        row["bknumba_threads"] = 1 if best["bk1"] <= best["bk2"] else 2
        row["torch_model_s"] = best[f"torch{row['torch_threads']}"]
        row["bknumba_exact_s"] = best[f"bk{row['bknumba_threads']}"]
        if has_core:
            # the exact torch baseline at torch's faster thread count
            nt = row["torch_threads"]
            with torch.no_grad():
                row["torch_exact_s"] = interleaved_best(
                    {"e": (lambda: torch.set_num_threads(nt), lambda: t_exact(*args_t))},
                    budget / 2, rounds=2)["e"]
            row["bknumba_model_s"] = best["bk_model"]
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
        return f"{r[k] * 1e3:8.3f}" if k in r else "       -"
    sp = r["torch_model_s"] / r["bknumba_exact_s"]
    sp1 = r["torch_1t_s"] / r["bknumba_1t_s"]
    return (f"{r['module']:24s} torch(model) {ms('torch_model_s')} ms [{r['torch_threads']}t] | "
            f"torch(exact) {ms('torch_exact_s')} | bknumba exact {ms('bknumba_exact_s')} ms "
            f"[{r['bknumba_threads']}t] | model {ms('bknumba_model_s')} | best/best {sp:5.2f}x | "
            f"1t/1t {sp1:5.2f}x ({ms('torch_1t_s')} vs {ms('bknumba_1t_s')})")


if __name__ == "__main__":
    sys.exit(main())
