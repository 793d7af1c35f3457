"""``bknumba bench``: CPU throughput of the BK-Core kernels and their baselines.

Every implementation is validated against SciPy / the extended-precision
reference before it is timed. Steady-state times are medians over repeats
after a warm-up call; the first call's extra time (compilation, or loading
from the cache) is reported separately. Throughput is B*N elements per
second; bandwidth counts 32 bytes per element (real ``a`` and ``k = b*c``
read, complex128 ``G`` written), next to a memory copy measured in the same
run (bytes read + written per second). Times include output allocation and
the validation of inputs in the public functions (as a user sees them).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

__all__ = ["main", "run_cpu_bench", "numpy_ratio_baseline"]

BYTES_PER_ELEMENT = 32
SHAPES = [(32, 128), (4096, 512), (64, 65536)]


def numpy_ratio_baseline(a, k, z):
    """Batch-vectorised NumPy ratio recursion (Python loop over positions)."""
    batch, n = a.shape
    d = a - np.asarray(z).reshape(-1, 1)
    left = np.empty((batch, n), np.complex128)
    left[:, 0] = d[:, 0]
    for i in range(1, n):
        left[:, i] = d[:, i] - k[:, i - 1] / left[:, i - 1]
    g = np.empty((batch, n), np.complex128)
    right = d[:, n - 1].copy()
    g[:, n - 1] = 1 / (left[:, n - 1] + right - d[:, n - 1])
    for i in range(n - 2, -1, -1):
        right = d[:, i] - k[:, i] / right
        g[:, i] = 1 / (left[:, i] + right - d[:, i])
    return g


def scipy_baseline(a, k, z):
    from .reference import bk_core_banded

    return bk_core_banded(a, k, 1.0, z)


def _timeit(fn, repeats, min_time=0.2):
    times = []
    t_start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - t_start < min_time and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def copy_bandwidth(nbytes=256 * 2**20, repeats=5):
    """Bytes read + written per second by ``np.copyto`` of a large array."""
    src = np.ones(nbytes // 8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    t = _timeit(lambda: np.copyto(dst, src), repeats)
    return 2 * nbytes / t


def run_cpu_bench(shapes=SHAPES, sparsities=(0.0, 0.25, 0.5, 0.75), repeats=5, seed=0,
                  progress=None):
    import numba

    import bknumba
    from bknumba.reference import bk_core_banded, bk_core_extended, relative_error

    rng = np.random.default_rng(seed)
    rows = []
    meta = dict(date=time.strftime("%Y-%m-%d"), machine=platform.processor() or platform.machine(),
                cpus=os.cpu_count(), numba_threads=numba.get_num_threads(),
                numpy=np.__version__, numba=numba.__version__)
    meta["copy_bandwidth_GBps"] = copy_bandwidth() / 1e9
    for batch, n in shapes:
        a = -2.0 + rng.uniform(-3, 3, size=(batch, n))
        k = rng.uniform(0.5, 1.5, size=(batch, n - 1))
        z = 1j
        elements = batch * n
        # reference on a few rows, for validation
        probe = slice(0, min(batch, 4))
        ref = (bk_core_banded(a[probe], k[probe], 1.0, z) if n <= 4096
               else bk_core_extended(a[probe], k[probe], 1.0, z))
        mask_cache = {s: rng.random((batch, n)) >= s for s in sparsities}

        impls = [("bknumba ratio", "full", 0.0,
                  lambda: bknumba.bk_core(a, k, 1.0, z, method="ratio")),
                 ("bknumba theta_phi", "full", 0.0,
                  lambda: bknumba.bk_core(a, k, 1.0, z, method="theta_phi"))]
        for s in sparsities:
            m = mask_cache[s]
            impls.append((f"sparse local {int(s * 100)}%", "local", s,
                          lambda m=m: bknumba.sparse_bk_core(a, k, 1.0, m, z, semantics="local")))
        m50 = mask_cache.get(0.5, mask_cache[sparsities[-1]])
        s50 = 0.5 if 0.5 in mask_cache else sparsities[-1]
        impls.append((f"sparse exact {int(s50 * 100)}%", "exact", s50,
                      lambda: bknumba.sparse_bk_core(a, k, 1.0, m50, z, semantics="exact")))
        impls.append((f"sparse seed {int(s50 * 100)}%", "seed", s50,
                      lambda: bknumba.sparse_bk_core(a, k, 1.0, m50, z, semantics="seed")))
        if elements <= 2**21:
            impls.append(("numpy vectorised", "full", 0.0,
                          lambda: numpy_ratio_baseline(a, k, np.full(batch, z))))
        if n <= 512 and batch <= 64:
            impls.append(("scipy banded", "full", 0.0, lambda: scipy_baseline(a, k, z)))
        for name, kind, s, fn in impls:
            if progress:
                progress(f"({batch}, {n}) {name}")
            t0 = time.perf_counter()
            g = fn()
            first = time.perf_counter() - t0
            # validate before timing
            if kind == "full":
                err = float(relative_error(g[probe], ref).max())
                ok = err <= 1e-12
            else:
                sref = bk_core_extended(a[probe], k[probe], 1.0, z, mask=mask_cache[s][probe],
                                        semantics=kind)
                err = float(relative_error(g[probe], sref).max())
                ok = err <= 1e-10
            if not ok:
                raise AssertionError(f"{name} at ({batch}, {n}) failed validation: {err:.2e}")
            t = _timeit(fn, repeats)
            rows.append(dict(batch=batch, n=n, impl=name, sparsity=s, seconds=t,
                             first_call_extra_s=max(first - t, 0.0),
                             elements_per_s=elements / t,
                             GBps=BYTES_PER_ELEMENT * elements / t / 1e9, error=err))
    return meta, rows


def format_table(meta, rows):
    out = [f"# {meta['date']}  {meta['machine']}  {meta['cpus']} CPUs, numba threads "
           f"{meta['numba_threads']}; memory copy {meta['copy_bandwidth_GBps']:.1f} GB/s "
           f"(read + write)",
           f"{'(B, N)':<14} {'implementation':<22} {'Melem/s':>9} {'GB/s':>7} "
           f"{'% copy':>7} {'vs ratio':>8} {'1st call +s':>11}"]
    for r in rows:
        full = next(x for x in rows if x["batch"] == r["batch"] and x["n"] == r["n"]
                    and x["impl"] == "bknumba ratio")
        out.append(
            f"{str((r['batch'], r['n'])):<14} {r['impl']:<22} {r['elements_per_s'] / 1e6:>9.1f} "
            f"{r['GBps']:>7.2f} {100 * r['GBps'] / meta['copy_bandwidth_GBps']:>6.1f}% "
            f"{full['seconds'] / r['seconds']:>7.2f}x {r['first_call_extra_s']:>11.3f}")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bknumba bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes only (seconds)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON")
    args = parser.parse_args(argv)
    shapes = [(32, 128), (512, 512)] if args.quick else SHAPES
    t0 = time.perf_counter()

    def progress(msg):
        print(f"  {msg} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)

    meta, rows = run_cpu_bench(shapes, repeats=args.repeats, progress=progress)
    print(format_table(meta, rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
