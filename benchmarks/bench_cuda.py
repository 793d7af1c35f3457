"""Benchmark of the CUDA kernels (real GPU only; never under the simulator).

For each batch size ``B`` in {1, 64, 4096, 2**16, 2**18} with ``B * N = 2**26``
(complex128 results, real inputs ``a = -2 + v``, ``v ~ U(-3, 3)``,
``k = b * c`` real near 1, ``z = 1j``):

1. correctness first: the GPU result of every timed configuration is
   compared with the CPU engine (``bknumba.bk_core(..., device="cpu")``) on
   the same inputs (relative max error per row, worst row);
2. timing with CUDA events around the device computation only (inputs
   already on the GPU, output preallocated), after a warm-up, median of
   ``--reps`` runs;
3. a device-to-device copy of the same size measured in the same run, and
   the host-to-device copies of the inputs, timed separately.

Elements/s count ``B * N``; "GB/s" is the minimum traffic, 32 bytes per
element (read ``a`` and ``k``, write ``G``), over the time; the copy's GB/s
counts bytes read plus bytes written.

Usage::

    python benchmarks/bench_cuda.py [--out DIR] [--reps 10] [--quick]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time

import numpy as np

TOTAL = 2 ** 26
BATCHES = (1, 64, 4096, 2 ** 16, 2 ** 18)
SPARSITIES = (0.0, 0.25, 0.5, 0.75)


def make_inputs(batch, n, seed=0):
    rng = np.random.default_rng(seed)
    a = -2.0 + rng.uniform(-3.0, 3.0, (batch, n))
    k = 1.0 + 0.1 * rng.uniform(-1.0, 1.0, (batch, n - 1))
    return a, k


def rel_err(g, ref):
    num = np.max(np.abs(g - ref), axis=-1)
    den = np.max(np.abs(ref), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.where(den > 0, num / den, np.where(num == 0, 0.0, np.inf))
    return float(np.max(err))


def cuda_timed(fn, reps):
    """``(median, min)`` seconds of ``fn()`` by CUDA events, after two warm-up calls."""
    from numba import cuda

    for _ in range(2):
        fn()
    cuda.synchronize()
    times = []
    for _ in range(reps):
        e0, e1 = cuda.event(), cuda.event()
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1) * 1e-3)
    return float(np.median(times)), float(np.min(times))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "out"))
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="B*N = 2**22 (smoke run)")
    ap.add_argument("--chunks", default="8,16,32", help="chunk lengths tried (ratio)")
    ap.add_argument("--allow-simulator", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" and not args.allow_simulator:
        sys.exit("bench_cuda: refusing to time under the CUDA simulator")

    from numba import cuda

    import bknumba
    from bknumba.gpu import api, options
    from bknumba.gpu.sequence import clear_workspace

    total = 2 ** 22 if args.quick else TOTAL
    os.makedirs(args.out, exist_ok=True)
    dev = cuda.get_current_device()
    name = getattr(dev, "name", "simulator")
    gpu_name = name.decode() if isinstance(name, bytes) else str(name)
    info = {
        "date": datetime.date.today().isoformat(),
        "gpu": gpu_name,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": __import__("numba").__version__,
        "total_elements": total,
        "reps": args.reps,
    }
    print(json.dumps(info), flush=True)
    results = {"info": info, "copy": [], "h2d": [], "runs": []}

    timed = cuda_timed
    # device-to-device copy: 2**26 complex128 (1 GiB) read + written
    src = cuda.device_array(total, dtype=np.complex128)
    dst = cuda.device_array(total, dtype=np.complex128)
    src.copy_to_device(dst)
    t_copy, _ = timed(lambda: dst.copy_to_device(src), args.reps)
    copy_gbs = 2 * 16 * total / t_copy / 1e9
    results["copy"].append({"bytes": 16 * total, "t_s": t_copy, "GBps": copy_gbs})
    print(f"D2D copy {16 * total / 2**20:.0f} MiB: {t_copy * 1e3:.3f} ms, "
          f"{copy_gbs:.0f} GB/s (read + write)", flush=True)

    table = []
    base_chunk = options["chunk"]
    chunks = [int(c) for c in args.chunks.split(",") if c]
    for batch in BATCHES:
        n = total // batch
        if n < 2:
            continue
        a, k = make_inputs(batch, n, seed=batch)
        z = np.full(batch, 1j)
        # host-to-device copies, timed apart from the kernels
        t0 = time.perf_counter()
        a_d = cuda.to_device(a)
        k_d = cuda.to_device(k)
        cuda.synchronize()
        t_h2d = time.perf_counter() - t0
        z_d = cuda.to_device(z)
        results["h2d"].append({"B": batch, "bytes": a.nbytes + k.nbytes, "t_s": t_h2d,
                               "GBps": (a.nbytes + k.nbytes) / t_h2d / 1e9})
        out = cuda.device_array((batch, n), dtype=np.complex128)

        refs = {}

        def ref(method, mask=None, semantics=None):
            key = (method, None if mask is None else float(mask.mean()), semantics)
            if key not in refs:
                if mask is None:
                    refs[key] = bknumba.bk_core(a, k, 1.0, 1j, method=method)
                else:
                    refs[key] = bknumba.sparse_bk_core(a, k, 1.0, mask, 1j,
                                                       semantics=semantics, method=method)
            return refs[key]

        def run(label, method, kernel, chunk=None, mask=None, semantics=None, reps=None):
            options["chunk"] = chunk or base_chunk
            m_d = None if mask is None else cuda.to_device(mask)
            rec = semantics in ("local", "seed")

            def fn():
                api.compute(a_d, k_d, z_d, m_d, method=method, rec=rec,
                            comb=mask is not None, kernel=kernel, out=out)

            try:
                fn()
                cuda.synchronize()
                g = out.copy_to_host()
                err = rel_err(g, ref(method, mask, semantics))
                t_med, t_min = timed(fn, reps or args.reps)
            except Exception as exc:  # record and go on
                print(f"  {label} B={batch}: FAILED {type(exc).__name__}: {exc}", flush=True)
                results["runs"].append({"label": label, "B": batch, "N": n,
                                        "error": f"{type(exc).__name__}: {exc}"})
                return None
            finally:
                options["chunk"] = base_chunk
                clear_workspace()
            rate = batch * n / t_med
            row = {"label": label, "B": batch, "N": n, "method": method, "kernel": kernel,
                   "chunk": chunk or base_chunk, "t_ms": t_med * 1e3, "t_min_ms": t_min * 1e3,
                   "Gelem_s": rate / 1e9, "GBps_32B": 32 * rate / 1e9,
                   "pct_copy_bw": 100 * 32 * rate / 1e9 / copy_gbs, "rel_err": err,
                   "sparsity": None if mask is None else float(1 - mask.mean()),
                   "semantics": semantics}
            results["runs"].append(row)
            print(f"  {label:<28} B={batch:<7} N={n:<9} {t_med * 1e3:8.3f} ms "
                  f"{rate / 1e9:7.2f} Gelem/s {32 * rate / 1e9:7.0f} GB/s  err {err:.1e}",
                  flush=True)
            return row

        print(f"B={batch} N={n}: H2D {t_h2d * 1e3:.1f} ms "
              f"({(a.nbytes + k.nbytes) / t_h2d / 1e9:.1f} GB/s, pageable)", flush=True)
        best = None
        for c in chunks:
            r = run(f"ratio sequence C={c}", "ratio", "sequence", chunk=c)
            if r and (best is None or r["Gelem_s"] > best["Gelem_s"]):
                best = r
        if batch >= 4096:
            run("ratio batch", "ratio", "batch", reps=3)
        run("theta_phi sequence", "theta_phi", "sequence")
        rng = np.random.default_rng(1)
        local = {}
        for sp in SPARSITIES:
            mask = rng.random((batch, n)) >= sp
            r = run(f"local {int(sp * 100)}%", "ratio", "sequence", mask=mask,
                    semantics="local", chunk=best["chunk"] if best else None)
            if r:
                local[sp] = r["t_ms"]
        table.append({"B": batch, "N": n, "best": best, "local_ms": local,
                      "theta": next((r for r in results["runs"] if r.get("B") == batch
                                     and r.get("label") == "theta_phi sequence"), None),
                      "batch": next((r for r in results["runs"] if r.get("B") == batch
                                     and r.get("label") == "ratio batch"), None)})
        refs.clear()

    with open(os.path.join(args.out, "bench_cuda.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"\n{info['gpu']}, {info['date']}; D2D copy {copy_gbs:.0f} GB/s "
          f"(= {copy_gbs / 32:.1f} Gelem/s at 32 B/elem)")
    print("| B | N | ratio Gelem/s (C) | GB/s (32 B) | % copy | batch kernel | theta_phi "
          "| local 0/25/50/75 % (time / full) |")
    print("|---|---|---|---|---|---|---|---|")
    for row in table:
        b = row["best"]
        if b is None:
            continue
        loc = "/".join(f"{row['local_ms'].get(sp, float('nan')) / b['t_ms']:.2f}"
                       for sp in SPARSITIES)
        bt = f"{row['batch']['Gelem_s']:.1f}" if row["batch"] and "Gelem_s" in row["batch"] \
            else "-"
        th = f"{row['theta']['Gelem_s']:.1f}" if row["theta"] and "Gelem_s" in row["theta"] \
            else "-"
        print(f"| {row['B']} | {row['N']} | {b['Gelem_s']:.1f} ({b['chunk']}) | "
              f"{b['GBps_32B']:.0f} | {b['pct_copy_bw']:.0f} | {bt} | {th} | {loc} |")


if __name__ == "__main__":
    main()
