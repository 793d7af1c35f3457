"""Argument checks shared by the sparsity toolkit (NumPy only)."""
from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["as_mask", "check_fraction", "check_real", "check_int"]


def as_mask(mask, name: str = "mask", *, allow_empty: bool = False) -> np.ndarray:
    """Return ``mask`` as a float64 array (a copy when converted), validated.

    A mask holds 1 (compute) and 0 (skip); soft masks with values in
    ``[0, 1]`` (probabilities) are accepted too. Booleans are accepted.
    """
    if mask is None:
        raise TypeError(f"{name} must be an array of values in [0, 1], got None")
    try:
        arr = np.asarray(mask)
    except Exception as exc:  # ragged lists
        raise TypeError(f"{name} could not be converted to an array: {exc}") from exc
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be boolean, integer or real, got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension, got a scalar")
    out = arr.astype(np.float64)
    if out.size == 0:
        if allow_empty:
            return out
        raise ValueError(
            f"{name} is empty (shape {arr.shape}); the sparsity of an empty mask is "
            "undefined (the original model returns NaN here)"
        )
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} contains a non-finite value")
    lo, hi = float(out.min()), float(out.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name} values must lie in [0, 1]; got min {lo!r}, max {hi!r}")
    return out


def check_real(name: str, value) -> float:
    """A finite real number (not bool), returned as float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
            value = value.item()
        else:
            raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {out!r}")
    return out


def check_fraction(name: str, value) -> float:
    """A real number in ``[0, 1]``."""
    out = check_real(name, value)
    if not 0.0 <= out <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {out!r}")
    return out


def check_int(name: str, value, minimum: int = 0) -> int:
    """An integer (not bool) ``>= minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    out = int(value)
    if out < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {out}")
    return out
