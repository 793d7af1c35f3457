"""Module base class: declared state (keys, shapes, dtypes), loading, input checks."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

__all__ = ["Module", "Spec", "StateDictError", "IGNORED_BUFFERS"]

#: Bookkeeping buffers of the model: accepted when present, never used.
IGNORED_BUFFERS = ("total_flops_saved", "total_forward_calls", "scattering_step_counter")

_KIND_NAMES = {"f": "floating", "c": "complex", "i": "integer"}


class StateDictError(ValueError):
    """A state dict or exported file does not fit the module.

    Attributes
    ----------
    problems : list of str
        Every problem found (missing and unexpected keys, wrong shapes,
        wrong dtypes, non-finite values, unknown kind), not just the first.
    """

    def __init__(self, problems, context=""):
        self.problems = list(problems)
        head = f"{context}: " if context else ""
        body = "\n  - ".join(self.problems)
        super().__init__(f"{head}{len(self.problems)} problem(s):\n  - {body}")


@dataclass(frozen=True)
class Spec:
    """One state-dict entry: shape, dtype kind ('f', 'c', 'i'), whether it is optional/ignored."""

    shape: tuple
    kind: str = "f"
    ignored: bool = False


_STATE = threading.local()


_BLAS = None


def _blas_pools():
    """``(pool, get_num_threads)`` of the BLAS thread pools threadpoolctl finds (once:
    scanning is slow), or []."""
    global _BLAS
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - optional
            _BLAS = []
        else:
            _BLAS = [(pool, _getter(pool)) for pool in
                     ThreadpoolController().select(user_api="blas").lib_controllers]
    return _BLAS


def _getter(pool):
    """A function returning ``pool``'s thread count: OpenBLAS's own C function where
    threadpoolctl's wrapper would only look it up and call it (this runs on every
    forward call), else the wrapper."""
    if type(pool).__name__ == "OpenBLASController" and getattr(pool, "threading_layer",
                                                                 "") != "openmp":
        try:
            fn = pool._get_symbol("openblas_get_num_threads")
        except Exception:  # noqa: BLE001 - another threadpoolctl: its own method
            fn = None
        if fn is not None:
            return fn
    return pool.get_num_threads


def _numba_threads():
    """``numba.get_num_threads()``, without its process-wide lock once Numba's threads
    are running (the same per-thread count, read directly)."""
    from numba.np.ufunc import parallel

    get = getattr(parallel, "_get_num_threads", None)
    if getattr(parallel, "_is_initialized", False) and get is not None:
        n = get()
        if n > 0:
            return n
    return parallel.get_num_threads()


class thread_limit:
    """Limit Numba's (and, with ``threadpoolctl`` installed, BLAS's) threads for one call.

    A context manager. ``None`` leaves both as they are, and so does a nested
    use on the same thread. Numba's limit is per calling thread, so concurrent
    callers do not affect one another; the BLAS limit is process-wide while it
    lasts. Only the counts that differ are set (and restored): setting a count
    costs microseconds even when it does not change, and this runs around every
    forward call (a class rather than a generator for the same reason).
    """

    __slots__ = ("_want", "_old", "_changed")

    def __init__(self, num_threads):
        self._want = None if num_threads is None else int(num_threads)
        self._old = None
        self._changed = ()

    def __enter__(self):
        want = self._want
        if want is None or getattr(_STATE, "active", False):
            self._want = None  # nothing to restore on exit
            return self
        import numba

        _STATE.active = True
        try:
            nb = max(1, min(want, numba.config.NUMBA_NUM_THREADS))
            old = _numba_threads()
            if old != nb:
                numba.set_num_threads(nb)
                self._old = old
            changed = []
            for pool, get in _blas_pools():
                n = get()
                if n != want:
                    pool.set_num_threads(want)
                    changed.append((pool, n))
            self._changed = changed
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        if self._want is None:
            return False
        try:
            for pool, n in self._changed:
                pool.set_num_threads(n)
        finally:
            if self._old is not None:
                import numba

                numba.set_num_threads(self._old)
            _STATE.active = False
        return False


class Module:
    """Base of the NumPy inference modules.

    A module declares its state-dict entries (:meth:`specs`) in its
    constructor from its configuration, like the PyTorch module, and gets
    their values from :meth:`load_state_dict`. Calling it runs ``forward``.
    """

    #: Threads for one forward call (Numba kernels and, with threadpoolctl, BLAS);
    #: None leaves the process settings alone. Set by ``load(..., num_threads=...)``.
    num_threads = None

    def __init__(self, dtype=np.float32):
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        self.dtype = dtype
        self.config = {}
        self._specs = {}
        self._children = {}
        self._values = {}
        self._derived = {}
        self._loaded = False

    # -- declaration -------------------------------------------------------
    def _declare(self, name, shape, kind="f", ignored=False):
        self._specs[name] = Spec(tuple(int(s) for s in shape), kind, ignored)

    def _child(self, name, module):
        self._children[name] = module
        return module

    @property
    def kind(self):
        """The PyTorch class name this module implements."""
        return type(self).__name__

    def specs(self, prefix=""):
        """All state-dict entries of this module and its children, ``{key: Spec}``."""
        out = {prefix + k: s for k, s in self._specs.items()}
        for name, child in self._children.items():
            out.update(child.specs(f"{prefix}{name}."))
        return out

    # -- state -------------------------------------------------------------
    def check_state_dict(self, state):
        """List every problem of ``state`` (a mapping key -> array) against :meth:`specs`."""
        specs = self.specs()
        problems = []
        for key, spec in specs.items():
            if key not in state:
                if not spec.ignored:
                    problems.append(f"missing key {key!r} (expected shape {spec.shape})")
                continue
            arr = state[key]
            shape = tuple(getattr(arr, "shape", ()))
            if shape != spec.shape:
                problems.append(f"{key!r}: shape {shape}, expected {spec.shape}")
            dt = np.dtype(getattr(arr, "dtype", np.float64))
            ok_kinds = {"f": "f", "c": "c", "i": "iu"}[spec.kind]
            if spec.ignored and dt.kind in "fiub":
                pass
            elif dt.kind not in ok_kinds:
                problems.append(f"{key!r}: dtype {dt}, expected a {_KIND_NAMES[spec.kind]} dtype")
            elif dt.kind in "fc" and not np.all(np.isfinite(np.asarray(arr))):
                problems.append(f"{key!r}: contains non-finite values (NaN or infinity)")
        for key in state:
            if key not in specs:
                problems.append(f"unexpected key {key!r}")
        return problems

    def load_state_dict(self, state, *, context=""):
        """Validate ``state`` completely, then take copies of its arrays in this module's dtype.

        Raises
        ------
        StateDictError
            Listing every problem found.
        """
        problems = self.check_state_dict(state)
        if problems:
            raise StateDictError(problems, context or f"state dict for {self.kind}")
        self._assign(state, "")
        return self

    def _assign(self, state, prefix):
        for key, spec in self._specs.items():
            if spec.ignored:
                continue
            arr = np.asarray(state[prefix + key])
            if spec.kind == "f":
                arr = arr.astype(self.dtype)  # always a copy
            elif spec.kind == "c":
                arr = arr.astype(np.complex128)
            else:
                arr = arr.copy()
            self._values[key] = arr
        self._derived = {}
        for name, child in self._children.items():
            child._assign(state, f"{prefix}{name}.")
        self._loaded = True

    def state_dict(self):
        """The loaded arrays, ``{key: ndarray}`` (used entries only; copies)."""
        out = {k: v.copy() for k, v in self._values.items()}
        for name, child in self._children.items():
            out.update({f"{name}.{k}": v for k, v in child.state_dict().items()})
        return out

    def p(self, key):
        """A loaded parameter or buffer by its local key."""
        try:
            return self._values[key]
        except KeyError:
            raise RuntimeError(
                f"{self.kind} has no weights loaded: call load_state_dict or bknumba.nn.load"
            ) from None

    def _once(self, key, make):
        """A value computed from the loaded weights by ``make()`` once, kept until the
        next load (for example two bias vectors added together)."""
        try:
            return self._derived[key]
        except KeyError:
            value = self._derived[key] = make()
            return value

    def __call__(self, *args, **kwargs):
        if not self._loaded:
            raise RuntimeError(
                f"{self.kind} has no weights loaded: call load_state_dict or bknumba.nn.load"
            )
        with thread_limit(self.num_threads):
            return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{self.kind}({args})"

    # -- input checks ------------------------------------------------------
    def _input(self, name, x, ndim, last=None, n=None, finite=True):
        """``x`` as an array of this module's dtype (never the caller's buffer), checked;
        ``finite=False`` leaves the NaN / infinity test to the caller (a fused kernel
        that reads ``x`` first, followed by :meth:`_not_finite`)."""
        try:
            arr = np.asarray(x)
        except Exception as exc:  # noqa: BLE001
            raise TypeError(f"{self.kind}: {name} is not array-like: {exc}") from exc
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"{self.kind}: {name} must be real numeric, got dtype {arr.dtype}")
        if arr.ndim != ndim:
            want = {2: "(B, N)", 3: "(B, N, d_model)"}[ndim]
            raise ValueError(f"{self.kind}: {name} must have shape {want}, got shape {arr.shape}")
        if last is not None and arr.shape[-1] != last:
            raise ValueError(
                f"{self.kind}: {name} has last dimension {arr.shape[-1]}, expected d_model={last}"
            )
        if n is not None and arr.shape[1] != n:
            raise ValueError(
                f"{self.kind}: {name} has sequence length {arr.shape[1]}, expected n_seq={n}"
            )
        if arr.shape[0] == 0:
            raise ValueError(f"{self.kind}: {name} has an empty batch")
        # no copy when the dtype and layout already fit: a read-only view, so that
        # nothing in the forward pass can write to the caller's array
        arr = np.ascontiguousarray(arr, dtype=self.dtype).view()
        arr.flags.writeable = False
        # (isfinite + all is ~3x faster than a float64 sum of float32 data)
        if finite and not np.isfinite(arr).all():
            self._not_finite(name)
        return arr

    def _not_finite(self, name):
        raise ValueError(f"{self.kind}: {name} contains NaN or infinity")
