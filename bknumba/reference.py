"""Independent references for verifying the kernels.

* :func:`bk_core_banded`: SciPy's banded LU solver on the identity, the
  diagonal of the full inverse (O(N^2) per row; N up to a few thousand).
* :func:`bk_core_extended`: the ratio recursion in ``numpy.longdouble``
  (64-bit mantissa on x86-64, about 3 decimal digits beyond float64),
  vectorised across chunks of the sequence so that N = 10^6 takes seconds.

Neither shares code with the Numba kernels.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg

from ._validation import prepare

__all__ = ["bk_core_banded", "bk_core_extended", "relative_error"]


def bk_core_banded(a, b, c, z=1j):
    """Resolvent diagonal from ``scipy.linalg.solve_banded((1, 1), ab, I)``.

    Parameters
    ----------
    a, b, c, z : as in :func:`bknumba.bk_core`

    Returns
    -------
    ndarray complex128, shape of ``a``

    Raises
    ------
    numpy.linalg.LinAlgError
        If SciPy finds ``T - zI`` singular.

    Examples
    --------
    >>> import numpy as np
    >>> from bknumba.reference import bk_core_banded
    >>> a = np.array([-2.0, -1.0])
    >>> T = np.diag(a) + np.diag([0.5], 1) + np.diag([2.0], -1)
    >>> bool(np.allclose(bk_core_banded(a, 0.5, 2.0, 1j),
    ...                  np.diag(np.linalg.inv(T - 1j * np.eye(2)))))
    True
    """
    a_arr = np.asarray(a)
    squeeze = a_arr.ndim == 1
    a2 = np.atleast_2d(a_arr).astype(np.complex128)
    batch, n = a2.shape
    b2 = np.broadcast_to(np.asarray(b, dtype=np.complex128), (batch, max(n - 1, 0)))
    c2 = np.broadcast_to(np.asarray(c, dtype=np.complex128), (batch, max(n - 1, 0)))
    z2 = np.broadcast_to(np.asarray(z, dtype=np.complex128), (batch,))
    out = np.empty((batch, n), dtype=np.complex128)
    if n:
        eye = np.eye(n, dtype=np.complex128)
        for r in range(batch):
            ab = np.zeros((3, n), dtype=np.complex128)
            ab[0, 1:] = b2[r]
            ab[1] = a2[r] - z2[r]
            ab[2, :-1] = c2[r]
            out[r] = np.diagonal(scipy.linalg.solve_banded((1, 1), ab, eye, check_finite=True))
    return out[0] if squeeze else out


def _moebius_pivots(d, k, chunk):
    """Left pivots ``L[i] = d[i] - k[i-1] / L[i-1]`` in longdouble, chunked.

    ``d`` is ``(B, N)`` clongdouble, ``k`` ``(B, N - 1)``. The map
    ``L -> d - k / L`` is the 2x2 matrix ``[[d, -k], [1, 0]]`` acting on
    ``(theta_{i+1}, theta_i)``; chunk maps are composed (normalised by their
    largest entry), the carries propagated chunk by chunk, then each chunk
    is re-run from its exact carry-in. Every Python-level loop runs over at
    most ``chunk`` or ``N / chunk`` steps, each vectorised.
    """
    batch, n = d.shape
    nchunk = -(-n // chunk)
    pad = nchunk * chunk - n
    # position i uses coupling k[i-1]; pad so every chunk is full
    kk = np.concatenate([np.zeros((batch, 1), d.dtype), k.astype(d.dtype)], axis=1)
    dd = np.concatenate([d, np.ones((batch, pad), d.dtype)], axis=1).reshape(batch, nchunk, chunk)
    kk = np.concatenate([kk, np.zeros((batch, pad), d.dtype)], axis=1).reshape(batch, nchunk, chunk)
    # 1. chunk maps, vectorised over (rows, chunks)
    m00 = np.ones((batch, nchunk), d.dtype)
    m01 = np.zeros((batch, nchunk), d.dtype)
    m10 = np.zeros((batch, nchunk), d.dtype)
    m11 = np.ones((batch, nchunk), d.dtype)
    for j in range(chunk):
        dj = dd[:, :, j]
        kj = kk[:, :, j]
        n00 = dj * m00 - kj * m10
        n01 = dj * m01 - kj * m11
        m10, m11 = m00, m01
        m00, m01 = n00, n01
        s = np.maximum.reduce([np.abs(m00), np.abs(m01), np.abs(m10), np.abs(m11)])
        m00, m01, m10, m11 = m00 / s, m01 / s, m10 / s, m11 / s
    # 2. carries (theta_s, theta_{s-1}) at each chunk start, sequential over chunks
    carry0 = np.empty((batch, nchunk), d.dtype)
    carry1 = np.empty((batch, nchunk), d.dtype)
    v0 = np.ones(batch, d.dtype)   # theta_0
    v1 = np.zeros(batch, d.dtype)  # theta_{-1}
    for ci in range(nchunk):
        carry0[:, ci] = v0
        carry1[:, ci] = v1
        v0, v1 = m00[:, ci] * v0 + m01[:, ci] * v1, m10[:, ci] * v0 + m11[:, ci] * v1
        s = np.maximum(np.abs(v0), np.abs(v1))
        v0, v1 = v0 / s, v1 / s
    # 3. re-run every chunk from its carry, in ratio form
    left = np.empty((batch, nchunk, chunk), d.dtype)
    prev0, prev1 = carry0, carry1
    for j in range(chunk):
        # theta_{i+1} = d theta_i - k theta_{i-1}; L = theta_{i+1} / theta_i
        new = dd[:, :, j] * prev0 - kk[:, :, j] * prev1
        left[:, :, j] = new / prev0
        prev1, prev0 = prev0, new
        s = np.maximum(np.abs(prev0), np.abs(prev1))
        prev0, prev1 = prev0 / s, prev1 / s
    return left.reshape(batch, -1)[:, :n]


def bk_core_extended(a, b, c, z=1j, *, mask=None, semantics="exact", chunk=None):
    """Resolvent diagonal by the ratio recursion in ``numpy.longdouble``.

    An extended-precision reference for long rows (N up to 10^6 and more)
    where the O(N^2) banded solve is out of reach. It shares no code with
    the Numba kernels. Returns complex128 (rounded from clongdouble).

    Parameters
    ----------
    a, b, c, z : as in :func:`bknumba.bk_core`
    mask : array_like of bool, optional
        With a mask, the sparse semantics of :func:`bknumba.sparse_bk_core`
        (0 at masked positions). ``"local"`` and ``"seed"`` drop the coupling
        of the step producing a masked position by zeroing it in the forward
        (``k[i-1]``) and backward (``k[i]``) sweeps; ``"seed"`` then combines
        ``theta[i] phi[i] / theta[N] = prod_{j>i} R[j] / prod_{j>=i} L[j]``
        through cumulative sums of complex logarithms.
    semantics : {"exact", "local", "seed"}
    chunk : int, optional
        Chunk length of the vectorised scan (default about sqrt(N)).

    Examples
    --------
    >>> import numpy as np
    >>> from bknumba.reference import bk_core_banded, bk_core_extended
    >>> rng = np.random.default_rng(0)
    >>> a = -2 + rng.uniform(-3, 3, 50)
    >>> bool(np.allclose(bk_core_extended(a, 1.0, 1.0), bk_core_banded(a, 1.0, 1.0)))
    True
    """
    p = prepare(a, b, c, z, mask, check_finite=True)
    batch, n = p.a.shape
    if n == 0:
        return p.restore(np.empty((batch, 0), np.complex128))
    ld = np.clongdouble
    d = p.a.astype(ld) - p.z.astype(ld)[:, None]
    k = p.k.astype(ld)
    if chunk is None:
        chunk = max(1, int(np.sqrt(n)))
    k_fwd = k
    k_bwd = k
    if p.mask is not None and semantics in ("local", "seed"):
        k_fwd = np.where(p.mask[:, 1:], k, 0)    # L[i] = d[i] where mask[i] == 0
        k_bwd = np.where(p.mask[:, :-1], k, 0)   # R[i] = d[i] where mask[i] == 0
    left = _moebius_pivots(d, k_fwd, chunk)
    # right pivots: the same recursion on the reversed row
    right = _moebius_pivots(d[:, ::-1], k_bwd[:, ::-1], chunk)[:, ::-1]
    if semantics == "seed" and p.mask is not None:
        log_l = np.log(left)
        log_r = np.log(right)
        # sum_{j >= i} log L[j] and sum_{j > i} log R[j]
        suffix_l = np.cumsum(log_l[:, ::-1], axis=1)[:, ::-1]
        suffix_r = np.cumsum(log_r[:, ::-1], axis=1)[:, ::-1] - log_r
        g = np.exp(suffix_r - suffix_l)
    else:
        g = 1 / (left + right - d)
    if p.mask is not None:
        g = np.where(p.mask, g, 0)
    return p.restore(g.astype(np.complex128))


def relative_error(g, g_ref) -> np.ndarray:
    """Per-row ``max_i |g - g_ref| / max_i |g_ref|`` (``bk-core.md`` section 5)."""
    g = np.atleast_2d(g)
    g_ref = np.atleast_2d(g_ref)
    num = np.max(np.abs(g - g_ref), axis=-1, initial=0.0)
    den = np.max(np.abs(g_ref), axis=-1, initial=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), num)
