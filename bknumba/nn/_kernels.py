"""Numba kernels of :mod:`bknumba.nn.layers` (imported on first use, never at ``import bknumba``).

float32 only (float64 activations take the NumPy/SciPy path of ``layers``).
Every kernel is compiled with the package's options
(:func:`bknumba._config.serial_jit_kwargs`) except that floating-point
contraction (``fastmath={"contract"}``: ``a * b + c`` as one fused
multiply-add) is always allowed here: it only removes a rounding, and the
float32 activations are compared with PyTorch at float32 round-off anyway;
the complex128 BK-Core kernels never get it unless ``BKNUMBA_FASTMATH=1``.
``error_model="numpy"`` (no division-by-zero branch) is what lets LLVM
vectorise the element loops: there is no libm call in the loops, the
exponential is written out and its ``2**k`` factor is built from the exponent
bits through a bit cast. Every kernel here (and the fused passes of
:mod:`bknumba.nn._fused`) calls :func:`wide_vectors`, so that on AVX-512
machines the loops run 16 float32 lanes wide instead of the 8 LLVM picks by
default there.

GELU
    ``x * Phi(x)``. With ``u = |x|``, ``h = Phi(-u) = erfc(u / sqrt 2) / 2``
    and GELU is ``x - x h`` for ``x >= 0`` and ``x h`` otherwise, so no
    cancellation where ``h`` is small. ``h = exp(-u**2 / 2) R(u)`` where
    ``R(u) = erfcx(u / sqrt 2) / 2`` is smooth and slowly varying: a (3, 4)
    rational function fitted (linearised least squares on the relative error)
    on ``[0, 6]``, relative error 7e-8 there; the exponential is a Cody-Waite
    reduction and a degree-5 minimax polynomial (relative error 8e-8).
    ``u`` is clipped at 6 (``|x h| < 6e-9`` beyond). Measured against the
    float64 ``scipy.special.erf`` formula: absolute error <= 3e-8 of
    ``max |GELU|``, relative error <= 6e-7 where ``|GELU| > 1e-3``
    (``tests/test_nn.py`` checks both). About 35 vector instructions and one
    division per 16 values.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .._config import serial_jit_kwargs

_F = np.float32


def _nn_kwargs(kwargs):
    """The package's jit options with FMA contraction allowed (see the module docstring)."""
    if not kwargs["fastmath"]:
        kwargs = dict(kwargs, fastmath={"contract"})
    return dict(error_model="numpy", **kwargs)


_SERIAL = _nn_kwargs(serial_jit_kwargs())


@intrinsic
def _bits_as_f32(typingctx, v):
    """Reinterpret the bits of an int32 as a float32 (vectorises to nothing)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@intrinsic
def wide_vectors(typingctx):
    """Let LLVM vectorise the function being compiled with 512-bit vectors.

    LLVM's tuning for Skylake-AVX512 and later Intel cores prefers 256-bit
    vectors (the ``prefer-vector-width`` function attribute defaults to 256
    there, and Numba offers no per-function setting), so the float32 element
    loops ran 8 lanes wide on machines with 16-lane registers. Called anywhere
    in a function (also in code inlined into a ``prange`` body, which is compiled
    as a function of its own), this sets ``"prefer-vector-width"="512"`` on it:
    the same operations in wider vectors. Element-wise loops give the same bits;
    a sum whose additions may be reordered (``fastmath`` ``reassoc``: the float64
    LayerNorm statistics of the fused layers) adds in another order. Where
    AVX-512 is missing LLVM uses the widest legal vectors instead. The attribute
    is added to llvmlite's attribute set directly (its ``add`` accepts only flag
    attributes); if that ever fails, nothing changes but the width.
    """
    sig = types.none()

    def codegen(context, builder, signature, args):
        try:
            set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        except Exception:  # pragma: no cover - a future llvmlite; the width only
            pass
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always", **_SERIAL)
def gelu_f32(v):  # pragma: no cover - compiled
    """Exact-erf GELU of one float32 (see the module docstring)."""
    u = min(abs(v), _F(6.0))
    # exp(-u**2 / 2): Cody-Waite reduction by k ln 2 (9-bit ln2_hi), minimax degree 5
    y = u * u * _F(-0.5)
    k = np.floor(y * _F(1.4426950408889634) + _F(0.5))
    r = (y - k * _F(0.693359375)) - k * _F(-2.12194440e-4)
    e = _F(1.0000000710651837) + r * (_F(0.9999996660294073) + r * (_F(0.49998898706521006) + r * (
        _F(0.1666766301619384) + r * (_F(0.0419150703668151) + r * _F(0.008291722649743448)))))
    e = e * _bits_as_f32((np.int32(k) + np.int32(127)) << np.int32(23))
    # Phi(-u) exp(u**2 / 2) = erfcx(u / sqrt 2) / 2: rational (3, 4) fit on [0, 6]
    p = _F(0.49999996508473576) + u * (_F(0.33564616752472765) + u * (
        _F(0.10504430936939005) + u * _F(0.01375775702869003)))
    q = _F(1.0) + u * (_F(1.4691728482408615) + u * (_F(0.8823567129813519) + u * (
        _F(0.2627699332170928) + u * _F(0.03450542235732775))))
    h = e * p / q
    return v - v * h if v >= 0 else v * h


@njit(**_SERIAL)
def gelu_flat(xf, out):  # pragma: no cover - compiled
    """``out[i] = gelu(xf[i])`` (1-D float32; ``out`` may be ``xf``)."""
    wide_vectors()
    for i in range(xf.size):
        out[i] = gelu_f32(xf[i])


@njit(**_SERIAL)
def bias_gelu(x2, bias, out):  # pragma: no cover - compiled
    """``out = gelu(x2 + bias)`` over rows of a 2-D float32 array (``out`` may be ``x2``)."""
    wide_vectors()
    rows, d = x2.shape
    for i in range(rows):
        for j in range(d):
            out[i, j] = gelu_f32(x2[i, j] + bias[j])


@njit(**_SERIAL)
def bias_add_(x2, bias):  # pragma: no cover - compiled
    """``x2 += bias`` in place over rows of a 2-D float32 array."""
    wide_vectors()
    rows, d = x2.shape
    for i in range(rows):
        for j in range(d):
            x2[i, j] += bias[j]


@njit(**_SERIAL)
def bias_relu_(x2, bias):  # pragma: no cover - compiled
    """``x2 = relu(x2 + bias)`` in place over rows of a 2-D float32 array."""
    wide_vectors()
    rows, d = x2.shape
    for i in range(rows):
        for j in range(d):
            v = x2[i, j] + bias[j]
            x2[i, j] = _F(0.0) if v < _F(0.0) else v  # NaN propagates, like torch.relu


@njit(**_SERIAL)
def pool(x, w, out):  # pragma: no cover - compiled
    """``out[b, j] = sum_r w[j, r] x[b, f j + r]`` (``w`` already softmaxed), float32."""
    wide_vectors()
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


@njit(**_SERIAL)
def center(x2, bias_in, mean, out):  # pragma: no cover - compiled
    """``out[i] = x2[i] + bias_in - mean[i]`` (float32 rows; ``out`` must not overlap ``x2``)."""
    wide_vectors()
    rows, d = x2.shape
    for i in range(rows):
        m = mean[i]
        for j in range(d):
            out[i, j] = (x2[i, j] + bias_in[j]) - m


@njit(**_SERIAL)
def scale_act(c2, inv, w, b, out, act):  # pragma: no cover - compiled
    """``out[i] = act(c2[i] * inv[i] * w + b)``, ``act`` GELU or identity (no overlap)."""
    wide_vectors()
    rows, d = c2.shape
    for i in range(rows):
        s = inv[i]
        if act:
            for j in range(d):
                out[i, j] = gelu_f32(c2[i, j] * s * w[j] + b[j])
        else:
            for j in range(d):
                out[i, j] = c2[i, j] * s * w[j] + b[j]
