"""Dask backend throughput: in-memory kernel vs a local cluster of 1 and 2 workers.

Rows of N = 512 (the model's inputs), B = 2^17 rows (64 Mi elements, 1 GiB of
complex128 out). Reports elements/s for the in-memory ``bknumba.bk_core``
(all cores), for ``dask.distributed`` LocalClusters of 1 and 2 single-thread
worker processes, and the per-chunk overhead from a sweep of chunk sizes
(time = fixed + per-chunk * chunks + per-element * elements). Inputs are
generated on the workers (``da.random``), so no input crosses the network;
results are reduced on the workers (a checksum), so none crosses back.
Usage: python benchmarks/bench_dask.py [--rows 131072] [--n 512]
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main():
    import dask.array as da
    import distributed

    import bknumba

    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2**16)
    parser.add_argument("--n", type=int, default=512)
    args = parser.parse_args()
    rows, n = args.rows, args.n
    elements = rows * n

    a_np = -2 + np.random.default_rng(0).uniform(-3, 3, size=(rows, n))
    bknumba.bk_core(a_np[:64], 1.0, 1.0)  # compile the serial driver (small blocks)
    bknumba.bk_core(a_np[:1024], 1.0, 1.0)  # and the parallel one
    t0 = time.perf_counter()
    ref_sum = np.abs(bknumba.bk_core(a_np, 1.0, 1.0)).sum()
    t_mem = time.perf_counter() - t0
    print(f"in-memory (2 threads): {elements / t_mem / 1e6:8.1f} Melem/s  ({t_mem:.2f} s)")

    def lazy(chunk_rows):
        a = da.random.default_rng(0).uniform(-3, 3, size=(rows, n), chunks=(chunk_rows, n)) - 2
        return da.abs(bknumba.bk_core(a, 1.0, 1.0)).sum()

    results = {}
    for workers in (1, 2):
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                      host="127.0.0.1", dashboard_address=None,
                                      silence_logs=40) as cluster, \
                distributed.Client(cluster) as client:
            client.compute(lazy(4096)).result()  # warm-up: compile on every worker
            for chunk_rows in (8192, 2048, 512, 128):
                times = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    total = client.compute(lazy(chunk_rows)).result()
                    times.append(time.perf_counter() - t0)
                t = min(times)
                chunks = rows // chunk_rows
                results[(workers, chunks)] = t
                print(f"{workers} worker(s), {chunks:5d} chunks of {chunk_rows:5d} rows: "
                      f"{elements / t / 1e6:8.1f} Melem/s ({t:.2f} s, checksum {total:.6g})")
    for workers in (1, 2):
        xs = np.array([c for (w, c) in results if w == workers], float)
        ys = np.array([results[(workers, int(c))] for c in xs])
        slope, intercept = np.polyfit(xs, ys, 1)
        print(f"{workers} worker(s): overhead per chunk {slope * 1e3:.2f} ms "
              f"(fit over {len(xs)} chunk counts; intercept {intercept:.2f} s)")
    print(f"(checksum of in-memory result {ref_sum:.6g}; inputs differ from the lazy ones)")


if __name__ == "__main__":
    main()
