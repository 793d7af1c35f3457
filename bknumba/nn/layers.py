"""Inference kernels of the layers the model uses: Linear, Conv1d, LayerNorm, GELU, ReLU.

Plain NumPy on BLAS (``matmul``) plus one Numba kernel for GELU. All of them
are pure functions of their arguments: inputs are never modified, and the
output has the dtype of ``x`` (float32 like the model, or float64).

Activations are kept channel-last, ``(..., C)``; :func:`conv1d` therefore takes
``(B, N, C_in)`` and returns ``(B, N, C_out)``, which is PyTorch's
``conv1d(x.transpose(1, 2)).transpose(1, 2)``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["linear", "conv1d", "layer_norm", "gelu", "relu", "softmax"]


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
    y = x.reshape(-1, x.shape[-1]) @ weight.T
    if bias is not None:
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
    if x.dtype == np.float32 and x.flags.c_contiguous and x.ndim >= 2:
        out = np.empty_like(x)
        d = x.shape[-1]
        _kernels()[1](x.reshape(-1, d), weight, bias, float(eps), out.reshape(-1, d))
        return out
    mean = x.mean(axis=-1, keepdims=True)
    xc = x - mean
    var = np.mean(xc * xc, axis=-1, keepdims=True)
    xc *= (1.0 / np.sqrt(var + x.dtype.type(eps))).astype(x.dtype, copy=False)
    xc *= weight
    xc += bias
    return xc


def relu(x):
    """``max(x, 0)`` in a new array.

    >>> relu(np.array([-1.0, 2.0]))
    array([0., 2.])
    """
    return np.maximum(x, x.dtype.type(0))


def _relu_(x):
    """In-place ReLU on an array this package owns."""
    np.maximum(x, x.dtype.type(0), out=x)
    return x


def softmax(x, axis=-1):
    """Numerically stable softmax.

    >>> softmax(np.array([0.0, np.log(3.0)]))
    array([0.25, 0.75])
    """
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


_KERNELS = None

_CHUNK = 512


def _kernels():
    """Compile (once) the float32 GELU and LayerNorm kernels.

    GELU uses the Chebyshev-fitted ``erfc`` of Numerical Recipes (fractional
    error < 1.2e-7) and an ``exp`` written out (Cody-Waite reduction, degree-9
    Taylor polynomial, exponent bits set through an int64 view) so that LLVM
    vectorises the loop; no libm call, no full-size temporaries.
    """
    global _KERNELS
    if _KERNELS is None:
        import numba

        @numba.njit(fastmath=True, cache=True, nogil=True)
        def _gelu32(xf, of):  # pragma: no cover - compiled
            n = xf.size
            bits = np.empty(_CHUNK, dtype=np.int64)
            scale = bits.view(np.float64)
            red = np.empty(_CHUNK)
            tt = np.empty(_CHUNK)
            for s0 in range(0, n, _CHUNK):
                m = min(_CHUNK, n - s0)
                for j in range(m):
                    zz = abs(np.float64(xf[s0 + j])) * 0.7071067811865476
                    ti = 1.0 / (1.0 + 0.5 * zz)
                    a = -zz * zz - 1.26551223 + ti * (
                        1.00002368 + ti * (0.37409196 + ti * (0.09678418 + ti * (
                            -0.18628806 + ti * (0.27886807 + ti * (-1.13520398 + ti * (
                                1.48851587 + ti * (-0.82215223 + ti * 0.17087277))))))))
                    a = max(a, -700.0)
                    k = np.floor(a * 1.4426950408889634 + 0.5)
                    r = a - k * 0.6931471803691238 - k * 1.9082149292705877e-10
                    p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6 + r * (1.0 / 24 + r * (
                        1.0 / 120 + r * (1.0 / 720 + r * (1.0 / 5040 + r * (
                            1.0 / 40320 + r * (1.0 / 362880)))))))))
                    bits[j] = (np.int64(k) + 1023) << 52
                    red[j] = p
                    tt[j] = ti
                for j in range(m):
                    v = np.float64(xf[s0 + j])
                    half_erfc = 0.5 * tt[j] * red[j] * scale[j]   # 0.5 * erfc(|v| / sqrt 2)
                    of[s0 + j] = v * (1.0 - half_erfc) if v >= 0 else v * half_erfc

        @numba.njit(fastmath=True, cache=True, nogil=True)
        def _layer_norm(x2, w, b, eps, out):  # pragma: no cover - compiled
            rows, d = x2.shape
            for i in range(rows):
                acc = 0.0
                for j in range(d):
                    acc += x2[i, j]
                mean = acc / d
                acc = 0.0
                for j in range(d):
                    c = x2[i, j] - mean
                    acc += c * c
                inv = 1.0 / np.sqrt(acc / d + eps)
                for j in range(d):
                    out[i, j] = (x2[i, j] - mean) * inv * w[j] + b[j]

        _KERNELS = (_gelu32, _layer_norm)
    return _KERNELS


def gelu(x):
    """Exact (erf) GELU, ``0.5 x (1 + erf(x / sqrt 2))`` (``torch.nn.GELU()``).

    float64 input uses :func:`scipy.special.erf`. float32 input uses the
    Chebyshev-fitted ``erfc`` of Numerical Recipes (fractional error below
    1.2e-7, i.e. float32 round-off) evaluated in float64, with NumPy's SIMD
    ``exp``; measured relative error against the float64 formula <= 2e-7.

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
    _kernels()[0](xf, out)
    return out.reshape(x.shape)
