"""Sparsity losses of the original model, as NumPy reference formulas.

These are the training-side formulas of ``SparseBKCore.sparsity_loss`` and
``SparseBKCore.balanced_sparsity_loss`` (``original-model.md`` section 3.4),
evaluated in float64 on NumPy arrays. There is no autodiff here: they are a
reference for the values (for logging, for checking a training framework's
implementation, or for choosing hyper-parameters), not a training loss.

With ``cs = 1 - mean(mask)`` (the current sparsity) and ``t`` the target:

========== ==============================================================
kind       loss
========== ==============================================================
"l2"       ``(cs - t)**2``
"l1"       ``|cs - t|``
"kl"       Bernoulli ``KL(t || cs)`` with ``cs`` clipped to
           ``[1e-8, 1 - 1e-8]``; falls back to "l2" when ``t <= 1e-8`` or
           ``t >= 1 - 1e-8`` (where the KL is undefined)
"adaptive" Huber with ``delta = 0.1``: ``0.5 * d**2`` if ``|d| < 0.1``,
           else ``0.1 * (|d| - 0.05)``, with ``d = cs - t``
========== ==============================================================

Differences from the model (all deliberate):

* float64 throughout (the model works in float32), so values agree with
  the model to float32 rounding, and exactly with the formulas above;
* an empty mask raises ``ValueError`` (the model's ``mean`` returns NaN);
* "kl" with an all-masked mask is finite here (about 8.5 for target 0.5);
  in the model's float32 the clip bound ``1 - 1e-8`` rounds to 1 and the
  loss is ``inf``;
* ``balanced_sparsity_loss`` honours ``kind`` (the model always uses
  "adaptive", whatever the layer's configured loss type; defect 21). The
  default is "adaptive", which reproduces the model.
"""
from __future__ import annotations

import math

from ._checks import as_mask, check_fraction, check_real

__all__ = ["LOSS_KINDS", "current_sparsity", "sparsity_loss", "balanced_sparsity_loss"]

#: The loss kinds understood by :func:`sparsity_loss`.
LOSS_KINDS = ("l2", "l1", "kl", "adaptive")

_KL_EPS = 1e-8
_HUBER_DELTA = 0.1


def current_sparsity(mask) -> float:
    """Fraction of skipped positions, ``1 - mean(mask)``, over every entry.

    Parameters
    ----------
    mask : array_like of bool or of reals in [0, 1]
        1 (True) = compute, 0 = skip; any shape with at least one entry.

    Returns
    -------
    float

    Raises
    ------
    TypeError
        Non-numeric mask.
    ValueError
        Empty mask, or values outside ``[0, 1]``.

    Examples
    --------
    >>> current_sparsity([[1, 0, 0, 1], [1, 1, 1, 0]])
    0.375
    """
    m = as_mask(mask)
    return float(1.0 - m.mean())


def _loss_from_sparsity(cs: float, target: float, kind: str) -> float:
    d = cs - target
    if kind == "l2":
        return d * d
    if kind == "l1":
        return abs(d)
    if kind == "kl":
        if _KL_EPS < target < 1.0 - _KL_EPS:
            c = min(max(cs, _KL_EPS), 1.0 - _KL_EPS)
            return target * math.log(target / c) + (1.0 - target) * math.log(
                (1.0 - target) / (1.0 - c)
            )
        return d * d
    if kind == "adaptive":
        if abs(d) < _HUBER_DELTA:
            return 0.5 * d * d
        return _HUBER_DELTA * (abs(d) - 0.5 * _HUBER_DELTA)
    raise ValueError(f"kind={kind!r} is not one of {', '.join(map(repr, LOSS_KINDS))}")


def sparsity_loss(mask, target: float = 0.5, kind: str = "l2") -> float:
    """Penalty for the distance between the mask's sparsity and a target.

    Parameters
    ----------
    mask : array_like of bool or of reals in [0, 1]
        1 = compute, 0 = skip; the sparsity is ``1 - mean(mask)`` over all
        entries (batch and sequence together, as in the model).
    target : float in [0, 1], default 0.5
        Target sparsity (the model's ``target_sparsity``).
    kind : {"l2", "l1", "kl", "adaptive"}, default "l2"
        See the module docstring for the formulas.

    Returns
    -------
    float
        The loss, ``>= 0``.

    Raises
    ------
    TypeError
        Non-numeric ``mask`` or ``target``.
    ValueError
        Empty mask, mask values outside ``[0, 1]``, ``target`` outside
        ``[0, 1]``, or an unknown ``kind``.

    Examples
    --------
    Three of eight positions skipped (sparsity 0.375) against a target of
    0.5:

    >>> mask = [1, 0, 1, 1, 0, 1, 0, 1]
    >>> sparsity_loss(mask, 0.5, "l2")
    0.015625
    >>> sparsity_loss(mask, 0.5, "l1")
    0.125
    >>> sparsity_loss(mask, 0.5, "adaptive")   # |d| >= 0.1: 0.1 * (0.125 - 0.05)
    0.0075
    >>> round(sparsity_loss(mask, 0.5, "kl"), 6)
    0.032269
    """
    if kind not in LOSS_KINDS:
        raise ValueError(f"kind={kind!r} is not one of {', '.join(map(repr, LOSS_KINDS))}")
    t = check_fraction("target", target)
    return float(_loss_from_sparsity(current_sparsity(mask), t, kind))


def balanced_sparsity_loss(mask, accuracy_loss, target: float = 0.5,
                           sparsity_weight: float = 1.0, accuracy_weight: float = 1.0,
                           kind: str = "adaptive"):
    """Weighted sum of a task loss and the sparsity loss.

    ``total = accuracy_weight * accuracy_loss + sparsity_weight * sparsity_loss``.

    Parameters
    ----------
    mask : array_like of bool or of reals in [0, 1]
    accuracy_loss : float
        The task loss (e.g. cross-entropy) of the same step.
    target : float in [0, 1], default 0.5
    sparsity_weight, accuracy_weight : float, default 1.0
    kind : {"l2", "l1", "kl", "adaptive"}, default "adaptive"
        The model always uses "adaptive" here (and ignores the layer's
        configured type); bknumba honours ``kind``.

    Returns
    -------
    total : float
    parts : dict
        ``total_loss``, ``accuracy_loss``, ``sparsity_loss``,
        ``sparsity_weight``, ``accuracy_weight``, ``current_sparsity``,
        ``target_sparsity``, all Python floats.

    Raises
    ------
    TypeError, ValueError
        As for :func:`sparsity_loss`; non-real or non-finite losses and
        weights.

    Examples
    --------
    >>> total, parts = balanced_sparsity_loss([1, 0, 1, 1], 2.0, target=0.5,
    ...                                       sparsity_weight=0.01)
    >>> parts["current_sparsity"], round(parts["sparsity_loss"], 12)
    (0.25, 0.02)
    >>> round(total, 10)
    2.0002
    """
    acc = check_real("accuracy_loss", accuracy_loss)
    sw = check_real("sparsity_weight", sparsity_weight)
    aw = check_real("accuracy_weight", accuracy_weight)
    t = check_fraction("target", target)
    if kind not in LOSS_KINDS:
        raise ValueError(f"kind={kind!r} is not one of {', '.join(map(repr, LOSS_KINDS))}")
    cs = current_sparsity(mask)
    sl = float(_loss_from_sparsity(cs, t, kind))
    total = aw * acc + sw * sl
    parts = {
        "total_loss": total,
        "accuracy_loss": acc,
        "sparsity_loss": sl,
        "sparsity_weight": sw,
        "accuracy_weight": aw,
        "current_sparsity": cs,
        "target_sparsity": t,
    }
    return total, parts

