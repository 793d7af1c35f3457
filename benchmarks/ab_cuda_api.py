"""A/B timing of the public GPU call with device inputs: an older bknumba against this one.

Each version runs in its own process (alternating, ``--rounds`` times) and times
``bknumba.bk_core(a_d, k_d, 1.0, 1j, device="cuda")`` (device inputs, result left
on the device) with and without ``check_finite``: wall time around a
``cuda.synchronize()``, median of 20 after a warm-up call. Prints G elements/s
per version. Real GPU only.

Usage (the old version extracted from git, e.g. ``git archive REV bknumba | tar -x -C /tmp/old``)::

    python benchmarks/ab_cuda_api.py --old /tmp/old [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

SHAPES = [(4096, 4096), (2**16, 256), (2**18, 256), (64, 2**20)]
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker(expect_dir):
    from numba import cuda

    import bknumba

    got = os.path.dirname(os.path.dirname(os.path.abspath(bknumba.__file__)))
    assert os.path.samefile(got, expect_dir), (got, expect_dir)

    # the helper module only (no bknumba import), from this script's folder
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))
    from _timing import sync_median

    res = {}
    for batch, n in SHAPES:
        rng = np.random.default_rng(batch)
        a_d = cuda.to_device(-2.0 + rng.uniform(-3.0, 3.0, (batch, n)))
        k_d = cuda.to_device(1.0 + 0.1 * rng.uniform(-1.0, 1.0, (batch, n - 1)))
        for check in (True, False):
            t = sync_median(lambda: bknumba.bk_core(a_d, k_d, 1.0, 1j, device="cuda",
                                            check_finite=check))
            res[f"({batch}, {n}) check_finite={check}"] = batch * n / t / 1e9
        del a_d, k_d
    print("RESULT", json.dumps(res), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", required=True)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--worker", default=None)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    best = {}
    for _ in range(args.rounds):
        for label, d in (("old", os.path.abspath(args.old)), ("new", HERE)):
            env = dict(os.environ, PYTHONPATH=d + os.pathsep + os.environ.get("PYTHONPATH", ""))
            out = subprocess.run([sys.executable, "-P", os.path.abspath(__file__), "--old", d,
                                  "--worker", d], env=env, capture_output=True, text=True,
                                 cwd="/")
            line = [x for x in out.stdout.splitlines() if x.startswith("RESULT")]
            if not line:
                print(out.stdout, out.stderr)
                return 1
            for key, v in json.loads(line[0][7:]).items():
                best.setdefault(key, {}).setdefault(label, []).append(v)
    print(f"{'public call, G elements/s':42s} {'old (per round)':>22s} {'new (per round)':>22s}")
    for key, d in best.items():
        print(f"{key:42s} {' / '.join(f'{v:.2f}' for v in d['old']):>22s} "
              f"{' / '.join(f'{v:.2f}' for v in d['new']):>22s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
