"""Inference kernels of the layers the model uses: Linear, Conv1d, LayerNorm, GELU, ReLU.

float32 Linear layers with their pass (:func:`linear`, :func:`linear_relu`,
:func:`linear_gelu`, :func:`linear_ln_gelu`) run as one Numba parallel region over
row blocks, each block a single-threaded GEMM of NumPy's own OpenBLAS followed by
the block's element pass (:mod:`bknumba.nn._fused`), so that one thread pool does
all the work: Numba's OpenMP workers and OpenBLAS's workers both spin while they
wait, and alternating the two pools costs more than it gains at these sizes
(measured: 0.84 ms became 3.7 ms on 2 cores); with one Numba thread and one
OpenBLAS thread, the same kernel as one serial block. Where that path does not
apply (float64, one Numba thread while OpenBLAS has more, small inputs, a NumPy
without its bundled OpenBLAS): NumPy
on BLAS (``matmul``) plus serial float32 Numba kernels (:mod:`bknumba.nn._kernels`)
for GELU, ReLU, LayerNorm and their fusions with the preceding Linear's bias. All of them
are pure functions of their arguments: inputs are never modified, the
output is a fresh array with the dtype of ``x`` (float32 like the model, or
float64). Intermediates (a GEMM's output before LayerNorm, the centred rows)
go to per-thread work arrays that are reused between calls (:func:`_scratch`).

Activations are kept channel-last, ``(..., C)``; :func:`conv1d` therefore takes
``(B, N, C_in)`` and returns ``(B, N, C_out)``, which is PyTorch's
``conv1d(x.transpose(1, 2)).transpose(1, 2)``.
"""
from __future__ import annotations

import math
import threading

import numpy as np

__all__ = ["linear", "conv1d", "layer_norm", "gelu", "relu", "softmax", "linear_ln_gelu", "mlp",
           "linear_gelu", "linear_relu"]


#: Work arrays up to this many bytes are reused between calls (see :func:`_scratch`).
SCRATCH_MAX_BYTES = 4 * 2**20
_SCRATCH = threading.local()


def _scratch(tag, shape, dtype=np.float32):
    """A C-contiguous work array of this thread, reused by every call with the
    same ``tag`` and dtype (a view of a buffer of the next power-of-two size, so
    varying shapes share a few buffers); never returned to a caller: its contents
    change on the next call. Arrays above ``SCRATCH_MAX_BYTES`` are allocated afresh.

    Why: a fresh megabyte-sized intermediate is returned to the operating system
    when freed, once a few are alive at the same time (glibc trims its heap), so
    every call pays the page faults again; on a virtual machine those cost more
    than the arithmetic (measured: three live 1 MiB arrays, allocated and filled,
    1.1 ms instead of 0.16 ms).
    """
    views = getattr(_SCRATCH, "views", None)
    if views is None:
        views = _SCRATCH.views = {}
        _SCRATCH.arrays = {}
    # the view last handed out for this request (one dict lookup: this runs on every
    # forward call, where each Python operation costs several times more than alone)
    request = (tag, shape, dtype)
    try:
        return views[request]
    except (KeyError, TypeError):  # TypeError: an unhashable shape (a list)
        pass
    shape = tuple(int(v) for v in shape)
    dtype = np.dtype(dtype)
    size = math.prod(shape)
    if size * dtype.itemsize > SCRATCH_MAX_BYTES:
        return np.empty(shape, dtype)
    cache = _SCRATCH.arrays
    cap = 1 << max(size - 1, 0).bit_length()
    key = (tag, dtype.str, cap)
    buf = cache.get(key)
    if buf is None:
        if len(cache) >= 16:  # at most 16 buffers per thread, each < 2 * SCRATCH_MAX_BYTES
            cache.clear()
            views.clear()
        buf = cache[key] = np.empty(cap, dtype)
    view = buf[:size].reshape(shape)
    if len(views) >= 64:
        views.clear()
    try:
        views[request] = view
    except TypeError:
        pass
    return view


def linear(x, weight, bias=None):
    """``x @ weight.T + bias`` over the last axis (``torch.nn.Linear``).

    Parameters
    ----------
    x : ndarray, (..., in_features)
    weight : ndarray, (out_features, in_features)
    bias : ndarray, (out_features,), optional

    Examples
    --------
    >>> import numpy as np
    >>> linear(np.ones((2, 3)), np.eye(3)[:2], np.array([1.0, -1.0]))
    array([[2., 0.],
           [2., 0.]])
    """
    lead = x.shape[:-1]
    y = _fused_rows(x, weight, bias, "BIAS")
    if y is not None:
        return y
    y = x.reshape(-1, x.shape[-1]) @ weight.T
    if bias is not None:
        if _fast32(y, bias) and bias.ndim == 1 and bias.flags.c_contiguous:
            _kernels().bias_add_(y, bias)  # 2.5x NumPy's broadcast add at (2048, 128)
        else:
            y += bias
    return y.reshape(*lead, weight.shape[0])


def conv1d(x, weight, bias=None):
    """Stride-1 convolution with zero "same" padding, channel-last.

    Equals ``torch.nn.Conv1d(C_in, C_out, K, padding=(K - 1) // 2)`` applied
    to ``x.transpose(1, 2)`` (odd ``K``), computed as one GEMM against all
    ``K`` taps followed by ``K`` shifted additions.

    Parameters
    ----------
    x : ndarray, (B, N, C_in)
    weight : ndarray, (C_out, C_in, K), PyTorch layout, ``K`` odd
    bias : ndarray, (C_out,), optional

    Returns
    -------
    ndarray, (B, N, C_out)

    Examples
    --------
    >>> import numpy as np
    >>> w = np.ones((1, 1, 3))          # moving sum over 3 tokens
    >>> conv1d(np.arange(4.0).reshape(1, 4, 1), w)[0, :, 0]
    array([1., 3., 6., 5.])
    """
    bsz, n, c_in = x.shape
    c_out, c_w, k = weight.shape
    if c_w != c_in:
        raise ValueError(f"conv1d: input has {c_in} channels, weight expects {c_w}")
    pad = (k - 1) // 2
    m = n + k - 1
    xp = np.zeros((bsz, m, c_in), dtype=x.dtype)
    xp[:, pad:pad + n] = x
    # one GEMM against all K taps at once, then K shifted adds (no im2col copy):
    # y[b, i, j, :] = xp[b, i] @ weight[:, :, j].T ; out[b, i] = sum_j y[b, i + j, j]
    wcat = np.ascontiguousarray(weight.transpose(1, 2, 0)).reshape(c_in, k * c_out)
    y = (xp.reshape(bsz * m, c_in) @ wcat).reshape(bsz, m, k, c_out)
    out = y[:, 0:n, 0].copy()
    for j in range(1, k):
        out += y[:, j:j + n, j]
    if bias is not None:
        out += bias
    return out


def layer_norm(x, weight, bias, eps=1e-5):
    """``torch.nn.LayerNorm`` over the last axis (biased variance, ``eps`` inside the root).

    Examples
    --------
    >>> import numpy as np
    >>> layer_norm(np.array([[1.0, 3.0]]), np.ones(2), np.zeros(2))
    array([[-0.999995,  0.999995]])
    >>> layer_norm(np.array([[1.0, 3.0]], np.float32), np.ones(2, np.float32),
    ...            np.zeros(2, np.float32)).round(4)
    array([[-1.,  1.]], dtype=float32)
    """
    if _fast32(x, weight, bias):
        out = np.empty(x.shape, dtype=np.float32)
        _ln_act(x, None, weight, bias, eps, out, False)
        return out
    return _layer_norm_np(x, weight, bias, eps)


def _layer_norm_np(x, weight, bias, eps):
    mean = x.mean(axis=-1, keepdims=True)
    xc = x - mean
    var = np.mean(xc * xc, axis=-1, keepdims=True)
    xc *= (1.0 / np.sqrt(var + x.dtype.type(eps))).astype(x.dtype, copy=False)
    xc *= weight
    xc += bias
    return xc


def _fast32(x, *params):
    """Whether the float32 Numba kernels apply (float32, C-contiguous, at least 2-D)."""
    return (x.dtype == np.float32 and x.ndim >= 2 and x.flags.c_contiguous
            and all(p is None or p.dtype == np.float32 for p in params))


def _bias32(bias, d):
    """``bias`` as a contiguous float32 vector, zeros when None (for the Numba kernels)."""
    return np.zeros(d, np.float32) if bias is None else np.ascontiguousarray(bias)


def _rowdot(c):
    """Row-wise ``sum(c * c)`` (``numpy.vecdot`` from NumPy 2.0, ``einsum`` before)."""
    vecdot = getattr(np, "vecdot", None)
    return vecdot(c, c) if vecdot is not None else np.einsum("ij,ij->i", c, c)


def _ln_act(x, bias_in, weight, bias, eps, out, act):
    """``out = act(LayerNorm(x + bias_in))`` for float32 ``x`` (``act``: GELU or identity).

    Row statistics on BLAS (sums by GEMV, centred squares by ``vecdot``), the
    element passes in Numba: centre, then scale, shift and GELU in one loop.
    ``out`` must not overlap ``x``.
    """
    k = _kernels()
    d = x.shape[-1]
    x2 = x.reshape(-1, d)
    bias_in = _bias32(bias_in, d)
    mean = x2 @ np.ones(d, dtype=np.float32)
    mean += bias_in.sum(dtype=np.float32)
    mean *= np.float32(1.0 / d)
    c = _scratch("ln.centred", x2.shape)
    k.center(x2, bias_in, mean, c)
    var = _rowdot(c).astype(np.float64)
    inv = (1.0 / np.sqrt(var / d + float(eps))).astype(np.float32)
    k.scale_act(c, inv, np.ascontiguousarray(weight), np.ascontiguousarray(bias),
                out.reshape(-1, d), bool(act))
    return out


def _matmul_scratch(tag, x, weight):
    """``x @ weight.T`` into a work array (:func:`_scratch`), shape ``(rows, out)``."""
    x2 = x.reshape(-1, x.shape[-1])
    return np.matmul(x2, weight.T, out=_scratch(tag, (x2.shape[0], weight.shape[0])))


def linear_ln_gelu(x, weight, bias, ln_weight, ln_bias, eps=1e-5, *, out=None):
    """``gelu(layer_norm(linear(x, weight, bias), ln_weight, ln_bias, eps))``, fused.

    float32: one BLAS GEMM without the bias (into a reused work array), the row
    means by a GEMV (the bias's mean added), one Numba pass that centres (adding
    the bias), the centred squares by ``vecdot``, and one Numba pass that
    scales, shifts and applies GELU into a fresh array (the result). With
    ``out`` (C-contiguous, of the result's shape and dtype) the result is
    written there instead, on every path.
    """
    if _fast32(x, weight, bias, ln_weight, ln_bias):
        y = _fused_rows(x, weight, bias, "LN_GELU", out, ln_weight, ln_bias, eps)
        if y is not None:
            return y
        y = _matmul_scratch("linear_ln_gelu", x, weight)
        # a separate output: in place, LLVM's runtime alias check sends the loops to scalar code
        if out is None:
            out = np.empty(x.shape[:-1] + (weight.shape[0],), dtype=np.float32)
        _ln_act(y, bias, ln_weight, ln_bias, eps, out, True)
        return out
    res = gelu(_layer_norm_np(linear(x, weight, bias), ln_weight, ln_bias, eps))
    if out is None:
        return res
    out[...] = res
    return out


def linear_gelu(x, weight, bias):
    """``gelu(linear(x, weight, bias))``, the bias added inside the GELU pass for float32."""
    if _fast32(x, weight, bias):
        y = _fused_rows(x, weight, bias, "GELU")
        if y is not None:
            return y
        y = _matmul_scratch("linear_gelu", x, weight)
        d = y.shape[-1]
        out = np.empty(x.shape[:-1] + (d,), dtype=np.float32)  # not in place: see linear_ln_gelu
        _kernels().bias_gelu(y, _bias32(bias, d), out.reshape(-1, d))
        return out
    return gelu(linear(x, weight, bias))


def relu(x):
    """``max(x, 0)`` in a new array.

    >>> relu(np.array([-1.0, 2.0]))
    array([0., 2.])
    """
    return np.maximum(x, x.dtype.type(0))


def _relu_(x, bias=None):
    """In-place ``relu(x + bias)`` on an array this package owns (``bias`` over the last axis).

    float32 C-contiguous arrays go through one vectorised Numba pass (NaN
    propagates, as in ``torch.relu``); others through NumPy.
    """
    if _fast32(x, bias):
        d = x.shape[-1]
        _kernels().bias_relu_(x.reshape(-1, d), _bias32(bias, d))
        return x
    if bias is not None:
        x += bias
    np.maximum(x, x.dtype.type(0), out=x)
    return x


def linear_relu(x, weight, bias):
    """``relu(linear(x, weight, bias))``, the bias added inside the ReLU pass for float32."""
    y = _fused_rows(x, weight, bias, "RELU")
    if y is not None:
        return y
    return _relu_(linear(x, weight), bias)


#: Activations of :func:`mlp`'s hidden layer, and the fused pass of each.
MLP_ACTIVATIONS = {"relu": "RELU", "gelu": "GELU", "ln_gelu": "LN_GELU"}


def mlp(x, weight1, bias1, act, weight2, bias2=None, *, ln_weight=None, ln_bias=None,
        eps=1e-5):
    """``linear(act(linear(x, weight1, bias1)), weight2, bias2)``: a two-layer block.

    ``act`` is ``"relu"``, ``"gelu"`` (exact erf) or ``"ln_gelu"`` (LayerNorm with
    ``ln_weight``, ``ln_bias``, ``eps``, then GELU). float32 C-contiguous input with
    enough rows runs as one parallel region, each thread's rows through both layers
    (:func:`bknumba.nn._fused.mlp_rows`); otherwise the two layers one after the other,
    with the same results to float32 round-off.

    Examples
    --------
    >>> import numpy as np
    >>> mlp(np.array([[1.0, -2.0]]), np.eye(2), None, "relu", np.ones((1, 2)), np.array([0.5]))
    array([[1.5]])
    """
    return _mlp(x, weight1, bias1, act, weight2, bias2, ln_weight, ln_bias, eps)[0]


def _mlp(x, weight1, bias1, act, weight2, bias2=None, ln_weight=None, ln_bias=None, eps=1e-5,
         check_finite=False):
    """``(mlp(...), finite)``: ``finite`` tells whether every value of ``x`` is finite
    (always True without ``check_finite``; on the fused path each thread tests its own
    rows). A non-finite input on the other path returns ``(None, False)`` at once; on
    the fused path the result is computed and is meaningless then."""
    if act not in MLP_ACTIVATIONS:
        raise ValueError(f"mlp: act must be one of {sorted(MLP_ACTIVATIONS)}, got {act!r}")
    if act == "ln_gelu" and (ln_weight is None or ln_bias is None):
        raise ValueError("mlp: act='ln_gelu' needs ln_weight and ln_bias")
    x2 = x.reshape(-1, x.shape[-1]) if x.ndim >= 2 else None
    hid, out_f = weight1.shape[0], weight2.shape[0]
    if (x2 is not None and _fast32(x2, weight1, bias1, weight2, bias2, ln_weight, ln_bias)
            and weight1.flags.c_contiguous and weight2.flags.c_contiguous
            and x2.shape[1] == weight1.shape[1] and weight2.shape[1] == hid):
        from . import _fused

        out = np.empty(x.shape[:-1] + (out_f,), dtype=np.float32)
        finite = _fused.mlp_rows(
            x2, weight1, _bias32(bias1, hid), getattr(_fused, MLP_ACTIVATIONS[act]),
            _scratch("mlp.hidden", (x2.shape[0], hid)), weight2, _bias32(bias2, out_f),
            _fused.BIAS, out.reshape(-1, out_f),
            None if ln_weight is None else np.ascontiguousarray(ln_weight),
            None if ln_bias is None else np.ascontiguousarray(ln_bias), eps, check_finite)
        if finite is not None:
            return out, finite
    if check_finite and not np.isfinite(x).all():
        return None, False
    if act == "relu":
        h = linear_relu(x, weight1, bias1)
    elif act == "gelu":
        h = linear_gelu(x, weight1, bias1)
    else:
        h = linear_ln_gelu(x, weight1, bias1, ln_weight, ln_bias, eps)
    return linear(h, weight2, bias2), True


def softmax(x, axis=-1):
    """Numerically stable softmax.

    >>> softmax(np.array([0.0, np.log(3.0)]))
    array([0.25, 0.75])
    """
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _fused_rows(x, weight, bias, mode, out=None, ln_weight=None, ln_bias=None, eps=1e-5):
    """The layer as one parallel region over row blocks (:mod:`bknumba.nn._fused`):
    the result (a fresh array, or ``out``), or None where that path does not apply
    (not float32 and C-contiguous, too few rows, one thread, library missing)."""
    x2 = x.reshape(-1, x.shape[-1]) if x.ndim >= 2 else None
    if (x2 is None or not _fast32(x2, weight, bias, ln_weight, ln_bias)
            or not weight.flags.c_contiguous or x2.shape[1] != weight.shape[1]):
        return None
    from . import _fused

    shape = x.shape[:-1] + (weight.shape[0],)
    res = np.empty(shape, dtype=np.float32) if out is None else out
    if not (res.flags.c_contiguous and res.dtype == np.float32 and res.shape == shape):
        return None
    if not _fused.linear_rows(x2, weight, bias, getattr(_fused, mode),
                              res.reshape(-1, weight.shape[0]), ln_weight, ln_bias, eps):
        return None
    return res


def _kernels():
    """The Numba kernels (:mod:`bknumba.nn._kernels`), imported (and compiled) on first use."""
    from . import _kernels as kernels

    return kernels


def gelu(x):
    """Exact (erf) GELU, ``0.5 x (1 + erf(x / sqrt 2))`` (``torch.nn.GELU()``).

    float64 input uses :func:`scipy.special.erf`. float32 input uses a
    vectorised Numba kernel (:mod:`bknumba.nn._kernels`): the Chebyshev-fitted
    ``erfc`` of Numerical Recipes (fractional error below 1.2e-7) in float32
    arithmetic with a written-out ``exp`` and an exact split of the ``-z**2``
    exponent; measured error against the float64 formula: <= 3e-8 of
    ``max |gelu|`` in absolute terms, <= 6e-7 relative where ``|gelu| > 1e-3``.

    Examples
    --------
    >>> import numpy as np
    >>> np.round(gelu(np.array([-1.0, 0.0, 1.0])), 6)
    array([-0.158655,  0.      ,  0.841345])
    """
    x = np.asarray(x)
    if x.dtype != np.float32:
        from scipy.special import erf

        x = x.astype(np.float64, copy=False)
        return 0.5 * x * (1.0 + erf(x * 0.7071067811865476))
    xf = np.ascontiguousarray(x).reshape(-1)
    out = np.empty(xf.size, dtype=np.float32)
    _kernels().gelu_flat(xf, out)
    return out.reshape(x.shape)
