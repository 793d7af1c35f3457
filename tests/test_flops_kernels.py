"""The BK-Core cost model against the kernels' own source.

The serial workers of ``bknumba/cpu/ratio.py`` and ``theta_phi.py`` are
re-executed in pure Python (their ``py_func`` source, every float literal
replaced by a counting scalar) on arrays of counting scalars. Every real
add/sub, mul and div they perform is counted, and the totals must equal
``bknumba.sparsity.flops`` exactly, for full and sparse runs. The test also
checks that the instrumented run gives the same ``G`` as the compiled kernel,
so that the re-executed source is really the kernel's.
"""
from __future__ import annotations

import ast
import inspect
import textwrap

import numpy as np
import pytest

from bknumba.sparsity import flops as F

ratio_mod = pytest.importorskip("bknumba.cpu.ratio")
theta_phi_mod = pytest.importorskip("bknumba.cpu.theta_phi")

COUNT = {"add": 0, "mul": 0, "div": 0}


class CF:
    """A float that counts the arithmetic done with it."""

    __slots__ = ("v",)

    def __init__(self, v):
        self.v = float(v.v if isinstance(v, CF) else v)

    @staticmethod
    def _val(x):
        return x.v if isinstance(x, CF) else float(x)

    def _op(kind, fn):  # noqa: N805
        def method(self, other):
            COUNT[kind] += 1
            return CF(fn(self.v, CF._val(other)))
        return method

    __add__ = _op("add", lambda a, b: a + b)
    __radd__ = _op("add", lambda a, b: b + a)
    __sub__ = _op("add", lambda a, b: a - b)
    __rsub__ = _op("add", lambda a, b: b - a)
    __mul__ = _op("mul", lambda a, b: a * b)
    __rmul__ = _op("mul", lambda a, b: b * a)
    __truediv__ = _op("div", lambda a, b: a / b)
    __rtruediv__ = _op("div", lambda a, b: b / a)
    del _op

    def __neg__(self):
        return CF(-self.v)

    def __abs__(self):
        return CF(abs(self.v))

    def __float__(self):
        return self.v

    def __int__(self):
        return int(self.v)

    def __lt__(self, o):
        return self.v < CF._val(o)

    def __le__(self, o):
        return self.v <= CF._val(o)

    def __gt__(self, o):
        return self.v > CF._val(o)

    def __ge__(self, o):
        return self.v >= CF._val(o)

    def __eq__(self, o):
        return self.v == CF._val(o)

    __hash__ = None

    @property
    def real(self):
        return self

    @property
    def imag(self):
        return CF(0.0)


class CC:
    """A complex number made of two counting floats (storage only)."""

    __slots__ = ("real", "imag")

    def __init__(self, z):
        self.real = CF(z.real)
        self.imag = CF(z.imag)


class _Literals(ast.NodeTransformer):
    def visit_Constant(self, node):
        if isinstance(node.value, float):
            return ast.Call(func=ast.Name("CF", ast.Load()), args=[node], keywords=[])
        return node


def _instrumented(module, names):
    """Python versions of ``module``'s njit functions, literals counting."""
    env = dict(vars(module))
    env["CF"] = CF
    # a fused multiply-add counts as the multiply and the add it performs
    env["fma"] = lambda x, y, w: x * y + w
    for key in ("_BIG", "_SMALL"):
        if key in env:
            env[key] = CF(env[key])
    for name in names:
        src = textwrap.dedent(inspect.getsource(getattr(module, name).py_func))
        tree = ast.parse(src)
        tree.body[0].decorator_list = []
        tree = ast.fix_missing_locations(_Literals().visit(tree))
        exec(compile(tree, f"<instrumented {name}>", "exec"), env)
    return env


def _obj(arr, cls):
    out = np.empty(arr.shape, dtype=object)
    for idx in np.ndindex(arr.shape):
        out[idx] = cls(arr[idx])
    return out


def _run_counted(method, a, k, z, rec_mask, combine_mask):
    """One row through the instrumented serial worker; (counts, G)."""
    n = a.shape[1]
    cls = CC if a.dtype.kind == "c" else CF
    ao, ko = _obj(a, cls), _obj(k, CC if k.dtype.kind == "c" else CF)
    zo = _obj(z, CC)
    out = np.zeros((1, n), dtype=np.complex128)
    first_bad = np.zeros(1, dtype=np.int64)
    rtol2 = CF(1e-26)
    for key in COUNT:
        COUNT[key] = 0
    if method == "ratio":
        env = _instrumented(ratio_mod, ["ratio_tile", "fast_row", "_full_coupling"])
        scratch = [np.empty((n, 1), dtype=object) for _ in range(2)]
        lane = np.empty((8, 1), dtype=object)
        env["ratio_tile"](ao, ko, zo, 0, 1, rec_mask, combine_mask, out, first_bad, rtol2,
                          scratch[0], scratch[1], lane)
    else:
        env = _instrumented(theta_phi_mod, ["theta_phi_tile", "_inv_theta_n", "_rescale", "_pow2"])
        th = [np.empty((n + 1, 1), dtype=object) for _ in range(3)]
        lane = np.empty((10, 1), dtype=object)
        pow_table = _obj(theta_phi_mod._POW, CF)
        phi = [np.empty((0, 1), dtype=object) for _ in range(3)]
        env["theta_phi_tile"](ao, ko, zo, 0, 1, rec_mask, combine_mask, out, first_bad, rtol2,
                              th[0], th[1], th[2], lane, pow_table, phi[0], phi[1], phi[2])
    return dict(COUNT), out[0]


def _model(method, n, rec, comb):
    events = F.kernel_event_counts(method, n, rec, comb)
    raw = F._tally(method, events, 1)
    return {op: sum(raw[f"{cat}_{op}"] for cat in ("arith", "guard", "scaling"))
            for op in ("add", "mul", "div")}


def _problem(n, rng, complex_inputs):
    a = -2.0 + rng.uniform(-3, 3, size=(1, n))
    k = 1.0 + 0.3 * rng.standard_normal((1, max(n - 1, 0)))
    if complex_inputs:
        a = a + 0.2j * rng.standard_normal((1, n))
        k = k + 0.2j * rng.standard_normal((1, max(n - 1, 0)))
    return a, k, np.array([1j])


CASES = [
    (1, None), (2, None), (3, None), (6, None),
    (6, [1, 0, 1, 1, 0, 1]), (6, [0, 1, 1, 0, 0, 0]), (5, [0, 0, 0, 0, 0]),
    (7, [1, 1, 0, 1, 0, 0, 1]), (4, [1, 1, 1, 1]),
]


PARAMS = [(n, mask, sem) for n, mask in CASES
          for sem in (("full",) if mask is None else ("masked", "exact"))]


@pytest.mark.parametrize("method", ["ratio", "theta_phi"])
@pytest.mark.parametrize("n,mask,semantics", PARAMS)
@pytest.mark.parametrize("complex_inputs", [False, True])
def test_model_equals_kernel_source(method, semantics, n, mask, complex_inputs):
    rng = np.random.default_rng(n)
    a, k, z = _problem(n, rng, complex_inputs)
    m = None if mask is None else np.array(mask, dtype=bool)[None, :]
    rec = m if semantics == "masked" else None
    comb = None if semantics == "full" else m
    counted, g = _run_counted(method, a, k, z, rec, comb)
    expect = _model(method, n, None if rec is None else rec[0], None if comb is None else comb[0])
    assert counted == expect
    if not complex_inputs and n == 6 and semantics != "exact":
        # the re-executed source computes what the compiled kernel computes
        # (a few cases only: each signature costs a numba compilation)
        run = ratio_mod.run_ratio if method == "ratio" else theta_phi_mod.run_theta_phi
        g_compiled = run(a, k, z, rec, comb)[0][0]
        np.testing.assert_allclose(g, g_compiled, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("semantics", ["local", "seed", "exact"])
def test_sparse_api_matches_counted_kernel(semantics):
    """sparse_bk_core_flops(mask=...) is the sum of counted rows, flags as in core.py."""
    rng = np.random.default_rng(7)
    mask = rng.random((3, 9)) >= 0.4
    method = {"local": "ratio", "seed": "theta_phi", "exact": "ratio"}[semantics]
    total = {"add": 0, "mul": 0, "div": 0}
    for row in mask:
        a, k, z = _problem(9, rng, False)
        rec = None if semantics == "exact" else row[None, :]
        counted, _ = _run_counted(method, a, k, z, rec, row[None, :])
        for op in total:
            total[op] += counted[op]
    res = F.sparse_bk_core_flops(9, mask=mask, semantics=semantics)
    assert (res["add"], res["mul"], res["div"]) == (total["add"], total["mul"], total["div"])
    assert res["total"] == sum(total.values())
    assert res["computed"] == mask.sum()
