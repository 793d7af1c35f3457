"""Public BK-Core functions: validate once, dispatch to a backend.

The kernels live in :mod:`bknumba.cpu` (``@njit(parallel=True)``) and
:mod:`bknumba.cuda` (``numba.cuda``); both are imported on first use, so
``import bknumba`` compiles nothing and never touches the CUDA driver.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import (
    DEVICES,
    METHODS,
    ON_SINGULAR,
    SEMANTICS,
    SEMANTICS_METHODS,
    Problem,
    check_choice,
    check_out,
    prepare,
)
from .errors import SingularResolventError

__all__ = ["bk_core", "sparse_bk_core", "theta_phi", "ThetaPhi"]


def _is_dask(x) -> bool:
    mod = type(x).__module__
    return mod.startswith("dask.") and hasattr(x, "chunks")


def _any_dask(*xs) -> bool:
    return any(_is_dask(x) for x in xs)


def _report_singular(first_bad: np.ndarray, n: int, g: np.ndarray, on_singular: str,
                     method: str) -> np.ndarray:
    """Raise, or set the affected rows to NaN, where a pivot came (near) zero."""
    rows = np.flatnonzero(first_bad < n)
    if rows.size == 0:
        return g
    if on_singular == "nan":
        g[rows] = np.nan
        return g
    r = int(rows[0])
    pos = int(first_bad[r])
    more = f" (and {rows.size - 1} other row(s))" if rows.size > 1 else ""
    if method == "ratio":
        detail = (
            f"a pivot of the ratio recursion (L, R or L + R - d) is (near) zero in batch row "
            f"{r} at position {pos}{more}: T - zI is singular or ill-conditioned there. "
            "If only a leading or trailing block is singular, method='theta_phi' may still "
            "succeed"
        )
    else:
        where = "" if pos >= n - 1 else f", or G leaves the float64 range at position {pos},"
        detail = (
            f"det(T - zI) = theta[N] is (near) zero{where} in batch row {r}{more}: "
            "T - zI is singular or ill-conditioned"
        )
    raise SingularResolventError(
        detail + "; pass on_singular='nan' to mark such rows NaN instead of raising.",
        rows=rows, positions=first_bad[rows],
    )


def _run_cpu(problem: Problem, method: str, rec_mask, combine_mask, out=None):
    """Full kernels (and "exact"); runs the finiteness checks that ``prepare``
    deferred, unless the kernels verified the rows while reading them."""
    fin = problem.fin_buffer()
    if method == "ratio":
        from .cpu.ratio import run_ratio

        res = run_ratio(problem.a, problem.k, problem.z, rec_mask, combine_mask, fin=fin,
                        out=out)
    else:
        from .cpu.theta_phi import run_theta_phi

        res = run_theta_phi(problem.a, problem.k, problem.z, rec_mask, combine_mask, fin=fin,
                            out=out)
    problem.finish_checks(fin)
    return res


def bk_core(a, b, c, z=1j, *, method="ratio", device="cpu", check_finite=True,
            on_singular="raise", out=None):
    """Diagonal of the resolvent ``G = (T - zI)^-1`` of tridiagonal matrices.

    ``G[..., i] = ((T - z I)^-1)[i, i]`` for ``T`` with main diagonal ``a``,
    super-diagonal ``b`` (``T[i, i+1]``) and sub-diagonal ``c``
    (``T[i+1, i]``), in complex128, without overflow at any ``N``.

    Parameters
    ----------
    a : array_like, (N,) or (B, N)
        Main diagonal, real or complex.
    b, c : array_like, scalar, (N - 1,) or (B, N - 1)
        Super- and sub-diagonal. Only ``b * c`` enters ``G``.
    z : complex or array_like (B,), default 1j
        Spectral shift, one for all rows or one per row.
    method : {"ratio", "theta_phi"}
        ``"ratio"``: pivots (recursive Green's function),
        ``G = 1 / (L + R - d)``. ``"theta_phi"``: the continuants
        ``G = theta * phi / theta[N]``, carried with a power-of-two scale.
    device : {"cpu", "cuda"}
        ``"cuda"`` runs the numba.cuda kernels (see :mod:`bknumba.cuda`).
    check_finite : bool, default True
        Raise ``ValueError`` on NaN or infinity in the input.
    on_singular : {"raise", "nan"}
        A (near-)zero pivot raises :class:`~bknumba.SingularResolventError`
        naming the batch row and position, or with ``"nan"`` sets only the
        affected rows to NaN.
    out : ndarray, optional
        Where to write ``G`` (CPU only): complex128, C-contiguous, writeable,
        the shape of ``a``, sharing no memory with the inputs; it is returned.
        Saves allocating (and, for large results, page-faulting) a new array
        in repeated calls. If the call raises, its contents are unspecified.

    Returns
    -------
    G : ndarray, complex128, shape of ``a`` (``out`` if given)

    Raises
    ------
    ValueError
        Inconsistent shapes, non-finite input, unknown option.
    TypeError
        Non-numeric input.
    SingularResolventError
        ``T - zI`` is (nearly) singular (``on_singular="raise"``).

    Examples
    --------
    >>> import numpy as np, bknumba
    >>> a = np.array([-2.0, -1.5, -2.5])
    >>> G = bknumba.bk_core(a, 1.0, 1.0, z=1j)
    >>> T = np.diag(a) + np.diag([1.0, 1.0], 1) + np.diag([1.0, 1.0], -1)
    >>> bool(np.allclose(G, np.diag(np.linalg.inv(T - 1j * np.eye(3)))))
    True
    """
    check_choice("method", method, METHODS)
    check_choice("device", device, DEVICES)
    check_choice("on_singular", on_singular, ON_SINGULAR)
    _out_cpu_only(out, device, a, b, c, z)
    if _any_dask(a, b, c, z):
        from ._dask import bk_core_dask

        return bk_core_dask(a, b, c, z, method=method, device=device,
                            check_finite=check_finite, on_singular=on_singular)
    if device == "cuda":
        from .gpu.api import bk_core_cuda

        return bk_core_cuda(a, b, c, z, method=method, check_finite=check_finite,
                            on_singular=on_singular)
    problem = prepare(a, b, c, z, check_finite=check_finite, materialize=False,
                      defer_finite=True)
    out2 = check_out(out, problem)
    g, first_bad = _run_cpu(problem, method, None, None, out2)
    g = _report_singular(first_bad, problem.n, g, on_singular, method)
    return out if out is not None else problem.restore(g)


def sparse_bk_core(a, b, c, mask, z=1j, *, semantics="local", method=None, device="cpu",
                   check_finite=True, on_singular="raise", out=None):
    """Resolvent diagonal at the positions a mask selects (sparse BK-Core).

    ``G`` is produced only where ``mask`` is 1 (True); masked positions are
    set to 0. Three semantics (``bk-core.md`` section 4):

    ``"seed"``
        The seeds' sparse theta/phi: a masked position ``i`` drops the
        coupling term of the step that produces it (``theta[i+1] = d[i]
        theta[i]``, ``phi[i-1] = d[i] phi[i]``), and
        ``G = theta * phi / theta[N]``, carried scaled. An approximation
        whose error is of order one (method ``"theta_phi"`` only).
    ``"local"``
        The pivots restart at masked positions (``L[i] = R[i] = d[i]``) and
        ``G = 1 / (L + R - d)``: segments between masked positions are
        independent (method ``"ratio"`` only).
    ``"exact"``
        The full recursions; ``G`` only at computed positions. No
        approximation (either method).

    Parameters
    ----------
    a, b, c, z : as in :func:`bk_core`
    mask : array_like of bool or 0/1, (N,) or (B, N)
        1 (True) = compute, 0 = skip; per element, never per batch.
    semantics : {"local", "seed", "exact"}
    method : {"ratio", "theta_phi"} or None
        None picks the semantics' own method (``seed``: theta_phi;
        ``local`` and ``exact``: ratio).
    device, check_finite, on_singular, out : as in :func:`bk_core`

    Returns
    -------
    G : ndarray, complex128, shape of ``a``; 0 where ``mask`` is 0.

    Examples
    --------
    >>> import numpy as np, bknumba
    >>> a = np.full(6, -2.0)
    >>> mask = np.array([1, 1, 0, 1, 1, 1], dtype=bool)
    >>> exact = bknumba.sparse_bk_core(a, 1.0, 1.0, mask, semantics="exact")
    >>> full = bknumba.bk_core(a, 1.0, 1.0)
    >>> bool(np.array_equal(exact[mask], full[mask])), complex(exact[2])
    (True, 0j)
    """
    check_choice("semantics", semantics, SEMANTICS)
    if method is None:
        method = SEMANTICS_METHODS[semantics][0]
    check_choice("method", method, METHODS)
    if method not in SEMANTICS_METHODS[semantics]:
        raise ValueError(
            f"semantics={semantics!r} is defined for method "
            f"{' or '.join(map(repr, SEMANTICS_METHODS[semantics]))}, not {method!r}"
        )
    check_choice("device", device, DEVICES)
    check_choice("on_singular", on_singular, ON_SINGULAR)
    _out_cpu_only(out, device, a, b, c, z, mask)
    if _any_dask(a, b, c, z, mask):
        from ._dask import sparse_bk_core_dask

        return sparse_bk_core_dask(a, b, c, mask, z, semantics=semantics, method=method,
                                   device=device, check_finite=check_finite,
                                   on_singular=on_singular)
    if device == "cuda":
        from .gpu.api import sparse_bk_core_cuda

        return sparse_bk_core_cuda(a, b, c, mask, z, semantics=semantics, method=method,
                                   check_finite=check_finite, on_singular=on_singular)
    if mask is None:
        raise ValueError("mask is required; use bk_core for the full computation")
    problem = prepare(a, b, c, z, mask, check_finite=check_finite, materialize=False,
                      defer_finite=True)
    out2 = check_out(out, problem)
    rec_mask = None if semantics == "exact" else problem.mask
    g, first_bad = _run_sparse_cpu(problem, method, rec_mask, problem.mask, out2)
    g = _report_singular(first_bad, problem.n, g, on_singular, method)
    return out if out is not None else problem.restore(g)


def _out_cpu_only(out, device, *inputs) -> None:
    if out is not None and (device != "cpu" or _any_dask(*inputs)):
        raise ValueError("out= is supported for device='cpu' with NumPy inputs only")


def _run_sparse_cpu(problem: Problem, method, rec_mask, combine_mask, out=None):
    """Sparse kernels: masked positions drop their coupling term and combine.

    "local" (ratio, ``rec_mask`` set) runs :func:`bknumba.cpu.ratio.run_local`
    (SIMD tiles with a select per lane, or walking the computed positions at
    high sparsity); "exact" and "seed" run the SIMD tiles with selects (the
    scalar tiles, which skip the masked work per element, for small batches).
    """
    if rec_mask is not None and method == "ratio":
        from .cpu.ratio import run_local

        fin = problem.fin_buffer()
        res = run_local(problem.a, problem.k, problem.z, rec_mask, out=out, fin=fin)
        problem.finish_checks(fin)  # a full check unless the kernel verified every row
        return res
    return _run_cpu(problem, method, rec_mask, combine_mask, out)


@dataclass(frozen=True)
class ThetaPhi:
    """Continuants in overflow-free form: ``value = mantissa * 2.0**exponent``.

    Attributes
    ----------
    theta_mantissa : ndarray complex128, (N + 1,) or (B, N + 1)
        ``theta[i]`` is the determinant of the leading ``i x i`` block of
        ``T - zI``; ``theta[N] = det(T - zI)``.
    theta_exponent : ndarray int64, same shape
    phi_mantissa : ndarray complex128, (N,) or (B, N)
        ``phi[i]`` is the determinant of the trailing block of rows
        ``i + 1 .. N - 1`` (``phi[N - 1] = 1``).
    phi_exponent : ndarray int64, same shape

    Mantissas are normalised so that ``max(|re|, |im|)`` lies in
    ``[0.5, 1)`` (exactly 0 for a zero value, with exponent 0).
    """

    theta_mantissa: np.ndarray
    theta_exponent: np.ndarray
    phi_mantissa: np.ndarray
    phi_exponent: np.ndarray

    @property
    def theta(self) -> np.ndarray:
        """theta as complex128 (overflows to inf / underflows to 0 past the range)."""
        return _ldexp_complex(self.theta_mantissa, self.theta_exponent)

    @property
    def phi(self) -> np.ndarray:
        """phi as complex128 (overflows to inf / underflows to 0 past the range)."""
        return _ldexp_complex(self.phi_mantissa, self.phi_exponent)

    def log_abs_theta(self) -> np.ndarray:
        """``log |theta|`` (natural log), finite for every nonzero entry."""
        return np.log(np.abs(self.theta_mantissa)) + self.theta_exponent * np.log(2.0)

    def log_abs_phi(self) -> np.ndarray:
        """``log |phi|`` (natural log), finite for every nonzero entry."""
        return np.log(np.abs(self.phi_mantissa)) + self.phi_exponent * np.log(2.0)

    def g(self) -> np.ndarray:
        """``G[i] = theta[i] * phi[i] / theta[N]``, reconstructed without overflow."""
        tm = self.theta_mantissa
        te = self.theta_exponent
        with np.errstate(divide="ignore", invalid="ignore"):
            mant = tm[..., :-1] * self.phi_mantissa / tm[..., -1:]
        return _ldexp_complex(mant, te[..., :-1] + self.phi_exponent - te[..., -1:])


def _ldexp_complex(mantissa, exponent):
    out = np.empty(np.shape(mantissa), dtype=np.complex128)
    with np.errstate(over="ignore", under="ignore"):
        out.real = np.ldexp(mantissa.real, exponent)
        out.imag = np.ldexp(mantissa.imag, exponent)
    return out


def _normalise(parts, shift):
    """(re, im, count) in scale-count form -> (complex mantissa, int64 exponent)."""
    re, im, count = parts
    _, e = np.frexp(np.maximum(np.abs(re), np.abs(im)))
    exponent = count.astype(np.int64) * shift + e
    mant = np.ldexp(re, -e) + 1j * np.ldexp(im, -e)
    return mant, exponent


def theta_phi(a, b, c, z=1j, *, mask=None, device="cpu", check_finite=True):
    """theta / phi continuants of ``T - zI``, overflow-free.

    Parameters
    ----------
    a, b, c, z : as in :func:`bk_core`
    mask : array_like of bool or 0/1, optional
        With a mask, the seeds' sparse recursions: a masked position ``i``
        drops the coupling term of the step that produces it
        (``bk-core.md`` section 4).
    device : {"cpu", "cuda"}
    check_finite : bool

    Returns
    -------
    ThetaPhi
        ``theta`` of length ``N + 1`` and ``phi`` of length ``N`` per row as
        mantissa and power-of-two exponent arrays; ``.g()`` reconstructs
        ``G = theta[:N] * phi / theta[N]``.

    Examples
    --------
    >>> import numpy as np, bknumba
    >>> tp = bknumba.theta_phi(np.full(2000, -2.0), 1.0, 1.0)   # raw values overflow
    >>> bool(np.isinf(tp.theta[-1])), int(tp.theta_exponent[-1])
    (True, 2115)
    >>> bool(np.allclose(tp.g(), bknumba.bk_core(np.full(2000, -2.0), 1.0, 1.0)))
    True
    """
    check_choice("device", device, DEVICES)
    if device == "cuda":
        from .gpu.api import theta_phi_cuda

        return theta_phi_cuda(a, b, c, z, mask=mask, check_finite=check_finite)
    from .cpu.theta_phi import SHIFT, run_theta_phi

    problem = prepare(a, b, c, z, mask, check_finite=check_finite)
    _, _, th_parts, ph_parts = run_theta_phi(problem.a, problem.k, problem.z, problem.mask,
                                             None, keep=True)
    tm, te = _normalise(th_parts, SHIFT)
    pm, pe = _normalise(ph_parts, SHIFT)
    r = problem.restore
    return ThetaPhi(r(tm), r(te), r(pm), r(pe))
