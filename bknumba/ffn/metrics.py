"""Fidelity of the sparse FFN: output error and channel recall."""
from __future__ import annotations

import numpy as np

from ._common import apply_activation, check_sparsity
from .select import channels_kept

__all__ = ["channel_recall", "ffn_fidelity"]


def channel_recall(selected, reference) -> float:
    """Mean over tokens of ``|selected[t] & reference[t]| / |reference[t]|``.

    Examples
    --------
    >>> channel_recall([[0, 1, 2]], [[1, 2, 3]])
    0.6666666666666666
    """
    sel = np.asarray(selected)
    ref = np.asarray(reference)
    if sel.ndim == 1:
        sel, ref = sel[None], ref[None]
    if sel.shape[0] != ref.shape[0] or sel.ndim != 2 or ref.ndim != 2:
        raise ValueError(
            f"selected {np.shape(selected)} and reference {np.shape(reference)} must be "
            "(n_tokens, k) arrays with the same n_tokens"
        )
    hits = [np.intersect1d(a, b, assume_unique=True).size for a, b in zip(sel, ref)]
    return float(np.mean(np.asarray(hits) / ref.shape[1])) if hits else 1.0


def ffn_fidelity(x, weights, estimator, sparsity, *, activation="gelu") -> dict:
    """Accuracy of the estimator-driven sparse FFN on tokens ``x``.

    Parameters
    ----------
    x : (n, d_model) tokens; weights : :class:`FFNWeights`;
    estimator : :class:`FFNEstimator` (or None for the oracle only);
    sparsity : float in [0, 1)

    Returns
    -------
    dict
        ``rel_error``: ``||Y_sparse - Y||_F / ||Y - b2||_F`` (``b2`` is
        exact in both, so it is left out of the scale); ``recall``: fraction
        of the true top-k channels (by ``|act(W1 x + b1)|``) that the
        estimator picked; ``oracle_rel_error``: the error when the true
        top-k are used (the floor for this ``k``); ``k``.
    """
    from .core import sparse_ffn
    from .select import select_ffn_channels

    s = check_sparsity(sparsity)
    x = np.asarray(x, dtype=np.float64)
    W1 = np.asarray(weights.W1, np.float64)
    W2 = np.asarray(weights.W2, np.float64)
    b1 = np.asarray(weights.b1, np.float64)
    b2 = np.asarray(weights.b2, np.float64)
    z = x @ W1.T + b1
    y = apply_activation(z, activation) @ W2.T + b2
    scale = np.linalg.norm(y - b2)
    k = channels_kept(weights.d_ff, s)
    true = select_ffn_channels(z, s, activation=activation)
    y_or = sparse_ffn(x, W1, b1, W2, b2, true, activation=activation)
    out = {"k": k, "oracle_rel_error": float(np.linalg.norm(y_or - y) / scale)}
    if estimator is not None:
        sel = estimator.select(x, s)
        y_s = sparse_ffn(x, W1, b1, W2, b2, sel, activation=activation)
        out["rel_error"] = float(np.linalg.norm(y_s - y) / scale)
        out["recall"] = channel_recall(sel, true)
    return out
