"""Filling masked positions of the BK features: learned CNNs and linear interpolation."""
from __future__ import annotations

import numpy as np

from .layers import _relu_, conv1d

__all__ = ["cnn_interpolate", "linear_interpolate"]


def cnn_interpolate(features, params):
    """The model's 3-layer interpolation CNN, Conv1d -> ReLU -> Conv1d -> ReLU -> Conv1d.

    ``SparseBKCore`` uses kernel 3 and 16 channels, ``SparseG_iiComputation``
    kernel 5 and 32 channels; both pad with zeros to the same length.

    Parameters
    ----------
    features : ndarray, (B, N, 2)
        Masked features (zero where masked).
    params : sequence of 6 arrays
        ``(w0, b0, w2, b2, w4, b4)``: the ``interpolator.{0,2,4}`` weights and
        biases in PyTorch layout.

    Returns
    -------
    ndarray, (B, N, 2)
    """
    w0, b0, w2, b2, w4, b4 = params
    h = _relu_(conv1d(features, w0, b0))
    h = _relu_(conv1d(h, w2, b2))
    return conv1d(h, w4, b4)


def linear_interpolate(features, mask):
    """Linear interpolation between the nearest computed positions of each row.

    Positions with ``mask < 0.5`` get the linear interpolation between the
    nearest computed (``mask > 0.5``) positions on their left and right;
    with one side only they copy that neighbour; a row with no computed
    position is returned unchanged. (``interpolation_method='cubic'`` of the
    model is this same rule.)

    Examples
    --------
    >>> f = np.array([[[1.0, 0.0], [0.0, 0.0], [3.0, 2.0], [0.0, 0.0]]])
    >>> linear_interpolate(f, np.array([[1.0, 0.0, 1.0, 0.0]]))[0]
    array([[1., 0.],
           [2., 1.],
           [3., 2.],
           [3., 2.]])
    """
    features = np.asarray(features)
    out = features.copy()
    pos = np.arange(features.shape[1])
    for r in range(features.shape[0]):
        keep = mask[r] > 0.5
        if not keep.any():
            continue
        fill = mask[r] < 0.5
        xs = pos[keep]
        for ch in range(features.shape[2]):
            out[r, fill, ch] = np.interp(pos[fill], xs, features[r, keep, ch])
    return out
