"""Dask backend: BK-Core on batches larger than one machine.

Rows are independent, so a Dask array chunked along the batch axis is
computed block by block with the in-memory kernels (``map_blocks``); any
scheduler works (threaded, processes, ``dask.distributed``). Imported only
when an argument of :func:`bknumba.bk_core` / :func:`bknumba.sparse_bk_core`
is a Dask array, so ``import bknumba`` never imports dask.

Semantics and errors are those of the in-memory functions, applied per block
at compute time: with ``check_finite=True`` a non-finite value raises when
its block is computed, and with ``on_singular="raise"`` a singular row
raises then (``on_singular="nan"`` marks it NaN instead). Shapes are checked
eagerly, when the lazy array is built.
"""
from __future__ import annotations

import warnings

import numpy as np

from .errors import BKNumbaWarning

__all__ = ["bk_core_dask", "sparse_bk_core_dask", "RechunkWarning"]


class RechunkWarning(BKNumbaWarning):
    """A Dask input was chunked along the sequence axis and has been re-chunked."""


def _require_dask():
    try:
        import dask.array as da
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Dask arrays need the optional dependency dask: pip install 'bknumba[dask]'"
        ) from exc
    return da


def _row_chunked(da, name, x, batch_chunks):
    """``x`` (2-D) with the batch axis chunked like ``batch_chunks`` and one chunk per row."""
    if x.ndim != 2:
        return x
    if len(x.chunks[1]) > 1:
        warnings.warn(
            f"{name} is chunked along the sequence axis (chunks {x.chunks[1]}); rows must "
            "be whole, so it is re-chunked to one chunk per row (chunked along the batch "
            "axis only)", RechunkWarning, stacklevel=5)
    return x.rechunk((batch_chunks, -1))


def _prepare_dask(a, b, c, z, mask):
    da = _require_dask()
    from ._validation import prepare

    a = da.asarray(a)
    if a.ndim not in (1, 2):
        raise ValueError(f"a must have shape (N,) or (B, N); got shape {a.shape}")
    if a.dtype.kind not in "iufc":
        raise TypeError(f"a must be numeric (integer, real or complex), got dtype {a.dtype}")
    squeeze = a.ndim == 1
    if squeeze:
        a = a[None, :]
    batch, n = a.shape
    a = _row_chunked(da, "a", a, a.chunks[0])
    chunks = a.chunks[0]

    # eager shape validation on zero-cost NumPy stand-ins of the right shapes
    def stand_in(x):
        if x is None:
            return None
        shape = np.shape(x)
        kind = getattr(x, "dtype", np.asarray(x).dtype if not hasattr(x, "chunks") else None)
        dtype = np.dtype(kind) if kind is not None else np.float64
        if dtype.kind not in "biufc":
            raise TypeError(f"inputs must be numeric, got dtype {dtype}")
        return np.zeros(shape, dtype=dtype)

    prepare(stand_in(a[0] if squeeze else a), stand_in(b), stand_in(c), stand_in(z),
            stand_in(mask), check_finite=False)

    def per_row(name, x, width):
        """Dask (B, width) chunked like a, or a NumPy-compatible broadcastable value."""
        if x is None:
            return None
        arr = da.asarray(x)
        if arr.ndim == 2 or (arr.ndim == 1 and width is None):
            if arr.ndim == 1:  # z: one per row
                return arr.rechunk((chunks,))
            return _row_chunked(da, name, arr, chunks)
        return arr  # scalar or one row for all: broadcast per block
    m = n - 1
    return (da, a, per_row("b", b, m), per_row("c", c, m),
            per_row("z", z, None) if np.ndim(z) == 1 else np.asarray(z), per_row("mask", mask, n),
            squeeze)


def _apply(func, a, b, c, z, mask, squeeze, **kwargs):
    da = _require_dask()

    def block(a_blk, b_blk, c_blk, z_blk, m_blk):
        if m_blk is None:
            return func(a_blk, b_blk, c_blk, z_blk, **kwargs)
        return func(a_blk, b_blk, c_blk, m_blk, z_blk, **kwargs)

    args = []
    for x, idx in ((a, "ij"), (b, "ij"), (c, "ij"), (z, "i"), (mask, "ij")):
        if isinstance(x, da.Array) and x.ndim == 2:
            args += [x, "ij"]
        elif isinstance(x, da.Array) and x.ndim == 1 and idx == "i":
            args += [x, "i"]
        else:
            # broadcast scalars and single rows: the same value for every block
            args += [x if x is None else np.asarray(x.compute() if hasattr(x, "compute") else x),
                     None]
    out = da.blockwise(block, "ij", *args, dtype=np.complex128, concatenate=True,
                       align_arrays=False, meta=np.empty((0, 0), np.complex128))
    return out[0] if squeeze else out


def bk_core_dask(a, b, c, z=1j, *, method="ratio", device="cpu", check_finite=True,
                 on_singular="raise"):
    """:func:`bknumba.bk_core` on Dask arrays: a lazy complex128 array chunked like ``a``.

    Examples
    --------
    >>> import numpy as np, dask.array as da, bknumba
    >>> a = da.from_array(-2.0 + np.linspace(-1, 1, 40).reshape(8, 5), chunks=(3, 5))
    >>> g = bknumba.bk_core(a, 1.0, 1.0)
    >>> g.chunks
    ((3, 3, 2), (5,))
    >>> bool(np.array_equal(g.compute(), bknumba.bk_core(a.compute(), 1.0, 1.0)))
    True
    """
    from .core import bk_core

    da, a2, b2, c2, z2, _, squeeze = _prepare_dask(a, b, c, z, None)
    return _apply(bk_core, a2, b2, c2, z2, None, squeeze, method=method, device=device,
                  check_finite=check_finite, on_singular=on_singular)


def sparse_bk_core_dask(a, b, c, mask, z=1j, *, semantics="local", method=None, device="cpu",
                        check_finite=True, on_singular="raise"):
    """:func:`bknumba.sparse_bk_core` on Dask arrays (mask chunked like ``a`` or in memory)."""
    from .core import sparse_bk_core

    if mask is None:
        raise ValueError("mask is required; use bk_core for the full computation")
    da, a2, b2, c2, z2, m2, squeeze = _prepare_dask(a, b, c, z, mask)
    return _apply(sparse_bk_core, a2, b2, c2, z2, m2, squeeze, semantics=semantics,
                  method=method, device=device, check_finite=check_finite,
                  on_singular=on_singular)
