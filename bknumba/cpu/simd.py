"""Explicit SIMD for the CPU kernels: LLVM vector values in Numba.

LLVM's loop vectoriser does not vectorise the recursions' lane loops reliably
from Numba (runtime alias checks between the scratch arrays, the tile width
unknown at compile time: see ``BENCHMARKS.md`` section 1). Here the lanes are
explicit instead: :class:`F64x` is a Numba type whose value *is* an LLVM
vector ``<W x double>`` (one register with AVX-512 for ``W = 8``) holding one
quantity of ``W`` independent rows, and each intrinsic below emits LLVM vector
instructions on it (``fadd``, ``fdiv``, ``fcmp`` + ``select``, ...). A tile of
``W`` rows then advances with packed instructions (``vdivpd``, ``vmulpd``)
instead of ``W`` scalar ones, and loop-carried lanes stay in vector registers.

The lane count comes from the *type* of a ``proto`` argument, a tuple of
``W`` floats (``lanes(W)``): kernels written with these intrinsics are
ordinary module-level functions, compiled (and cached) once per lane count.

Every operation is the IEEE operation that the scalar kernels perform, in the
same order, with fused multiply-adds exactly where the scalar kernels call
:func:`fma` (:func:`vfma` here) and no other contraction, so the results are
bit for bit those of the scalar kernels (tested). The one exception is the sign
of an exact zero: for a real coupling, :func:`couple` omits the scalar code's
``- 0.0 * x`` term, which can turn ``-0.0`` into ``+0.0``.

Developers: Numba's on-disk cache is keyed on each kernel's own source file.
After editing this module, clear the cache (``find bknumba -name "*.nb[ic]"
-delete``) or the kernels of ``ratio.py`` / ``theta_phi.py`` load stale code.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.datamodel import models
from numba.extending import intrinsic, register_model

__all__ = ["F64x", "lanes", "vadd", "vsub", "vmul", "vdiv", "vfma", "fma", "vneg", "vabs",
           "vmax", "vmin", "col", "col_diag", "col_couple", "col_fin", "col_span", "stash",
           "unstash", "splat", "sel_lt", "sel_le", "sel_gt", "sel_eq", "vpow2", "first_bad", "diag",
           "couple", "fin_acc", "put_c", "put_c_at", "flag_col", "z_lanes", "put_rows", "vload",
           "vstore", "host_width", "keep_where"]

_D = ir.DoubleType()
_I32 = ir.IntType(32)
TINY = float(np.finfo(np.float64).tiny)


class F64x(types.Type):
    """``W`` float64 lanes as one LLVM vector value (see the module docstring)."""

    def __init__(self, W):
        self.W = int(W)
        super().__init__(name=f"F64x{self.W}")


@register_model(F64x)
class _F64xModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(_D, fe_type.W))


def lanes(W: int) -> tuple:
    """The ``proto`` argument that selects ``W`` lanes: a tuple of ``W`` zeros."""
    return (0.0,) * int(W)


@lru_cache(maxsize=None)
def host_width() -> int:
    """Lanes per tile for this CPU: 8 with AVX-512 (32 vector registers of 8
    doubles), 4 with AVX (16 registers of 4), 2 otherwise."""
    from llvmlite import binding as ll

    try:
        feats = ll.get_host_cpu_features()
    except Exception:  # noqa: BLE001 - features unknown: the portable choice
        return 2
    if feats.get("avx512f", False):
        return 8
    if feats.get("avx", False):
        return 4
    return 2


def _width(proto):
    if isinstance(proto, types.UniTuple) and isinstance(proto.dtype, types.Float):
        return proto.count
    return None


def _vec(W):
    return ir.VectorType(_D, W)


def _pack(builder, W, vals):
    v = ir.Constant(_vec(W), ir.Undefined)
    for j, x in enumerate(vals):
        v = builder.insert_element(v, x, ir.Constant(_I32, j))
    return v


def _lane(builder, v, j):
    return builder.extract_element(v, ir.Constant(_I32, j))


def _binop(name, doc):
    def impl(typingctx, x, y):
        if not (isinstance(x, F64x) and x == y):
            return None

        def codegen(context, builder, sig, args):
            return getattr(builder, name)(args[0], args[1])

        return x(x, y), codegen

    impl.__name__ = f"v{name[1:]}"
    impl.__doc__ = doc
    return intrinsic(impl)


vadd = _binop("fadd", "Lane-wise ``x + y``.")
vsub = _binop("fsub", "Lane-wise ``x - y``.")
vmul = _binop("fmul", "Lane-wise ``x * y``.")
vdiv = _binop("fdiv", "Lane-wise ``x / y`` (correctly rounded, like the scalar division).")


def _fma_fn(builder, ty):
    name = f"llvm.fma.v{ty.count}f64" if isinstance(ty, ir.VectorType) else "llvm.fma.f64"
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty] * 3), name)


@intrinsic
def vfma(typingctx, x, y, w):
    """Lane-wise ``x * y + w`` with one rounding (a fused multiply-add)."""
    if not (isinstance(x, F64x) and x == y == w):
        return None

    def codegen(context, builder, sig, args):
        return builder.call(_fma_fn(builder, args[0].type), list(args))

    return x(x, y, w), codegen


@intrinsic
def fma(typingctx, x, y, w):
    """``x * y + w`` with one rounding for float64 scalars: the scalar kernels'
    twin of :func:`vfma`."""
    if not (x == y == w == types.float64):
        return None

    def codegen(context, builder, sig, args):
        return builder.call(_fma_fn(builder, args[0].type), list(args))

    return types.float64(x, y, w), codegen


@intrinsic
def vneg(typingctx, x):
    """Lane-wise ``-x`` (sign flip, also of zeros, like the scalar ``-x``)."""
    if not isinstance(x, F64x):
        return None

    def codegen(context, builder, sig, args):
        return builder.fneg(args[0])

    return x(x), codegen


@intrinsic
def splat(typingctx, x, proto):
    """``W`` copies of the float ``x`` (``W`` from ``proto``)."""
    W = _width(proto)
    if W is None or not isinstance(x, (types.Float, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        v = context.cast(builder, args[0], sig.args[0], types.float64)
        return _pack(builder, W, [v] * W)

    return F64x(W)(x, proto), codegen


@intrinsic
def first_bad(typingctx, x2, thr, pos, bad):
    """``min(bad, pos)`` in the lanes where ``x2 <= thr or x2 < TINY``, else
    ``bad``: the scalar kernels' pivot test (a NaN ``x2`` passes, as there)."""
    if not (isinstance(x2, F64x) and x2 == thr == pos == bad):
        return None
    W = x2.W

    def codegen(context, builder, sig, args):
        x, t, p, b = args
        tiny = ir.Constant(_vec(W), [ir.Constant(_D, TINY)] * W)
        hit = builder.or_(builder.fcmp_ordered("<=", x, t), builder.fcmp_ordered("<", x, tiny))
        lower = builder.select(builder.fcmp_ordered("<", p, b), p, b)
        return builder.select(hit, lower, b)

    return x2(x2, thr, pos, bad), codegen


def _item_ptr(context, builder, aryty, ary, inds):
    return cgutils.get_item_pointer2(
        context, builder, data=ary.data, shape=cgutils.unpack_tuple(builder, ary.shape),
        strides=cgutils.unpack_tuple(builder, ary.strides), layout=aryty.layout,
        inds=inds, wraparound=False, boundscheck=False)


def _column_ptrs(context, builder, aryty, aryval, rty, r0, ity, i, W):
    """Pointers to ``arr[r0 + j, i]``, ``j < W``: ``i`` an integer, or lanes
    (:class:`F64x`, integer-valued) holding one position per lane."""
    ary = context.make_array(aryty)(context, builder, aryval)
    r0 = context.cast(builder, r0, rty, types.intp)
    if isinstance(ity, F64x):
        cols = [builder.fptosi(_lane(builder, i, j), r0.type) for j in range(W)]
    else:
        cols = [context.cast(builder, i, ity, types.intp)] * W
    return [_item_ptr(context, builder, aryty, ary, [builder.add(r0, ir.Constant(r0.type, j)),
                                                     cols[j]])
            for j in range(W)]


def _is_pos(i, lanes_type):
    """A position argument: an integer, or per-lane positions of the lanes' width."""
    return isinstance(i, types.Integer) or i == lanes_type


def _column(context, builder, aryty, ptrs, W):
    """``(re, im)`` vectors of a float64 (im None) or complex128 column."""
    vals = [builder.load(p) for p in ptrs]
    if aryty.dtype == types.complex128:
        return (_pack(builder, W, [builder.extract_value(v, 0) for v in vals]),
                _pack(builder, W, [builder.extract_value(v, 1) for v in vals]))
    return _pack(builder, W, vals), None


def _is_f64_2d(arr):
    return (isinstance(arr, types.Array) and arr.ndim == 2
            and arr.dtype in (types.float64, types.complex128))


def _parts(re, im):
    """``[re]`` for a float64 column (``im`` None), ``[re, im]`` for a complex128 one."""
    return [re] if im is None else [re, im]


def _d_of(builder, parts, zr, zi, di0):
    """``[dr, di]``, ``d = a - z``, from the parts of a column of ``a`` (``di0`` for a real one)."""
    return [builder.fsub(parts[0], zr), builder.fsub(parts[1], zi) if len(parts) == 2 else di0]


def _q_of(builder, parts, a, b):
    """``[qr, qi]``, ``q = k (a + 1j b)``, from the parts of a column of ``k``: for a real
    ``k`` ``(k a, k b)`` (the scalar kernels' products with ``ki = 0``, which are these
    exactly)."""
    if len(parts) == 1:
        return [builder.fmul(parts[0], a), builder.fmul(parts[0], b)]
    kr, ki = parts
    return [builder.fsub(builder.fmul(kr, a), builder.fmul(ki, b)),
            builder.fadd(builder.fmul(kr, b), builder.fmul(ki, a))]


def _fin_of(builder, acc, parts):
    """``acc + (x - x)`` over the parts of a column, in order (see :func:`fin_acc`)."""
    for part in parts:
        acc = builder.fadd(acc, builder.fsub(part, part))
    return acc


@intrinsic
def diag(typingctx, a, r0, i, zr, zi, di0):
    """``d = a[r0 + j, i] - z[r0 + j]`` as ``(re, im)`` lanes; for a real ``a``
    the imaginary part is ``di0`` (``0.0 - zi``, computed once per tile). ``i`` is
    one position, or lanes with a position per lane (in range in every lane)."""
    if not (_is_f64_2d(a) and isinstance(zr, F64x) and zr == zi == di0 and _is_pos(i, zr)):
        return None
    W = zr.W
    pair = types.UniTuple(zr, 2)

    def codegen(context, builder, sig, args):
        ptrs = _column_ptrs(context, builder, sig.args[0], args[0], sig.args[1], args[1],
                            sig.args[2], args[2], W)
        parts = _parts(*_column(context, builder, sig.args[0], ptrs, W))
        return context.make_tuple(builder, pair, _d_of(builder, parts, *args[3:]))

    return pair(a, r0, i, zr, zi, di0), codegen


@intrinsic
def couple(typingctx, k, r0, i, ir_, ii):
    """``q = k[r0 + j, i] * (ir + 1j ii)`` as ``(re, im)`` lanes: for a complex
    ``k`` ``(kr ir - ki ii, kr ii + ki ir)``, for a real one ``(k ir, k ii)``
    (the scalar kernels' products with ``ki = 0``, which are these exactly);
    ``i`` as in :func:`diag`."""
    if not (_is_f64_2d(k) and isinstance(ir_, F64x) and ir_ == ii and _is_pos(i, ir_)):
        return None
    W = ir_.W
    pair = types.UniTuple(ir_, 2)

    def codegen(context, builder, sig, args):
        ptrs = _column_ptrs(context, builder, sig.args[0], args[0], sig.args[1], args[1],
                            sig.args[2], args[2], W)
        parts = _parts(*_column(context, builder, sig.args[0], ptrs, W))
        return context.make_tuple(builder, pair, _q_of(builder, parts, args[3], args[4]))

    return pair(k, r0, i, ir_, ii), codegen


def _col_type(arr, W):
    """The lanes of one column of ``arr``: :class:`F64x` for float64, a pair for complex128."""
    return F64x(W) if arr.dtype == types.float64 else types.UniTuple(F64x(W), 2)


def _as_parts(builder, ty, val):
    """``[re]`` or ``[re, im]`` of a column value of type ``ty``."""
    if isinstance(ty, F64x):
        return [val]
    return [builder.extract_value(val, 0), builder.extract_value(val, 1)]


def _from_parts(context, builder, ty, parts):
    return parts[0] if isinstance(ty, F64x) else context.make_tuple(builder, ty, parts)


@intrinsic
def col(typingctx, arr, r0, i, proto):
    """The column ``arr[r0 + j, i]``, ``j < W``, as lanes: :class:`F64x` for a
    float64 ``arr``, ``(re, im)`` lanes for a complex128 one (``i`` as in :func:`diag`)."""
    W = _width(proto)
    if W is None or not (_is_f64_2d(arr) and _is_pos(i, F64x(W))):
        return None
    cty = _col_type(arr, W)

    def codegen(context, builder, sig, args):
        ptrs = _column_ptrs(context, builder, sig.args[0], args[0], sig.args[1], args[1],
                            sig.args[2], args[2], W)
        return _from_parts(context, builder, cty,
                           _parts(*_column(context, builder, sig.args[0], ptrs, W)))

    return cty(arr, r0, i, proto), codegen


def _is_col(v):
    return isinstance(v, F64x) or (isinstance(v, types.UniTuple) and v.count == 2
                                   and isinstance(v.dtype, F64x))


@intrinsic
def col_diag(typingctx, v, zr, zi, di0):
    """``d = v - z`` for a column ``v`` of ``a`` (:func:`col`): :func:`diag`'s arithmetic."""
    if not (_is_col(v) and isinstance(zr, F64x) and zr == zi == di0):
        return None
    pair = types.UniTuple(zr, 2)

    def codegen(context, builder, sig, args):
        return context.make_tuple(builder, pair,
                                  _d_of(builder, _as_parts(builder, sig.args[0], args[0]),
                                        *args[1:]))

    return pair(v, zr, zi, di0), codegen


@intrinsic
def col_couple(typingctx, v, ir_, ii):
    """``q = k * (ir + 1j ii)`` for a column ``v`` of ``k`` (:func:`col`):
    :func:`couple`'s arithmetic."""
    if not (_is_col(v) and isinstance(ir_, F64x) and ir_ == ii):
        return None
    pair = types.UniTuple(ir_, 2)

    def codegen(context, builder, sig, args):
        return context.make_tuple(builder, pair,
                                  _q_of(builder, _as_parts(builder, sig.args[0], args[0]),
                                        args[1], args[2]))

    return pair(v, ir_, ii), codegen


@intrinsic
def col_fin(typingctx, acc, v):
    """``acc + (x - x)`` over the parts of a column ``v`` (:func:`col`): :func:`fin_acc`'s
    arithmetic, in its order."""
    if not (isinstance(acc, F64x) and _is_col(v)):
        return None

    def codegen(context, builder, sig, args):
        return _fin_of(builder, args[0], _as_parts(builder, sig.args[1], args[1]))

    return acc(acc, v), codegen


def _fabs(builder, x):
    """Lane-wise ``|x|`` of an LLVM vector of doubles (``llvm.fabs``)."""
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(x.type, [x.type]),
                                        f"llvm.fabs.v{x.type.count}f64")
    return builder.call(fn, [x])


def _sel_abs_gt(builder, x, acc):
    """``(|x|, |x| where |x| > acc else acc)`` (a NaN ``x`` leaves ``acc``)."""
    ax = _fabs(builder, x)
    return ax, builder.select(builder.fcmp_ordered(">", ax, acc), ax, acc)


@intrinsic
def col_span(typingctx, lo, hi, v):
    """``(lo, hi)`` widened by ``m``, the larger magnitude of the parts of a column
    ``v`` (:func:`col`): ``lo = m if m < lo``, ``hi = m if m > hi`` (a NaN is
    skipped). The scalar twin is :func:`~bknumba.cpu.ratio.fast_row`."""
    if not (isinstance(lo, F64x) and lo == hi and _is_col(v)):
        return None
    pair = types.UniTuple(lo, 2)

    def codegen(context, builder, sig, args):
        parts = _as_parts(builder, sig.args[2], args[2])
        m, _ = _sel_abs_gt(builder, parts[0], args[0])
        if len(parts) == 2:
            # m = |im| if |im| > |re| else |re|
            _, m = _sel_abs_gt(builder, parts[1], m)
        lo = builder.select(builder.fcmp_ordered("<", m, args[0]), m, args[0])
        hi = builder.select(builder.fcmp_ordered(">", m, args[1]), m, args[1])
        return context.make_tuple(builder, pair, [lo, hi])

    return pair(lo, hi, v), codegen


@intrinsic
def stash(typingctx, arr, o, v):
    """``arr[o:o + W] = re`` (and ``arr[o + W:o + 2 W] = im``) for a column ``v``
    (:func:`col`; 1-D C-contiguous float64 ``arr``)."""
    if not (_is_f64_1d(arr) and _is_col(v)):
        return None
    W = v.W if isinstance(v, F64x) else v.dtype.W

    def codegen(context, builder, sig, args):
        o = context.cast(builder, args[1], sig.args[1], types.intp)
        for j, part in enumerate(_as_parts(builder, sig.args[2], args[2])):
            oj = builder.add(o, ir.Constant(o.type, j * W))
            builder.store(part, _vec_ptr(context, builder, sig.args[0], args[0], types.intp, oj,
                                         W), align=8)
        return context.get_dummy_value()

    return types.none(arr, o, v), codegen


@intrinsic
def unstash(typingctx, arr, o, like, proto):
    """The column stored by :func:`stash` at ``arr[o:]``, of the type of a column of
    the 2-D array ``like`` (:func:`col`)."""
    W = _width(proto)
    if W is None or not (_is_f64_1d(arr) and _is_f64_2d(like)):
        return None
    cty = _col_type(like, W)

    def codegen(context, builder, sig, args):
        o = context.cast(builder, args[1], sig.args[1], types.intp)
        parts = []
        for j in range(1 if isinstance(cty, F64x) else 2):
            oj = builder.add(o, ir.Constant(o.type, j * W))
            parts.append(builder.load(_vec_ptr(context, builder, sig.args[0], args[0],
                                               types.intp, oj, W), align=8))
        return _from_parts(context, builder, cty, parts)

    return cty(arr, o, like, proto), codegen


@intrinsic
def fin_acc(typingctx, acc, arr, r0, i):
    """``acc + (x - x)`` over the column ``x = arr[r0 + j, i]`` (real and imaginary
    parts): ``x - x`` is exactly 0 for a finite ``x`` and NaN for an infinity or a
    NaN, so the sum stays 0 while the rows are finite and never overflows
    (the input finiteness check fused into a sweep; ``i`` as in :func:`diag`)."""
    if not (_is_f64_2d(arr) and isinstance(acc, F64x) and _is_pos(i, acc)):
        return None
    W = acc.W

    def codegen(context, builder, sig, args):
        ptrs = _column_ptrs(context, builder, sig.args[1], args[1], sig.args[2], args[2],
                            sig.args[3], args[3], W)
        return _fin_of(builder, args[0],
                       _parts(*_column(context, builder, sig.args[1], ptrs, W)))

    return acc(acc, arr, r0, i), codegen


def _store_c(context, builder, p, re, im, j):
    c = ir.Constant(context.get_value_type(types.complex128), ir.Undefined)
    c = builder.insert_value(c, _lane(builder, re, j), 0)
    c = builder.insert_value(c, _lane(builder, im, j), 1)
    builder.store(c, p)


def _put_c_codegen(W, masked):
    """Codegen of :func:`put_c` (args ``out, r0, i, re, im``) and, ``masked``, of
    :func:`put_c_at` (one more arg, ``active``: a lane stores only where it is != 0)."""
    def codegen(context, builder, sig, args):
        ptrs = _column_ptrs(context, builder, sig.args[0], args[0], sig.args[1], args[1],
                            sig.args[2], args[2], W)
        for j, p in enumerate(ptrs):
            if masked:
                on = builder.fcmp_unordered("!=", _lane(builder, args[5], j),
                                            ir.Constant(_D, 0.0))
                with builder.if_then(on, likely=True):
                    _store_c(context, builder, p, args[3], args[4], j)
            else:
                _store_c(context, builder, p, args[3], args[4], j)
        return context.get_dummy_value()

    return codegen


def _is_c128_2d(out):
    return isinstance(out, types.Array) and out.ndim == 2 and out.dtype == types.complex128


@intrinsic
def put_c(typingctx, out, r0, i, re, im):
    """``out[r0 + j, i] = re[j] + 1j * im[j]`` (complex128 ``out``; ``i`` as in :func:`diag`)."""
    if not (_is_c128_2d(out) and isinstance(re, F64x) and re == im and _is_pos(i, re)):
        return None
    return types.none(out, r0, i, re, im), _put_c_codegen(re.W, masked=False)


@intrinsic
def z_lanes(typingctx, z, r0, proto):
    """``(z[r0 + j].real, z[r0 + j].imag)`` as two lanes (complex128 1-D ``z``)."""
    W = _width(proto)
    if W is None or not (isinstance(z, types.Array) and z.ndim == 1
                         and z.dtype == types.complex128):
        return None
    pair = types.UniTuple(F64x(W), 2)

    def codegen(context, builder, sig, args):
        zty = sig.args[0]
        ary = context.make_array(zty)(context, builder, args[0])
        r0 = context.cast(builder, args[1], sig.args[1], types.intp)
        vals = [builder.load(_item_ptr(context, builder, zty, ary,
                                       [builder.add(r0, ir.Constant(r0.type, j))]))
                for j in range(W)]
        re = _pack(builder, W, [builder.extract_value(v, 0) for v in vals])
        im = _pack(builder, W, [builder.extract_value(v, 1) for v in vals])
        return context.make_tuple(builder, pair, [re, im])

    return pair(z, r0, proto), codegen


@intrinsic
def put_rows(typingctx, arr, r0, v):
    """``arr[r0 + j] = v[j]`` (1-D ``arr``: int64, ``v`` integer-valued, or float64)."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1
            and arr.dtype in (types.int64, types.float64) and isinstance(v, F64x)):
        return None
    W = v.W
    as_int = arr.dtype == types.int64

    def codegen(context, builder, sig, args):
        aty = sig.args[0]
        ary = context.make_array(aty)(context, builder, args[0])
        r0 = context.cast(builder, args[1], sig.args[1], types.intp)
        for j in range(W):
            p = _item_ptr(context, builder, aty, ary, [builder.add(r0, ir.Constant(r0.type, j))])
            x = _lane(builder, args[2], j)
            builder.store(builder.fptosi(x, ir.IntType(64)) if as_int else x, p)
        return context.get_dummy_value()

    return types.none(arr, r0, v), codegen


def _vec_ptr(context, builder, aryty, aryval, oty, o, W):
    ary = context.make_array(aryty)(context, builder, aryval)
    o = context.cast(builder, o, oty, types.intp)
    return builder.bitcast(builder.gep(ary.data, [o]), _vec(W).as_pointer())


def _is_f64_1d(arr):
    return isinstance(arr, types.Array) and arr.ndim == 1 and arr.dtype == types.float64 \
        and arr.layout == "C"


@intrinsic
def vload(typingctx, arr, o, proto):
    """The ``W`` float64 at ``arr[o:o + W]`` (1-D C-contiguous ``arr``) as lanes."""
    W = _width(proto)
    if W is None or not _is_f64_1d(arr):
        return None

    def codegen(context, builder, sig, args):
        return builder.load(_vec_ptr(context, builder, sig.args[0], args[0], sig.args[1],
                                     args[1], W), align=8)

    return F64x(W)(arr, o, proto), codegen


@intrinsic
def vstore(typingctx, arr, o, v):
    """``arr[o:o + W] = v`` (1-D C-contiguous float64 ``arr``)."""
    if not (_is_f64_1d(arr) and isinstance(v, F64x)):
        return None
    W = v.W

    def codegen(context, builder, sig, args):
        builder.store(args[2], _vec_ptr(context, builder, sig.args[0], args[0], sig.args[1],
                                        args[1], W), align=8)
        return context.get_dummy_value()

    return types.none(arr, o, v), codegen


@intrinsic
def vabs(typingctx, x):
    """Lane-wise ``abs(x)``."""
    if not isinstance(x, F64x):
        return None

    def codegen(context, builder, sig, args):
        return _fabs(builder, args[0])

    return x(x), codegen


def _select(op_name, doc):
    def impl(typingctx, x, y, a, b):
        if not (isinstance(x, F64x) and x == y == a == b):
            return None

        def codegen(context, builder, sig, args):
            return builder.select(builder.fcmp_ordered(op_name, args[0], args[1]), args[2], args[3])

        return x(x, y, a, b), codegen

    impl.__doc__ = doc
    return intrinsic(impl)


sel_lt = _select("<", "Lane-wise ``a if x < y else b`` (ordered: False for NaN).")
sel_le = _select("<=", "Lane-wise ``a if x <= y else b`` (ordered: False for NaN).")
sel_gt = _select(">", "Lane-wise ``a if x > y else b`` (ordered: False for NaN).")
sel_eq = _select("==", "Lane-wise ``a if x == y else b`` (ordered: False for NaN).")


@njit(inline="always")
def vmax(x, y):
    """Lane-wise ``max(x, y)`` with Numba's (Python's) semantics, ``y if y > x else x``
    (so ``max(nan, 1) = nan``, ``max(1, nan) = 1``)."""
    return sel_gt(y, x, y, x)


@njit(inline="always")
def vmin(x, y):
    """Lane-wise ``min(x, y)`` with Numba's semantics, ``y if y < x else x``."""
    return sel_lt(y, x, y, x)


@njit(inline="always")
def keep_where(on, nb, bad, gr, gi, zero):
    """A masked position's result: where ``on`` is 1.0 ``(nb, gr, gi)`` (the
    position's report and ``G``), elsewhere ``(bad, 0, 0)`` (``G = 0``, its
    tests discarded)."""
    return sel_gt(on, zero, nb, bad), sel_gt(on, zero, gr, zero), sel_gt(on, zero, gi, zero)


@intrinsic
def vpow2(typingctx, count):
    """``2**(200 * count)`` lane-wise for integer-valued ``count``, saturating
    at ``count = +-10`` exactly like :func:`bknumba.cpu.theta_phi._pow2`: the
    product of two powers ``2**(200 c)`` with ``c`` clamped to ``[-5, 5]``,
    each built from its exponent bits (exact)."""
    if not isinstance(count, F64x):
        return None
    W = count.W

    def codegen(context, builder, sig, args):
        vt = _vec(W)
        i64 = ir.VectorType(ir.IntType(64), W)

        def const(x):
            return ir.Constant(vt, [ir.Constant(_D, float(x))] * W)

        def clamp(x):  # min(5.0, max(-5.0, x)) with Numba's semantics
            lo = builder.select(builder.fcmp_ordered(">", x, const(-5.0)), x, const(-5.0))
            return builder.select(builder.fcmp_ordered("<", lo, const(5.0)), lo, const(5.0))

        def power(c):  # 2**(200 c), c integer in [-5, 5]
            e = builder.add(builder.mul(builder.fptosi(c, i64),
                                        ir.Constant(i64, [ir.Constant(ir.IntType(64), 200)] * W)),
                            ir.Constant(i64, [ir.Constant(ir.IntType(64), 1023)] * W))
            bits = builder.shl(e, ir.Constant(i64, [ir.Constant(ir.IntType(64), 52)] * W))
            return builder.bitcast(bits, vt)

        c1 = clamp(args[0])
        c2 = clamp(builder.fsub(args[0], c1))
        return builder.fmul(power(c1), power(c2))

    return count(count), codegen


@intrinsic
def put_c_at(typingctx, out, r0, pos, re, im, active):
    """:func:`put_c` at per-lane positions, in the lanes where ``active[j] != 0`` only."""
    if not (_is_c128_2d(out) and isinstance(re, F64x) and re == im == pos == active):
        return None
    return types.none(out, r0, pos, re, im, active), _put_c_codegen(re.W, masked=True)


@intrinsic
def flag_col(typingctx, arr, r0, i, proto):
    """``1.0`` where ``arr[r0 + j, i]`` is true, else ``0.0`` (a 2-D bool array)."""
    W = _width(proto)
    if W is None or not (isinstance(arr, types.Array) and arr.ndim == 2
                         and arr.dtype == types.boolean):
        return None

    def codegen(context, builder, sig, args):
        ptrs = _column_ptrs(context, builder, sig.args[0], args[0], sig.args[1], args[1],
                            sig.args[2], args[2], W)
        vals = []
        for p in ptrs:
            byte = builder.load(p)
            vals.append(builder.uitofp(builder.icmp_unsigned("!=", byte, ir.Constant(byte.type, 0)),
                                       _D))
        return _pack(builder, W, vals)

    return F64x(W)(arr, r0, i, proto), codegen
