"""bknumba: a Numba-accelerated reference engine for the BK-Core.

The diagonal of the resolvent ``G = (T - zI)^-1`` of batches of tridiagonal
matrices, by theta/phi or ratio (pivot) recursions, full and sparse, on CPUs
and GPUs, in complex128; plus the learned sparse layers (``bknumba.nn``),
the sparsity toolkit (``bknumba.sparsity``) and a sparse FFN channel
selector (``bknumba.ffn``).

Importing bknumba compiles nothing and does not touch the CUDA driver:
kernels are compiled on first call, subpackages imported on first use.
"""
from __future__ import annotations

import importlib

from ._version import __version__
from .core import ThetaPhi, bk_core, sparse_bk_core, theta_phi
from .errors import BKNumbaWarning, SingularResolventError

__all__ = [
    "__version__",
    "bk_core",
    "sparse_bk_core",
    "theta_phi",
    "ThetaPhi",
    "SingularResolventError",
    "BKNumbaWarning",
    "reference",
    "nn",
    "sparsity",
    "ffn",
    "gpu",
]

_LAZY_SUBMODULES = {"reference", "nn", "sparsity", "ffn", "gpu"}


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _LAZY_SUBMODULES)
