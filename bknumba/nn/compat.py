"""The original model's own BK feature arithmetic, transcribed on purpose.

**Defective by design.** Nothing here computes the resolvent diagonal
correctly; it exists so that weights trained on these features can be run
with the features they saw. The defaults of :mod:`bknumba.nn` never use it:
select it with ``features="sparse_v1"`` (or ``features="model"``) and the
``clip`` / ``complex64`` options.

* :func:`sparse_v1_g` is ``optimized_sparse_bk_core`` of
  ``src/models/sparse_bk_core.py`` (commit ``6182361``, unchanged since;
  spec ``original-model.md`` section 3.1-3.3), with its defects:

  - the mask test is made once per position for the **whole batch**
    (``(mask[:, i] < 0.5).any()``), so one row's mask changes the others;
  - its phi is the trailing determinant *including* row ``i`` (``D_i``
    instead of ``D_{i+1}``): at zero sparsity the output is
    ``1 - b[i-1] G[i, i-1]`` rather than ``G[i, i]``, and ``1`` when every
    position is masked;
  - raw complex128 continuants (NaN from ``N`` near 970), the determinant
    guard ``det / |det| * 1e-9`` where ``|det| < 1e-9`` and ``+ 1e-18``,
    no clip, no NaN rule.

* :func:`clip_magnitude` is the original full core's output clip
  (``|G| > 50`` scaled back to 50, phase kept); combined with a complex64
  cast it is the post-processing of ``BKCoreFunction`` at ``6182361`` /
  ``518528f``. Before the raw recursion overflows (``N`` below about 960
  for the model's Hamiltonian) that core equals the exact resolvent
  followed by this clip, which is how ``features="model"`` reproduces it.
"""
from __future__ import annotations

import numpy as np

__all__ = ["sparse_v1_g", "clip_magnitude"]

_KERNEL = None


def _kernel():
    global _KERNEL
    if _KERNEL is None:
        import numba

        @numba.njit(cache=True, nogil=True)
        def _sparse_v1(a, k_theta, k_phi, z, masked):  # pragma: no cover - compiled
            bsz, n = a.shape
            theta = np.empty((bsz, n + 1), dtype=np.complex128)
            phi = np.zeros((bsz, n + 2), dtype=np.complex128)
            out = np.empty((bsz, n), dtype=np.complex128)
            for r in range(bsz):
                theta[r, 0] = 1.0
                theta[r, 1] = a[r, 0] - z
                for i in range(1, n):
                    alpha = a[r, i] - z
                    if masked[i]:
                        theta[r, i + 1] = alpha * theta[r, i]
                    else:
                        theta[r, i + 1] = alpha * theta[r, i] - k_theta[r, i - 1] * theta[r, i - 1]
                phi[r, n + 1] = 0.0
                phi[r, n] = 1.0
                for i in range(n - 1, -1, -1):
                    alpha = a[r, i] - z
                    if masked[i] or i == n - 1:
                        phi[r, i] = alpha * phi[r, i + 1]
                    else:
                        phi[r, i] = alpha * phi[r, i + 1] - k_phi[r, i] * phi[r, i + 2]
                det = theta[r, n]
                mag = abs(det)
                if mag < 1e-9:
                    det = det / mag * 1e-9
                den = det + 1e-18
                for i in range(n):
                    out[r, i] = theta[r, i] * phi[r, i] / den
            return out

        _KERNEL = _sparse_v1
    return _KERNEL


def sparse_v1_g(he_diag, h0_super, h0_sub, z, mask):
    """``G`` of the original ``optimized_sparse_bk_core`` (defective; see the module notes).

    Parameters
    ----------
    he_diag : ndarray, (B, N)
        Main diagonal (``h0_diag + v``).
    h0_super, h0_sub : ndarray, (B, N - 1) or (1, N - 1)
    z : complex
    mask : ndarray, (B, N)
        1 = compute. Any row with ``mask < 0.5`` at position ``i`` makes ``i``
        "masked" for every row (the original's batch-wide ``.any()``).

    Returns
    -------
    ndarray, complex128, (B, N)
        The original's value at every position (not zeroed where masked).

    Examples
    --------
    >>> import numpy as np
    >>> a = np.full((1, 4), -2.0)
    >>> g = sparse_v1_g(a, np.ones((1, 3)), np.ones((1, 3)), 1j, np.zeros((1, 4)))
    >>> bool(np.allclose(g, 1.0))        # fully masked: identically 1, not 1/alpha
    True
    """
    a = np.ascontiguousarray(he_diag, dtype=np.float64)
    bsz, n = a.shape
    sup = np.broadcast_to(np.asarray(h0_super, dtype=np.complex128), (bsz, n - 1))
    sub = np.broadcast_to(np.asarray(h0_sub, dtype=np.complex128), (bsz, n - 1))
    # theta uses c[i-1] * b[i-1] (c * b order), phi uses b[i] * c[i]; equal products
    k_theta = np.ascontiguousarray(sub * sup)
    k_phi = np.ascontiguousarray(sup * sub)
    masked = np.ascontiguousarray((np.asarray(mask) < 0.5).any(axis=0))
    return _kernel()(a, k_theta, k_phi, complex(z), masked)


def clip_magnitude(g, max_abs=50.0):
    """The original core's clip: where ``|G| > max_abs``, ``G *= max_abs / (|G| + 1e-9)``.

    Returns a new array; the phase is kept.

    >>> clip_magnitude(np.array([100 + 0j, 1j]))
    array([50.+0.j,  0.+1.j])
    """
    g = np.array(g, copy=True)
    mag = np.abs(g)
    big = mag > max_abs
    if big.any():
        g[big] *= max_abs / (mag[big] + 1e-9)
    return g
