"""GPU backend of bknumba (``device="cuda"``): numba.cuda kernels for the BK-Core.

Use it through the public functions with ``device="cuda"``::

    G = bknumba.bk_core(a, b, c, z, device="cuda")
    G = bknumba.sparse_bk_core(a, b, c, mask, z, semantics="local", device="cuda")
    tp = bknumba.theta_phi(a, b, c, z, device="cuda")

Importing this package does not import ``numba.cuda`` and never touches the
CUDA driver: the kernels (:mod:`bknumba.gpu.sequence`,
:mod:`bknumba.gpu.batch`) are compiled on first call. When neither a GPU nor
Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) is available, the first
call raises a :class:`RuntimeError` that says so.

Options (read from the environment once, at the first GPU call):

``BKNUMBA_CUDA_KERNEL`` (default ``auto``)
    ``auto``, ``batch`` (one thread per row) or ``sequence`` (rows cut into
    chunks, chunk recursions composed as 2x2 Moebius maps and scanned). The
    ``kernel=`` argument of :mod:`bknumba.gpu.api` overrides it.
``BKNUMBA_CUDA_CHUNK`` (default ``16``)
    Positions per thread (chunk length) of the sequence-parallel kernels.
``BKNUMBA_THREADS_PER_BLOCK`` (shared with :mod:`bknumba._config`)
    Upper bound on the threads per block.
"""
from __future__ import annotations

import os

__all__ = ["is_available", "options", "KERNELS"]

KERNELS = ("auto", "batch", "sequence")


def _read_options() -> dict:
    from .._config import options as base

    kernel = os.environ.get("BKNUMBA_CUDA_KERNEL", "auto").strip().lower() or "auto"
    if kernel not in KERNELS:
        raise ValueError(
            f"BKNUMBA_CUDA_KERNEL={kernel!r} is not one of {', '.join(map(repr, KERNELS))}"
        )
    chunk = int(os.environ.get("BKNUMBA_CUDA_CHUNK", "16"))
    if chunk < 1:
        raise ValueError(f"BKNUMBA_CUDA_CHUNK must be >= 1, got {chunk}")
    return {
        "kernel": kernel,
        "chunk": chunk,
        "threads_per_block": max(1, int(base["threads_per_block"])),
        "pivot_rtol": float(base["pivot_rtol"]),
    }


#: CUDA options in force (read from the environment at first import).
options = _read_options()


def is_available() -> bool:
    """True if numba.cuda can run kernels here (a GPU, or the simulator).

    Imports ``numba.cuda`` (and so may initialise the CUDA driver); the rest
    of bknumba never calls it at import time.
    """
    try:
        from numba import cuda
    except Exception:  # numba-cuda not installed, or broken
        return False
    try:
        return bool(cuda.is_available())
    except Exception:
        return False


# Why ``bknumba.gpu`` and not ``bknumba.cuda``: numba-cuda (0.30.x) installs an
# import hook (``_numba_cuda_redirector``) that intercepts every module whose
# name contains the substring "numba.cuda" -- "bknumba.cuda" included -- and
# recurses until RecursionError. Any import of a module named
# ``bknumba.cuda`` therefore fails wherever numba-cuda is installed.
