"""What limits the sequence kernel: resources per block and the compiled code.

For the full ratio kernel (real inputs, B * N = 2^26) and each chunk length
given on the command line (default 16), prints every compiled segment
kernel's registers per thread, local memory (spills) per thread, dynamic
shared memory, resident blocks and warps per SM, and the kernel throughput
(CUDA events, median of 10, G elements/s). With ``PROBE_SASS=1`` the first
variant's kernels are disassembled into ``$OUT/sass_C{chunk}_mode{mode}.txt``
(``nvdisasm`` needed) to count instructions per loop. Real GPU only.

Usage::

    python benchmarks/probe_cuda_occupancy.py [CHUNK ...]

Profile one launch with Nsight Compute, e.g.::

    ncu -k regex:kern -c 1 --section SpeedOfLight --section Occupancy \\
        --section WarpStateStats --section SchedulerStats \\
        python benchmarks/probe_cuda_occupancy.py 16
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SHAPES = [(262144, 256), (65536, 1024), (4096, 16384), (1, 2**26)]


def main(argv=None):
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        sys.exit("probe_cuda_occupancy: real GPU only")
    from numba import cuda
    from bench_cuda import cuda_timed

    from bknumba.gpu import api, options
    from bknumba.gpu import sequence as seq

    dev = cuda.get_current_device()
    nsm = dev.MULTIPROCESSOR_COUNT
    print(dev.name, "SMs", nsm, flush=True)
    orig_kernel = seq._segment_kernel
    seen = {}

    def recording(*key):
        kern, shm = orig_kernel(*key)
        seen[key] = (kern, shm)
        return kern, shm

    seq._segment_kernel = recording
    outdir = os.environ.get("OUT", ".")
    res = {}
    for spec in (argv if argv is not None else sys.argv[1:]) or ["16"]:
        chunk = int(spec)
        orig_kernel.cache_clear()
        seen.clear()
        options["chunk"] = chunk
        row = {}
        for batch, n in SHAPES:
            rng = np.random.default_rng(batch)
            a = -2.0 + rng.uniform(-3.0, 3.0, (batch, n))
            k = 1.0 + 0.1 * rng.uniform(-1.0, 1.0, (batch, n - 1))
            a_d, k_d, z_d = (cuda.to_device(x) for x in (a, k, np.full(batch, 1j)))
            out = cuda.device_array((batch, n), dtype=np.complex128)

            def fn():
                api.compute(a_d, k_d, z_d, None, method="ratio", rec=False, comb=False,
                            kernel="sequence", out=out)
            t_med, _ = cuda_timed(fn, 10)
            row[f"({batch}, {n})"] = round(batch * n / t_med / 1e9, 2)
            del a_d, k_d, z_d, out
            seq.clear_workspace()
        kernels = []
        for key, (kern, shm) in seen.items():
            ov = list(kern.overloads.values())[0]
            C, T, mode = key[0], key[1], key[-1]
            blocks = ov.max_cooperative_grid_blocks(T, shm) / nsm
            kernels.append(dict(C=C, T=T, mode=mode, regs=ov.regs_per_thread,
                                local=ov.local_mem_per_thread, dyn_shared=shm,
                                blocks_per_sm=blocks, warps_per_sm=blocks * T / 32))
            if os.environ.get("PROBE_SASS") and not res:
                with open(os.path.join(outdir, f"sass_C{C}_mode{mode}.txt"), "w") as f:
                    f.write(list(kern.inspect_sass().values())[0])
        row["kernels"] = kernels
        res[f"C{chunk}"] = row
        print(f"C{chunk}", json.dumps(row), flush=True)
    with open(os.path.join(outdir, "probe_cuda_occupancy.json"), "w") as f:
        json.dump(res, f, indent=1)
    print("| chunk | " + " | ".join(f"({b}, {n})" for b, n in SHAPES) + " |")
    for tag, row in res.items():
        print(f"| {tag} | " + " | ".join(str(row[f"({b}, {n})"]) for b, n in SHAPES) + " |")


if __name__ == "__main__":
    main()
