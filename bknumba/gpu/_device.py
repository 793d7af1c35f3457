"""Device helpers shared by the CUDA kernels (2x2 Moebius maps, rescaling).

A chunk of the pivot recursion ``L[i] = d[i] - k[i-1] / L[i-1]`` acts on the
homogeneous vector ``(theta[i+1], theta[i])`` as the 2x2 matrix
``[[d[i], -k[i-1]], [1, 0]]`` (``[[d[i], 0], [1, 0]]`` at a position whose
coupling is dropped); the backward recursion likewise with ``k[i]`` on
``(phi[i-1], phi[i])``. Matrices and vectors are complex, carried with a
power-of-two scale ``2**(SHIFT * count)`` (count a float64) that is exact,
so the theta/phi method can use the same products as the ratio method,
which only needs their directions.

Balancing: with entries of scale ``s`` (``d ~ s``, ``k ~ s^2``) the plain
maps hold entries about ``s^2`` apart, and their products underflow past
``s ~ 1e+-70``. The kernels therefore carry the second component scaled by
``t[i] = 2**round(log2 sqrt|k[i]|)`` (:func:`balance`), the coupling that
multiplies it at the next step: the forward vector after position ``i`` is
``(theta[i+1], t[i] theta[i])`` and the step is
``[[d[i], -k[i-1] / t[i-1]], [t[i], 0]]``, all entries of scale ``s``; the
backward vector after ``i`` is ``(phi[i-1], t[i-1] phi[i])``. ``t`` is a power
of two, so this changes no rounding; ``t = 1`` for couplings between
``2**-100`` and ``2**100`` (where the plain maps are safe), so ordinary
inputs take one comparison per position and give every product bit for bit
as before.
"""
from __future__ import annotations

import math

import numpy as np
from numba import config, cuda, uint64

SHIFT = 200
BIG = 2.0 ** SHIFT
SMALL = 2.0 ** -SHIFT
#: Smallest normal and largest float64 (as in :mod:`bknumba.cpu.ratio`: a pivot
#: with ``|p|^2 < TINY`` is reported, its reciprocal would overflow).
TINY = float(np.finfo(np.float64).tiny)
MAXF = float(np.finfo(np.float64).max)
# squares of the last theta step below SQ_LOW: compare copies scaled by UP (exact)
SQ_LOW = 2.0 ** -900
UP = 2.0 ** 600
# couplings within [BAL_LO, BAL_HI] are not balanced (t = 1, see balance)
BAL_LO = 2.0 ** -100
BAL_HI = 2.0 ** 100
# Under the CUDA simulator, kernels run on Python floats, where 1.0 / 0.0 raises;
# compiled kernels use NumPy's error model (1.0 / 0.0 = inf), so no test is needed
_SIM = bool(config.ENABLE_CUDASIM)


@cuda.jit(device=True, inline=True)
def ix(i):
    """A non-negative index as unsigned: indexing then skips the code for
    negative (from the end) indices, three integer instructions per access."""
    return uint64(i)


@cuda.jit(device=True, inline=True)
def fmax(x, y):
    """``max(x, y)`` without NaN propagation (a compare and a select; ``max``
    emulates IEEE maxNum for float64, several instructions on the GPU)."""
    return x if x > y else y


@cuda.jit(device=True, inline=True)
def mx(x):
    """max(|re|, |im|): a cheap magnitude."""
    return fmax(abs(x.real), abs(x.imag))


@cuda.jit(device=True, inline=True)
def rmul(s, x):
    """Real ``s`` times complex ``x``: two products (``s * x`` with a float ``s``
    becomes a complex product, four products and two sums)."""
    return complex(s * x.real, s * x.imag)


@cuda.jit(device=True, inline=True)
def cmul(s, x):
    """``s * x`` (the complex counterpart of :func:`rmul`)."""
    return s * x


@cuda.jit(device=True, inline=True)
def renorm2(x, y, c):
    """Rescale the pair ``(x, y)`` by powers of 2**SHIFT into range (an infinite
    entry is left as it is: scaling would never bring it into range)."""
    s = fmax(mx(x), mx(y))
    while s > BIG and s <= MAXF:
        x = rmul(SMALL, x)
        y = rmul(SMALL, y)
        s = s * SMALL
        c += 1.0
    while s < SMALL and s > 0.0:
        x = rmul(BIG, x)
        y = rmul(BIG, y)
        s = s * BIG
        c -= 1.0
    return x, y, c


@cuda.jit(device=True, inline=True)
def renorm_rows(n00, n01, m00, m01, c, s1):
    """Rescale the 2x2 matrix with rows ``(n00, n01)`` and ``(m00, m01)`` by powers of
    2**SHIFT into range (as :func:`renorm4`) when ``s1 = max(mx(m00), mx(m01))`` is
    already known (a chunk-map step: the second row is the previous step's first,
    whose magnitude that step returned; a third of the magnitude tests). Returns
    the rescaled entries, the count and ``max(mx(n00), mx(n01))`` after rescaling
    (exact: a power-of-two scaling commutes with ``max`` and ``abs``)."""
    s0 = fmax(mx(n00), mx(n01))
    s = fmax(s0, s1)
    while s > BIG and s <= MAXF:
        n00 = rmul(SMALL, n00)
        n01 = rmul(SMALL, n01)
        m00 = rmul(SMALL, m00)
        m01 = rmul(SMALL, m01)
        s = s * SMALL
        s0 = s0 * SMALL
        c += 1.0
    while s < SMALL and s > 0.0:
        n00 = rmul(BIG, n00)
        n01 = rmul(BIG, n01)
        m00 = rmul(BIG, m00)
        m01 = rmul(BIG, m01)
        s = s * BIG
        s0 = s0 * BIG
        c -= 1.0
    return n00, n01, m00, m01, c, s0


@cuda.jit(device=True, inline=True)
def renorm4(m00, m01, m10, m11, c):
    """Rescale a 2x2 matrix by powers of 2**SHIFT into range (infinite entries: as
    in :func:`renorm2`)."""
    m00, m01, m10, m11, c, _ = renorm_rows(m00, m01, m10, m11, c, fmax(mx(m10), mx(m11)))
    return m00, m01, m10, m11, c


@cuda.jit(device=True, inline=True)
def mat_mul(a00, a01, a10, a11, ac, b00, b01, b10, b11, bc):
    """``A @ B``, rescaled."""
    return renorm4(a00 * b00 + a01 * b10, a00 * b01 + a01 * b11,
                   a10 * b00 + a11 * b10, a10 * b01 + a11 * b11, ac + bc)


@cuda.jit(device=True, inline=True)
def mat_vec(a00, a01, a10, a11, ac, x, y, c):
    """``A @ (x, y)``, rescaled."""
    return renorm2(a00 * x + a01 * y, a10 * x + a11 * y, ac + c)


@cuda.jit(device=True, inline=True)
def read_mat(arr, o):
    """Matrix stored as 9 float64 at ``arr[o:o + 9]`` (re/im of 4 entries, count)."""
    return (complex(arr[ix(o)], arr[ix(o + 1)]), complex(arr[ix(o + 2)], arr[ix(o + 3)]),
            complex(arr[ix(o + 4)], arr[ix(o + 5)]), complex(arr[ix(o + 6)], arr[ix(o + 7)]),
            arr[ix(o + 8)])


@cuda.jit(device=True, inline=True)
def write_mat(arr, o, m00, m01, m10, m11, c):
    arr[ix(o)] = m00.real
    arr[ix(o + 1)] = m00.imag
    arr[ix(o + 2)] = m01.real
    arr[ix(o + 3)] = m01.imag
    arr[ix(o + 4)] = m10.real
    arr[ix(o + 5)] = m10.imag
    arr[ix(o + 6)] = m11.real
    arr[ix(o + 7)] = m11.imag
    arr[ix(o + 8)] = c


@cuda.jit(device=True, inline=True)
def read_vec(arr, o):
    """Vector stored as 5 float64 at ``arr[o:o + 5]``."""
    return (complex(arr[ix(o)], arr[ix(o + 1)]), complex(arr[ix(o + 2)], arr[ix(o + 3)]),
            arr[ix(o + 4)])


@cuda.jit(device=True, inline=True)
def write_vec(arr, o, x, y, c):
    arr[ix(o)] = x.real
    arr[ix(o + 1)] = x.imag
    arr[ix(o + 2)] = y.real
    arr[ix(o + 3)] = y.imag
    arr[ix(o + 4)] = c


@cuda.jit(device=True, inline=True)
def inv(x):
    """``1 / x`` in real arithmetic (``conj(x) / |x|^2``); inf/nan for x = 0."""
    m = x.real * x.real + x.imag * x.imag
    if _SIM:  # a compile-time constant: the test exists only in the simulator
        s = 1.0 / m if m != 0.0 else math.inf
    else:
        s = 1.0 / m
    return complex(x.real * s, -x.imag * s)


@cuda.jit(device=True, inline=True)
def abs2(x):
    return x.real * x.real + x.imag * x.imag


@cuda.jit(device=True, inline=True)
def pow2(count):
    """``2**(SHIFT * count)`` for integer-valued count, saturating like the CPU."""
    c = min(10.0, max(-10.0, count))
    f = 1.0
    while c >= 1.0:
        f = f * BIG
        c -= 1.0
    while c <= -1.0:
        f = f * SMALL
        c += 1.0
    return f


@cuda.jit(device=True, inline=True)
def ld_real(re, im, q):
    return re[ix(q)]


@cuda.jit(device=True, inline=True)
def ld_cplx(re, im, q):
    return complex(re[ix(q)], im[ix(q)])


@cuda.jit(device=True, inline=True)
def small_pivot(x2, sc, rtol2):
    """A pivot with squared magnitude ``x2`` is (near) zero against ``sc``,
    or so small that its reciprocal would overflow."""
    return x2 <= rtol2 * sc or x2 < TINY


@cuda.jit(device=True, inline=True)
def ratio(y, x):
    """``y / x`` for a carry vector ``(x, y)`` (larger entry in range), also
    when ``|x|^2`` underflows; inf / nan only when ``x`` is 0 or ``y / x``
    overflows (both reported by the pivot checks)."""
    if abs2(x) >= TINY:
        return y * inv(x)
    s = mx(x)
    t = 1.0 / s if s != 0.0 else math.inf
    return (y * t) * inv(x * t)


@cuda.jit(device=True, inline=True)
def cancelled(nx, uv, vv, rtol2):
    """The last theta step ``nx = uv - vv`` cancelled to (near) zero."""
    sc = abs2(uv) + abs2(vv)
    if sc < SQ_LOW:
        nx = nx * UP
        sc = abs2(uv * UP) + abs2(vv * UP)
    return abs2(nx) <= rtol2 * sc


@cuda.jit(device=True, inline=True)
def _moderate_mag(m):
    return (m >= BAL_LO and m <= BAL_HI) or not (m > 0.0 and m <= MAXF)


@cuda.jit(device=True, inline=True)
def moderate(kk):
    """``balance(kk)`` is ``(kk, 1)``: ``kk`` within ``[BAL_LO, BAL_HI]`` (or 0, or not finite)."""
    return _moderate_mag(mx(kk))


@cuda.jit(device=True, inline=True)
def balance(kk):
    """``(k / t, t)``: ``t = 1`` for ``2**-100 <= max(|re k|, |im k|) <= 2**100``
    (the common case, one comparison); outside, ``t = 2**floor(e / 2)`` for
    ``max(|re k|, |im k|) = m 2**e`` (``0.5 <= m < 1``), a power of two within a
    factor 2 of ``sqrt|k|``, so both are exact. ``(k, 1)`` for ``k = 0`` (or a
    non-finite ``k``, reported elsewhere)."""
    m = mx(kk)
    if _moderate_mag(m):
        return kk, 1.0
    h = math.frexp(m)[1] // 2
    return kk * math.ldexp(1.0, -h), math.ldexp(1.0, h)


@cuda.jit(device=True, inline=True)
def balance_if(kk, on):
    """:func:`balance` when ``on``, else ``(kk, 1)`` (a block whose couplings are all moderate)."""
    if on:
        return balance(kk)
    return kk, 1.0


@cuda.jit(device=True, inline=True)
def out_of_range(v):
    """``v`` is inf or nan (a ``G`` beyond float64, or after an overflow)."""
    return not (max(abs(v.real), abs(v.imag)) <= MAXF)
