"""Shared helpers of :mod:`bknumba.ffn`: activations, dtypes, argument checks."""
from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "ACTIVATIONS",
    "activation_code",
    "apply_activation",
    "as_float_array",
    "check_sparsity",
    "compute_dtype",
]

#: Activation names accepted everywhere, with their kernel codes.
ACTIVATIONS = {"identity": 0, "relu": 1, "gelu": 2, "gelu_tanh": 3}


def activation_code(activation) -> int:
    """Kernel code of ``activation`` (``None`` means ``"identity"``)."""
    if activation is None:
        activation = "identity"
    if not isinstance(activation, str):
        raise TypeError(
            f"activation must be a string ({', '.join(map(repr, ACTIVATIONS))}) or None; "
            f"got {type(activation).__name__}"
        )
    key = activation.lower()
    if key not in ACTIVATIONS:
        raise ValueError(
            f"activation={activation!r} is not one of {', '.join(map(repr, ACTIVATIONS))}"
        )
    return ACTIVATIONS[key]


def apply_activation(z, activation="gelu") -> np.ndarray:
    """NumPy activation (a new array; ``z`` is not modified).

    ``"gelu"`` is the exact erf form ``0.5 z (1 + erf(z / sqrt 2))`` used by
    BERT/DistilBERT, ``"gelu_tanh"`` the tanh approximation.
    """
    from scipy.special import erf

    code = activation_code(activation)
    z = np.asarray(z)
    if code == 0:
        return z.copy()
    if code == 1:
        return np.maximum(z, 0)
    if code == 2:
        return 0.5 * z * (1.0 + erf(z / np.sqrt(2.0)))
    return 0.5 * z * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (z + 0.044715 * z**3)))


def compute_dtype(*arrays) -> np.dtype:
    """float32 when every array given is float32, float64 otherwise."""
    if arrays and all(a is None or np.asarray(a).dtype == np.float32 for a in arrays):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def as_float_array(name: str, value, *, ndim, dtype=None) -> np.ndarray:
    """``np.asarray`` of real numeric data with ``ndim`` in ``ndim`` (int or tuple).

    Raises TypeError for non-numeric or complex data, ValueError for a wrong
    number of dimensions or non-finite values.
    """
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} could not be converted to a numeric array: {exc}") from exc
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be real numeric (integer or float), got dtype {arr.dtype}")
    dims = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if arr.ndim not in dims:
        want = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(f"{name} must be {want}; got shape {arr.shape}")
    if arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
        idx = tuple(np.argwhere(~np.isfinite(arr))[0])
        raise ValueError(f"{name} contains a non-finite value ({arr[idx]!r}) at index {idx}")
    if dtype is not None:
        arr = np.ascontiguousarray(arr, dtype=dtype)
    return arr


def check_sparsity(value, name: str = "sparsity") -> float:
    """A sparsity ratio in ``[0, 1)`` as a float, else TypeError/ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number in [0, 1); got {value!r}")
    value = float(value)
    if not (0.0 <= value < 1.0):
        raise ValueError(
            f"{name}={value!r} is outside [0, 1): 0 means dense, and at least one "
            "channel per token must be kept"
        )
    return value
