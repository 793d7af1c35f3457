"""Numba kernels of :mod:`bknumba.nn.layers` (imported on first use, never at ``import bknumba``).

float32 only (float64 activations take the NumPy/SciPy path of ``layers``).
Every kernel is compiled with the package's serial options
(:func:`bknumba._config.serial_jit_kwargs`, i.e. no ``fastmath``) and
``error_model="numpy"`` (no division-by-zero branch), which is what lets LLVM
vectorise the element loops (16 float32 lanes with AVX-512): there is no libm
call in the loops, the exponential is written out and its ``2**k`` factor is
built from the exponent bits through a bit cast.

GELU
    ``x * Phi(x)``. With ``u = |x|``, ``h = Phi(-u) = erfc(u / sqrt 2) / 2``
    and GELU is ``x (1 - h)`` for ``x >= 0`` and ``x h`` otherwise.
    ``erfc(z) = t exp(-z**2 + P(t))``, ``t = 1 / (1 + z / 2)``, ``P`` the
    degree-9 Chebyshev fit of Numerical Recipes (``erfc`` fractional error
    below 1.2e-7 for all ``z >= 0``). In float32 the ``-z**2`` term is the
    only large part of the exponent: it is split as ``-uh**2 / 2`` (exact,
    ``uh`` = ``u`` rounded to 12 bits) plus a small correction, so the
    relative error of ``h`` stays at a few float32 ulps even where ``h`` is
    small (measured: relative error of GELU <= 6e-7 where ``|GELU| > 1e-3``,
    absolute error <= 3e-8 * max|GELU|; checked against ``scipy.special.erf``
    in ``tests/test_nn.py``). ``u`` is clipped at 13 (``h < 1e-38`` beyond).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from .._config import parallel_jit_kwargs, serial_jit_kwargs

_F = np.float32
_SERIAL = dict(error_model="numpy", **serial_jit_kwargs())
_PARALLEL = dict(error_model="numpy", **parallel_jit_kwargs())

#: Rows per task of the parallel drivers.
ROW_BLOCK = 64


@intrinsic
def _bits_as_f32(typingctx, v):
    """Reinterpret the bits of an int32 as a float32 (vectorises to nothing)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@njit(inline="always", **_SERIAL)
def _exp_sum(hi, lo):  # pragma: no cover - compiled
    """``exp(hi + lo)`` in float32, ``hi`` exact, ``|lo|`` small, ``-87 < hi + lo <= 0``.

    Cody-Waite reduction ``r = hi + lo - k ln 2`` (``k ln2_hi`` exact: 9-bit
    ``ln2_hi``; ``hi - k ln2_hi`` exact by Sterbenz when ``hi`` is ``-uh**2/2``)
    and a degree-6 Taylor polynomial on ``|r| <= 0.35`` (error 1.2e-7 / 7 ...
    below float32 round-off).
    """
    k = np.floor((hi + lo) * _F(1.4426950408889634) + _F(0.5))
    r = ((hi - k * _F(0.693359375)) - k * _F(-2.12194440e-4)) + lo
    p = _F(1.0) + r * (_F(1.0) + r * (_F(0.5) + r * (_F(1.0 / 6) + r * (_F(1.0 / 24) + r * (
        _F(1.0 / 120) + r * (_F(1.0 / 720)))))))
    return p * _bits_as_f32((np.int32(k) + np.int32(127)) << np.int32(23))


@njit(inline="always", **_SERIAL)
def gelu_f32(v):  # pragma: no cover - compiled
    """Exact-erf GELU of one float32 (see the module docstring)."""
    u = min(abs(v), _F(13.0))
    c = u * _F(4097.0)                  # Veltkamp split: u = uh + ul, uh has 12 bits
    uh = c - (c - u)
    ul = u - uh
    t = _F(1.0) / (_F(1.0) + u * _F(0.35355339059327373))   # 1 / (1 + z/2), z = u / sqrt 2
    pt = _F(-1.26551223) + t * (
        _F(1.00002368) + t * (_F(0.37409196) + t * (_F(0.09678418) + t * (
            _F(-0.18628806) + t * (_F(0.27886807) + t * (_F(-1.13520398) + t * (
                _F(1.48851587) + t * (_F(-0.82215223) + t * _F(0.17087277)))))))))
    # z**2 = u**2 / 2 = uh**2 / 2 (exact) + ul (u + uh) / 2
    h = _F(0.5) * t * _exp_sum(_F(-0.5) * (uh * uh), pt - _F(0.5) * (ul * (u + uh)))
    return v * (_F(1.0) - h) if v >= 0 else v * h


@njit(**_SERIAL)
def gelu_flat(xf, out):  # pragma: no cover - compiled
    """``out[i] = gelu(xf[i])`` (1-D float32; ``out`` may be ``xf``)."""
    for i in range(xf.size):
        out[i] = gelu_f32(xf[i])


@njit(inline="always", **_SERIAL)
def _bias_gelu_rows(x2, bias, out, r0, r1):  # pragma: no cover - compiled
    d = x2.shape[1]
    for i in range(r0, r1):
        for j in range(d):
            out[i, j] = gelu_f32(x2[i, j] + bias[j])


@njit(inline="always", **_SERIAL)
def _ln_rows(x2, bias_in, w, b, eps, out, act, r0, r1):  # pragma: no cover - compiled
    """LayerNorm of ``x2[i] + bias_in`` for rows ``r0:r1``, then GELU when ``act``.

    Row sums in 8 float32 accumulators (independent chains, which LLVM's SLP
    vectoriser packs, without fastmath), combined in float64; two passes (mean,
    then centred squares).
    """
    d = x2.shape[1]
    d8 = d - d % 8
    for i in range(r0, r1):
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = _F(0.0)
        for j in range(0, d8, 8):
            a0 += x2[i, j] + bias_in[j]
            a1 += x2[i, j + 1] + bias_in[j + 1]
            a2 += x2[i, j + 2] + bias_in[j + 2]
            a3 += x2[i, j + 3] + bias_in[j + 3]
            a4 += x2[i, j + 4] + bias_in[j + 4]
            a5 += x2[i, j + 5] + bias_in[j + 5]
            a6 += x2[i, j + 6] + bias_in[j + 6]
            a7 += x2[i, j + 7] + bias_in[j + 7]
        s = ((np.float64(a0) + a1) + (np.float64(a2) + a3)) + ((np.float64(a4) + a5) + (np.float64(a6) + a7))
        for j in range(d8, d):
            s += x2[i, j] + bias_in[j]
        mean = _F(s / d)
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = _F(0.0)
        for j in range(0, d8, 8):
            c0 = (x2[i, j] + bias_in[j]) - mean
            c1 = (x2[i, j + 1] + bias_in[j + 1]) - mean
            c2 = (x2[i, j + 2] + bias_in[j + 2]) - mean
            c3 = (x2[i, j + 3] + bias_in[j + 3]) - mean
            c4 = (x2[i, j + 4] + bias_in[j + 4]) - mean
            c5 = (x2[i, j + 5] + bias_in[j + 5]) - mean
            c6 = (x2[i, j + 6] + bias_in[j + 6]) - mean
            c7 = (x2[i, j + 7] + bias_in[j + 7]) - mean
            a0 += c0 * c0
            a1 += c1 * c1
            a2 += c2 * c2
            a3 += c3 * c3
            a4 += c4 * c4
            a5 += c5 * c5
            a6 += c6 * c6
            a7 += c7 * c7
        s = ((np.float64(a0) + a1) + (np.float64(a2) + a3)) + ((np.float64(a4) + a5) + (np.float64(a6) + a7))
        for j in range(d8, d):
            c = (x2[i, j] + bias_in[j]) - mean
            s += c * c
        inv = _F(1.0 / np.sqrt(s / d + eps))
        if act:
            for j in range(d):
                out[i, j] = gelu_f32(((x2[i, j] + bias_in[j]) - mean) * inv * w[j] + b[j])
        else:
            for j in range(d):
                out[i, j] = ((x2[i, j] + bias_in[j]) - mean) * inv * w[j] + b[j]


@njit(**_SERIAL)
def ln_act(x2, bias_in, w, b, eps, out, act):  # pragma: no cover - compiled
    """``out = act(LayerNorm(x2 + bias_in))`` over rows of a 2-D float32 array (``out`` may be ``x2``)."""
    _ln_rows(x2, bias_in, w, b, eps, out, act, 0, x2.shape[0])


@njit(**_PARALLEL)
def ln_act_parallel(x2, bias_in, w, b, eps, out, act):  # pragma: no cover - compiled
    """:func:`ln_act` with row blocks spread over Numba's threads."""
    rows = x2.shape[0]
    nb = (rows + ROW_BLOCK - 1) // ROW_BLOCK
    for k in prange(nb):
        _ln_rows(x2, bias_in, w, b, eps, out, act, k * ROW_BLOCK, min(rows, (k + 1) * ROW_BLOCK))


@njit(**_SERIAL)
def bias_gelu(x2, bias, out):  # pragma: no cover - compiled
    """``out = gelu(x2 + bias)`` over rows of a 2-D float32 array (``out`` may be ``x2``)."""
    _bias_gelu_rows(x2, bias, out, 0, x2.shape[0])


@njit(**_PARALLEL)
def bias_gelu_parallel(x2, bias, out):  # pragma: no cover - compiled
    """:func:`bias_gelu` with row blocks spread over Numba's threads."""
    rows = x2.shape[0]
    nb = (rows + ROW_BLOCK - 1) // ROW_BLOCK
    for k in prange(nb):
        _bias_gelu_rows(x2, bias, out, k * ROW_BLOCK, min(rows, (k + 1) * ROW_BLOCK))


@njit(**_SERIAL)
def pool(x, w, out):  # pragma: no cover - compiled
    """``out[b, j] = sum_r w[j, r] x[b, f j + r]`` (``w`` already softmaxed), float32."""
    bsz, n, d = x.shape
    m, f = w.shape
    for bi in range(bsz):
        for j in range(m):
            w0 = w[j, 0]
            for c in range(d):
                out[bi, j, c] = x[bi, f * j, c] * w0
            for r in range(1, f):
                wr = w[j, r]
                for c in range(d):
                    out[bi, j, c] += x[bi, f * j + r, c] * wr
