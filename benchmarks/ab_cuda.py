"""A/B timing of the sequence-parallel CUDA kernels: an older bknumba against this one.

Runs each version in its own process (alternating, ``--rounds`` times), times
``bknumba.gpu.api.compute(..., kernel="sequence")`` with a preallocated output
(median of 15 CUDA-event timings) for the ratio, theta_phi and "local" (50 %)
kernels at B * N = 2^26 (and "local" at 0, 10, 25, 75 % on request), and prints
the best rate of each version, their ratio, and whether the outputs (a
checksum of the first 1000 columns) are the same bit for bit (else their
relative difference). Real GPU only.

Usage (the old version extracted from git, e.g. ``git archive REV bknumba | tar -x -C /tmp/old``)::

    python benchmarks/ab_cuda.py --old /tmp/old [--rounds 2] [--shapes 0,1,2] [--kernels ratio]

Each worker compiles its kernels (one to four minutes per round on a cold
machine): with little device time, time fewer shapes and kernels.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

SHAPES = [(1, 2**26), (64, 2**20), (4096, 2**14), (65536, 2**10), (262144, 2**8)]
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker(expect_dir, shapes=SHAPES, kernels=("ratio", "theta_phi", "local 50 %")):
    from numba import cuda

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -P left it out
    from bench_cuda import cuda_timed

    import bknumba
    from bknumba.gpu import api
    from bknumba.gpu.sequence import clear_workspace

    got = os.path.dirname(os.path.dirname(os.path.abspath(bknumba.__file__)))
    assert os.path.samefile(got, expect_dir), (got, expect_dir)
    res = {}
    for batch, n in shapes:
        rng = np.random.default_rng(batch)
        a = -2.0 + rng.uniform(-3.0, 3.0, (batch, n))
        k = 1.0 + 0.1 * rng.uniform(-1.0, 1.0, (batch, n - 1))
        u = rng.random((batch, n))
        a_d, k_d, z_d = (cuda.to_device(x) for x in (a, k, np.full(batch, 1j)))
        out = cuda.device_array((batch, n), dtype=np.complex128)
        cases = [("ratio", "ratio", None), ("theta_phi", "theta_phi", None)]
        cases += [(f"local {pct} %", "ratio", pct) for pct in (0, 10, 25, 50, 75)]
        for label, method, pct in cases:
            if label not in kernels:
                continue
            m = None if pct is None else cuda.to_device(u >= pct / 100)
            def fn():
                api.compute(a_d, k_d, z_d, m, method=method, rec=m is not None,
                            comb=m is not None, kernel="sequence", out=out)
            t_med, _ = cuda_timed(fn, 15)
            key = f"({batch}, {n}) {label}"
            res[key] = batch * n / t_med / 1e9
            res[key + " checksum"] = float(np.abs(out.copy_to_host()[:, :1000]).sum())
        clear_workspace()
    print("RESULT", json.dumps(res), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, help="directory holding the old bknumba package")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--shapes", default=None,
                    help="indices into the shapes (B, N) to time, e.g. 0,1,2 (default: all)")
    ap.add_argument("--kernels", default="ratio,theta_phi,local 50 %",
                    help="comma-separated subset of: ratio, theta_phi, local P %% "
                         "(P one of 0, 25, 50, 75)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    shapes = SHAPES if args.shapes is None else [SHAPES[int(i)] for i in args.shapes.split(",")]
    kernels = tuple(x.strip() for x in args.kernels.split(","))
    if args.worker:
        return worker(args.worker, shapes, kernels)
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        sys.exit("ab_cuda: refusing to time under the CUDA simulator")
    runs = {"old": [], "new": []}
    for rnd in range(args.rounds):
        for tag, path in (("old", os.path.abspath(args.old)), ("new", HERE)):
            env = dict(os.environ, PYTHONPATH=path + os.pathsep + os.environ.get("PYTHONPATH", ""))
            t0 = time.time()
            # -P: do not put the script's directory first on sys.path; cwd = the version's root
            cmd = [sys.executable, "-P", os.path.abspath(__file__), "--old", args.old,
                   "--worker", path, "--kernels", args.kernels]
            if args.shapes is not None:
                cmd += ["--shapes", args.shapes]
            p = subprocess.run(cmd, env=env, cwd=path, capture_output=True, text=True)
            line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
            if not line:
                sys.exit(f"{tag} failed:\n{p.stderr[-3000:]}")
            runs[tag].append(json.loads(line[0][7:]))
            print(f"{tag} round {rnd}: {time.time() - t0:.0f} s {line[0][7:]}", flush=True)
    print("| kernel | old G elements/s | new G elements/s | new / old | same output |")
    print("|---|---:|---:|---:|---|")
    for key in (k for k in runs["new"][0] if not k.endswith("checksum")):
        old = max(r[key] for r in runs["old"])
        new = max(r[key] for r in runs["new"])
        sums = [r[key + " checksum"] for r in runs["old"] + runs["new"]]
        same = "bit for bit" if len(set(sums)) == 1 else \
            f"checksums differ by {(max(sums) - min(sums)) / max(abs(x) for x in sums):.1e}"
        print(f"| {key} | {old:.2f} | {new:.2f} | {new / old:.3f} | {same} |")


if __name__ == "__main__":
    main()
