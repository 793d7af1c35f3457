"""Export PyTorch state dicts to ``.npz`` / ``.safetensors`` and load them back, without pickle.

File layout (both formats): one array per state-dict key, under the key's
own name, plus metadata (JSON):

``{"format": "bknumba.nn", "format_version": 1, "kind": <class name>,
"config": {<constructor arguments>}, "bknumba_version": ..., "source": {...}}``

In ``.npz`` the metadata is a 0-d unicode array under ``__bknumba_metadata__``
(readable with ``allow_pickle=False``); in ``.safetensors`` it is the header
metadata entry ``"bknumba"``.
"""
from __future__ import annotations

import datetime as _dt
import inspect
import json
import os
import zipfile

import numpy as np

from .._version import __version__
from ._base import StateDictError
from .modules import MODULES

__all__ = ["export_state_dict", "load", "read_file", "build", "FileFormatError", "StateDictError",
           "METADATA_KEY", "OPTIONS"]

METADATA_KEY = "__bknumba_metadata__"
FORMAT_VERSION = 1
#: Keyword options of :func:`load` / :func:`build` (inference behaviour, not weights).
OPTIONS = ("dtype", "features", "clip", "complex64", "mask", "rng", "num_threads")


class FileFormatError(ValueError):
    """The file cannot be read as a bknumba export (corrupted, truncated, wrong format)."""


def _fmt(path):
    p = os.fspath(path)
    if p.endswith(".npz"):
        return "npz"
    if p.endswith(".safetensors"):
        return "safetensors"
    raise ValueError(f"unknown file extension in {p!r}: use .npz or .safetensors")


def _to_numpy(value, key):
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor, without importing torch
        t = value.detach().cpu()
        if str(t.dtype) in ("torch.bfloat16", "torch.float16"):
            t = t.float()
        return t.numpy()
    try:
        return np.asarray(value)
    except Exception as exc:  # noqa: BLE001
        raise TypeError(f"state dict entry {key!r} is not an array: {type(value).__name__}") from exc


def check_config(kind, config):
    """Problems with ``kind`` / ``config`` (unknown kind, unknown or missing arguments)."""
    if kind not in MODULES:
        return [f"unknown module kind {kind!r}; known: {', '.join(sorted(MODULES))}"]
    sig = inspect.signature(MODULES[kind].__init__)
    named = [p for p in list(sig.parameters.values())[1:]
             if p.kind in (p.POSITIONAL_OR_KEYWORD,)]
    names = {p.name for p in named}
    problems = [f"{kind} has no constructor argument {k!r} (arguments: {', '.join(sorted(names))})"
                for k in config if k not in names]
    problems += [f"{kind} needs the constructor argument {p.name!r}"
                 for p in named if p.default is p.empty and p.name not in config]
    return problems


def build(kind, config, **options):
    """Construct (without weights) the module ``kind`` with constructor arguments ``config``."""
    problems = check_config(kind, dict(config))
    if problems:
        raise StateDictError(problems, f"module {kind!r}")
    bad = [k for k in options if k not in OPTIONS]
    if bad:
        raise TypeError(f"unknown option(s) {bad}; options are {', '.join(OPTIONS)}")
    num_threads = options.pop("num_threads", None)
    if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(
            num_threads, (int, np.integer)) or num_threads < 1):
        raise ValueError(f"num_threads must be a positive integer or None, got {num_threads!r}")
    module = MODULES[kind](**config, **options)
    module.num_threads = num_threads
    return module


def export_state_dict(state_dict, path, kind, *, source=None, validate=True, **config):
    """Write ``state_dict`` with its module kind and constructor arguments to ``.npz`` or ``.safetensors``.

    Parameters
    ----------
    state_dict : mapping str -> array or torch.Tensor
        The PyTorch module's ``state_dict()`` (tensors are converted; torch is
        not imported here).
    path : str or os.PathLike
        Ends in ``.npz`` or ``.safetensors``.
    kind : str
        The PyTorch class name, e.g. ``"SparseBKCore"`` (see :data:`MODULES`).
    source : dict, optional
        Provenance recorded in the metadata (file name, commit of the model,
        which BK core the weights were trained with, ...).
    validate : bool, default True
        Check the state dict against the module (keys, shapes, dtypes,
        finiteness) before writing; all problems are reported at once.
    **config
        The module's constructor arguments (JSON-serialisable).

    Returns
    -------
    dict : the metadata written.

    Raises
    ------
    StateDictError
        Unknown kind, bad configuration, or a state dict that does not fit.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from bknumba.nn import export_state_dict, load
    >>> sd = {"pool_weights": np.zeros((4, 2), np.float32),
    ...       "refine.0.weight": np.eye(3, dtype=np.float32), "refine.0.bias": np.zeros(3, np.float32),
    ...       "refine.1.weight": np.ones(3, np.float32), "refine.1.bias": np.zeros(3, np.float32)}
    >>> path = os.path.join(tempfile.mkdtemp(), "down.npz")
    >>> meta = export_state_dict(sd, path, "LearnedDownsampling", d_model=3, n_seq=8)
    >>> load(path)
    LearnedDownsampling(d_model=3, n_seq=8)
    """
    fmt = _fmt(path)
    arrays = {str(k): np.asarray(_to_numpy(v, k), order="C") for k, v in state_dict.items()}
    if METADATA_KEY in arrays:
        raise ValueError(f"state dict may not contain the reserved key {METADATA_KEY!r}")
    if validate:
        module = build(kind, config)
        problems = module.check_state_dict(arrays)
        if problems:
            raise StateDictError(problems, f"state dict for {kind}")
    else:
        problems = check_config(kind, config)
        if problems:
            raise StateDictError(problems, f"module {kind!r}")
    meta = {
        "format": "bknumba.nn",
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "config": dict(config),
        "bknumba_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": dict(source or {}),
    }
    text = json.dumps(meta, sort_keys=True)
    if fmt == "npz":
        with open(path, "wb") as fh:
            np.savez(fh, **arrays, **{METADATA_KEY: np.array(text)})
    else:
        from safetensors.numpy import save_file

        save_file(arrays, os.fspath(path), metadata={"bknumba": text})
    return meta


def read_file(path):
    """``(arrays, metadata)`` from an exported file, without pickle.

    Raises
    ------
    FileFormatError
        Unreadable, truncated or corrupted file, or missing/invalid metadata.
    """
    fmt = _fmt(path)
    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(p)
    try:
        if fmt == "npz":
            with np.load(p, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            raw = arrays.pop(METADATA_KEY, None)
            text = None if raw is None or raw.dtype.kind != "U" or raw.ndim else str(raw)
        else:
            from safetensors import safe_open

            arrays = {}
            with safe_open(p, framework="np") as fh:
                text = (fh.metadata() or {}).get("bknumba")
                for k in fh.keys():
                    arrays[k] = fh.get_tensor(k)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError) as exc:
        raise FileFormatError(f"cannot read {p!r} as a {fmt} file (corrupted or truncated?): "
                              f"{type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # safetensors_rust.SafetensorError and friends
        raise FileFormatError(f"cannot read {p!r} as a {fmt} file (corrupted or truncated?): "
                              f"{type(exc).__name__}: {exc}") from exc
    if text is None:
        raise FileFormatError(f"{p!r} has no bknumba metadata: export it with "
                              "bknumba.nn.export_state_dict or `bknumba export`")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FileFormatError(f"{p!r}: metadata is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != "bknumba.nn":
        raise FileFormatError(f"{p!r}: metadata is not a bknumba.nn export")
    if meta.get("format_version") != FORMAT_VERSION:
        raise FileFormatError(f"{p!r}: unsupported format_version {meta.get('format_version')!r}")
    return arrays, meta


def load(path, **options):
    """Load an exported module: validated, ready to call.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.npz`` or ``.safetensors`` file written by :func:`export_state_dict`.
    **options
        Inference options passed to the module (see :mod:`bknumba.nn.modules`):
        ``dtype`` (float32 default, or float64), ``features``
        (``"exact"`` default, ``"local"``, ``"seed"``, ``"sparse_v1"``,
        ``"model"``), ``clip``, ``complex64``, ``mask``
        (``"threshold"``/``"topk"``/``"gumbel"``), ``rng``, ``num_threads``
        (default ``None``: the process-wide settings of Numba and BLAS, i.e. all
        cores unless you changed them; an integer ``n`` runs each call's
        Numba kernels and BLAS (through ``threadpoolctl``) on ``n`` threads and
        restores the settings afterwards).

    Returns
    -------
    Module
        The module named by the file's ``kind``; ``module.metadata`` holds
        the file's metadata.

    Raises
    ------
    FileFormatError
        The file is unreadable (corrupted, truncated) or has no valid metadata.
    StateDictError
        Unknown kind, bad configuration, or weights that do not fit: every
        missing key, unexpected key, wrong shape, wrong dtype and non-finite
        array is listed in one error.
    """
    arrays, meta = read_file(path)
    kind, config = meta.get("kind"), meta.get("config")
    if not isinstance(config, dict):
        raise FileFormatError(f"{os.fspath(path)!r}: metadata 'config' is not an object")
    module = build(kind, config, **options)
    module.load_state_dict(arrays, context=f"{os.fspath(path)} ({kind})")
    module.metadata = meta
    return module
