"""The FFN forward pass, dense and with per-token channel sparsity."""
from __future__ import annotations

import numpy as np

from ._common import activation_code, as_float_array, compute_dtype

__all__ = ["dense_ffn", "sparse_ffn"]


def _prepare(x, W1, b1, W2, b2):
    """Validate shapes and give C-contiguous arrays of one float dtype.

    Returns ``x2 (n, d), W1 (d_ff, d), b1 (d_ff,), W2t (d_ff, d), b2 (d,)``,
    whether ``x`` was 1-D, and the dtype. ``W2t = W2.T`` is made without a
    copy when ``W2`` is the transpose of a C-contiguous ``(d_ff, d)`` array
    (as stored by :class:`FFNWeights`).
    """
    dtype = compute_dtype(x, W1, b1, W2, b2)
    x = as_float_array("x", x, ndim=(1, 2))
    W1 = as_float_array("W1", W1, ndim=2)
    W2 = as_float_array("W2", W2, ndim=2)
    d_ff, d = W1.shape
    if d_ff == 0 or d == 0:
        raise ValueError(f"W1 has shape {W1.shape}; expected (d_ff, d_model) with both > 0")
    if W2.shape != (d, d_ff):
        raise ValueError(
            f"W2 has shape {W2.shape}; expected (d_model, d_ff) = ({d}, {d_ff}) for W1 of "
            f"shape {W1.shape} (PyTorch nn.Linear layout: (out_features, in_features))"
        )
    if x.shape[-1] != d:
        raise ValueError(
            f"x has shape {x.shape}; its last axis must be d_model = {d} (W1 has shape "
            f"{W1.shape})"
        )
    if b1 is None:
        b1 = np.zeros(d_ff, dtype)
    b1 = as_float_array("b1", b1, ndim=1)
    if b1.shape != (d_ff,):
        raise ValueError(f"b1 has shape {b1.shape}; expected ({d_ff},)")
    if b2 is None:
        b2 = np.zeros(d, dtype)
    b2 = as_float_array("b2", b2, ndim=1)
    if b2.shape != (d,):
        raise ValueError(f"b2 has shape {b2.shape}; expected ({d},)")
    squeeze = x.ndim == 1
    x2 = x[None, :] if squeeze else x
    c = np.ascontiguousarray
    return (c(x2, dtype), c(W1, dtype), c(b1, dtype), c(W2.T, dtype), c(b2, dtype),
            squeeze, dtype)


def _dense(x2, W1, b1, W2t, b2, code):
    from .kernels import activation_inplace

    h = x2 @ W1.T
    h += b1
    if code != 0 and h.size:
        activation_inplace(h, code)
    y = h @ W2t
    y += b2
    return y


def dense_ffn(x, W1, b1, W2, b2, *, activation="gelu") -> np.ndarray:
    """Dense FFN ``act(x W1^T + b1) W2^T + b2`` (BLAS matmuls).

    Same arguments as :func:`sparse_ffn` without ``channels``.

    Examples
    --------
    >>> import numpy as np
    >>> W1 = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]); b1 = np.zeros(3)
    >>> W2 = np.ones((2, 3)); b2 = np.array([0.0, 1.0])
    >>> dense_ffn(np.array([1.0, -2.0]), W1, b1, W2, b2, activation="relu")
    array([1., 2.])
    """
    code = activation_code(activation)
    x2, W1, b1, W2t, b2, squeeze, _ = _prepare(x, W1, b1, W2, b2)
    y = _dense(x2, W1, b1, W2t, b2, code)
    return y[0] if squeeze else y


def _check_channels(channels, n, d_ff, squeeze):
    ch = np.asarray(channels)
    if ch.dtype.kind not in "iu":
        raise TypeError(f"channels must be an integer array; got dtype {ch.dtype}")
    if squeeze and ch.ndim == 1:
        ch = ch[None, :]
    if ch.ndim != 2 or ch.shape[0] != n:
        raise ValueError(
            f"channels has shape {np.shape(channels)}; expected (n_tokens, k) = ({n}, k)"
            + (" or (k,) for a single token x" if squeeze else "")
        )
    k = ch.shape[1]
    if not 1 <= k <= d_ff:
        raise ValueError(f"channels has {k} channels per token; expected 1 <= k <= d_ff = {d_ff}")
    if ch.size and (ch.min() < 0 or ch.max() >= d_ff):
        bad = np.argwhere((ch < 0) | (ch >= d_ff))[0]
        raise ValueError(
            f"channels[{bad[0]}, {bad[1]}] = {ch[tuple(bad)]} is outside [0, d_ff = {d_ff})"
        )
    s = np.sort(ch, axis=1)
    dup = s[:, 1:] == s[:, :-1]
    if dup.any():
        row = int(np.argwhere(dup)[0, 0])
        raise ValueError(f"channels row {row} repeats a channel; channels must be distinct")
    return np.ascontiguousarray(ch, dtype=np.int64)


def sparse_ffn(x, W1, b1, W2, b2, channels=None, *, activation="gelu", tile=None) -> np.ndarray:
    """FFN forward computing only the selected intermediate channels.

    ``y[t] = b2 + sum_{c in channels[t]} act(W1[c] . x[t] + b1[c]) W2[:, c]``:
    both projections are restricted to the channels of each token (the seed
    computes the first one densely). Runs the Numba kernel
    :func:`bknumba.ffn.kernels.sparse_ffn_tiled`, parallel over tiles of
    tokens.

    Parameters
    ----------
    x : array_like, (n, d_model) or (d_model,)
        Tokens. Not modified (nor are the weights).
    W1 : array_like, (d_ff, d_model)
        First projection, PyTorch ``nn.Linear`` layout.
    b1 : array_like (d_ff,) or None
    W2 : array_like, (d_model, d_ff)
        Second projection, PyTorch layout. The kernel reads ``W2.T``
        row by row; pass the transpose of a C-contiguous ``(d_ff, d_model)``
        array (``FFNWeights.W2`` is one) to avoid a copy on every call.
    b2 : array_like (d_model,) or None
    channels : array_like of int, (n, k) or (k,), optional
        Distinct channels per token, e.g. from :func:`select_ffn_channels`.
        ``None`` (or all ``d_ff`` channels) gives the dense computation.
    activation : {"gelu", "gelu_tanh", "relu", "identity"} or None
    tile : int, optional
        Tokens per tile (default :data:`bknumba.ffn.kernels.DEFAULT_TILE`).

    Returns
    -------
    y : ndarray, (n, d_model) or (d_model,)
        float32 when every input is float32, float64 otherwise.

    Raises
    ------
    ValueError
        Inconsistent shapes, channels out of range or repeated, non-finite
        inputs.
    TypeError
        Non-numeric inputs or non-integer channels.

    Examples
    --------
    >>> import numpy as np
    >>> W1 = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]); b1 = np.zeros(3)
    >>> W2 = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]]); b2 = np.zeros(2)
    >>> x = np.array([[1.0, 2.0]])
    >>> sparse_ffn(x, W1, b1, W2, b2, [[2]], activation="relu")  # channel 2 only
    array([[9., 3.]])
    >>> sparse_ffn(x, W1, b1, W2, b2, None, activation="relu")   # dense
    array([[14.,  3.]])
    """
    code = activation_code(activation)
    x2, W1, b1, W2t, b2, squeeze, dtype = _prepare(x, W1, b1, W2, b2)
    n = x2.shape[0]
    d_ff = W1.shape[0]
    if channels is None:
        y = _dense(x2, W1, b1, W2t, b2, code)
        return y[0] if squeeze else y
    ch = _check_channels(channels, n, d_ff, squeeze)
    if ch.shape[1] == d_ff:  # all channels: the dense path is faster
        y = _dense(x2, W1, b1, W2t, b2, code)
        return y[0] if squeeze else y
    from .kernels import DEFAULT_TILE, sparse_ffn_tiled

    if tile is None:
        tile = DEFAULT_TILE
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1:
        raise ValueError(f"tile must be a positive integer; got {tile!r}")
    y = np.empty((n, W1.shape[1]), dtype)
    if n:
        sparse_ffn_tiled(x2, W1, b1, W2t, b2, ch, code, int(tile), y)
    return y[0] if squeeze else y
