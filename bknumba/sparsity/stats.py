"""Monitoring statistics of a sparsity mask (the model's ``get_sparsity_stats``)."""
from __future__ import annotations

from ._checks import as_mask, check_fraction, check_int

__all__ = ["sparsity_stats"]


def sparsity_stats(mask, target: float = 0.5, *, n_seq=None) -> dict:
    """The model's monitoring dict for a mask, with the same keys every time.

    Parameters
    ----------
    mask : array_like of shape (N,) or (B, N), or None
        1 = compute, 0 = skip (soft values in [0, 1] allowed). ``None``
        stands for "no forward pass yet" and needs ``n_seq``.
    target : float in [0, 1], default 0.5
        The target sparsity, reported back.
    n_seq : int, optional
        Sequence length; required when ``mask`` is None, checked against
        ``mask.shape[-1]`` otherwise.

    Returns
    -------
    dict
        ``sparsity_ratio`` (float, ``1 - mean(mask)``), ``num_computed``
        (float, batch mean of the per-row number of computed positions) and
        ``target_sparsity`` (float). Before the first forward pass
        (``mask=None``) the model returns ``{'sparsity_ratio': 0.0,
        'num_computed': n_seq}`` with an int and no target (defect 23);
        here the keys and types are the same as after it: ``0.0``,
        ``float(n_seq)`` and the target.

    Raises
    ------
    TypeError
        Non-numeric mask, or ``n_seq`` not an int.
    ValueError
        A mask that is empty, not 1-D/2-D, or has values outside [0, 1];
        ``mask=None`` without ``n_seq``; ``n_seq`` different from the mask
        length; ``target`` outside [0, 1].

    Examples
    --------
    >>> sparsity_stats([[1, 0, 1, 1], [0, 0, 1, 1]], target=0.4)
    {'sparsity_ratio': 0.375, 'num_computed': 2.5, 'target_sparsity': 0.4}
    >>> sparsity_stats(None, target=0.4, n_seq=4)
    {'sparsity_ratio': 0.0, 'num_computed': 4.0, 'target_sparsity': 0.4}
    """
    t = check_fraction("target", target)
    if n_seq is not None:
        n_seq = check_int("n_seq", n_seq, 0)
    if mask is None:
        if n_seq is None:
            raise ValueError("mask is None (no forward pass yet): pass n_seq as well")
        return {"sparsity_ratio": 0.0, "num_computed": float(n_seq), "target_sparsity": t}
    m = as_mask(mask)
    if m.ndim not in (1, 2):
        raise ValueError(f"mask must have shape (N,) or (B, N); got shape {m.shape}")
    if n_seq is not None and m.shape[-1] != n_seq:
        raise ValueError(f"mask has length {m.shape[-1]} (shape {m.shape}) but n_seq={n_seq}")
    m2 = m.reshape(-1, m.shape[-1])
    return {
        "sparsity_ratio": float(1.0 - m2.mean()),
        "num_computed": float(m2.sum(axis=1).mean()),
        "target_sparsity": t,
    }
