"""Work split of the ``parallel=True`` drivers: ``prange`` over chunks of tiles."""
from __future__ import annotations

from numba import njit

from .._config import serial_jit_kwargs

__all__ = ["chunk_tiles"]


@njit(inline="always", **serial_jit_kwargs())
def chunk_tiles(c, chunks, ntiles):
    """Tiles ``t0 .. t1 - 1`` of chunk ``c`` when ``ntiles`` tiles are split into
    ``chunks`` contiguous chunks of equal size (the last ones may be short or empty)."""
    per_chunk = (ntiles + chunks - 1) // chunks
    t0 = c * per_chunk
    return t0, min(ntiles, t0 + per_chunk)
