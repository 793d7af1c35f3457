"""An honest FLOP cost model for the BK-Core and the layers around it.

The seed documents claim FLOP reductions (2.5x for sparse ``G_ii``, 45.4 %
for multi-scale processing, 4.57x combined) that come from undercounting
formulas (``original-model.md`` sections 5.3, 7 and 8). This module counts
the floating-point operations component by component, and reproduces the
seeds' own formulas beside it (the ``claimed_*`` functions) so that a user
can see where each claim comes from and where it breaks.

Conventions
-----------
* One FLOP is one real (float64) addition, subtraction, multiplication or
  division. Negation, ``abs``, ``min``/``max``, comparisons, branches,
  integer index arithmetic and memory traffic are not FLOPs. Divisions are
  counted as one FLOP *and* reported separately (key ``"div"``): on current
  CPUs and GPUs a division costs about 4-20 multiplies, and
  :func:`weighted_cost` lets you weight them.
* BK-Core kernels: the count is that of the operations written in
  ``bknumba/cpu/ratio.py`` and ``bknumba/cpu/theta_phi.py`` (complex
  arithmetic is written there in real arithmetic, and a complex reciprocal
  is ``conj(y) / |y|^2``: 3 FLOPs for ``|y|^2``, one division and two
  multiplies). It is checked operation by operation against those sources
  by the test-suite, which runs the kernels' Python source on counting
  scalars. The kernels are compiled without fast-math, so real inputs
  execute the same operations as complex ones (IEEE rules forbid dropping
  ``x * 0.0``). Three categories:

  ``arith``
      the recursions and the combine, the operations any implementation of
      the same formulas needs;
  ``guard``
      the singular-pivot checks (``|L|^2 <= rtol^2 * scale``);
  ``scaling``
      the power-of-two rescaling of the theta/phi continuants.

* Layers: a ``Linear(i, o)`` costs ``2 * i * o`` FLOPs per token (one
  multiply and one add per weight; the bias add replaces the first
  accumulation add). A ``Conv1d(ci, co, k)`` with "same" padding costs
  ``2 * ci * k * co`` per output position (the padded zeros are multiplied
  like any other input, as PyTorch does). A weighted pooling of ``f``
  vectors costs ``(2 f - 1) d``. Activations, LayerNorm, softmax, Gumbel
  noise, top-k selection, clamps, residual additions and scalar scalings
  are *not* counted: they are O(d) per token against the O(d^2) matmuls,
  and the seeds do not count them either.
* MoE: ``top_k`` experts per token, each ``Linear(d, 2d) -> Linear(2d, d)``
  (``8 d^2``); the router ``Linear(d, E)``; for ``top_k > 1`` the gated sum
  ``(2k - 1) d`` (for ``top_k = 1`` the gate is exactly 1.0 and the model
  returns the expert's output unchanged).
* Sparse masks: either an explicit mask (exact integer counts), or a
  sparsity ``s`` meaning that every position is skipped independently with
  probability ``s`` (the counts are expectations and may be fractional).

Everything here is plain Python arithmetic; ``import bknumba.sparsity``
does not import numba.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np

from ._checks import check_fraction, check_int

__all__ = [
    "BK_METHODS", "SEMANTICS", "KERNEL_EVENTS",
    "kernel_event_counts", "bk_core_flops", "sparse_bk_core_flops", "weighted_cost",
    "predicted_sparse_speedup",
    "linear_flops", "conv1d_flops", "importance_predictor_flops", "interpolator_flops",
    "moe_flops", "downsampling_flops", "upsampling_flops", "refine_flops", "ffn_flops",
    "moe_bk_layer_flops", "sparse_moe_bk_layer_flops", "learned_sparsity_g_ii_flops",
    "multi_scale_bk_layer_flops", "multi_scale_resnet_bk_layer_flops",
    "claimed_sparse_g_ii_flops", "claimed_multi_scale_bk_flops", "claimed_multi_scale_flops",
    "claimed_bk_core_flops", "claimed_ffn_flops",
    "flops_rows", "flops_report", "speedup_rows", "speedup_report", "main",
]

BK_METHODS = ("ratio", "theta_phi")
SEMANTICS = ("local", "seed", "exact")
_SEMANTICS_METHODS = {"local": ("ratio",), "seed": ("theta_phi",),
                      "exact": ("ratio", "theta_phi")}
_CATEGORIES = ("arith", "guard", "scaling")
_OPS = ("add", "mul", "div")


def _ev(arith=(0, 0, 0), guard=(0, 0, 0), scaling=(0, 0, 0)):
    return {"arith": arith, "guard": guard, "scaling": scaling}


#: Per-event operation counts ``(add, mul, div)`` by category, read off the
#: kernels' source. An "event" is one execution of a piece of a kernel's
#: loop body for one row; :func:`kernel_event_counts` says how often each
#: happens. Keep this table in step with ``bknumba/cpu/*.py`` (the tests
#: check it against the kernels' own source).
KERNEL_EVENTS = {
    "ratio": {
        # forward sweep, position 0: d = a - z (2), |d|^2 == 0 check (3)
        "fwd_first": _ev(arith=(2, 0, 0), guard=(1, 2, 0)),
        # position i >= 1 coupled: d (2); s = 1/|L|^2 (3 + div);
        # q = k conj(L) s (2 x (3 mul, 1 add)), as (k conj(L)) s in the full
        # recursions, k (conj(L) s) in the others (ratio.py); L = d - q (2)
        # guard: scale = |d|^2 + |q|^2 (7); |L|^2 <= rtol2 * scale (4)
        "fwd_coupled": _ev(arith=(7, 8, 1), guard=(4, 7, 0)),
        # position i >= 1 masked: L = d (2); guard: |d|^2 (3), check (4)
        "fwd_masked": _ev(arith=(2, 0, 0), guard=(2, 5, 0)),
        # backward sweep, every position: d (2); check m2 <= rtol2 * scale (1)
        "bwd_position": _ev(arith=(2, 0, 0), guard=(0, 1, 0)),
        # coupled R: q = k * (1/R[i+1]) (6), R = d - q (2); guard: scale (7).
        # (The full recursions compute q = (k conj(R[i+1])) s here, 8 FLOPs, and
        # keep s = 1/|R[i+1]|^2 alone below: the same totals, as every coupled
        # step follows one reciprocal.)
        "bwd_coupled": _ev(arith=(4, 4, 0), guard=(3, 4, 0)),
        # uncoupled R (last position or masked): guard: scale = |d|^2 (3)
        "bwd_uncoupled": _ev(guard=(1, 2, 0)),
        # 1/R kept for the next (coupled) step: m2 = |R|^2 (3), 1/m2, 2 mul
        "bwd_reciprocal": _ev(arith=(1, 4, 1)),
        # no reciprocal needed: m2 = |R|^2 is computed for the check only
        "bwd_no_reciprocal": _ev(guard=(1, 2, 0)),
        # G = 1 / (L + R - d): e (4), |e|^2 (3), 1/|e|^2, 2 mul;
        # guard: |L|^2 + m2 (4), rtol2 * (...) (1)
        "combine": _ev(arith=(5, 4, 1), guard=(2, 3, 0)),
    },
    "theta_phi": {
        # theta[1] = d[0]
        "fwd_first": _ev(arith=(2, 0, 0)),
        # theta[i+1], every i >= 1: d (2), u = d * theta[i] (6);
        # rescale: 4 mul by the power of two, count += dc (1)
        "fwd_step": _ev(arith=(4, 4, 0), scaling=(1, 4, 0)),
        # coupled: v = k * theta[i-1] (6), u - v (2); guard: scale (7)
        "fwd_coupled": _ev(arith=(4, 4, 0), guard=(3, 4, 0)),
        # masked: guard: scale = |u|^2 (3)
        "fwd_masked": _ev(guard=(1, 2, 0)),
        # last step only: |theta[N]|^2 <= rtol2 * scale (4)
        "fwd_last_check": _ev(guard=(1, 3, 0)),
        # 1 / theta[N] (mantissa): |.|^2 (3), division, 2 mul
        "det_reciprocal": _ev(arith=(1, 4, 1)),
        # phi[i], i <= N-2: d[i+1] (2), u = d * phi[i+1] (6); rescale (5)
        "bwd_step": _ev(arith=(4, 4, 0), scaling=(1, 4, 0)),
        # coupled (i <= N-3, position i+1 computed): k * phi[i+2] (6), sub (2)
        "bwd_coupled": _ev(arith=(4, 4, 0)),
        # G = theta * phi * (1/theta[N]) (12); scale 2**(...) (2 add, 1 sub,
        # 1 mul in _pow2) and its application (2 mul)
        "combine": _ev(arith=(4, 8, 0), scaling=(3, 3, 0)),
    },
}

#: The kernel flags of each sparse semantics (``bknumba.core.sparse_bk_core``):
#: (coupling follows the mask, combine follows the mask).
_SEMANTICS_FLAGS = {"local": (True, True), "seed": (True, True), "exact": (False, True)}


# ----------------------------------------------------------------------------
# BK-Core kernels
# ----------------------------------------------------------------------------
def _keep_rows(n, batch, sparsity, mask):
    """Per-row keep probabilities, shape (rows, n), and a row multiplier."""
    if mask is not None:
        if sparsity is not None:
            raise ValueError("pass either sparsity or mask, not both")
        m = np.asarray(mask)
        if m.dtype.kind not in "biuf":
            raise TypeError(f"mask must be boolean or 0/1 numbers, got dtype {m.dtype}")
        if m.ndim == 1:
            m = m[None, :]
        if m.ndim != 2 or m.shape[1] != n:
            raise ValueError(f"mask has shape {np.shape(mask)}; expected ({n},) or (B, {n})")
        if batch is not None and m.shape[0] != batch:
            raise ValueError(f"mask has {m.shape[0]} rows but batch={batch}")
        m = m.astype(np.float64)
        if not np.all((m == 0.0) | (m == 1.0)):
            raise ValueError("mask values must be 0 or 1 (True/False)")
        return m, 1
    keep = 1.0 if sparsity is None else 1.0 - check_fraction("sparsity", sparsity)
    return np.full((1, n), keep), (1 if batch is None else batch)


def kernel_event_counts(method: str, n: int, rec_keep=None, combine_keep=None) -> dict:
    """How often each event of :data:`KERNEL_EVENTS` happens in one row.

    Parameters
    ----------
    method : {"ratio", "theta_phi"}
    n : int >= 0
        Sequence length.
    rec_keep, combine_keep : array_like of shape (n,), optional
        Per position 1 (the recursion keeps its coupling / ``G`` is
        combined) or 0; fractional values give expected counts. ``None``
        means all ones (the full kernel).

    Returns
    -------
    dict
        Event name -> count (float).

    Examples
    --------
    >>> kernel_event_counts("ratio", 4)["fwd_coupled"]
    3.0
    >>> kernel_event_counts("ratio", 4, rec_keep=[1, 0, 1, 1])["bwd_reciprocal"]
    2.0
    """
    if method not in BK_METHODS:
        raise ValueError(f"method={method!r} is not one of {', '.join(map(repr, BK_METHODS))}")
    n = check_int("n", n, 0)
    r = np.ones(n) if rec_keep is None else np.asarray(rec_keep, dtype=np.float64)
    c = np.ones(n) if combine_keep is None else np.asarray(combine_keep, dtype=np.float64)
    if r.shape != (n,) or c.shape != (n,):
        raise ValueError(f"rec_keep and combine_keep must have shape ({n},); "
                         f"got {r.shape} and {c.shape}")
    if n == 0:
        return {name: 0.0 for name in KERNEL_EVENTS[method]}
    combine = float(c.sum())
    if method == "ratio":
        fwd_coupled = float(r[1:].sum())          # L[i], i >= 1, position i computed
        bwd_coupled = float(r[:-1].sum())         # R[i], i <= n-2, position i computed
        recip = float(r[:-1].sum())               # 1/R[i] for i >= 1 when i-1 computed
        return {
            "fwd_first": 1.0,
            "fwd_coupled": fwd_coupled,
            "fwd_masked": (n - 1) - fwd_coupled,
            "bwd_position": float(n),
            "bwd_coupled": bwd_coupled,
            "bwd_uncoupled": n - bwd_coupled,
            "bwd_reciprocal": recip,
            "bwd_no_reciprocal": n - recip,
            "combine": combine,
        }
    fwd_coupled = float(r[1:].sum())              # theta[i+1] couples when i computed
    bwd_coupled = float(r[1:n - 1].sum()) if n >= 3 else 0.0  # phi[i], i <= n-3, i+1 computed
    return {
        "fwd_first": 1.0,
        "fwd_step": float(n - 1),
        "fwd_coupled": fwd_coupled,
        "fwd_masked": (n - 1) - fwd_coupled,
        "fwd_last_check": 1.0 if n >= 2 else 0.0,
        "det_reciprocal": 1.0,
        "bwd_step": float(n - 1),
        "bwd_coupled": bwd_coupled,
        "combine": combine,
    }


def _tally(method, events, rows):
    out = {f"{cat}_{op}": 0.0 for cat in _CATEGORIES for op in _OPS}
    for name, count in events.items():
        for cat in _CATEGORIES:
            for op, per in zip(_OPS, KERNEL_EVENTS[method][name][cat]):
                out[f"{cat}_{op}"] += per * count * rows
    return out


def _summarise(raw: dict, extra: dict) -> dict:
    res = dict(extra)
    for op in _OPS:
        res[op] = sum(raw[f"{cat}_{op}"] for cat in _CATEGORIES)
    for cat in _CATEGORIES:
        res[cat] = sum(raw[f"{cat}_{op}"] for op in _OPS)
    res["total"] = res["add"] + res["mul"] + res["div"]
    res["by_category_op"] = raw
    return res


def _finish(method, n, batch, raw, extra):
    res = _summarise(raw, {"method": method, "n": n, "batch": batch, **extra})
    positions = n * batch
    res["per_position"] = res["total"] / positions if positions else 0.0
    return res


def bk_core_flops(n: int, batch: int = 1, *, method: str = "ratio") -> dict:
    """FLOPs of the full BK-Core kernel for ``batch`` rows of length ``n``.

    Parameters
    ----------
    n : int >= 0
    batch : int >= 0, default 1
    method : {"ratio", "theta_phi"}, default "ratio"

    Returns
    -------
    dict
        ``total`` (all FLOPs, divisions counted as 1), ``add``, ``mul``,
        ``div`` (by operation), ``arith``, ``guard``, ``scaling`` (by
        category, see the module docstring), ``per_position``
        (``total / (n * batch)``), ``by_category_op`` and the arguments.
        For ``n >= 2`` the totals are, per row: ratio ``66 n - 37`` with
        ``3 n - 2`` divisions (``arith`` ``42 n - 28``); theta_phi
        ``67 n - 45`` with one division (``arith`` ``44 n - 32``).

    Examples
    --------
    >>> bk_core_flops(4)["total"], bk_core_flops(4)["div"]
    (227.0, 10.0)
    >>> bk_core_flops(4, method="theta_phi")["total"], bk_core_flops(4, method="theta_phi")["div"]
    (223.0, 1.0)
    >>> bk_core_flops(1000, batch=8)["total"] == 8 * (66 * 1000 - 37)
    True
    """
    if method not in BK_METHODS:
        raise ValueError(f"method={method!r} is not one of {', '.join(map(repr, BK_METHODS))}")
    n = check_int("n", n, 0)
    batch = check_int("batch", batch, 0)
    raw = _tally(method, kernel_event_counts(method, n), batch)
    return _finish(method, n, batch, raw, {"semantics": None, "sparsity": 0.0})


def sparse_bk_core_flops(n: int, batch=None, *, sparsity=None, mask=None,
                         semantics: str = "local", method=None) -> dict:
    """FLOPs of the sparse BK-Core kernel (``bknumba.sparse_bk_core``).

    At a masked position "local" (ratio) and "seed" (theta/phi) skip the
    coupling term of the recursions (and in ratio form the reciprocal it
    needs) and the combine; "exact" runs the full recursions and skips only
    the combine and the write of ``G``.

    Parameters
    ----------
    n : int >= 0
    batch : int, optional
        Number of rows (default 1, or the rows of ``mask``).
    sparsity : float in [0, 1], optional
        Each position is skipped with this probability (expected counts).
    mask : array_like (n,) or (B, n) of 0/1, optional
        An explicit mask (exact counts). Give ``sparsity`` or ``mask``; with
        neither, nothing is masked.
    semantics : {"local", "seed", "exact"}, default "local"
    method : {"ratio", "theta_phi"}, optional
        Defaults to the semantics' own method ("local": ratio, "seed":
        theta_phi, "exact": ratio).

    Returns
    -------
    dict
        The keys of :func:`bk_core_flops`, plus ``semantics``, ``sparsity``
        (the fraction of masked positions) and ``computed`` (number of
        positions whose ``G`` is produced).

    Examples
    --------
    >>> full = bk_core_flops(128)["total"]
    >>> local = sparse_bk_core_flops(128, sparsity=0.5)["total"]
    >>> exact = sparse_bk_core_flops(128, sparsity=0.5, semantics="exact")["total"]
    >>> round(full / local, 3), round(full / exact, 3)
    (1.571, 1.129)
    >>> sparse_bk_core_flops(4, mask=[1, 1, 1, 1])["total"] == bk_core_flops(4)["total"]
    True
    """
    if semantics not in SEMANTICS:
        raise ValueError(f"semantics={semantics!r} is not one of "
                         f"{', '.join(map(repr, SEMANTICS))}")
    if method is None:
        method = _SEMANTICS_METHODS[semantics][0]
    if method not in _SEMANTICS_METHODS[semantics]:
        raise ValueError(f"semantics={semantics!r} is defined for method "
                         f"{' or '.join(map(repr, _SEMANTICS_METHODS[semantics]))}, "
                         f"not {method!r}")
    n = check_int("n", n, 0)
    if batch is not None:
        batch = check_int("batch", batch, 0)
    keep, mult = _keep_rows(n, batch, sparsity, mask)
    rec_follows, comb_follows = _SEMANTICS_FLAGS[semantics]
    raw = {f"{cat}_{op}": 0.0 for cat in _CATEGORIES for op in _OPS}
    for row in keep:
        events = kernel_event_counts(method, n, row if rec_follows else None,
                                     row if comb_follows else None)
        for key, val in _tally(method, events, mult).items():
            raw[key] += val
    rows = keep.shape[0] * mult
    computed = float(keep.sum()) * mult
    frac = 1.0 - computed / (rows * n) if rows * n else 0.0
    if sparsity is not None:
        frac = float(sparsity)
    return _finish(method, n, rows, raw,
                   {"semantics": semantics, "sparsity": frac, "computed": computed})


def weighted_cost(counts: dict, div_weight: float = 1.0, *, guards: bool = True) -> float:
    """A cost from a FLOP dict, with divisions weighted ``div_weight`` multiplies.

    Parameters
    ----------
    counts : dict
        From :func:`bk_core_flops` or :func:`sparse_bk_core_flops`.
    div_weight : float >= 1, default 1
        Cost of one division in multiplies (about 4-20 on real hardware).
    guards : bool, default True
        Include the pivot checks (``False``: ``arith`` and ``scaling`` only).

    Examples
    --------
    >>> c = bk_core_flops(4)
    >>> weighted_cost(c), weighted_cost(c, 10.0), weighted_cost(c, guards=False)
    (227.0, 317.0, 140.0)
    """
    raw = counts["by_category_op"]
    cats = _CATEGORIES if guards else ("arith", "scaling")
    total = 0.0
    for cat in cats:
        total += raw[f"{cat}_add"] + raw[f"{cat}_mul"] + div_weight * raw[f"{cat}_div"]
    return total


def predicted_sparse_speedup(n: int, sparsity: float, *, semantics: str = "local",
                             method=None, div_weight: float = 1.0, guards: bool = True,
                             full_method=None) -> float:
    """Predicted ``cost(full) / cost(sparse)`` of the BK-Core from FLOPs.

    ``full_method`` (default: the sparse method) selects the full kernel
    compared against. This is a FLOP ratio, not a time ratio: the CPU
    kernels are latency-bound recursions (see ``docs/benchmarks-flops.md``).

    Examples
    --------
    >>> round(predicted_sparse_speedup(256, 0.5), 3)
    1.571
    >>> round(predicted_sparse_speedup(256, 0.5, guards=False), 3)
    1.826
    """
    sp = sparse_bk_core_flops(n, sparsity=sparsity, semantics=semantics, method=method)
    full = bk_core_flops(n, method=full_method or sp["method"])
    return weighted_cost(full, div_weight, guards=guards) / weighted_cost(sp, div_weight,
                                                                          guards=guards)


# ----------------------------------------------------------------------------
# Layers (2 FLOPs per multiply-accumulate; see the module docstring)
# ----------------------------------------------------------------------------
def linear_flops(in_features: int, out_features: int, tokens: int = 1, *,
                 bias: bool = True) -> int:
    """FLOPs of ``Linear(in_features, out_features)`` applied to ``tokens`` vectors.

    ``2 * in * out`` per token with a bias, ``(2 * in - 1) * out`` without.

    Examples
    --------
    >>> linear_flops(3, 2), linear_flops(3, 2, bias=False), linear_flops(64, 128, 10)
    (12, 10, 163840)
    """
    i = check_int("in_features", in_features, 1)
    o = check_int("out_features", out_features, 0)
    t = check_int("tokens", tokens, 0)
    return t * (2 * i * o if bias else (2 * i - 1) * o)


def conv1d_flops(in_channels: int, out_channels: int, kernel_size: int, length: int, *,
                 bias: bool = True) -> int:
    """FLOPs of a stride-1 "same"-padded ``Conv1d`` over ``length`` positions.

    ``2 * ci * k * co`` per position with a bias (padded zeros included).

    Examples
    --------
    >>> conv1d_flops(2, 16, 3, 1), conv1d_flops(16, 16, 3, 128)
    (192, 196608)
    """
    ci = check_int("in_channels", in_channels, 1)
    co = check_int("out_channels", out_channels, 0)
    k = check_int("kernel_size", kernel_size, 1)
    n = check_int("length", length, 0)
    per = 2 * ci * k * co if bias else (2 * ci * k - 1) * co
    return n * per


def importance_predictor_flops(d_model: int, n: int, batch: int = 1, *,
                               kind: str = "sparse_bk_core", hidden=None) -> dict:
    """FLOPs of an importance predictor over ``batch`` sequences of ``n`` tokens.

    ``kind="sparse_bk_core"``: ``SparseBKCore.importance_predictor``,
    ``Linear(d, h) -> ReLU -> Linear(h, 1)`` (``d^2 + d`` per token for
    ``h = d/2``). ``kind="context"``: ``ImportancePredictor(use_context=True)``
    of ``LearnedSparsityG_ii``: ``Conv1d(d, h, 3) -> Conv1d(h, h, 3) ->
    Linear(h, h) -> Linear(h, 1)`` (``5 d^2 + d`` per token for ``h = d/2``).
    ``kind="scorer"``: the (unused) ``AdaptiveDownsampling.importance_scorer``,
    same shape as "sparse_bk_core". ``hidden`` defaults to ``d_model // 2``.

    Examples
    --------
    >>> importance_predictor_flops(64, 1)["total"], importance_predictor_flops(64, 1, kind="context")["total"]
    (4160, 20544)
    """
    d = check_int("d_model", d_model, 1)
    n = check_int("n", n, 0)
    batch = check_int("batch", batch, 0)
    h = d // 2 if hidden is None else check_int("hidden", hidden, 1)
    if h < 1:
        raise ValueError(f"hidden size d_model // 2 is 0 for d_model={d}; pass hidden")
    t = n * batch
    if kind in ("sparse_bk_core", "scorer"):
        parts = {"linear1": linear_flops(d, h, t), "linear2": linear_flops(h, 1, t)}
    elif kind == "context":
        parts = {"conv1": batch * conv1d_flops(d, h, 3, n), "conv2": batch * conv1d_flops(h, h, 3, n),
                 "linear1": linear_flops(h, h, t), "linear2": linear_flops(h, 1, t)}
    else:
        raise ValueError(f"kind={kind!r} is not one of 'sparse_bk_core', 'context', 'scorer'")
    return {**parts, "total": sum(parts.values()), "per_token": sum(parts.values()) / t if t else 0.0}


def interpolator_flops(n: int, batch: int = 1, *, kind: str = "sparse_bk_core") -> dict:
    """FLOPs of the interpolation CNN that fills masked ``G`` positions.

    ``kind="sparse_bk_core"``: ``Conv1d(2,16,3) -> Conv1d(16,16,3) ->
    Conv1d(16,2,3)``, 1920 per position. ``kind="learned_g_ii"``:
    ``Conv1d(2,32,5) -> Conv1d(32,32,5) -> Conv1d(32,2,5)``, 11 520 per
    position. Both run over every position, masked or not.

    Examples
    --------
    >>> interpolator_flops(1)["total"], interpolator_flops(1, kind="learned_g_ii")["total"]
    (1920, 11520)
    """
    n = check_int("n", n, 0)
    batch = check_int("batch", batch, 0)
    if kind == "sparse_bk_core":
        w, k = 16, 3
    elif kind == "learned_g_ii":
        w, k = 32, 5
    else:
        raise ValueError(f"kind={kind!r} is not one of 'sparse_bk_core', 'learned_g_ii'")
    parts = {"conv1": batch * conv1d_flops(2, w, k, n), "conv2": batch * conv1d_flops(w, w, k, n),
             "conv3": batch * conv1d_flops(w, 2, k, n)}
    return {**parts, "total": sum(parts.values())}


def moe_flops(d_model: int, tokens: int, num_experts: int = 4, top_k: int = 1) -> dict:
    """FLOPs of ``SparseMoELayer`` (router + ``top_k`` experts per token).

    Each expert is ``Linear(d, 2d) -> ReLU -> Linear(2d, d)``: ``8 d^2``
    per token (``per_expert_token``). ``top_k >= num_experts`` is the dense
    mixture.

    Examples
    --------
    >>> m = moe_flops(64, 1, num_experts=4, top_k=1)
    >>> m["per_expert_token"], m["router"], m["total"]
    (32768, 512, 33280)
    >>> moe_flops(64, 1, 4, 2)["combine"]
    192
    """
    d = check_int("d_model", d_model, 1)
    t = check_int("tokens", tokens, 0)
    e = check_int("num_experts", num_experts, 1)
    k = min(check_int("top_k", top_k, 1), e)
    per_expert = linear_flops(d, 2 * d) + linear_flops(2 * d, d)
    router = linear_flops(d, e, t)
    experts = k * per_expert * t
    combine = 0 if k == 1 else (2 * k - 1) * d * t
    return {"router": router, "experts": experts, "combine": combine,
            "per_expert_token": per_expert, "active_experts": k,
            "total": router + experts + combine}


def downsampling_flops(d_model: int, n: int, factor: int = 2, batch: int = 1, *,
                       adaptive: bool = True) -> dict:
    """FLOPs of ``AdaptiveDownsampling`` (or ``LearnedDownsampling``).

    Pooling ``(2 f - 1) d`` and ``refine`` ``Linear(d, d)`` per low-resolution
    token; with ``adaptive`` also the importance scorer (``d^2 + d`` per
    full-resolution token), which the model computes but never uses.

    Examples
    --------
    >>> downsampling_flops(64, 2)["total"]   # scorer 2 * 4160, pool 192, refine 8192
    16704
    """
    d = check_int("d_model", d_model, 1)
    n = check_int("n", n, 0)
    f = check_int("factor", factor, 1)
    batch = check_int("batch", batch, 0)
    if n % f:
        raise ValueError(f"n={n} is not divisible by factor={f}")
    low = n // f * batch
    parts = {"pool": (2 * f - 1) * d * low, "refine": linear_flops(d, d, low)}
    if adaptive:
        parts["scorer"] = importance_predictor_flops(d, n, batch, kind="scorer")["total"]
    return {**parts, "total": sum(parts.values())}


def upsampling_flops(d_model: int, n_low: int, factor: int = 2, batch: int = 1) -> dict:
    """FLOPs of ``AdaptiveUpsampling`` / ``LearnedUpsampling``.

    ``Linear(d, f d) -> LayerNorm -> act -> Linear(f d, f d)`` per
    low-resolution token: ``(2 f + 2 f^2) d^2`` (``12 d^2`` for ``f = 2``).

    Examples
    --------
    >>> upsampling_flops(64, 1)["total"] == 12 * 64 ** 2
    True
    """
    d = check_int("d_model", d_model, 1)
    n_low = check_int("n_low", n_low, 0)
    f = check_int("factor", factor, 1)
    batch = check_int("batch", batch, 0)
    t = n_low * batch
    parts = {"transform1": linear_flops(d, f * d, t), "transform2": linear_flops(f * d, f * d, t)}
    return {**parts, "total": sum(parts.values())}


def refine_flops(d_model: int, n: int, batch: int = 1) -> dict:
    """FLOPs of ``MultiScaleBKLayer.refine`` (two ``Linear(d, d)`` per token).

    Examples
    --------
    >>> refine_flops(64, 1)["total"] == 4 * 64 ** 2
    True
    """
    d = check_int("d_model", d_model, 1)
    t = check_int("n", n, 0) * check_int("batch", batch, 0)
    parts = {"linear1": linear_flops(d, d, t), "linear2": linear_flops(d, d, t)}
    return {**parts, "total": sum(parts.values())}


def ffn_flops(d_model: int, d_ff: int, rank: int, sparsity: float, *,
              both_sparse: bool = True) -> dict:
    """Per-token FLOPs of the sparse FFN (``bknumba.ffn.flops.sparse_ffn_flops``).

    Imported lazily; raises ``ImportError`` when ``bknumba.ffn`` has no
    ``flops`` module.
    """
    try:
        from ..ffn.flops import sparse_ffn_flops
    except ImportError as exc:  # pragma: no cover - depends on the checkout
        raise ImportError("bknumba.ffn.flops.sparse_ffn_flops is not available") from exc
    return sparse_ffn_flops(d_model, d_ff, rank, sparsity, both_sparse=both_sparse)


def _bk_core_total(n, batch, sparsity, semantics, method):
    if sparsity is None:
        return bk_core_flops(n, batch, method=method)["total"]
    meth = method if method in _SEMANTICS_METHODS[semantics] else None
    return sparse_bk_core_flops(n, batch, sparsity=sparsity, semantics=semantics,
                                method=meth)["total"]


def moe_bk_layer_flops(d_model: int, n: int, batch: int = 1, *, num_experts: int = 4,
                       top_k: int = 1, method: str = "ratio") -> dict:
    """FLOPs of the standard ``MoEResNetBKLayer`` (full BK-Core).

    MoE, ``v_proj = Linear(d, 1)``, the BK-Core (per sequence) and
    ``output_proj = Linear(2, d)``.

    Examples
    --------
    >>> f = moe_bk_layer_flops(64, 128)
    >>> f["total"] == 128 * (33280 + 128 + 256) + (66 * 128 - 37)
    True
    """
    d = check_int("d_model", d_model, 1)
    n = check_int("n", n, 0)
    batch = check_int("batch", batch, 0)
    t = n * batch
    parts = {"moe": moe_flops(d, t, num_experts, top_k)["total"],
             "v_proj": linear_flops(d, 1, t),
             "bk_core": bk_core_flops(n, batch, method=method)["total"],
             "output_proj": linear_flops(2, d, t)}
    return {**parts, "total": sum(parts.values())}


def sparse_moe_bk_layer_flops(d_model: int, n: int, sparsity: float, batch: int = 1, *,
                              num_experts: int = 4, top_k: int = 1,
                              semantics: str = "seed") -> dict:
    """FLOPs of ``SparseMoEResNetBKLayer`` (``SparseBKCore`` in place of the core).

    The importance predictor and the interpolator run at every position;
    the sparse core uses ``semantics`` (the model's is "seed").

    Examples
    --------
    >>> f = sparse_moe_bk_layer_flops(64, 128, 0.5)
    >>> f["predictor"], f["interpolator"]
    (532480, 245760)
    """
    d = check_int("d_model", d_model, 1)
    n = check_int("n", n, 0)
    batch = check_int("batch", batch, 0)
    t = n * batch
    parts = {"moe": moe_flops(d, t, num_experts, top_k)["total"],
             "v_proj": linear_flops(d, 1, t),
             "predictor": importance_predictor_flops(d, n, batch)["total"],
             "bk_core": sparse_bk_core_flops(n, batch, sparsity=sparsity,
                                             semantics=semantics)["total"],
             "interpolator": interpolator_flops(n, batch)["total"],
             "output_proj": linear_flops(2, d, t)}
    return {**parts, "total": sum(parts.values())}


def learned_sparsity_g_ii_flops(d_model: int, n: int, sparsity: float, batch: int = 1, *,
                                as_implemented: bool = True, semantics: str = "local",
                                method: str = "ratio") -> dict:
    """FLOPs of ``LearnedSparsityG_ii`` (context predictor + core + interpolator).

    ``as_implemented=True`` counts what the model does: the *full* BK-Core
    (``SparseG_iiComputation`` computes everything and multiplies by the
    mask; defect 25). ``False`` counts the intended sparse core.

    Examples
    --------
    >>> f = learned_sparsity_g_ii_flops(128, 256, 0.6)
    >>> f["predictor"], f["interpolator"], f["bk_core"]
    (21004288, 2949120, 16859.0)
    """
    d = check_int("d_model", d_model, 1)
    n = check_int("n", n, 0)
    batch = check_int("batch", batch, 0)
    core = (bk_core_flops(n, batch, method=method)["total"] if as_implemented
            else _bk_core_total(n, batch, sparsity, semantics, method))
    parts = {"predictor": importance_predictor_flops(d, n, batch, kind="context")["total"],
             "bk_core": core,
             "interpolator": interpolator_flops(n, batch, kind="learned_g_ii")["total"]}
    return {**parts, "total": sum(parts.values())}


def multi_scale_bk_layer_flops(d_model: int, n: int, num_experts: int = 4,
                               sparsity: float = 0.6, batch: int = 1, *,
                               as_implemented: bool = True, method: str = "ratio") -> dict:
    """FLOPs of ``MultiScaleBKLayer`` (``multi_scale_bk_layer.py``) and its standard.

    Components: adaptive downsampling (with its unused scorer), the
    low-resolution ``SparseBKLayerWithMoE`` at ``n/2`` (top-1 MoE, v_proj,
    ``LearnedSparsityG_ii``, output_proj), upsampling, and the full-resolution
    refine MLP. ``standard`` is ``MoEResNetBKLayer(d, n)`` with top-1 routing.

    Returns
    -------
    dict
        Component counts, ``total``, ``standard`` and ``ratio``
        (``total / standard``; above 1 means *more* work than the standard
        layer).

    Examples
    --------
    >>> f = multi_scale_bk_layer_flops(128, 256)
    >>> round(f["ratio"], 2)
    2.33
    """
    d = check_int("d_model", d_model, 1)
    n = check_int("n", n, 2)
    batch = check_int("batch", batch, 0)
    if n % 2:
        raise ValueError(f"n={n} must be even (the layer halves the sequence)")
    low = n // 2
    tl = low * batch
    g = learned_sparsity_g_ii_flops(d, low, sparsity, batch, as_implemented=as_implemented,
                                    method=method)
    parts = {
        "downsample": downsampling_flops(d, n, 2, batch)["total"],
        "low_res_moe": moe_flops(d, tl, num_experts, 1)["total"],
        "low_res_v_proj": linear_flops(d, 1, tl),
        "low_res_predictor": g["predictor"],
        "low_res_bk_core": g["bk_core"],
        "low_res_interpolator": g["interpolator"],
        "low_res_output_proj": linear_flops(2, d, tl),
        "upsample": upsampling_flops(d, low, 2, batch)["total"],
        "refine": refine_flops(d, n, batch)["total"],
    }
    total = sum(parts.values())
    standard = moe_bk_layer_flops(d, n, batch, num_experts=num_experts, method=method)["total"]
    return {**parts, "total": total, "standard": standard, "ratio": total / standard}


def multi_scale_resnet_bk_layer_flops(d_model: int, n: int, num_experts: int = 4,
                                      batch: int = 1, *, method: str = "ratio") -> dict:
    """FLOPs of ``MultiScaleResNetBKLayer`` (``multi_scale_layer.py``) and its standard.

    Learned downsampling, a ``MoEResNetBKLayer`` at ``n/2``, learned
    upsampling and a ``MoEResNetBKLayer`` at ``n``.

    Examples
    --------
    >>> round(multi_scale_resnet_bk_layer_flops(64, 128)["ratio"], 2)
    2.35
    """
    d = check_int("d_model", d_model, 1)
    n = check_int("n", n, 2)
    batch = check_int("batch", batch, 0)
    if n % 2:
        raise ValueError(f"n={n} must be even (the layer halves the sequence)")
    low = n // 2
    parts = {
        "downsample": downsampling_flops(d, n, 2, batch, adaptive=False)["total"],
        "low_res_layer": moe_bk_layer_flops(d, low, batch, num_experts=num_experts,
                                            method=method)["total"],
        "upsample": upsampling_flops(d, low, 2, batch)["total"],
        "full_res_layer": moe_bk_layer_flops(d, n, batch, num_experts=num_experts,
                                             method=method)["total"],
    }
    total = sum(parts.values())
    standard = parts["full_res_layer"]
    return {**parts, "total": total, "standard": standard, "ratio": total / standard}


# ----------------------------------------------------------------------------
# The seeds' formulas, reproduced as claimed
# ----------------------------------------------------------------------------
def claimed_sparse_g_ii_flops(d_model: int, n: int, sparsity: float = 0.6) -> dict:
    """``count_flops_sparse_g_ii`` of ``learned_sparsity_g_ii.py``, as claimed.

    ``standard = 20 n``; ``importance = interpolation = 2 n d``;
    ``sparse_compute = (1 - s) standard``; ``reduction = 1 / (1 - s)``
    (ignores the predictor and the interpolator).

    Examples
    --------
    >>> c = claimed_sparse_g_ii_flops(128, 256, 0.6)
    >>> c["standard"], c["sparse_compute"], c["total"], c["reduction_factor"]
    (5120, 2048.0, 133120.0, 2.5)
    """
    s = check_fraction("sparsity", sparsity)
    standard = 20 * n
    importance = 2 * n * d_model
    interpolation = 2 * n * d_model
    sparse_compute = (1 - s) * standard
    return {"standard": standard, "importance": importance, "interpolation": interpolation,
            "sparse_compute": sparse_compute,
            "total": importance + sparse_compute + interpolation,
            "reduction_factor": standard / sparse_compute if sparse_compute else math.inf,
            "sparsity": s}


def claimed_multi_scale_bk_flops(d_model: int, n: int, num_experts: int = 4,
                                 sparsity: float = 0.6) -> dict:
    """``count_flops_multi_scale`` of ``multi_scale_bk_layer.py``, as claimed.

    ``standard = n d^2 + 20 n``; ``multi = 2 n d (down) + (n/2) d^2 +
    (n/2) 20 (1 - s) (low) + 2 n d (up) + 2 n d (refine)``.

    Examples
    --------
    >>> c = claimed_multi_scale_bk_flops(128, 256)
    >>> c["standard_flops"], c["multi_scale_flops"], round(c["reduction_pct"], 4)
    (4199424, 2294784.0, 0.4535)
    """
    s = check_fraction("sparsity", sparsity)
    d = d_model
    moe = n * d * d * num_experts // num_experts
    bk = 20 * n
    standard = moe + bk
    breakdown = {"downsample": 2 * n * d, "low_res": (n // 2) * d * d + (n // 2) * 20 * (1 - s),
                 "upsample": 2 * n * d, "refine": 2 * n * d}
    multi = sum(breakdown.values())
    return {"standard_flops": standard, "multi_scale_flops": multi,
            "reduction_pct": 1 - multi / standard, "speedup": standard / multi,
            "breakdown": breakdown, "sparsity": s}


def claimed_multi_scale_flops(d_model: int, n: int, num_experts: int = 4) -> dict:
    """``count_flops_multi_scale`` of ``multi_scale_layer.py``, as claimed.

    ``standard = n d^2 E``; ``multi = n d + (n/2) d^2 E + n d + n d^2 E``.
    Its docstring promises "~2x"; its own value is 0.66x.

    Examples
    --------
    >>> round(claimed_multi_scale_flops(64, 128)["speedup"], 3)
    0.663
    """
    d, e = d_model, num_experts
    standard = n * d * d * e
    breakdown = {"downsample": n * d, "low_res_processing": (n // 2) * d * d * e,
                 "upsample": n * d, "refine": n * d * d * e}
    multi = sum(breakdown.values())
    return {"standard_flops": standard, "multi_scale_flops": multi,
            "speedup": standard / multi, "breakdown": breakdown}


def claimed_bk_core_flops(n: int, batch: int = 1) -> dict:
    """The BK part of ``flops_counter.py``, as claimed.

    Forward ``34 n`` per sequence (theta: 2 complex multiplies at 6 and a
    complex add at 2, i.e. 14 n; phi 14 n; the division 6 n); backward
    ``26 n``. ``count_flops_sparse_g_ii`` uses ``20 n`` instead.

    Examples
    --------
    >>> claimed_bk_core_flops(128)["forward"]
    4352
    """
    return {"forward": 34 * n * batch, "backward": 26 * n * batch,
            "sparse_g_ii_standard": 20 * n * batch}


def claimed_ffn_flops(d_model: int = 768, d_ff: int = 3072, rank: int = 8,
                      sparsity: float = 0.5) -> dict:
    """The sparse-FFN count of seed 004, as claimed (per token).

    MACs are counted as FLOPs; ``lin1`` is counted dense; only ``lin2``'s
    input channels are sparse: ``svd = d r + r d_ff``,
    ``total = svd + d d_ff + (1 - s) d_ff d``.

    Examples
    --------
    >>> c = claimed_ffn_flops(768, 3072, 8, 0.5)
    >>> c["dense"], c["svd"], c["total"]
    (4718592, 30720, 3569664)
    >>> claimed_ffn_flops(768, 3072, 4, 0.75)["total"]
    2964480
    """
    s = check_fraction("sparsity", sparsity)
    dense = 2 * d_model * d_ff
    svd = d_model * rank + rank * d_ff
    lin1 = d_model * d_ff
    lin2 = int(round((1 - s) * d_ff)) * d_model
    total = svd + lin1 + lin2
    return {"dense": dense, "svd": svd, "lin1": lin1, "lin2": lin2, "total": total,
            "reduction": 1 - total / dense}


# ----------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------
_SEED_CONFIGS = ({"d_model": 64, "n": 128}, {"d_model": 128, "n": 256})


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if isinstance(x, float) and not x.is_integer():
        if abs(x) < 0.1:
            return f"{x:.2g}"
        return f"{x:,.2f}" if abs(x) < 100 else f"{x:,.0f}"
    return f"{int(x):,}"


def flops_rows(configs=None, *, sparsity: float = 0.6, num_experts: int = 4,
               method: str = "ratio") -> list:
    """Rows of the claimed-vs-honest table, as dicts.

    Each row has ``section``, ``component``, ``config``, ``claimed``,
    ``honest`` and ``note``. Counts are per sequence (batch 1) except for
    the FFN (per token).

    Parameters
    ----------
    configs : list of dict with ``d_model`` and ``n``, optional
        Default: the seeds' ``(64, 128)`` and ``(128, 256)``.
    sparsity : float, default 0.6
    num_experts : int, default 4
    method : {"ratio", "theta_phi"}, default "ratio"
        Full BK-Core method used for the honest counts.
    """
    if method not in BK_METHODS:
        raise ValueError(f"method={method!r} is not one of {', '.join(map(repr, BK_METHODS))}")
    s = check_fraction("sparsity", sparsity)
    e = check_int("num_experts", num_experts, 1)
    rows = []

    def add(section, component, config, claimed, honest, note=""):
        rows.append({"section": section, "component": component, "config": config,
                     "claimed": claimed, "honest": honest, "note": note})

    for cfg in configs or _SEED_CONFIGS:
        d, n = cfg["d_model"], cfg["n"]
        tag = f"d={d} N={n} s={s:g}"
        # --- sparse G_ii (LearnedSparsityG_ii, seed 002) -------------------------
        c = claimed_sparse_g_ii_flops(d, n, s)
        full = bk_core_flops(n, method=method)
        sparse = sparse_bk_core_flops(n, sparsity=s, semantics="local")
        impl = learned_sparsity_g_ii_flops(d, n, s, method=method)
        intended = learned_sparsity_g_ii_flops(d, n, s, as_implemented=False, method=method)
        sec = "sparse G_ii"
        add(sec, "full BK-Core", tag, c["standard"], full["total"],
            f"claimed 20N; kernel {full['per_position']:.1f}/position, {full['div']:.0f} div")
        add(sec, "sparse BK-Core (local)", tag, c["sparse_compute"], sparse["total"],
            "claimed (1-s)*20N")
        add(sec, "importance predictor", tag, c["importance"], impl["predictor"],
            "context predictor 5d^2+d per token, claimed 2Nd")
        add(sec, "interpolator CNN", tag, c["interpolation"], impl["interpolator"],
            "11520 per token, claimed 2Nd")
        add(sec, "module total", tag, c["total"], impl["total"],
            "as implemented: full core + predictor + CNN")
        add(sec, "BK-Core reduction (x)", tag, c["reduction_factor"],
            full["total"] / sparse["total"], "core only, local semantics")
        add(sec, "module reduction (x)", tag, c["reduction_factor"],
            full["total"] / intended["total"],
            "full core / (sparse core + predictor + CNN); < 1 = more work")
        # --- multi-scale BK layer (multi_scale_bk_layer.py) ------------------------
        cm = claimed_multi_scale_bk_flops(d, n, e, s)
        hm = multi_scale_bk_layer_flops(d, n, e, s, method=method)
        sec = "multi-scale BK layer"
        add(sec, "standard layer", f"{tag} E={e}", cm["standard_flops"], hm["standard"],
            "claimed MoE d^2/token; top-1 expert is 8d^2 + router")
        add(sec, "multi-scale layer", f"{tag} E={e}", cm["multi_scale_flops"], hm["total"],
            "adds scorer, 12d^2 upsample, 4d^2 refine, predictor, CNN")
        for key, label in (("downsample", "  downsample"), ("upsample", "  upsample"),
                           ("refine", "  refine")):
            add(sec, label, f"{tag} E={e}", cm["breakdown"][key], hm[key], "")
        low_h = sum(v for k, v in hm.items() if k.startswith("low_res"))
        add(sec, "  low-res branch", f"{tag} E={e}", cm["breakdown"]["low_res"], low_h,
            "MoE + v_proj + LearnedSparsityG_ii + output_proj at N/2")
        add(sec, "FLOP reduction (%)", f"{tag} E={e}", 100 * cm["reduction_pct"],
            100 * (1 - hm["ratio"]), "negative = more work than standard")
        # --- combined (demo) --------------------------------------------------------
        combined_claim = c["reduction_factor"] * cm["speedup"]
        add("combined", "sparse G_ii x multi-scale (x)", f"{tag} E={e}", combined_claim,
            1 / hm["ratio"], "claimed multiplies overlapping ratios; honest = whole layer")
        # --- multi_scale_layer.py ------------------------------------------------------
        cl = claimed_multi_scale_flops(d, n, e)
        hl = multi_scale_resnet_bk_layer_flops(d, n, e, method=method)
        add("multi-scale layer (7.1)", "speed-up (x)", f"d={d} N={n} E={e}",
            cl["speedup"], 1 / hl["ratio"], "docs promise ~2x; own formula 0.66x")
    # --- BK-Core flops_counter -------------------------------------------------------
    for n in sorted({cfg["n"] for cfg in (configs or _SEED_CONFIGS)}):
        cb = claimed_bk_core_flops(n)
        for meth in BK_METHODS:
            f = bk_core_flops(n, method=meth)
            add("BK-Core forward", meth, f"N={n}", cb["forward"], f["total"],
                f"arith {f['arith']:.0f}, guard {f['guard']:.0f}, scaling "
                f"{f['scaling']:.0f}, div {f['div']:.0f}")
    # --- sparse BK-Core speed claims (seed 001) -------------------------------------
    claims = {0.3: 1.4, 0.5: 1.8, 0.7: 2.3}
    n0 = (configs or _SEED_CONFIGS)[0]["n"]
    d0 = (configs or _SEED_CONFIGS)[0]["d_model"]
    for sp, claim in claims.items():
        core = predicted_sparse_speedup(n0, sp, semantics="seed")
        full = bk_core_flops(n0, method="theta_phi")["total"]
        module = full / (sparse_bk_core_flops(n0, sparsity=sp, semantics="seed")["total"]
                         + importance_predictor_flops(d0, n0)["total"]
                         + interpolator_flops(n0)["total"])
        add("SparseBKCore speed-up", f"s={sp:g} core / module (x)", f"d={d0} N={n0}",
            claim, f"{core:.2f} / {module:.4f}",
            "seed semantics; module adds predictor and 1920/token CNN")
    # --- FFN (seed 004) -----------------------------------------------------------------
    for rank, sp in ((8, 0.5), (4, 0.75)):
        cf = claimed_ffn_flops(768, 3072, rank, sp)
        try:
            hf = ffn_flops(768, 3072, rank, sp, both_sparse=False)["total"]
            hb = ffn_flops(768, 3072, rank, sp, both_sparse=True)["total"]
            honest = hf
            note = f"per token; both layers sparse: {_fmt(float(hb))}; claimed counts MACs"
        except ImportError:
            honest, note = None, "bknumba.ffn.flops not available"
        add("sparse FFN (per token)", f"rank {rank}, s={sp:g}", "768->3072->768",
            cf["total"], honest, note)
    try:
        dense_h = ffn_flops(768, 3072, 8, 0.0, both_sparse=False)["total"]
    except ImportError:
        dense_h = None
    add("sparse FFN (per token)", "dense", "768->3072->768", claimed_ffn_flops()["dense"],
        dense_h, "claimed counts one FLOP per multiply-add")
    return rows


def flops_report(configs=None, *, sparsity: float = 0.6, num_experts: int = 4,
                 method: str = "ratio", fmt: str = "text") -> str:
    """The claimed-vs-honest FLOP table as text, Markdown or JSON.

    Examples
    --------
    >>> out = flops_report()
    >>> "multi-scale BK layer" in out and "4.57" in out
    True
    """
    rows = flops_rows(configs, sparsity=sparsity, num_experts=num_experts, method=method)
    if fmt == "json":
        return json.dumps(rows, indent=1, default=str)
    head = ("section", "component", "config", "claimed", "honest", "note")
    body = [(r["section"], r["component"], r["config"], _fmt(r["claimed"]), _fmt(r["honest"]),
             r["note"]) for r in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    if fmt != "text":
        raise ValueError(f"fmt={fmt!r} is not one of 'text', 'markdown', 'json'")
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    widths[-1] = 0
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(head, widths)).rstrip()]
    lines.append("  ".join("-" * max(w, 4) for w in widths).rstrip())
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in body]
    lines.append("")
    lines.append("FLOP = one real add, multiply or division (2 per multiply-accumulate in "
                 "layers); activations, norms, softmax and residuals not counted. "
                 "See bknumba.sparsity.flops.")
    return "\n".join(lines)


def speedup_rows(n: int = 4096, batch: int = 64, sparsities=(0.0, 0.25, 0.5, 0.75, 0.9), *,
                 semantics=SEMANTICS, measure: bool = False, repeats: int = 5,
                 seed: int = 0) -> list:
    """Predicted (and optionally measured) BK-Core speed-ups from sparsity.

    Predicted: FLOP ratio full/sparse with all operations (``pred``), with
    divisions weighted 10x (``pred_div10``) and without guards
    (``pred_arith``). Measured (``measure=True``): median wall time of
    ``bknumba.bk_core`` over ``bknumba.sparse_bk_core`` on the model's
    inputs (``a = -2 + U(-3, 3)``, ``b = c = 1``, ``z = 1j``) with random
    masks; the full kernel uses the semantics' method.
    """
    rows = []
    rng = np.random.default_rng(seed)
    if measure:
        import bknumba  # heavy: numba
        a = -2.0 + rng.uniform(-3.0, 3.0, size=(batch, n))
        one = np.ones((batch, n - 1))

        def timeit(fn):
            fn()  # compile / warm up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return float(np.median(times))

    for sem in semantics:
        meth = _SEMANTICS_METHODS[sem][0]
        full = bk_core_flops(n, batch, method=meth)
        if measure:
            t_full = timeit(lambda: bknumba.bk_core(a, one, one, 1j, method=meth))
        for sp in sparsities:
            sp_c = sparse_bk_core_flops(n, batch, sparsity=sp, semantics=sem)
            row = {"semantics": sem, "method": meth, "n": n, "batch": batch, "sparsity": sp,
                   "pred": weighted_cost(full) / weighted_cost(sp_c),
                   "pred_div10": weighted_cost(full, 10.0) / weighted_cost(sp_c, 10.0),
                   "pred_arith": (weighted_cost(full, guards=False)
                                  / weighted_cost(sp_c, guards=False)),
                   "measured": None}
            if measure:
                mask = rng.random((batch, n)) >= sp
                t_sp = timeit(lambda: bknumba.sparse_bk_core(a, one, one, mask, 1j,
                                                             semantics=sem))
                row["measured"] = t_full / t_sp
                row["t_full_ms"] = 1e3 * t_full
                row["t_sparse_ms"] = 1e3 * t_sp
            rows.append(row)
    return rows


def speedup_report(rows) -> str:
    """Markdown table of :func:`speedup_rows` output."""
    lines = ["| semantics | method | sparsity | predicted (FLOPs) | predicted (div = 10) "
             "| predicted (no guards) | measured |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        meas = "TBD (lead: from the kernel benchmarks)" if r["measured"] is None \
            else f"{r['measured']:.2f}"
        lines.append(f"| {r['semantics']} | {r['method']} | {r['sparsity']:.0%} | "
                     f"{r['pred']:.2f} | {r['pred_div10']:.2f} | {r['pred_arith']:.2f} | "
                     f"{meas} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    """``bknumba flops``: print the seeds' claimed FLOPs beside the honest count.

    Examples
    --------
    >>> main(["--d-model", "64", "--n-seq", "128", "--format", "json"]) == 0  # doctest: +ELLIPSIS
    [...
    True
    """
    parser = argparse.ArgumentParser(
        prog="bknumba flops",
        description="Seeds' claimed FLOP counts beside an honest count, component by "
                    "component (see bknumba.sparsity.flops for the conventions).")
    parser.add_argument("--d-model", type=int, default=None,
                        help="model width (default: the seeds' 64 and 128)")
    parser.add_argument("--n-seq", type=int, default=None,
                        help="sequence length (default: the seeds' 128 and 256)")
    parser.add_argument("--sparsity", type=float, default=0.6, help="G_ii sparsity (0.6)")
    parser.add_argument("--num-experts", type=int, default=4, help="MoE experts (4)")
    parser.add_argument("--method", choices=BK_METHODS, default="ratio",
                        help="full BK-Core method for the honest count (ratio)")
    parser.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    parser.add_argument("--speedups", action="store_true",
                        help="print predicted BK-Core speed-ups from sparsity instead")
    parser.add_argument("--measure", action="store_true",
                        help="with --speedups: also time bknumba.bk_core / sparse_bk_core")
    parser.add_argument("--batch", type=int, default=64, help="rows for --speedups (64)")
    parser.add_argument("--length", type=int, default=4096, help="N for --speedups (4096)")
    args = parser.parse_args(argv)
    try:
        if args.speedups:
            rows = speedup_rows(args.length, args.batch, measure=args.measure)
            print(json.dumps(rows, indent=1) if args.format == "json" else speedup_report(rows))
            return 0
        if (args.d_model is None) != (args.n_seq is None):
            parser.error("give both --d-model and --n-seq, or neither")
        configs = None
        if args.d_model is not None:
            configs = [{"d_model": args.d_model, "n": args.n_seq}]
        print(flops_report(configs, sparsity=args.sparsity, num_experts=args.num_experts,
                           method=args.method, fmt=args.format))
    except (TypeError, ValueError) as exc:
        print(f"bknumba flops: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
