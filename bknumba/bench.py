"""``bknumba bench``: what a user of this engine cares about, measured on their own machine.

Sections (``--sections``, default all that can run here):

``core``
    BK-Core throughput of both methods (``ratio``, ``theta_phi``) and the
    three sparse semantics (``seed``, ``local``, ``exact``) over a sweep of
    ``(B, N)`` and sparsities, next to baselines run in the same process:
    batch-vectorised NumPy, SciPy's banded solver (short rows), and the
    original model's PyTorch theta/phi recursion as a plain per-position loop
    (when torch is installed; raw continuants, so only below N ~ 900), plus
    the machine's memory-copy bandwidth measured in the same run.
``gpu``
    The same kernels with ``device="cuda"`` on device-resident inputs (CUDA
    events), only when ``numba.cuda.is_available()`` (and not the
    simulator); ``numba.cuda`` is imported only for this section.
``layers``
    Latency of the learned layers in ``bknumba.nn`` against PyTorch eager
    (small torch modules built here, weights copied across), when torch is
    installed.
``ffn``
    The sparse FFN kernel of ``bknumba.ffn`` against dense BLAS, when that
    package is importable.

Every implementation is registered once (:data:`CORE_IMPLS`,
:data:`GPU_IMPLS`) and the same entry is used to validate it (against SciPy
or the longdouble reference, on a few probe rows) before it is timed.
Steady-state times are medians over repeats after the first call; the first
call's extra time (compilation, or loading from Numba's cache) is reported
separately. Throughput is ``B*N`` elements per second; bandwidth counts 32
bytes per element (real ``a`` and ``k = b*c`` read, complex128 ``G``
written), next to ``np.copyto`` of 256 MiB (bytes read + written per second).
Times include output allocation and input validation of the public functions
(what a user sees).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

__all__ = ["main", "Impl", "Case", "CORE_IMPLS", "GPU_IMPLS", "make_case", "plan_core",
           "validate", "run_cpu_bench", "run_gpu_bench", "run_layer_bench", "run_ffn_bench",
           "numpy_ratio_baseline", "torch_model_loop_baseline", "scipy_baseline",
           "copy_bandwidth", "format_table", "plot_report", "to_markdown"]

BYTES_PER_ELEMENT = 32
SEMANTICS = ("seed", "local", "exact")

#: (B, N) sweeps: about 2^21 elements per shape in the full run (N from 128 to 2^21).
FULL_SHAPES = [(32, 128), (16384, 128), (4096, 512), (2048, 1024), (256, 8192), (32, 65536),
               (1, 2**21)]
FULL_SPARSITIES = (0.0, 0.25, 0.5, 0.75, 0.9)
QUICK_SHAPES = [(32, 128), (1024, 512), (16, 16384)]
QUICK_SPARSITIES = (0.0, 0.5, 0.9)


# ----------------------------------------------------------------------------
# Baselines
# ----------------------------------------------------------------------------
def numpy_ratio_baseline(a, k, z):
    """Batch-vectorised NumPy ratio recursion (Python loop over positions)."""
    batch, n = a.shape
    d = a - np.asarray(z).reshape(-1, 1)
    left = np.empty((batch, n), np.complex128)
    left[:, 0] = d[:, 0]
    for i in range(1, n):
        left[:, i] = d[:, i] - k[:, i - 1] / left[:, i - 1]
    g = np.empty((batch, n), np.complex128)
    right = d[:, n - 1].copy()
    g[:, n - 1] = 1 / (left[:, n - 1] + right - d[:, n - 1])
    for i in range(n - 2, -1, -1):
        right = d[:, i] - k[:, i] / right
        g[:, i] = 1 / (left[:, i] + right - d[:, i])
    return g


def torch_model_loop_baseline(a, k, z):
    """The original model's raw complex128 theta/phi recursion, as a plain loop in PyTorch.

    The per-position loop of ``get_tridiagonal_inverse_diagonal``
    (``original-model.md`` 2.1), vectorised over the batch like
    ``vmapped_get_diag``, without its clip / NaN -> 0 / complex64 steps and
    with the phi coupling ``k[i+1]`` (the model's ``k[i]`` only differs for
    non-constant ``k``). Unscaled: it overflows near N = 900, so it is only
    registered for short rows.
    """
    import torch

    a_t = torch.as_tensor(np.asarray(a), dtype=torch.complex128)
    k_t = torch.as_tensor(np.asarray(k), dtype=torch.complex128)
    batch, n = a_t.shape
    alpha = a_t - complex(z)
    theta = [torch.ones(batch, dtype=torch.complex128), alpha[:, 0]]
    for i in range(1, n):
        theta.append(alpha[:, i] * theta[i] - k_t[:, i - 1] * theta[i - 1])
    phi = [None] * n
    phi[n - 1] = torch.ones(batch, dtype=torch.complex128)
    if n > 1:
        phi[n - 2] = alpha[:, n - 1]
    for i in range(n - 3, -1, -1):
        phi[i] = alpha[:, i + 1] * phi[i + 1] - k_t[:, i + 1] * phi[i + 2]
    g = torch.stack(theta[:n], 1) * torch.stack(phi, 1) / theta[n][:, None]
    return g.numpy()


def scipy_baseline(a, k, z):
    """Diagonal of ``scipy.linalg.solve_banded`` per row (the oracle; O(N^2) per row)."""
    from .reference import bk_core_banded

    return bk_core_banded(a, k, 1.0, z)


def _importable(name):
    try:
        __import__(name)
    except Exception:
        return False
    return True


# ----------------------------------------------------------------------------
# The registry
# ----------------------------------------------------------------------------
@dataclass
class Case:
    """One benchmark problem: the model's inputs, masks per sparsity, probe rows."""

    batch: int
    n: int
    a: np.ndarray
    k: np.ndarray
    z: complex
    masks: dict
    probe: int
    _refs: dict = field(default_factory=dict, repr=False)

    def reference(self, semantics="full", sparsity=0.0):
        """Reference G on the probe rows (SciPy for N <= 2048, else longdouble); cached."""
        from .reference import bk_core_banded, bk_core_extended

        key = (semantics, sparsity)
        if key not in self._refs:
            a, k = self.a[:self.probe], self.k[:self.probe]
            if semantics == "full":
                self._refs[key] = (bk_core_banded(a, k, 1.0, self.z) if self.n <= 2048
                                   else bk_core_extended(a, k, 1.0, self.z))
            else:
                self._refs[key] = bk_core_extended(a, k, 1.0, self.z,
                                                   mask=self.masks[sparsity][:self.probe],
                                                   semantics=semantics)
        return self._refs[key]


def make_case(batch, n, sparsities=(0.0,), seed=0, probe=4):
    """The model's inputs: ``a = -2 + U(-3, 3)``, ``k = b c`` in U(0.5, 1.5), ``z = 1j``."""
    rng = np.random.default_rng([seed, batch, n])
    a = -2.0 + rng.uniform(-3, 3, size=(batch, n))
    k = rng.uniform(0.5, 1.5, size=(batch, max(n - 1, 0)))
    masks = {float(s): rng.random((batch, n)) >= s for s in sparsities}
    return Case(batch, n, a, k, 1j, masks, min(batch, probe))


@dataclass(frozen=True)
class Impl:
    """One registered implementation.

    ``run(case, sparsity, rows)`` returns G for ``case`` restricted to the
    first ``rows`` rows (``None`` = all). Slow baselines set ``max_rows``:
    they are timed on that many rows and their throughput counts those rows'
    elements only. ``applies`` limits the shapes an implementation is run on.
    """

    name: str
    semantics: str              # "full", "seed", "local" or "exact"
    run: Callable
    group: str = "bknumba"      # "bknumba" or "baseline"
    method: str = "ratio"
    max_n: Optional[int] = None
    max_rows: Optional[int] = None
    max_elements: Optional[int] = None
    needs: Optional[str] = None  # module that must be importable
    tol: float = 1e-12
    device: str = "cpu"

    @property
    def sparse(self):
        return self.semantics != "full"

    def applies(self, batch, n):
        rows = min(batch, self.max_rows or batch)
        return ((self.max_n is None or n <= self.max_n)
                and (self.max_elements is None or rows * n <= self.max_elements))

    def available(self):
        return self.needs is None or _importable(self.needs)

    def label(self, sparsity=0.0):
        return f"{self.name} {round(100 * sparsity)}%" if self.sparse else self.name


def _rows(x, rows):
    return x if rows is None else x[:rows]


def _bk(method, reuse_out=False):
    """``bk_core``; with ``reuse_out`` writing into one preallocated result per
    shape (``out=``): the same call without allocating, and page-faulting, a
    fresh array each time."""
    held = {}

    def run(case, s, rows=None):
        import bknumba

        a = _rows(case.a, rows)
        out = held.get(a.shape)
        if reuse_out and out is None:
            held.clear()
            out = held[a.shape] = np.empty(a.shape, dtype=np.complex128)
        return bknumba.bk_core(a, _rows(case.k, rows), 1.0, case.z, method=method, out=out)
    return run


def _scalar_tiles(run):
    """``run`` with ``BKNUMBA_SIMD=0`` in force (the scalar tiles, for comparison)."""
    def scalar(case, s, rows=None):
        from . import _config

        old = _config.options["simd"]
        _config.options["simd"] = "0"
        try:
            return run(case, s, rows)
        finally:
            _config.options["simd"] = old
    return scalar


def _sparse(semantics):
    def run(case, s, rows=None):
        import bknumba

        return bknumba.sparse_bk_core(_rows(case.a, rows), _rows(case.k, rows), 1.0,
                                      _rows(case.masks[s], rows), case.z, semantics=semantics)
    return run


def _baseline(fn, vector_z=False):
    def run(case, s, rows=None):
        a, k = _rows(case.a, rows), _rows(case.k, rows)
        return fn(a, k, np.full(a.shape[0], case.z) if vector_z else case.z)
    return run


#: CPU implementations, in table order: validated then timed by :func:`run_cpu_bench`.
CORE_IMPLS = [
    Impl("bknumba ratio", "full", _bk("ratio")),
    Impl("bknumba theta_phi", "full", _bk("theta_phi"), method="theta_phi"),
    Impl("bknumba ratio, out=", "full", _bk("ratio", reuse_out=True)),
    Impl("bknumba theta_phi, out=", "full", _bk("theta_phi", reuse_out=True), method="theta_phi"),
    Impl("ratio, scalar tiles", "full", _scalar_tiles(_bk("ratio"))),
    Impl("theta_phi, scalar tiles", "full", _scalar_tiles(_bk("theta_phi")), method="theta_phi"),
    Impl("sparse seed", "seed", _sparse("seed"), method="theta_phi", tol=1e-10),
    Impl("sparse local", "local", _sparse("local")),
    Impl("local, row kernel", "local", _scalar_tiles(_sparse("local"))),
    Impl("sparse exact", "exact", _sparse("exact")),
    Impl("numpy vectorised", "full", _baseline(numpy_ratio_baseline, True), group="baseline",
         max_n=8192, max_rows=4096),
    Impl("scipy banded", "full", _baseline(scipy_baseline), group="baseline", max_n=2048,
         max_rows=32),
    Impl("torch model loop", "full", _baseline(torch_model_loop_baseline), group="baseline",
         method="theta_phi", max_n=512, max_rows=4096, needs="torch"),
]


def plan_core(shapes, sparsities, impls=None):
    """``[(shape, impl, sparsity)]``: every run of the core section, in order."""
    impls = CORE_IMPLS if impls is None else impls
    jobs = []
    for batch, n in shapes:
        for impl in impls:
            if not impl.available() or not impl.applies(batch, n):
                continue
            for s in (sparsities if impl.sparse else (0.0,)):
                jobs.append(((batch, n), impl, float(s)))
    return jobs


def tolerance(impl, n):
    """``impl.tol`` up to N = 10^5 (``bknumba verify``'s range); for the continuant-based
    methods (theta_phi, seed) it grows in proportion to N beyond that, as their rounding
    error does (pivot products as long as the row)."""
    if impl.method == "theta_phi" and n > 10**5:
        return impl.tol * n / 10**5
    return impl.tol


def validate(impl, case, s, g, rows=None):
    """Relative error of ``g`` (from ``impl.run``) on the probe rows; raises beyond ``impl.tol``."""
    from .reference import relative_error

    probe = case.probe if rows is None else min(case.probe, rows)
    g = g.copy_to_host() if hasattr(g, "copy_to_host") else np.asarray(g)
    ref = case.reference("full" if not impl.sparse else impl.semantics, s)
    err = float(relative_error(g[:probe], ref[:probe]).max()) if probe else 0.0
    tol = tolerance(impl, case.n)
    if not err <= tol:
        raise AssertionError(f"{impl.label(s)} at ({case.batch}, {case.n}) failed validation: "
                             f"relative error {err:.2e} > {tol:.0e}")
    return err


def _timeit(fn, repeats, min_time=0.2, max_runs=50):
    """Median wall time of ``fn()`` over at least ``repeats`` runs and ``min_time`` seconds."""
    times = []
    t_start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - t_start < min_time
                                   and len(times) < max_runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def copy_bandwidth(nbytes=256 * 2**20, repeats=5):
    """Bytes read + written per second by ``np.copyto`` of a large float64 array."""
    src = np.ones(nbytes // 8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    t = _timeit(lambda: np.copyto(dst, src), repeats, min_time=0.0)
    return 2 * nbytes / t


def _machine():
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        pass
    return name, mem


def machine_meta():
    import numba

    name, mem = _machine()
    meta = dict(date=time.strftime("%Y-%m-%d"), machine=name, arch=platform.machine(),
                cpus=os.cpu_count(), numba_threads=numba.get_num_threads(),
                memory_GiB=None if mem is None else round(mem, 1),
                python=platform.python_version(), numpy=np.__version__,
                numba=numba.__version__)
    try:
        meta["loadavg_start"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    return meta


def run_cpu_bench(shapes=QUICK_SHAPES, sparsities=QUICK_SPARSITIES, repeats=5, seed=0,
                  progress=None, min_time=0.2, impls=None):
    """Validate then time every applicable CPU implementation; returns ``(meta, rows)``."""
    meta = machine_meta()
    meta["copy_bandwidth_GBps"] = copy_bandwidth() / 1e9
    rows = []
    jobs = plan_core(shapes, sparsities, impls)
    case = None
    for (batch, n), impl, s in jobs:
        if case is None or (case.batch, case.n) != (batch, n):
            case = make_case(batch, n, sparsities, seed)
        if progress:
            progress(f"({batch}, {n}) {impl.label(s)}")
        nrows = None if impl.max_rows is None or impl.max_rows >= batch else impl.max_rows
        t0 = time.perf_counter()
        g = impl.run(case, s, nrows)
        first = time.perf_counter() - t0
        err = validate(impl, case, s, g, nrows)
        t = _timeit(lambda: impl.run(case, s, nrows), repeats, min_time)
        elements = (batch if nrows is None else nrows) * n
        rows.append(dict(batch=batch, n=n, impl=impl.label(s), name=impl.name,
                         group=impl.group, semantics=impl.semantics, method=impl.method,
                         sparsity=s, rows_timed=elements // n, seconds=t,
                         first_call_extra_s=max(first - t, 0.0), elements_per_s=elements / t,
                         GBps=BYTES_PER_ELEMENT * elements / t / 1e9, error=err))
    try:
        meta["loadavg_end"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    return meta, rows


# ----------------------------------------------------------------------------
# GPU
# ----------------------------------------------------------------------------
def _gpu_bk(method):
    def run(case, s, dev):
        import bknumba

        return bknumba.bk_core(dev["a"], dev["k"], 1.0, case.z, method=method, device="cuda")
    return run


def _gpu_sparse(semantics):
    def run(case, s, dev):
        import bknumba

        return bknumba.sparse_bk_core(dev["a"], dev["k"], 1.0, dev[s], case.z,
                                      semantics=semantics, device="cuda")
    return run


#: GPU implementations (device-resident inputs; results stay on the device).
GPU_IMPLS = [
    Impl("gpu ratio", "full", _gpu_bk("ratio"), device="cuda", tol=1e-10),
    Impl("gpu theta_phi", "full", _gpu_bk("theta_phi"), method="theta_phi", device="cuda",
         tol=1e-10),
    Impl("gpu seed", "seed", _gpu_sparse("seed"), method="theta_phi", device="cuda", tol=1e-9),
    Impl("gpu local", "local", _gpu_sparse("local"), device="cuda", tol=1e-10),
    Impl("gpu exact", "exact", _gpu_sparse("exact"), device="cuda", tol=1e-10),
]

# N - 1 <= 2_097_120: bknumba.gpu puts N on grid.y (at most 65535 blocks of 32) for device inputs
GPU_FULL_SHAPES = [(1, 2**20), (16, 2**20), (4096, 4096), (2**16, 256), (2**18, 64)]
GPU_QUICK_SHAPES = [(1, 2**20), (4096, 1024)]


def gpu_available():
    """True when a real GPU can run numba.cuda kernels (imports numba.cuda; not the simulator)."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        return False
    try:
        from numba import cuda
    except Exception:
        return False
    try:
        return bool(cuda.is_available())
    except Exception:
        return False


def run_gpu_bench(shapes=GPU_QUICK_SHAPES, sparsities=(0.0, 0.5, 0.9), repeats=10, seed=0,
                  progress=None):
    """``(meta, rows)`` for the GPU kernels timed with CUDA events, or None without a GPU."""
    if not gpu_available():
        return None
    from numba import cuda

    rows = []
    nbytes = 256 * 2**20
    src = cuda.to_device(np.ones(nbytes // 8))
    dst = cuda.device_array_like(src)
    start, stop = cuda.event(), cuda.event()

    def timed(fn):
        times = []
        for _ in range(repeats):
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(cuda.event_elapsed_time(start, stop) / 1e3)
        return float(np.median(times))

    dst.copy_to_device(src)
    copy_s = timed(lambda: dst.copy_to_device(src))
    name = cuda.get_current_device().name
    meta = {"device": name.decode() if isinstance(name, bytes) else str(name),
            "copy_bandwidth_GBps": 2 * nbytes / copy_s / 1e9}
    for batch, n in shapes:
        case = make_case(batch, n, sparsities, seed)
        dev = {"a": cuda.to_device(case.a), "k": cuda.to_device(case.k)}
        dev.update({s: cuda.to_device(m) for s, m in case.masks.items()})
        for impl in GPU_IMPLS:
            for s in (sparsities if impl.sparse else (0.0,)):
                if progress:
                    progress(f"gpu ({batch}, {n}) {impl.label(s)}")
                t0 = time.perf_counter()
                g = impl.run(case, s, dev)
                cuda.synchronize()
                first = time.perf_counter() - t0
                err = validate(impl, case, s, g)
                t = timed(lambda: impl.run(case, s, dev))
                rows.append(dict(batch=batch, n=n, impl=impl.label(s), name=impl.name,
                                 group="gpu", semantics=impl.semantics, method=impl.method,
                                 sparsity=s, seconds=t, first_call_extra_s=max(first - t, 0.0),
                                 elements_per_s=batch * n / t,
                                 GBps=BYTES_PER_ELEMENT * batch * n / t / 1e9, error=err))
        dev.clear()  # free the device arrays before the next shape
    return meta, rows


# ----------------------------------------------------------------------------
# Learned layers against PyTorch eager
# ----------------------------------------------------------------------------
def _torch_layer_classes():
    """Small PyTorch versions of two of the model's layers (``original-model.md`` 3.4, 5).

    ``SparseBKCore`` (mask ``logit > 0``, the Gumbel noise off) and
    ``LearnedSparsityG_ii`` (top-k mask, learned interpolator). ``core="exact"``
    takes the BK features from a batched dense ``torch.linalg.inv`` (a fast,
    correct torch baseline); ``core="model"`` uses the model's own sparse
    theta/phi recursion (``optimized_sparse_bk_core``: batch-wide ``any``,
    per-position Python loop), i.e. what a PyTorch user runs today.
    """
    import torch
    from torch import nn

    c128 = torch.complex128

    def exact_features(he, sup, sub, z, mask):
        bsz, n = he.shape
        t = (torch.diag_embed(he.to(c128)) + torch.diag_embed(sup.expand(bsz, n - 1).to(c128), 1)
             + torch.diag_embed(sub.expand(bsz, n - 1).to(c128), -1)
             - z.to(c128) * torch.eye(n, dtype=c128))
        g = torch.linalg.inv(t).diagonal(dim1=-2, dim2=-1) * (mask > 0.5)
        return torch.stack([g.real, g.imag], -1).to(torch.float32)

    def model_features(he, sup, sub, z, mask):
        bsz, n = he.shape
        a = he.to(c128)
        b = sup.expand(bsz, n - 1).to(c128)
        c = sub.expand(bsz, n - 1).to(c128)
        zz = z.to(c128)
        theta = torch.zeros(bsz, n + 1, dtype=c128)
        theta[:, 0] = 1.0
        theta[:, 1] = a[:, 0] - zz
        for i in range(1, n):
            if (mask[:, i] < 0.5).any():
                theta[:, i + 1] = (a[:, i] - zz) * theta[:, i]
            else:
                theta[:, i + 1] = ((a[:, i] - zz) * theta[:, i]
                                   - c[:, i - 1] * b[:, i - 1] * theta[:, i - 1])
        phi = torch.zeros(bsz, n + 2, dtype=c128)
        phi[:, n] = 1.0
        for i in range(n - 1, -1, -1):
            if (mask[:, i] < 0.5).any() or i == n - 1:
                phi[:, i] = (a[:, i] - zz) * phi[:, i + 1]
            else:
                phi[:, i] = (a[:, i] - zz) * phi[:, i + 1] - b[:, i] * c[:, i] * phi[:, i + 2]
        det = theta[:, n]
        mag = det.abs()
        det = torch.where(mag < 1e-9, det / mag * 1e-9, det)
        g = theta[:, :n] * phi[:, :n] / (det.unsqueeze(-1) + 1e-18)
        return torch.stack([g.real, g.imag], -1).to(torch.float32) * mask.unsqueeze(-1)

    def hamiltonian(m, n):
        m.register_buffer("h0_diag_base", torch.full((1, n), -2.0))
        m.register_buffer("h0_sub_base", torch.full((1, n - 1), 1.0))
        m.register_buffer("h0_super_base", torch.full((1, n - 1), 1.0))
        m.register_buffer("z", torch.tensor(1.0j, dtype=torch.complex64))

    def features(m, he, mask):
        fn = model_features if m.core == "model" else exact_features
        return fn(he, m.h0_super_base, m.h0_sub_base, m.z, mask)

    class SparseBKCore(nn.Module):
        def __init__(self, d_model, n_seq, target_sparsity=0.5, core="exact"):
            super().__init__()
            self.core = core
            self.importance_predictor = nn.Sequential(
                nn.Linear(d_model, d_model // 2), nn.ReLU(), nn.Linear(d_model // 2, 1))
            self.interpolator = nn.Sequential(
                nn.Conv1d(2, 16, 3, padding=1), nn.ReLU(), nn.Conv1d(16, 16, 3, padding=1),
                nn.ReLU(), nn.Conv1d(16, 2, 3, padding=1))
            hamiltonian(self, n_seq)

        def forward(self, x, v):
            mask = (self.importance_predictor(x).squeeze(-1) > 0).float()
            he = self.h0_diag_base.expand(x.shape[0], -1) + v
            fs = features(self, he, mask)
            interp = self.interpolator(fs.permute(0, 2, 1)).permute(0, 2, 1)
            return torch.where(mask.unsqueeze(-1) > 0.5, fs, interp), mask

    class ImportancePredictor(nn.Module):
        def __init__(self, d_model):
            super().__init__()
            h = d_model // 2
            self.context_encoder = nn.Sequential(
                nn.Conv1d(d_model, h, 3, padding=1), nn.ReLU(), nn.Conv1d(h, h, 3, padding=1),
                nn.ReLU())
            self.importance_head = nn.Sequential(
                nn.Linear(h, h), nn.ReLU(), nn.Dropout(0.1), nn.Linear(h, 1))

        def forward(self, x):
            x = self.context_encoder(x.transpose(1, 2)).transpose(1, 2)
            return self.importance_head(x).squeeze(-1)

    class SparseG_iiComputation(nn.Module):
        def __init__(self, n_seq, core):
            super().__init__()
            self.core = core
            self.interpolator = nn.Sequential(
                nn.Conv1d(2, 32, 5, padding=2), nn.ReLU(), nn.Conv1d(32, 32, 5, padding=2),
                nn.ReLU(), nn.Conv1d(32, 2, 5, padding=2))
            hamiltonian(self, n_seq)

    class LearnedSparsityG_ii(nn.Module):
        def __init__(self, d_model, n_seq, target_sparsity=0.6, core="exact"):
            super().__init__()
            self.target_sparsity = target_sparsity
            self.importance_predictor = ImportancePredictor(d_model)
            self.sparse_computation = SparseG_iiComputation(n_seq, core)

        def forward(self, x, v):
            logits = self.importance_predictor(x)
            k = int(logits.shape[-1] * (1 - self.target_sparsity))
            _, idx = torch.topk(logits, k, dim=-1)
            mask = torch.zeros_like(logits).scatter(-1, idx, 1.0)
            sc = self.sparse_computation
            he = sc.h0_diag_base.expand(v.shape[0], -1) + v
            sparse = exact_features(he, sc.h0_super_base, sc.h0_sub_base, sc.z, mask)
            interp = sc.interpolator(sparse.permute(0, 2, 1)).permute(0, 2, 1)
            return torch.where(mask.unsqueeze(-1) > 0.5, sparse, interp), mask

    return {"SparseBKCore": SparseBKCore, "LearnedSparsityG_ii": LearnedSparsityG_ii}


def run_layer_bench(quick=False, d_model=64, n_seq=128, batch=32, seed=0, progress=None):
    """Forward latency of ``bknumba.nn`` modules against the same modules in PyTorch eager.

    Weights are random (the modules' defaults perturbed), copied from the
    torch module into the bknumba one; outputs are compared before timing.
    Returns ``{"rows": [...]}`` or ``{"skipped": reason}``.
    """
    if not _importable("torch"):
        return {"skipped": "torch is not installed"}
    import torch

    import bknumba.nn as bnn

    classes = _torch_layer_classes()
    cases = [("SparseBKCore", dict(d_model=d_model, n_seq=n_seq, target_sparsity=0.5),
              ("exact", "model")),
             ("LearnedSparsityG_ii", dict(d_model=d_model, n_seq=n_seq, target_sparsity=0.6),
              ("exact",))]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, n_seq, d_model)).astype(np.float32)
    v = (0.5 * rng.standard_normal((batch, n_seq))).astype(np.float32)
    xt, vt = torch.from_numpy(x), torch.from_numpy(v)
    budget = 0.3 if quick else 1.5
    rows = []
    threads = torch.get_num_threads()
    for kind, config, cores in cases:
        for core in cores:
            if progress:
                progress(f"layers {kind} ({core})")
            torch.manual_seed(seed)
            tmod = classes[kind](**config, core=core).eval()
            gen = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for p in tmod.parameters():
                    p.add_(0.3 * torch.randn(p.shape, generator=gen))
            sd = {k: t.detach().numpy().copy() for k, t in tmod.state_dict().items()}
            # bknumba's state-dict spec includes the layers' counters (ignored buffers)
            if kind == "LearnedSparsityG_ii":
                sd.setdefault("total_flops_saved", np.zeros((), np.float32))
                sd.setdefault("total_forward_calls", np.zeros((), np.int64))
            options = {"features": "model"} if core == "model" else {}
            if kind == "LearnedSparsityG_ii":
                options["mask"] = "topk"
            try:
                bmod = bnn.build(kind, config, **options)
            except TypeError:
                options.pop("mask", None)
                bmod = bnn.build(kind, config, **options)
            bmod.load_state_dict(sd)

            def run_torch():
                with torch.no_grad():
                    return tmod(xt, vt)

            def run_bk():
                return bmod(x, v)

            t0 = time.perf_counter()
            f_t, m_t = run_torch()
            first_t = time.perf_counter() - t0
            t0 = time.perf_counter()
            out = run_bk()
            first_b = time.perf_counter() - t0
            f_b, m_b = np.asarray(out[0]), np.asarray(out[1])
            f_t, m_t = f_t.numpy(), m_t.numpy()
            agree = float(np.mean(m_b == m_t))
            keep = np.all(m_b == m_t, axis=1)  # rows whose masks agree
            err = float(np.max(np.abs(f_b[keep] - f_t[keep]), initial=0.0)
                        / max(np.max(np.abs(f_t[keep]), initial=0.0), 1e-30))
            if agree < 0.99 or keep.sum() == 0 or err > 1e-3:
                raise AssertionError(f"layer {kind} ({core}) disagrees with torch: mask agreement "
                                     f"{agree:.3f}, relative error {err:.1e}")
            # torch at 1 and 2 threads (oversubscription on small machines): the faster counts
            t_torch, best_threads = float("inf"), threads
            for nt in sorted({1, min(2, threads), threads}):
                torch.set_num_threads(nt)
                t = _timeit(run_torch, 3, budget / 2)
                if t < t_torch:
                    t_torch, best_threads = t, nt
            torch.set_num_threads(threads)
            t_bk = _timeit(run_bk, 3, budget)
            rows.append(dict(layer=kind, features=core, batch=batch, n=n_seq, d_model=d_model,
                             torch_s=t_torch, bknumba_s=t_bk, speedup=t_torch / t_bk,
                             torch_first_extra_s=max(first_t - t_torch, 0.0),
                             bknumba_first_extra_s=max(first_b - t_bk, 0.0),
                             error=err, mask_agreement=agree, torch_threads=best_threads))
    return {"rows": rows}


# ----------------------------------------------------------------------------
# Sparse FFN against dense BLAS
# ----------------------------------------------------------------------------
def run_ffn_bench(quick=False, d_model=768, d_ff=3072, tokens=None, rank=8,
                  sparsities=(0.5, 0.75, 0.9, 0.95), seed=0, progress=None):
    """``bknumba.ffn.sparse_ffn`` against dense BLAS (``x @ W1.T``, act, ``@ W2.T``), float32.

    Channels per token from the exact pre-activation (the kernel alone) and
    from the rank-``rank`` SVD estimator (estimator + kernel, end to end).
    Returns ``{"rows": [...]}`` or ``{"skipped": reason}``.
    """
    try:
        from bknumba import ffn
    except Exception as exc:
        return {"skipped": f"bknumba.ffn is not available ({exc})"}
    tokens = tokens or (64 if quick else 256)
    budget = 0.2 if quick else 1.0
    rng = np.random.default_rng(seed)
    # a decaying spectrum, like trained weights (a flat one defeats any low-rank estimator)
    w = ffn.synthetic_ffn_weights(n_layers=1, d_model=d_model, d_ff=d_ff, spectrum_decay=1.0,
                                  seed=seed)["layer.0"]
    x = rng.standard_normal((tokens, d_model)).astype(np.float32)
    act = ffn.apply_activation
    W1, b1, W2, b2 = w.W1, w.b1, w.W2, w.b2

    def dense():
        h = x @ W1.T + b1
        return act(h, "gelu") @ W2.T + b2

    if progress:
        progress("ffn dense BLAS")
    y_dense = dense()
    t_dense = _timeit(dense, 3, budget)
    est = ffn.FFNEstimator(W1, b1, rank=rank)
    pre = x @ W1.T + b1
    rows = [dict(impl="dense BLAS", sparsity=0.0, tokens=tokens, d_model=d_model, d_ff=d_ff,
                 seconds=t_dense, speedup=1.0, error=0.0, recall=1.0, first_call_extra_s=0.0)]
    if quick:
        sparsities = [s for s in sparsities if s in (0.5, 0.9)] or list(sparsities)[:2]
    for s in sparsities:
        if progress:
            progress(f"ffn sparsity {s}")
        ch = ffn.select_ffn_channels(pre, s)
        t0 = time.perf_counter()
        y = ffn.sparse_ffn(x, W1, b1, W2, b2, ch)
        first = time.perf_counter() - t0
        # validate: the same restricted sum in NumPy on a few tokens
        probe = min(tokens, 4)
        ref = np.stack([b2 + act(W1[ch[t]] @ x[t] + b1[ch[t]], "gelu") @ W2[:, ch[t]].T
                        for t in range(probe)])
        err = float(np.max(np.abs(y[:probe] - ref)) / np.max(np.abs(ref)))
        if err > 1e-4:
            raise AssertionError(f"sparse_ffn at sparsity {s} failed validation: {err:.1e}")
        t = _timeit(lambda: ffn.sparse_ffn(x, W1, b1, W2, b2, ch), 3, budget)
        out_err = float(np.linalg.norm(y - y_dense) / np.linalg.norm(y_dense))
        rows.append(dict(impl="sparse kernel (exact channels)", sparsity=s, tokens=tokens,
                         d_model=d_model, d_ff=d_ff, seconds=t, speedup=t_dense / t,
                         error=out_err, recall=1.0, first_call_extra_s=max(first - t, 0.0)))
        t0 = time.perf_counter()
        ch_est = est.select(x, s)
        first = time.perf_counter() - t0
        y_est = ffn.sparse_ffn(x, W1, b1, W2, b2, ch_est)
        t_est = _timeit(lambda: ffn.sparse_ffn(x, W1, b1, W2, b2, est.select(x, s)), 3, budget)
        rows.append(dict(impl=f"rank-{rank} estimator + kernel", sparsity=s, tokens=tokens,
                         d_model=d_model, d_ff=d_ff, seconds=t_est, speedup=t_dense / t_est,
                         error=float(np.linalg.norm(y_est - y_dense) / np.linalg.norm(y_dense)),
                         recall=float(ffn.channel_recall(ch_est, ch)),
                         first_call_extra_s=max(first + t - t_est, 0.0)))
    return {"rows": rows}


# ----------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------
def _full_row(rows, r, ref="bknumba ratio"):
    return next((x for x in rows if x["batch"] == r["batch"] and x["n"] == r["n"]
                 and x["impl"] == ref), None)


def format_table(meta, rows):
    """The core section as a plain-text table."""
    out = [f"# {meta['date']}  {meta['machine']}  {meta['cpus']} CPUs, numba threads "
           f"{meta['numba_threads']}; memory copy {meta['copy_bandwidth_GBps']:.1f} GB/s "
           f"(read + write)",
           f"{'(B, N)':<14} {'implementation':<22} {'Melem/s':>9} {'GB/s':>7} "
           f"{'% copy':>7} {'vs ratio':>8} {'1st call +s':>11} {'rel. err':>8}"]
    for r in rows:
        full = _full_row(rows, r)
        vs = f"{r['elements_per_s'] / full['elements_per_s']:>7.2f}x" if full else f"{'':>8}"
        out.append(
            f"{str((r['batch'], r['n'])):<14} {r['impl']:<22} {r['elements_per_s'] / 1e6:>9.1f} "
            f"{r['GBps']:>7.2f} {100 * r['GBps'] / meta['copy_bandwidth_GBps']:>6.1f}% "
            f"{vs} {r['first_call_extra_s']:>11.3f} {r['error']:>8.0e}")
    return "\n".join(out)


def format_gpu_table(gpu):
    meta, rows = gpu["meta"], gpu["rows"]
    out = [f"GPU {meta['device']}: device copy {meta['copy_bandwidth_GBps']:.0f} GB/s",
           f"{'(B, N)':<14} {'implementation':<16} {'Gelem/s':>8} {'GB/s':>7} {'% copy':>7}"]
    for r in rows:
        out.append(f"{str((r['batch'], r['n'])):<14} {r['impl']:<16} "
                   f"{r['elements_per_s'] / 1e9:>8.2f} {r['GBps']:>7.0f} "
                   f"{100 * r['GBps'] / meta['copy_bandwidth_GBps']:>6.1f}%")
    return "\n".join(out)


def format_layers(sec):
    if "rows" not in sec:
        return f"skipped: {sec.get('skipped')}"
    out = [f"{'layer':<22} {'features':<8} {'torch eager ms':>14} {'bknumba ms':>11} "
           f"{'speed-up':>8} {'rel. err':>8}"]
    for r in sec["rows"]:
        out.append(f"{r['layer']:<22} {r['features']:<8} {1e3 * r['torch_s']:>14.2f} "
                   f"{1e3 * r['bknumba_s']:>11.2f} {r['speedup']:>7.2f}x {r['error']:>8.0e}")
    return "\n".join(out)


def format_ffn(sec):
    if "rows" not in sec:
        return f"skipped: {sec.get('skipped')}"
    r0 = sec["rows"][0]
    out = [f"tokens {r0['tokens']}, {r0['d_model']} -> {r0['d_ff']} -> {r0['d_model']}, float32",
           f"{'implementation':<30} {'sparsity':>8} {'ms':>8} {'vs dense':>8} {'out err':>8} "
           f"{'recall':>6} {'1st call +s':>11}"]
    for r in sec["rows"]:
        out.append(f"{r['impl']:<30} {r['sparsity']:>8.2f} {1e3 * r['seconds']:>8.2f} "
                   f"{r['speedup']:>7.2f}x {r['error']:>8.1e} {r['recall']:>6.2f} "
                   f"{r.get('first_call_extra_s', 0.0):>11.2f}")
    return "\n".join(out)


def to_markdown(report, **kwargs):
    """Markdown for BENCHMARKS.md (see :mod:`bknumba._benchmarks_md`)."""
    from ._benchmarks_md import render

    return render(report, **kwargs)


def plot_report(report, path):
    """Throughput vs N per method, speed-up vs sparsity per semantics, fraction of copy bandwidth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, meta = report["rows"], report["meta"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    full = [r for r in rows if r["semantics"] == "full"]
    for name in dict.fromkeys(r["name"] for r in full):
        by_n = {}  # one point per N: the largest batch (the B*N ~ constant sweep)
        for r in full:
            if r["name"] == name and r["batch"] >= by_n.get(r["n"], {"batch": -1})["batch"]:
                by_n[r["n"]] = r
        pts = sorted((n, r["elements_per_s"] / 1e6) for n, r in by_n.items())
        axes[0].plot(*zip(*pts), "o-" if name.startswith("bknumba") else "s--", label=name)
    axes[0].set(xscale="log", yscale="log", xlabel="N (B*N about constant)",
                ylabel="Melem/s", title="BK-Core throughput (CPU)")
    axes[0].legend(fontsize=7)
    sizes = sorted({(r["batch"], r["n"]) for r in rows}, key=lambda s: (-s[0] * s[1], s[1]))
    top = [s for s in sizes if s[0] * s[1] == sizes[0][0] * sizes[0][1]]
    big = top[len(top) // 2]  # highlighted: the middle N of the largest shapes
    colors = {"seed": "C0", "local": "C1", "exact": "C2"}
    for (batch, n) in sorted({(r["batch"], r["n"]) for r in rows}):
        ref = _full_row(rows, {"batch": batch, "n": n})
        if ref is None:
            continue
        for sem in SEMANTICS:
            pts = sorted((r["sparsity"], ref["seconds"] / r["seconds"]) for r in rows
                         if (r["batch"], r["n"]) == (batch, n) and r["semantics"] == sem)
            if pts:
                axes[1].plot(*zip(*pts), "o-", color=colors[sem], alpha=0.35 + 0.65 * ((batch, n) == big),
                             label=f"{sem}" if (batch, n) == big else None)
    axes[1].axhline(1, color="k", lw=0.5)
    axes[1].set(xlabel="sparsity", ylabel="speed-up vs full ratio",
                title=f"sparse semantics (bold: {big})")
    axes[1].legend(fontsize=7)
    ours = [r for r in rows if r["group"] == "bknumba" and r["semantics"] == "full"]
    names = [f"{r['impl']} ({r['batch']}, {r['n']})" for r in ours]
    fracs = [r["GBps"] / meta["copy_bandwidth_GBps"] for r in ours]
    axes[2].barh(range(len(fracs)), fracs)
    axes[2].set_yticks(range(len(fracs)), names, fontsize=6)
    axes[2].invert_yaxis()
    axes[2].set(xlabel=f"fraction of copy bandwidth ({meta['copy_bandwidth_GBps']:.0f} GB/s)",
                title="bandwidth (32 B / element)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


class _Progress:
    """tqdm when installed, else one line on stderr per step."""

    def __init__(self, total, quiet=False):
        self.t0 = time.perf_counter()
        self.quiet = quiet
        self.bar = None
        if not quiet:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, file=sys.stderr, leave=False, unit="run",
                                dynamic_ncols=True)
            except ImportError:
                pass
        self.total, self.done = total, 0

    def __call__(self, msg):
        self.done += 1
        if self.bar is not None:
            self.bar.set_description(msg[:48])
            self.bar.update(1)
        elif not self.quiet:
            print(f"  [{self.done}/{self.total}] {msg} ({time.perf_counter() - self.t0:.0f} s)",
                  file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


SECTIONS = ("core", "gpu", "layers", "ffn")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="bknumba bench",
        description="BK-Core throughput (CPU, and GPU when present), copy bandwidth, baselines, "
                    "learned layers vs PyTorch and sparse FFN vs BLAS, on this machine.")
    parser.add_argument("--quick", action="store_true",
                        help="small sweep and short budgets (under a minute)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="minimum timed repeats per measurement (default 3 quick, 5 full)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help="comma list of core, gpu, layers, ffn (default: all)")
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON")
    parser.add_argument("--plot", metavar="OUT.png", help="write the plots (needs matplotlib)")
    parser.add_argument("--markdown", metavar="OUT.md",
                        help="write the results as markdown (BENCHMARKS.md section)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.sections is None:
        args.sections = "core,gpu" if args.quick else ",".join(SECTIONS)
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    bad = [x for x in sections if x not in SECTIONS]
    if bad:
        parser.error(f"unknown section(s) {bad}; choose from {', '.join(SECTIONS)}")
    if args.plot and not _importable("matplotlib"):
        parser.error("--plot needs matplotlib (pip install 'bknumba[plot]')")
    quick = args.quick
    shapes = QUICK_SHAPES if quick else FULL_SHAPES
    sparsities = QUICK_SPARSITIES if quick else FULL_SPARSITIES
    repeats = args.repeats or (3 if quick else 5)
    min_time = 0.05 if quick else 0.3
    t_start = time.perf_counter()

    total = len(plan_core(shapes, sparsities)) if "core" in sections else 0
    total += 3 * ("layers" in sections) + (3 if quick else 5) * ("ffn" in sections)
    if "gpu" in sections and gpu_available():
        per_shape = sum(len(QUICK_SPARSITIES) if i.sparse else 1 for i in GPU_IMPLS)
        total += per_shape * len(GPU_QUICK_SHAPES if quick else GPU_FULL_SHAPES)
    progress = _Progress(total, args.quiet)
    report = {"mode": "quick" if quick else "full"}
    try:
        if "core" in sections:
            meta, rows = run_cpu_bench(shapes, sparsities, repeats=repeats, progress=progress,
                                       min_time=min_time)
            report.update(meta=meta, rows=rows)
        if "layers" in sections:
            report["layers"] = run_layer_bench(quick, progress=progress)
        if "ffn" in sections:
            report["ffn"] = run_ffn_bench(quick, progress=progress)
        if "gpu" in sections:
            gpu = run_gpu_bench(GPU_QUICK_SHAPES if quick else GPU_FULL_SHAPES,
                                progress=progress)
            report["gpu"] = ({"skipped": "no GPU (numba.cuda.is_available() is False)"}
                             if gpu is None else {"meta": gpu[0], "rows": gpu[1]})
    finally:
        progress.close()
    report["total_s"] = time.perf_counter() - t_start

    if "rows" in report:
        print(format_table(report["meta"], report["rows"]))
    gpu = report.get("gpu")
    if gpu:
        print("\n== gpu ==")
        print(format_gpu_table(gpu) if "rows" in gpu else f"skipped: {gpu['skipped']}")
    if "layers" in report:
        print("\n== learned layers vs PyTorch eager (B 32, N 128, d 64, float32) ==")
        print(format_layers(report["layers"]))
    if "ffn" in report:
        print("\n== sparse FFN vs dense BLAS ==")
        print(format_ffn(report["ffn"]))
    print(f"\ntotal {report['total_s']:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1, default=str)
    if args.plot and "rows" in report:
        plot_report(report, args.plot)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(to_markdown(report))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
