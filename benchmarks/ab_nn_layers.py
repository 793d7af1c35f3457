"""A/B of the learned layers' two paths, in one process: the fused row-block layers
(:mod:`bknumba.nn._fused`) against the NumPy path (``BKNUMBA_NN_GEMM=numpy``), with
PyTorch's 2-thread eager run interleaved, for the modules without a BK-Core.

Run:  python benchmarks/ab_nn_layers.py [ROUNDS]     (needs torch; about 30 s)
"""
from __future__ import annotations

import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

import torch  # noqa: E402

import bench_nn as bn  # noqa: E402
import bknumba.nn as bnn  # noqa: E402
from bknumba.nn import _fused  # noqa: E402
from tests import nn_torch_reference as ref  # noqa: E402

MODULES = ("SparseMoELayer", "AdaptiveDownsampling", "AdaptiveUpsampling")


def use(fused):
    def setup():
        if fused:
            os.environ.pop("BKNUMBA_NN_GEMM", None)
        else:
            os.environ["BKNUMBA_NN_GEMM"] = "numpy"
        _fused._library.cache_clear()
    return setup


def main(rounds=8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(bn.B, bn.N, bn.D, generator=g)
    inputs = {"x": (x,), "x_half": (torch.randn(bn.B, bn.N // 2, bn.D, generator=g),)}
    tmp = tempfile.mkdtemp()
    print(f"fused path available: {_fused.available()}; ms, best of {rounds} interleaved rounds")
    for kind, cfg, inp, _ in bn.cases():
        if kind not in MODULES:
            continue
        t = getattr(ref, kind)(**cfg).eval()
        ref.randomize_(t, 1, scale=0.1)
        path = os.path.join(tmp, kind + ".npz")
        bnn.export_state_dict(t.state_dict(), path, kind, **cfg)
        m = bnn.load(path, num_threads=2)
        a_t = inputs[inp]
        a_n = tuple(v.numpy() for v in a_t)
        fns = {"torch2": (lambda: torch.set_num_threads(2), lambda: t(*a_t)),
               "numpy": (use(False), lambda: m(*a_n)), "fused": (use(True), lambda: m(*a_n))}
        with torch.no_grad():
            best = bn.interleaved_best(fns, 2.0, rounds=rounds)
        use(True)()
        print(f"{kind:22s} torch (2 threads) {best['torch2'] * 1e3:.3f}  bknumba NumPy path "
              f"{best['numpy'] * 1e3:.3f}  fused {best['fused'] * 1e3:.3f}  -> torch / fused "
              f"{best['torch2'] / best['fused']:.2f}x, NumPy path / fused "
              f"{best['numpy'] / best['fused']:.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8)
