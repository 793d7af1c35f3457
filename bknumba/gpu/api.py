"""GPU entry points behind ``bk_core(..., device="cuda")`` and friends.

Two kinds of input, told apart per call:

* **Host arrays** (NumPy arrays, lists, scalars): validated on the host by
  :func:`bknumba._validation.prepare` exactly as on the CPU, copied to the
  GPU, computed there, and the result comes back as a NumPy array.
* **Device arrays**: when ``a`` exposes ``__cuda_array_interface__`` (Numba
  device arrays, CuPy arrays, PyTorch CUDA tensors) it stays on the GPU and
  so does the result, a Numba device array (wrap it without a copy with
  ``cupy.asarray(G)`` or ``torch.as_tensor(G, device="cuda")``). ``a`` must
  then be float64 or complex128 and C-contiguous; ``b``, ``c``, ``z`` and
  ``mask`` may be device arrays, host arrays or scalars. Only the per-row
  singular-pivot flags (``B`` integers) are copied to the host.

Errors are those of the CPU engine: ``ValueError`` / ``TypeError`` for bad
inputs (messages name the shapes), :class:`~bknumba.SingularResolventError`
for (near-)zero pivots, or NaN rows with ``on_singular="nan"``.
"""
from __future__ import annotations

import numpy as np

from .. import _validation as _v
from . import KERNELS, options

__all__ = ["bk_core_cuda", "sparse_bk_core_cuda", "theta_phi_cuda", "choose_kernel",
           "compute"]

_DUMMIES: dict = {}


def _cuda():
    """``numba.cuda``, or a RuntimeError saying why the GPU cannot be used."""
    try:
        from numba import cuda
    except Exception as exc:  # pragma: no cover - depends on the installation
        raise RuntimeError(
            "device='cuda' needs numba-cuda (pip install 'bknumba[cuda]'), which could not "
            f"be imported: {exc}"
        ) from exc
    try:
        ok = cuda.is_available()
    except Exception as exc:  # pragma: no cover
        ok = False
        why = f" ({exc})"
    else:
        why = ""
    if not ok:
        raise RuntimeError(
            "device='cuda' was requested but no CUDA GPU is usable here" + why + "; use "
            "device='cpu', or set NUMBA_ENABLE_CUDASIM=1 (before numba is imported) to run "
            "the kernels in Numba's CUDA simulator"
        )
    return cuda


def _dummies(cuda):
    if not _DUMMIES:
        _DUMMIES["maps"] = cuda.device_array((1, 1, 18), dtype=np.float64)
        _DUMMIES["thn"] = cuda.device_array((1, 3), dtype=np.float64)
        _DUMMIES["th"] = cuda.device_array((3, 1, 1), dtype=np.float64)
        _DUMMIES["cnt"] = cuda.device_array((1, 1), dtype=np.float64)
        _DUMMIES["mask"] = cuda.to_device(np.ones((1, 1), dtype=np.uint8))
        _DUMMIES["out"] = cuda.device_array((1, 1), dtype=np.complex128)
    return _DUMMIES


def _is_device(x) -> bool:
    return (not isinstance(x, np.ndarray)) and (
        hasattr(x, "__cuda_array_interface__") or bool(getattr(x, "__cuda_ndarray__", False))
    )


def _as_device(cuda, x):
    if getattr(x, "__cuda_ndarray__", False):
        return x
    return cuda.as_cuda_array(x)


def choose_kernel(kernel: str, batch: int, n: int) -> str:
    """Resolve ``kernel`` (``"auto"``, ``"batch"``, ``"sequence"``) for a shape.

    ``"auto"`` takes ``BKNUMBA_CUDA_KERNEL`` when that names a kernel, else
    the sequence-parallel kernel: on the H100 it was faster than one thread
    per row at every shape measured, 1.9x at ``B = 2**16`` and 5x at
    ``B = 2**18`` (``docs/benchmarks-cuda.md``); its fused form already
    processes many short rows per block, one chunk per thread.
    """
    _v.check_choice("kernel", kernel, KERNELS)
    if kernel == "auto":
        kernel = options["kernel"]
    if kernel != "auto":
        return kernel
    return "sequence"


# --------------------------------------------------------------------------- small kernels
_SMALL_KERNELS: dict = {}


def _small(cuda):
    """Element-wise helper kernels (module imported, and compiled, on first use)."""
    if not _SMALL_KERNELS:
        from . import _small as sk

        _SMALL_KERNELS.update(fill=sk.fill, first_nonfinite_blocks=sk.first_nonfinite_blocks,
                              mask_check=sk.mask_check, mul_k=sk.mul_k,
                              nan_rows=sk.nan_rows, normalise=sk.normalise)
    return _SMALL_KERNELS


def _grid2(shape, tb=(8, 32)):
    """Launch shape for the 2-D helper kernels, which stride over the grid.

    CUDA limits grid.y to 65535 blocks, so the grid is capped and each
    thread loops (grid-stride) over the rows and positions beyond it.
    """
    gx = min(max(1, -(-shape[0] // tb[0])), 2**31 - 1)
    gy = min(max(1, -(-shape[1] // tb[1])), 65535)
    return (gx, gy), tb


# --------------------------------------------------------------------------- validation
class _DeviceProblem:
    """Validated device inputs: a (B, N), k (B, N-1), z (B,), mask (B, N) uint8 or None."""

    def __init__(self, a, k, z, mask, squeeze):
        self.a, self.k, self.z, self.mask, self.squeeze = a, k, z, mask, squeeze

    @property
    def batch(self):
        return self.a.shape[0]

    @property
    def n(self):
        return self.a.shape[1]


#: Most blocks per array of the finiteness check (each strides over the rest).
_NF_BLOCKS = 1024


def _check_device_finite(cuda, items):
    """Raise on the first NaN or infinity of each ``(name, device array, batched)``.

    One launch per array (:func:`~bknumba.gpu._small.first_nonfinite_blocks`,
    one flag per block, no initialisation) and one copy of all the flags back:
    one synchronisation for every array checked.
    """
    from ._small import NF_THREADS

    items = [it for it in items if it[1].size]
    if not items:
        return
    nblocks = [min(_NF_BLOCKS, -(-arr.size // NF_THREADS)) for _, arr, _ in items]
    flags = cuda.device_array(sum(nblocks), dtype=np.int64)
    kern = _small(cuda)["first_nonfinite_blocks"]
    off = 0
    for (_, arr, _), nb in zip(items, nblocks):
        kern[nb, NF_THREADS](arr.reshape(arr.size), flags[off:off + nb])
        off += nb
    host = flags.copy_to_host()
    off = 0
    for (name, arr, batched), nb in zip(items, nblocks):
        idx = int(host[off:off + nb].min())
        off += nb
        if idx >= arr.size:
            continue
        if arr.ndim == 2:
            r, i = divmod(idx, arr.shape[1])
            where = f" at row {r}, position {i}" if batched else f" at position {i}"
        else:
            where = f" at position {idx}"
        value = arr.reshape(arr.size)[idx:idx + 1].copy_to_host()[0].item()
        raise ValueError(
            f"{name} contains a non-finite value ({value!r}){where}; "
            "pass check_finite=False to skip this check"
        )


def _is_unit(x) -> bool:
    """Whether ``x`` is the real host scalar 1 (then ``b * c`` is the other factor)."""
    return (isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)
            and x == 1)


def _device_offdiag(cuda, name, value, batch, n, squeeze, check_finite, checks):
    """b or c as a device array of shape (1 or B, 1 or N - 1).

    Device arrays are queued in ``checks`` for the finiteness check (when
    ``check_finite``); host values are checked here.
    """
    m = max(n - 1, 0)
    if _is_device(value):
        arr = _as_device(cuda, value)
        if arr.dtype.kind not in "fc" or arr.dtype.itemsize not in (8, 16):
            raise TypeError(
                f"{name} is a device array of dtype {arr.dtype}; device inputs must be float64 "
                "or complex128"
            )
        if arr.ndim == 1 and arr.shape[0] == m:
            out = arr.reshape(1, m) if arr.is_c_contiguous() else None
        elif arr.ndim == 2 and not squeeze and tuple(arr.shape) == (batch, m):
            out = arr
        elif arr.ndim == 0:
            out = cuda.to_device(np.asarray(arr.copy_to_host()).reshape(1, 1))
        else:
            raise ValueError(
                f"{name} has shape {tuple(arr.shape)}; expected a scalar, ({m},)"
                + ("" if squeeze else f" or ({batch}, {m})")
            )
        if out is None or not out.is_c_contiguous():
            raise ValueError(f"{name} must be a C-contiguous device array")
        if check_finite:
            checks.append((name, out, not squeeze))
        return out
    host = _v._as_numeric(name, value)
    if host.ndim == 0:
        h = host.reshape(1, 1)
    else:
        _v._off_diagonal(name, host, batch, n, squeeze)  # raises on a bad shape
        h = host.reshape(1, m) if host.ndim == 1 else host
    h = _v._to_float(h)
    if check_finite:
        _v._first_nonfinite(name, h if not squeeze else h[0], not squeeze)
    return cuda.to_device(h)


#: Device copies of scalar ``z`` broadcast to ``B`` rows, by ``(z, B)`` (read-only).
_Z_CACHE: dict = {}


def _device_z(cuda, z1, batch, scalar):
    """``z1`` (host, ``(B,)`` complex128) on the device; scalar values are cached."""
    if not scalar:
        return cuda.to_device(z1)
    key = (complex(z1[0]) if batch else 0j, batch)
    hit = _Z_CACHE.get(key)
    if hit is None:
        if len(_Z_CACHE) >= 16:
            _Z_CACHE.pop(next(iter(_Z_CACHE)))
        hit = _Z_CACHE[key] = cuda.to_device(z1)
    return hit


def _prepare_device(cuda, a, b, c, z, mask, check_finite) -> _DeviceProblem:
    a_d = _as_device(cuda, a)
    if a_d.dtype not in (np.float64, np.complex128):
        raise TypeError(
            f"a is a device array of dtype {a_d.dtype}; device inputs must be float64 or "
            "complex128 (convert on the device first, e.g. a.astype(float64))"
        )
    if a_d.ndim not in (1, 2):
        raise ValueError(f"a must have shape (N,) or (B, N); got shape {tuple(a_d.shape)}")
    if not a_d.is_c_contiguous():
        raise ValueError("a must be a C-contiguous device array (e.g. tensor.contiguous())")
    squeeze = a_d.ndim == 1
    a2 = a_d.reshape(1, a_d.shape[0]) if squeeze else a_d
    batch, n = a2.shape
    m = max(n - 1, 0)
    checks = [("a", a2, not squeeze)] if check_finite else []
    # b * c: when one factor is the scalar 1 and the other already has k's shape and
    # dtype, k is that array (no allocation, no pass over memory)
    b2 = None if _is_unit(b) else _device_offdiag(cuda, "b", b, batch, n, squeeze,
                                                  check_finite, checks)
    c2 = None if _is_unit(c) else _device_offdiag(cuda, "c", c, batch, n, squeeze,
                                                  check_finite, checks)
    if check_finite:
        _check_device_finite(cuda, checks)
    other = c2 if b2 is None else b2 if c2 is None else None
    if (other is not None and tuple(other.shape) == (batch, m)
            and other.dtype in (np.float64, np.complex128)):
        k = other
    else:
        one = cuda.to_device(np.ones((1, 1)))
        b2 = one if b2 is None else b2
        c2 = one if c2 is None else c2
        cplx = b2.dtype.kind == "c" or c2.dtype.kind == "c"
        k = cuda.device_array((batch, m), dtype=np.complex128 if cplx else np.float64)
        if batch and m:
            grid, tb = _grid2((batch, m))
            _small(cuda)["mul_k"][grid, tb](b2, c2, k)
    # z: B values at most; validated on the host
    z_host = _as_device(cuda, z).copy_to_host() if _is_device(z) else z
    z_arr = _v._as_numeric("z", z_host)
    if z_arr.ndim == 0:
        z1 = np.full(batch, z_arr, dtype=np.complex128)
    elif z_arr.ndim == 1 and not squeeze and z_arr.shape[0] == batch:
        z1 = z_arr.astype(np.complex128)
    else:
        raise ValueError(
            f"z has shape {z_arr.shape}; expected a scalar"
            + ("" if squeeze else f" or one value per row, shape ({batch},)")
        )
    if check_finite:
        _v._first_nonfinite("z", z_arr, not squeeze)
    z_d = _device_z(cuda, z1, batch, z_arr.ndim == 0)
    mask_d = None
    if mask is not None:
        if _is_device(mask):
            md = _as_device(cuda, mask)
            if md.dtype.kind not in "biuf":
                raise TypeError(f"mask must be boolean or 0/1 numeric, got dtype {md.dtype}")
        else:
            mh = np.asarray(mask)
            if mh.dtype.kind not in "biuf":
                raise TypeError(f"mask must be boolean or 0/1 numeric, got dtype {mh.dtype}")
            md = cuda.to_device(np.ascontiguousarray(mh))
        if md.ndim == 1 and md.shape[0] == n and md.is_c_contiguous():
            md2 = md.reshape(1, n)
        elif md.ndim == 2 and tuple(md.shape) == (batch, n) and not squeeze:
            md2 = md
        else:
            raise ValueError(
                f"mask has shape {tuple(md.shape)}; expected ({n},)"
                + ("" if squeeze else f" or ({batch}, {n})") + " like a"
            )
        if md2.dtype == np.bool_ and tuple(md2.shape) == (batch, n) and md2.is_c_contiguous():
            mask_d = md2  # 0/1 by construction: used as is, no check, no copy
        else:
            mask_d = cuda.device_array((batch, n), dtype=np.uint8)
            res = cuda.to_device(np.array([batch * n + 1], dtype=np.int64))
            if batch and n:
                grid, tb = _grid2((batch, n))
                _small(cuda)["mask_check"][grid, tb](md2, mask_d, res)
            bad = int(res.copy_to_host()[0])
            if bad <= batch * n:
                r, i = divmod(bad, n)
                value = md2[r:r + 1, i:i + 1].copy_to_host()[0, 0].item()
                raise ValueError(
                    f"mask must contain only 0 and 1; found {value!r} at row {r}, position {i}"
                )
    return _DeviceProblem(a2, k, z_d, mask_d, squeeze)


# --------------------------------------------------------------------------- driver
def compute(a, k, z, mask, *, method, rec, comb, kernel="auto", keep=False, out=None):
    """Run the kernels on validated device arrays; no host transfer of ``G``.

    Parameters
    ----------
    a, k, z : device arrays ``(B, N)``, ``(B, N - 1)``, ``(B,)`` complex128.
    mask : device ``(B, N)`` bool or uint8, or None.
    method : {"ratio", "theta_phi"}
    rec, comb : bool
        The mask restarts the recursions (``rec``) / hides the combine step.
    kernel : {"auto", "batch", "sequence"}
    keep : bool
        theta/phi parts instead of ``G`` (sequence kernel, ``method="theta_phi"``).
    out : device ``(B, N)`` complex128, optional
        Where to write ``G`` (allocated when None).

    Returns
    -------
    (out, bad) : device ``(B, N)`` complex128 and ``(B,)`` int64 (first
        bad position per row, ``N`` if none); with ``keep``,
        ``((theta_parts, phi_parts), bad)``.
    """
    cuda = _cuda()
    from .batch import run_batch
    from .sequence import run_sequence

    dm = _dummies(cuda)
    batch, n = a.shape
    theta = method == "theta_phi"
    bad = cuda.device_array(batch, dtype=np.int64)
    if batch:
        _small(cuda)["fill"][max(1, -(-batch // 256)), 256](bad, n)
    mask_arg = mask if mask is not None else dm["mask"]
    rec = bool(rec and mask is not None)
    comb = bool(comb and mask is not None)
    which = "sequence" if keep else choose_kernel(kernel, batch, n)
    tpb = options["threads_per_block"]
    if keep:
        th = cuda.device_array((3, batch, n + 1), dtype=np.float64)
        ph = cuda.device_array((3, batch, n), dtype=np.float64)
        if batch and n:
            run_sequence(a, k, z, mask_arg, rec, comb, True, dm["out"], bad,
                         keep_arrays=(th, ph), chunk=options["chunk"], tpb=tpb,
                         rtol=options["pivot_rtol"], dummies=dm)
        elif batch:  # N = 0: theta[0] = 1, det of the empty matrix
            th_h = np.zeros((3, batch, 1))
            th_h[0] = 1.0
            th = cuda.to_device(th_h)
        return (th, ph), bad
    if out is None:
        out = cuda.device_array((batch, n), dtype=np.complex128)
    elif tuple(out.shape) != (batch, n) or out.dtype != np.complex128:
        raise ValueError(f"out must be ({batch}, {n}) complex128, got {tuple(out.shape)} "
                         f"{out.dtype}")
    if batch == 0 or n == 0:
        return out, bad
    if which == "batch":
        run_batch(a, k, z, mask_arg, rec, comb, theta, out, bad, tpb=tpb,
                  rtol=options["pivot_rtol"], dummies=dm)
    else:
        run_sequence(a, k, z, mask_arg, rec, comb, theta, out, bad, chunk=options["chunk"],
                     tpb=tpb, rtol=options["pivot_rtol"], dummies=dm)
    return out, bad


def _run(a, b, c, z, mask, *, method, rec, comb, check_finite, on_singular, kernel):
    from ..core import _report_singular

    cuda = _cuda()
    _v.check_choice("kernel", kernel, KERNELS)
    if _is_device(a):
        dp = _prepare_device(cuda, a, b, c, z, mask, check_finite)
        out, bad = compute(dp.a, dp.k, dp.z, dp.mask, method=method, rec=rec, comb=comb,
                           kernel=kernel)
        bad_h = bad.copy_to_host()
        if on_singular == "nan":
            if (bad_h < dp.n).any():
                grid, tb = _grid2(out.shape)
                _small(cuda)["nan_rows"][grid, tb](out, bad)
        else:
            _report_singular(bad_h, dp.n, None, on_singular, method)
        return out.reshape(dp.n) if dp.squeeze else out
    problem = _v.prepare(a, b, c, z, mask, check_finite=check_finite)
    a_d = cuda.to_device(problem.a)
    k_d = cuda.to_device(problem.k)
    z_d = cuda.to_device(problem.z)
    m_d = cuda.to_device(problem.mask) if problem.mask is not None else None
    out, bad = compute(a_d, k_d, z_d, m_d, method=method, rec=rec, comb=comb, kernel=kernel)
    g = out.copy_to_host()
    g = _report_singular(bad.copy_to_host(), problem.n, g, on_singular, method)
    return problem.restore(g)


def bk_core_cuda(a, b, c, z, *, method, check_finite, on_singular, kernel="auto"):
    """:func:`bknumba.bk_core` on the GPU (options already checked by the caller).

    Parameters
    ----------
    a, b, c, z, method, check_finite, on_singular : as in :func:`bknumba.bk_core`
    kernel : {"auto", "batch", "sequence"}
        ``"batch"``: one thread per row; ``"sequence"``: rows cut into
        chunks combined by a scan; ``"auto"``: ``BKNUMBA_CUDA_KERNEL`` or a
        choice from the shape (:func:`choose_kernel`).

    Returns
    -------
    G : complex128, shape of ``a``; NumPy for host input, a Numba device
        array for device input.
    """
    return _run(a, b, c, z, None, method=method, rec=False, comb=False,
                check_finite=check_finite, on_singular=on_singular, kernel=kernel)


def sparse_bk_core_cuda(a, b, c, mask, z, *, semantics, method, check_finite, on_singular,
                        kernel="auto"):
    """:func:`bknumba.sparse_bk_core` on the GPU; ``G`` is 0 where ``mask`` is 0.

    Parameters and returns as in :func:`bk_core_cuda` plus ``mask`` and
    ``semantics`` (``"seed"``, ``"local"``, ``"exact"``) as in
    :func:`bknumba.sparse_bk_core`.
    """
    if mask is None:
        raise ValueError("mask is required; use bk_core for the full computation")
    _v.check_choice("semantics", semantics, _v.SEMANTICS)
    rec = semantics != "exact"
    return _run(a, b, c, z, mask, method=method, rec=rec, comb=True,
                check_finite=check_finite, on_singular=on_singular, kernel=kernel)


def theta_phi_cuda(a, b, c, z, *, mask, check_finite):
    """:func:`bknumba.theta_phi` on the GPU (sequence-parallel kernels).

    Returns
    -------
    bknumba.ThetaPhi
        NumPy arrays for host input; for device input the four fields are
        Numba device arrays (``.copy_to_host()``), and the convenience
        properties of :class:`~bknumba.ThetaPhi`, which use NumPy, need host
        arrays.
    """
    from ..core import ThetaPhi, _normalise
    from .sequence import SHIFT

    cuda = _cuda()
    if _is_device(a):
        dp = _prepare_device(cuda, a, b, c, z, mask, check_finite)
        (th, ph), _ = compute(dp.a, dp.k, dp.z, dp.mask, method="theta_phi", rec=True,
                              comb=False, keep=True)
        fields = []
        for parts in (th, ph):
            _, rows, cols = parts.shape
            mant = cuda.device_array((rows, cols), dtype=np.complex128)
            expo = cuda.device_array((rows, cols), dtype=np.int64)
            if rows and cols:
                grid, tb = _grid2((rows, cols))
                _small(cuda)["normalise"][grid, tb](parts, mant, expo)
            if dp.squeeze:
                mant, expo = mant.reshape(cols), expo.reshape(cols)
            fields += [mant, expo]
        return ThetaPhi(*fields)
    problem = _v.prepare(a, b, c, z, mask, check_finite=check_finite)
    a_d = cuda.to_device(problem.a)
    k_d = cuda.to_device(problem.k)
    z_d = cuda.to_device(problem.z)
    m_d = cuda.to_device(problem.mask) if problem.mask is not None else None
    (th, ph), _ = compute(a_d, k_d, z_d, m_d, method="theta_phi", rec=True, comb=False,
                          keep=True)
    tm, te = _normalise(tuple(th.copy_to_host()), SHIFT)
    pm, pe = _normalise(tuple(ph.copy_to_host()), SHIFT)
    r = problem.restore
    return ThetaPhi(r(tm), r(te), r(pm), r(pe))
