"""Per-token selection of FFN intermediate channels."""
from __future__ import annotations

import math

import numpy as np

from ._common import activation_code, as_float_array, check_sparsity

__all__ = ["channels_kept", "select_ffn_channels"]


def channels_kept(d_ff: int, sparsity: float) -> int:
    """Number of channels computed per token: ``ceil((1 - sparsity) * d_ff)``.

    Rounded up (at least the requested fraction is kept; a tolerance of
    1e-9 absorbs binary rounding, so ``0.7`` of 3072 keeps 922, ``0.75``
    keeps exactly 768), and at least 1.

    Examples
    --------
    >>> channels_kept(3072, 0.5), channels_kept(3072, 0.75), channels_kept(3072, 0.95)
    (1536, 768, 154)
    """
    if isinstance(d_ff, bool) or not isinstance(d_ff, (int, np.integer)) or d_ff < 1:
        raise ValueError(f"d_ff must be a positive integer; got {d_ff!r}")
    s = check_sparsity(sparsity)
    return int(min(d_ff, max(1, math.ceil((1.0 - s) * d_ff - 1e-9))))


def select_ffn_channels(estimate, sparsity, *, activation="gelu", k=None) -> np.ndarray:
    """Per token, the channels with the largest estimated activation magnitude.

    Parameters
    ----------
    estimate : array_like, (n, d_ff) or (d_ff,)
        Estimated pre-activations (e.g. :meth:`FFNEstimator.estimate`).
        Not modified.
    sparsity : float in [0, 1)
        Fraction of channels to skip; ``channels_kept(d_ff, sparsity)``
        channels are returned per token. Ignored when ``k`` is given.
    activation : {"gelu", "gelu_tanh", "relu", "identity"} or None
        Applied to the estimate before taking magnitudes, so that e.g. a
        large negative pre-activation (GELU output near 0) is not chosen.
    k : int, optional
        Explicit number of channels per token, ``1 <= k <= d_ff``.

    Returns
    -------
    channels : ndarray of int64, (n, k) or (k,)
        Sorted channel indices, exactly ``k`` distinct ones per token. Ties
        in magnitude go to the lower channel index.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[0.1, -3.0, 2.0, 0.5], [4.0, 0.0, -0.2, 1.0]])
    >>> select_ffn_channels(z, 0.5, activation="relu")
    array([[2, 3],
           [0, 3]])
    >>> select_ffn_channels(z, 0.5, activation=None)  # by |z|
    array([[1, 2],
           [0, 3]])
    """
    code = activation_code(activation)
    z = as_float_array("estimate", estimate, ndim=(1, 2))
    squeeze = z.ndim == 1
    z2 = z[None, :] if squeeze else z
    d_ff = z2.shape[1]
    if d_ff == 0:
        raise ValueError(f"estimate has shape {z.shape}; it needs at least one channel")
    if k is None:
        k = channels_kept(d_ff, sparsity)
    else:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"k must be an integer; got {k!r}")
        if not 1 <= k <= d_ff:
            raise ValueError(f"k={k} is outside [1, d_ff={d_ff}]")
        k = int(k)
    if z2.dtype not in (np.float32, np.float64):
        z2 = z2.astype(np.float64)
    z2 = np.ascontiguousarray(z2)
    out = np.empty((z2.shape[0], k), dtype=np.int64)
    if z2.shape[0]:
        if k == d_ff:
            out[:] = np.arange(d_ff)
        else:
            from .kernels import select_topk

            select_topk(z2, k, code, out)
    return out[0] if squeeze else out
