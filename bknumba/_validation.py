"""Input validation shared by every backend (CPU, CUDA, Dask).

The public functions call :func:`prepare` once; the kernels never validate
again. Nothing the caller passed in is modified: arrays are converted with
``np.asarray`` and copied whenever a conversion is needed, and the kernels
only read them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Problem", "prepare", "SEMANTICS", "METHODS", "ON_SINGULAR"]

METHODS = ("ratio", "theta_phi")
SEMANTICS = ("seed", "local", "exact")
ON_SINGULAR = ("raise", "nan")
DEVICES = ("cpu", "cuda")

# Which methods each sparse semantics supports, the first being the default.
SEMANTICS_METHODS = {
    "seed": ("theta_phi",),
    "local": ("ratio",),
    "exact": ("ratio", "theta_phi"),
}


@dataclass
class Problem:
    """A validated batch of tridiagonal matrices, always two-dimensional.

    ``a`` is ``(B, N)`` float64 or complex128, ``k = b * c`` is
    ``(B, max(N - 1, 0))`` float64 or complex128, ``z`` is ``(B,)``
    complex128 and ``mask`` is ``(B, N)`` bool or None. ``squeeze`` tells
    whether the caller passed one row (``a`` of shape ``(N,)``).

    ``deferred`` lists the finiteness checks that :func:`prepare` left to the
    kernels (``defer_finite=True``): see :meth:`fin_buffer` and
    :meth:`finish_checks`.
    """

    a: np.ndarray
    k: np.ndarray
    z: np.ndarray
    mask: np.ndarray | None
    squeeze: bool
    deferred: tuple = ()

    def fin_buffer(self) -> np.ndarray | None:
        """Per-row finiteness flags for a kernel that checks its rows as it reads
        them (0.0: the row of ``a`` and ``k`` is finite; NaN: not, or not
        checked); None when no check is pending."""
        return np.full(self.batch, np.nan) if self.deferred else None

    def finish_checks(self, fin: np.ndarray | None) -> None:
        """Run the deferred finiteness checks (``ValueError`` naming the array, row
        and position), unless the kernel verified every row (``fin`` all 0)."""
        if not self.deferred:
            return
        if fin is None or fin.sum() != 0.0:
            for name, arr, batched in self.deferred:
                _first_nonfinite(name, arr, batched)
        self.deferred = ()

    @property
    def batch(self) -> int:
        return self.a.shape[0]

    @property
    def n(self) -> int:
        return self.a.shape[1]

    def restore(self, out: np.ndarray) -> np.ndarray:
        """Give ``out`` (``(B, N, ...)``) the caller's batch layout."""
        return out[0] if self.squeeze else out


def _as_numeric(name: str, value) -> np.ndarray:
    """``np.asarray`` that accepts only integer, real and complex data."""
    if hasattr(value, "__cuda_array_interface__") and not isinstance(value, np.ndarray):
        raise TypeError(
            f"{name} is a GPU array; pass device='cuda' to compute on the GPU, "
            "or copy it to the host first"
        )
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} could not be converted to a numeric array: {exc}") from exc
    if arr.dtype.kind not in "iufc":
        raise TypeError(
            f"{name} must be numeric (integer, real or complex), got dtype {arr.dtype}"
        )
    return arr


def _to_float(arr: np.ndarray) -> np.ndarray:
    """float64 or complex128 (C-contiguous); a copy only if one is needed."""
    dtype = np.complex128 if arr.dtype.kind == "c" else np.float64
    return np.ascontiguousarray(arr, dtype=dtype)


def _first_nonfinite(name: str, arr: np.ndarray, batched: bool) -> None:
    if arr.dtype.kind not in "fc" or arr.size == 0:
        return
    # fast path: a sum (one pass, no temporaries) is finite when every entry is;
    # NaN and inf propagate. If it is not (also when finite entries overflow the
    # sum), search for the entry.
    with np.errstate(all="ignore"):
        total = np.add.reduce(arr, axis=None)
    if np.isfinite(total):
        return
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = np.argwhere(bad)[0]
        if arr.ndim == 0:
            where = ""
        elif arr.ndim == 2 or (batched and arr.ndim == 1 and name == "z"):
            where = f" at row {idx[0]}" + (f", position {idx[1]}" if arr.ndim == 2 else "")
        else:
            where = f" at position {idx[0]}"
        raise ValueError(
            f"{name} contains a non-finite value ({arr[tuple(idx)].item()!r}){where}; "
            "pass check_finite=False to skip this check"
        )


def _product(b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``b * c`` (float64 or complex128); an off-diagonal times the scalar 1 is
    the other one itself (``x * 1.0 == x`` exactly), without a new array."""
    dtype = np.result_type(b, c, np.float64)
    for one, other in ((c, b), (b, c)):
        if one.ndim == 0 and one.dtype.kind in "iuf" and one == 1 and other.ndim > 0:
            return other.astype(dtype, copy=False)
    return np.multiply(b, c, dtype=dtype)


def _off_diagonal(name: str, value, batch: int, n: int, squeeze: bool) -> np.ndarray:
    arr = _as_numeric(name, value)
    m = max(n - 1, 0)
    if arr.ndim == 0:
        return arr
    if arr.ndim == 1:
        if arr.shape[0] != m:
            raise ValueError(
                f"{name} has shape {arr.shape}; expected ({m},) (N - 1 for a of length N = {n})"
                + ("" if squeeze else f" or ({batch}, {m})")
            )
        return arr
    if arr.ndim == 2 and not squeeze:
        if arr.shape != (batch, m):
            raise ValueError(
                f"{name} has shape {arr.shape}; expected ({batch}, {m}) for a of shape "
                f"({batch}, {n}), or ({m},), or a scalar"
            )
        return arr
    raise ValueError(
        f"{name} has shape {arr.shape}; expected a scalar, ({m},)"
        + ("" if squeeze else f" or ({batch}, {m})")
    )


def check_out(out, problem: Problem) -> np.ndarray | None:
    """Validate a caller's ``out=`` array for ``G``; returns its ``(B, N)`` view.

    ``out`` must be a writeable, C-contiguous complex128 NumPy array of the
    shape of ``a`` that shares no memory with the inputs.
    """
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a NumPy array, got {type(out).__name__}")
    shape = (problem.n,) if problem.squeeze else (problem.batch, problem.n)
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}; expected {shape}, the shape of a")
    if out.dtype != np.complex128:
        raise TypeError(f"out must have dtype complex128, got {out.dtype}")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    inputs = [("a", problem.a), ("b * c", problem.k), ("z", problem.z), ("mask", problem.mask)]
    inputs += [(name, arr) for name, arr, _ in problem.deferred]
    for name, arr in inputs:
        if arr is not None and np.may_share_memory(out, arr):
            raise ValueError(f"out shares memory with the input {name}; pass a separate array")
    return out.reshape(problem.batch, problem.n)


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, choices))}")


def prepare(a, b, c, z=1j, mask=None, *, check_finite: bool = True,
            materialize: bool = True, defer_finite: bool = False) -> Problem:
    """Validate and normalise the inputs of the BK-Core functions.

    With ``materialize=False``, ``k = b * c`` given as a scalar or one row
    is returned as a read-only broadcast view (no ``(B, N - 1)`` array is
    built); the CPU kernels read it as it is.

    With ``defer_finite=True`` (and ``check_finite``) the finiteness of the
    arrays ``a``, ``b`` and ``c`` is not checked here but recorded in
    ``Problem.deferred``: the caller must call :meth:`Problem.finish_checks`
    after the kernel, before using its result. A kernel that reads every entry
    of ``a`` and ``k`` can verify them on the way (``x - x`` is 0 only for a
    finite ``x``; a non-finite ``b`` or ``c`` makes ``k = b * c`` non-finite),
    which saves a pass over the inputs; the full check runs only if it did not.
    Scalars and ``z`` are checked at once.

    Raises
    ------
    TypeError
        Non-numeric input.
    ValueError
        Wrong shapes, non-finite values (when ``check_finite``), or a mask
        with values other than 0 and 1.
    """
    a_arr = _as_numeric("a", a)
    if a_arr.ndim not in (1, 2):
        raise ValueError(f"a must have shape (N,) or (B, N); got shape {a_arr.shape}")
    squeeze = a_arr.ndim == 1
    a2 = a_arr[None, :] if squeeze else a_arr
    batch, n = a2.shape

    b2 = _off_diagonal("b", b, batch, n, squeeze)
    c2 = _off_diagonal("c", c, batch, n, squeeze)

    z_arr = _as_numeric("z", z)
    if z_arr.ndim == 0:
        z1 = np.full(batch, z_arr, dtype=np.complex128)
    elif z_arr.ndim == 1 and not squeeze and z_arr.shape[0] == batch:
        z1 = z_arr.astype(np.complex128)
    else:
        raise ValueError(
            f"z has shape {z_arr.shape}; expected a scalar"
            + ("" if squeeze else f" or one value per row, shape ({batch},)")
        )

    deferred = []
    if check_finite:
        for name, arr in (("a", a_arr), ("b", b2), ("c", c2)):
            if defer_finite and arr.ndim > 0:
                deferred.append((name, arr, not squeeze))
            else:
                _first_nonfinite(name, arr, not squeeze)
        _first_nonfinite("z", z_arr, not squeeze)

    a_out = _to_float(a2)
    # k = b * c: the only combination of the off-diagonals that enters G_ii.
    k_small = _product(b2, c2)
    k_dtype = np.complex128 if k_small.dtype.kind == "c" else np.float64
    if k_small.ndim == 2:
        k_out = np.ascontiguousarray(k_small, dtype=k_dtype)
    else:
        k_out = np.broadcast_to(k_small.astype(k_dtype, copy=False), (batch, max(n - 1, 0)))
        if materialize:
            k_out = np.ascontiguousarray(k_out)

    mask_out = None
    if mask is not None:
        m_arr = np.asarray(mask)
        if m_arr.dtype.kind not in "biuf":
            raise TypeError(f"mask must be boolean or 0/1 numeric, got dtype {m_arr.dtype}")
        if m_arr.ndim == 1 and m_arr.shape[0] == n:
            m_arr = np.broadcast_to(m_arr, (batch, n))
        elif not (m_arr.ndim == 2 and m_arr.shape == (batch, n) and not squeeze):
            raise ValueError(
                f"mask has shape {m_arr.shape}; expected ({n},)"
                + ("" if squeeze else f" or ({batch}, {n})")
                + " like a"
            )
        if m_arr.dtype.kind != "b":
            ok = (m_arr == 0) | (m_arr == 1)
            if not ok.all():
                idx = np.argwhere(~ok)[0]
                raise ValueError(
                    f"mask must contain only 0 and 1; found {m_arr[tuple(idx)].item()!r} at row "
                    f"{idx[0]}, position {idx[1]}"
                )
        mask_out = np.ascontiguousarray(m_arr, dtype=np.bool_)
    return Problem(a=a_out, k=k_out, z=z1, mask=mask_out, squeeze=squeeze,
                   deferred=tuple(deferred))
