"""Numba kernels of the sparse FFN (compiled lazily, at first call).

* :func:`select_topk` -- per token, the ``k`` channels of largest
  ``|act(z)|`` (``np.partition`` for the threshold, ties broken towards the
  lower channel index), returned sorted; ``prange`` over tokens. When the
  k-th largest pre-activation is clearly positive the ranking by ``z`` is
  the ranking by ``|act(z)|`` and no activation is evaluated.
* :func:`sparse_ffn_tiled` -- both projections on the selected channels
  only. Tokens are processed in tiles of ``tile`` tokens (``prange`` over
  tiles). Inside a tile the token -> channel lists are inverted into
  channel -> token lists (a counting sort), so that each selected row
  ``W1[c]`` and each row ``W2t[c] = W2[:, c]`` is read from memory once per
  tile and then reused, from L1, by every token of the tile that selected
  it; tokens sharing a channel are handled four at a time (one pass over
  the weight row for four dot products / four updates). The work of a token
  never depends on the thread that runs it, so results do not depend on
  the number of threads (they may differ in the last bits with ``tile``,
  which decides which dot products are vectorised together).
* :func:`activation_inplace` -- the activation of the dense fallback.

Options come from :mod:`bknumba._config`. The dot products need
reassociation to vectorise, so unless ``BKNUMBA_FASTMATH=1`` (all fast-math
flags) the FFN kernels use the flags ``{"reassoc", "contract"}`` only
(no ``nnan``/``ninf``: NaN and infinity semantics are kept). The BK-Core
kernels are not affected.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .._config import parallel_jit_kwargs

__all__ = ["activation_inplace", "select_topk", "sparse_ffn_tiled", "DEFAULT_TILE"]

#: Tokens per tile of :func:`sparse_ffn_tiled`.
DEFAULT_TILE = 32

_INV_SQRT2 = 0.7071067811865476
_SQRT_2_OVER_PI = 0.7978845608028654


def _ffn_kwargs() -> dict:
    kw = parallel_jit_kwargs()
    if not kw.get("fastmath"):
        kw["fastmath"] = {"reassoc", "contract"}
    return kw


@njit(inline="always")
def _act(v, code):
    """Activation ``code`` (0 identity, 1 ReLU, 2 GELU-erf, 3 GELU-tanh) of ``v``."""
    if code == 0:
        return v * 1.0
    if code == 1:
        return v * 1.0 if v > 0 else 0.0
    if code == 2:
        return 0.5 * v * (1.0 + math.erf(v * _INV_SQRT2))
    return 0.5 * v * (1.0 + math.tanh(_SQRT_2_OVER_PI * (v + 0.044715 * v * v * v)))


@njit(error_model="numpy", **parallel_jit_kwargs())
def activation_inplace(h, code):
    """``h[:] = act(h)`` for a C-contiguous 2-D ``h`` (parallel over rows)."""
    n, m = h.shape
    for t in prange(n):
        row = h[t]
        for j in range(m):
            row[j] = _act(row[j], code)


@njit(error_model="numpy", **parallel_jit_kwargs())
def select_topk(z, k, code, out):
    """Per row of ``z`` (n, m), the ``k`` columns of largest ``|act(z)|``.

    ``out`` (n, k) int64 is written with the column indices in increasing
    order. Among equal magnitudes the lower index wins.
    """
    n, m = z.shape
    for t in prange(n):
        mag = np.empty(m, np.float64)
        for j in range(m):
            mag[j] = z[t, j]
        # Shortcut (exact): if the k-th largest pre-activation zk is large
        # enough, the top k by |act| are the top k by z, because act is
        # increasing on [0, inf) and |act| on the negatives is below act(zk):
        # |GELU(z < 0)| <= 0.170 < GELU(0.3) = 0.185; ReLU(z < 0) = 0.
        # Then no activation (erf) is evaluated at all.
        zk = np.partition(mag.copy(), m - k)[m - k]
        if code == 0 or not ((code == 1 and zk > 0.0) or (code >= 2 and zk > 0.3)):
            for j in range(m):
                mag[j] = abs(_act(mag[j], code))
            thr = np.partition(mag.copy(), m - k)[m - k]  # k-th largest
        else:
            thr = zk
        above = 0
        for j in range(m):
            if mag[j] > thr:
                above += 1
        ties = k - above
        p = 0
        for j in range(m):
            v = mag[j]
            if v > thr:
                out[t, p] = j
                p += 1
            elif v == thr and ties > 0:
                out[t, p] = j
                p += 1
                ties -= 1


@njit(error_model="numpy", **_ffn_kwargs())
def sparse_ffn_tiled(x, W1, b1, W2t, b2, channels, code, tile, out):
    """``out[t] = b2 + sum_{c in channels[t]} act(W1[c] . x[t] + b1[c]) W2t[c]``.

    Parameters
    ----------
    x : (n, d) float32/float64, C-contiguous
    W1 : (d_ff, d), b1 : (d_ff,), W2t : (d_ff, d) (``W2.T``), b2 : (d,)
        All of the dtype of ``x``, C-contiguous.
    channels : (n, k) int64, distinct valid channels per row (not checked).
    code : int, activation code.
    tile : int, tokens per tile.
    out : (n, d), written.
    """
    n, d = x.shape
    k = channels.shape[1]
    dff = W1.shape[0]
    ntile = (n + tile - 1) // tile
    for tt in prange(ntile):
        t0 = tt * tile
        t1 = min(n, t0 + tile)
        # counting sort of the tile's (token, channel) pairs by channel
        start = np.zeros(dff + 1, np.int64)
        for t in range(t0, t1):
            for j in range(k):
                start[channels[t, j] + 1] += 1
        for c in range(dff):
            start[c + 1] += start[c]
        pos = start[:-1].copy()
        toks = np.empty((t1 - t0) * k, np.int64)
        for t in range(t0, t1):
            for j in range(k):
                c = channels[t, j]
                toks[pos[c]] = t
                pos[c] += 1
        for t in range(t0, t1):
            for i in range(d):
                out[t, i] = b2[i]
        # activations, in the working dtype; zeroed, since zero is taken from it (a zero of
        # that dtype): from np.empty it was whatever the memory held, NaN or inf at times
        a4 = np.zeros(4, out.dtype)
        zero = a4[0]
        for c in range(dff):
            p = start[c]
            pe = start[c + 1]
            if p == pe:
                continue
            w1 = W1[c]
            w2 = W2t[c]
            bc = b1[c]
            while p + 4 <= pe:
                xa = x[toks[p]]
                xb = x[toks[p + 1]]
                xc = x[toks[p + 2]]
                xd = x[toks[p + 3]]
                sa = zero
                sb = zero
                sc = zero
                sd = zero
                for i in range(d):
                    w = w1[i]
                    sa += w * xa[i]
                    sb += w * xb[i]
                    sc += w * xc[i]
                    sd += w * xd[i]
                a4[0] = _act(sa + bc, code)
                a4[1] = _act(sb + bc, code)
                a4[2] = _act(sc + bc, code)
                a4[3] = _act(sd + bc, code)
                aa = a4[0]
                ab = a4[1]
                ac = a4[2]
                ad = a4[3]
                oa = out[toks[p]]
                ob = out[toks[p + 1]]
                oc = out[toks[p + 2]]
                od = out[toks[p + 3]]
                for i in range(d):
                    w = w2[i]
                    oa[i] += aa * w
                    ob[i] += ab * w
                    oc[i] += ac * w
                    od[i] += ad * w
                p += 4
            for q in range(p, pe):
                xt = x[toks[q]]
                s = zero
                for i in range(d):
                    s += w1[i] * xt[i]
                a4[0] = _act(s + bc, code)
                a = a4[0]
                ot = out[toks[q]]
                for i in range(d):
                    ot[i] += a * w2[i]
