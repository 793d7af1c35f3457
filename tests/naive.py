"""Slow, obviously correct loop references for the tests.

Every function works on one row with Python complex numbers, straight from
the definitions in ``shared/spec/bk-core.md`` (sections 2-4). No NumPy
vectorisation, no scaling: use them only where the raw values stay finite.
"""
from __future__ import annotations


def _rows(a, b, c, z):
    n = len(a)
    d = [complex(a[i]) - complex(z) for i in range(n)]
    k = [complex(b[i]) * complex(c[i]) for i in range(n - 1)]
    return n, d, k


def pivots(a, b, c, z, mask=None):
    """Left and right pivots ``L``, ``R`` (restarted at masked positions)."""
    n, d, k = _rows(a, b, c, z)
    left = [0j] * n
    right = [0j] * n
    for i in range(n):
        if i == 0 or (mask is not None and not mask[i]):
            left[i] = d[i]
        else:
            left[i] = d[i] - k[i - 1] / left[i - 1]
    for i in range(n - 1, -1, -1):
        if i == n - 1 or (mask is not None and not mask[i]):
            right[i] = d[i]
        else:
            right[i] = d[i] - k[i] / right[i + 1]
    return left, right, d


def g_ratio(a, b, c, z, mask=None):
    """``G[i] = 1 / (L[i] + R[i] - d[i])``; 0 at masked positions."""
    left, right, d = pivots(a, b, c, z, mask)
    return [
        0j if (mask is not None and not mask[i]) else 1 / (left[i] + right[i] - d[i])
        for i in range(len(d))
    ]


def theta_phi(a, b, c, z, mask=None):
    """Raw (unscaled) theta (N + 1 values) and phi (N values), seed-sparse if masked."""
    n, d, k = _rows(a, b, c, z)
    theta = [0j] * (n + 1)
    theta[0] = 1 + 0j
    if n:
        theta[1] = d[0]
    for i in range(1, n):
        if mask is not None and not mask[i]:
            theta[i + 1] = d[i] * theta[i]
        else:
            theta[i + 1] = d[i] * theta[i] - k[i - 1] * theta[i - 1]
    phi = [0j] * n
    if n:
        phi[n - 1] = 1 + 0j
    if n > 1:
        phi[n - 2] = d[n - 1]
    for i in range(n - 3, -1, -1):
        # phi[i] comes from the step at position i + 1
        if mask is not None and not mask[i + 1]:
            phi[i] = d[i + 1] * phi[i + 1]
        else:
            phi[i] = d[i + 1] * phi[i + 1] - k[i + 1] * phi[i + 2]
    return theta, phi


def g_theta_phi(a, b, c, z, mask=None):
    """``G[i] = theta[i] phi[i] / theta[N]``; 0 at masked positions."""
    theta, phi = theta_phi(a, b, c, z, mask)
    n = len(phi)
    return [
        0j if (mask is not None and not mask[i]) else theta[i] * phi[i] / theta[n]
        for i in range(n)
    ]


def sparse_g(a, b, c, z, mask, semantics):
    """The three sparse semantics of ``bk-core.md`` section 4."""
    if semantics == "seed":
        return g_theta_phi(a, b, c, z, mask)
    if semantics == "local":
        return g_ratio(a, b, c, z, mask)
    full = g_ratio(a, b, c, z)
    return [full[i] if mask[i] else 0j for i in range(len(full))]
