"""Sparsity masks from importance logits: threshold, top-k and Gumbel-sigmoid.

A mask has the shape of the logits, ``(B, N)``, the dtype of the logits,
and values exactly 0.0 (skip) or 1.0 (compute), like the model's
straight-through hard mask.
"""
from __future__ import annotations

import numpy as np

__all__ = ["threshold_mask", "topk_mask", "topk_count", "gumbel_sigmoid_mask", "MASK_MODES"]

MASK_MODES = ("threshold", "topk", "gumbel")


def threshold_mask(logits):
    """Keep positions whose logit is > 0: the model's Gumbel-sigmoid without noise.

    Examples
    --------
    >>> threshold_mask(np.array([[-1.0, 0.0, 2.0]]))
    array([[0., 0., 1.]])
    """
    logits = np.asarray(logits)
    return (logits > 0).astype(logits.dtype)


def topk_count(n, target_sparsity):
    """``k = int(N * (1 - target_sparsity))``, with the model's float truncation.

    >>> topk_count(128, 0.6), topk_count(100, 0.9)
    (51, 9)
    """
    return int(n * (1 - target_sparsity))


def topk_mask(logits, k):
    """Keep the ``k`` largest logits of each row (``LearnedSparsityG_ii`` with ``training=False``).

    Ties are broken towards the lower index (``torch.topk`` leaves the order
    unspecified). ``k = 0`` keeps nothing.

    Examples
    --------
    >>> topk_mask(np.array([[0.5, 2.0, 2.0, -1.0]]), 2)
    array([[0., 1., 1., 0.]])
    """
    logits = np.asarray(logits)
    mask = np.zeros_like(logits)
    k = int(k)
    if k <= 0:
        return mask
    if k >= logits.shape[-1]:
        mask[...] = 1
        return mask
    order = np.argsort(-logits, axis=-1, kind="stable")[..., :k]
    np.put_along_axis(mask, order, 1, axis=-1)
    return mask


def gumbel_sigmoid_mask(logits, tau=1.0, rng=None, hard=True):
    """The model's Gumbel-sigmoid mask, with NumPy's random generator.

    ``u ~ U[0, 1)``, ``g = -log(-log(u + 1e-10) + 1e-10)``,
    ``soft = sigmoid((logits + g) / tau)`` and the hard mask ``soft > 0.5``.
    Like the model this is a single Gumbel sample, so the keep probability at
    logit ``l`` is ``1 - exp(-e^l)`` (0.632 at 0), not ``sigmoid(l)``.

    It reproduces the training-time *distribution*, not torch's draws: NumPy's
    and torch's random generators differ, so the same seed gives different
    masks. Use it to study training-time behaviour, never for parity.

    Parameters
    ----------
    logits : ndarray, (B, N)
    tau : float
    rng : numpy.random.Generator, int or None
        Seeded generator (or seed) for reproducible draws.
    hard : bool
        Return the 0/1 mask (default) or the soft values.

    Examples
    --------
    >>> m = gumbel_sigmoid_mask(np.zeros((1, 4), np.float32), rng=0)
    >>> m.dtype, set(m.ravel().tolist()) <= {0.0, 1.0}
    (dtype('float32'), True)
    """
    logits = np.asarray(logits)
    rng = np.random.default_rng(rng)
    dt = logits.dtype.type
    u = rng.random(logits.shape, dtype=np.float32 if logits.dtype == np.float32 else np.float64)
    g = -np.log(-np.log(u + dt(1e-10)) + dt(1e-10))
    soft = 1 / (1 + np.exp(-(logits + g) / dt(tau)))
    if not hard:
        return soft.astype(logits.dtype, copy=False)
    return (soft > 0.5).astype(logits.dtype)
