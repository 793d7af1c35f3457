"""Numba options for every kernel in bknumba, in one place.

Each option is read once from the environment when a kernel module is first
imported (never at ``import bknumba``):

``BKNUMBA_CACHE`` (default ``1``)
    ``cache=True`` for the serial kernels (compile once, reload from disk).
``BKNUMBA_CACHE_PARALLEL`` (default ``0``)
    ``cache=True`` also for the ``parallel=True`` drivers. Off by default:
    numba issues 4807 and 8578 (crashes when caching parallel functions) are
    still open.
``BKNUMBA_FASTMATH`` (default ``0``)
    ``fastmath=True``. Off: it may reorder the recursions and break the
    bit-for-bit agreement between full and sparse kernels.
``BKNUMBA_TILE`` (default ``4``)
    Rows per SIMD tile in the batch-interleaved CPU kernels.
``BKNUMBA_THREADS_PER_BLOCK`` (default ``128``)
    CUDA threads per block.
``BKNUMBA_SERIAL_BELOW`` (default ``65536``)
    Problems with fewer than this many elements (B * N) run the drivers
    compiled without ``parallel=True``: waking the thread pool costs more
    than the work (and much more on a loaded machine).
``BKNUMBA_SIMD`` (default ``auto``)
    Rows per SIMD tile of the full CPU kernels (:mod:`bknumba.cpu.simd`):
    ``auto`` picks 8 with AVX-512, 4 with AVX, 2 otherwise; ``0`` (or
    ``off``) runs the scalar tiles instead; ``2``, ``4``, ``8`` or ``16``
    force a width. Same results bit for bit either way.
``BKNUMBA_PIVOT_RTOL`` (default ``1e-13``)
    Relative pivot tolerance: a pivot ``L = d - k / L_prev`` with
    ``|L| <= rtol * (|d| + |k / L_prev|)`` is reported as singular.
"""
from __future__ import annotations

import os

__all__ = ["options", "DEFAULTS"]

DEFAULTS = {
    "cache": True,
    "cache_parallel": False,
    "fastmath": False,
    "tile": 4,
    "threads_per_block": 128,
    "pivot_rtol": 1e-13,
    "serial_below": 65536,
    "simd": "auto",
}


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


def _read() -> dict:
    return {
        "cache": _flag("BKNUMBA_CACHE", DEFAULTS["cache"]),
        "cache_parallel": _flag("BKNUMBA_CACHE_PARALLEL", DEFAULTS["cache_parallel"]),
        "fastmath": _flag("BKNUMBA_FASTMATH", DEFAULTS["fastmath"]),
        "tile": int(os.environ.get("BKNUMBA_TILE", DEFAULTS["tile"])),
        "threads_per_block": int(
            os.environ.get("BKNUMBA_THREADS_PER_BLOCK", DEFAULTS["threads_per_block"])
        ),
        "pivot_rtol": float(os.environ.get("BKNUMBA_PIVOT_RTOL", DEFAULTS["pivot_rtol"])),
        "serial_below": int(os.environ.get("BKNUMBA_SERIAL_BELOW", DEFAULTS["serial_below"])),
        "simd": os.environ.get("BKNUMBA_SIMD", DEFAULTS["simd"]).strip().lower() or "auto",
    }


#: The options in force (read from the environment at first import of this module).
options = _read()


_SIMD_WIDTHS = (2, 4, 8, 16)


def simd_width() -> int:
    """Lanes per SIMD tile from ``BKNUMBA_SIMD`` (0: scalar tiles only)."""
    value = options["simd"]
    if value == "auto":
        from .cpu.simd import host_width

        return host_width()
    if value in ("0", "off", "false", "no"):
        return 0
    try:
        width = int(value)
    except ValueError:
        width = -1
    if width not in _SIMD_WIDTHS:
        raise ValueError(f"BKNUMBA_SIMD must be auto, 0/off or one of {_SIMD_WIDTHS}, "
                         f"got {options['simd']!r}")
    return width


def serial_jit_kwargs() -> dict:
    """Keyword arguments for ``numba.njit`` on serial kernels."""
    return {"cache": options["cache"], "fastmath": options["fastmath"], "nogil": True}


def serial_twin(parallel_driver):
    """The same driver compiled without ``parallel=True`` (``prange`` acts as ``range``)."""
    from numba import njit

    return njit(error_model="numpy", **serial_jit_kwargs())(parallel_driver.py_func)


def pick_driver(parallel_driver, serial_driver, elements: int):
    """The serial twin for small problems (see ``BKNUMBA_SERIAL_BELOW``)."""
    return serial_driver if elements < options["serial_below"] else parallel_driver


def parallel_jit_kwargs() -> dict:
    """Keyword arguments for ``numba.njit`` on ``parallel=True`` drivers."""
    return {
        "cache": options["cache_parallel"],
        "fastmath": options["fastmath"],
        "parallel": True,
        "nogil": True,
    }
