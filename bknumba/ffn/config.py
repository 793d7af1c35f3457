"""Layer-wise sparsity ratios and the sparsity warm-up of the seed's configs.

A config is a mapping (or an object with attributes) with the seed's YAML
keys::

    svd_rank: 8
    ffn_sparsity: 0.5            # default for layers not listed
    layer_sparsity: {"layer.0": 0.0, "layer.1": 0.2, ...}
    sparse_warmup_ratio: 0.1     # fraction of training steps of the ramp
"""
from __future__ import annotations

from collections.abc import Mapping
import math
import numbers
import re

from ._common import check_sparsity

__all__ = [
    "SEED_ORIGINAL_CONFIG",
    "SEED_OPTIMIZED_CONFIG",
    "SEED_FALLBACK_CONFIG",
    "average_sparsity",
    "get_layer_sparsity_ratio",
    "validate_sparsity_config",
    "warmup_factor",
]

#: The seed's "Before (Original)" configuration.
SEED_ORIGINAL_CONFIG = {
    "svd_rank": 8,
    "ffn_sparsity": 0.5,
    "layer_sparsity": {
        "layer.0": 0.0, "layer.1": 0.2, "layer.2": 0.3,
        "layer.3": 0.5, "layer.4": 0.6, "layer.5": 0.7,
    },
    "sparse_warmup_ratio": 0.1,
}

#: The seed's "After (Optimized)" configuration.
SEED_OPTIMIZED_CONFIG = {
    "svd_rank": 4,
    "ffn_sparsity": 0.75,
    "layer_sparsity": {
        "layer.0": 0.4, "layer.1": 0.5, "layer.2": 0.6,
        "layer.3": 0.8, "layer.4": 0.9, "layer.5": 0.95,
    },
    "sparse_warmup_ratio": 0.2,
}

#: The seed's "Fallback Plan" (it lists no warm-up: the optimized 0.2 is kept).
SEED_FALLBACK_CONFIG = {
    "svd_rank": 4,
    "ffn_sparsity": 0.65,
    "layer_sparsity": {
        "layer.0": 0.3, "layer.1": 0.4, "layer.2": 0.5,
        "layer.3": 0.7, "layer.4": 0.8, "layer.5": 0.9,
    },
    "sparse_warmup_ratio": 0.2,
}

_KEYS = ("svd_rank", "ffn_sparsity", "layer_sparsity", "sparse_warmup_ratio")


def _get(config, key, default=None):
    if isinstance(config, Mapping):
        return config.get(key, default)
    return getattr(config, key, default)


def validate_sparsity_config(config) -> dict:
    """Check a config and return it as a plain dict with defaults filled in.

    Defaults: ``ffn_sparsity`` 0, ``layer_sparsity`` {}, ``sparse_warmup_ratio``
    0, ``svd_rank`` None. Sparsity ratios must lie in ``[0, 1)``, the warm-up
    ratio in ``[0, 1]``, the rank be a positive integer.

    Examples
    --------
    >>> validate_sparsity_config({"ffn_sparsity": 0.5})["sparse_warmup_ratio"]
    0.0
    >>> validate_sparsity_config({"layer_sparsity": {"layer.2": 1.0}})
    Traceback (most recent call last):
    ...
    ValueError: layer_sparsity['layer.2']=1.0 is outside [0, 1): 0 means dense, and at least one channel per token must be kept
    """
    if config is None:
        raise TypeError("config must be a mapping or an object with attributes; got None")
    rank = _get(config, "svd_rank")
    if rank is not None and (
        isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank < 1
    ):
        raise ValueError(f"svd_rank must be a positive integer; got {rank!r}")
    default = check_sparsity(_get(config, "ffn_sparsity", 0.0), "ffn_sparsity")
    layers = _get(config, "layer_sparsity", None) or {}
    if not isinstance(layers, Mapping):
        raise TypeError(
            f"layer_sparsity must be a mapping like {{'layer.0': 0.0}}; got {type(layers).__name__}"
        )
    checked = {}
    for key, value in layers.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"layer_sparsity keys must be non-empty strings; got {key!r}")
        checked[key] = check_sparsity(value, f"layer_sparsity[{key!r}]")
    warm = _get(config, "sparse_warmup_ratio", 0.0)
    if warm is None:
        warm = 0.0
    if isinstance(warm, bool) or not isinstance(warm, numbers.Real):
        raise TypeError(f"sparse_warmup_ratio must be a real number in [0, 1]; got {warm!r}")
    if not 0.0 <= float(warm) <= 1.0:
        raise ValueError(f"sparse_warmup_ratio={warm!r} is outside [0, 1]")
    return {
        "svd_rank": None if rank is None else int(rank),
        "ffn_sparsity": default,
        "layer_sparsity": checked,
        "sparse_warmup_ratio": float(warm),
    }


def warmup_factor(step, total_steps, warmup_ratio) -> float:
    """Linear ramp ``min(1, step / (warmup_ratio * total_steps))``.

    0 at step 0, 1 from step ``warmup_ratio * total_steps`` on; 1 for
    ``warmup_ratio == 0``.

    Examples
    --------
    >>> warmup_factor(50, 1000, 0.1), warmup_factor(100, 1000, 0.1), warmup_factor(0, 1000, 0.0)
    (0.5, 1.0, 1.0)
    """
    for name, v in (("step", step), ("total_steps", total_steps)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be an integer; got {v!r}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1; got {total_steps}")
    if step < 0:
        raise ValueError(f"step must be >= 0; got {step}")
    if not 0.0 <= warmup_ratio <= 1.0:
        raise ValueError(f"sparse_warmup_ratio={warmup_ratio!r} is outside [0, 1]")
    ramp = warmup_ratio * total_steps
    if ramp <= 0:
        return 1.0
    return min(1.0, step / ramp)


_LAYER_RE = re.compile(r"(?:^|\.)layer\.(\d+)(?:\.|$)")


def _match(layer_name: str, layers: Mapping):
    """The key of ``layers`` naming ``layer_name``: exact, else the longest key
    whose dotted components appear contiguously in the name (so ``"layer.1"``
    matches ``"transformer.layer.1.ffn"`` but not ``"layer.10"``)."""
    if layer_name in layers:
        return layer_name
    parts = layer_name.split(".")
    best = None
    for key in layers:
        kp = key.split(".")
        m = len(kp)
        if any(parts[i:i + m] == kp for i in range(len(parts) - m + 1)):
            if best is None or m > len(best.split(".")):
                best = key
    return best


def get_layer_sparsity_ratio(layer_name, config, *, step=None, total_steps=None) -> float:
    """Sparsity of one layer, with the warm-up applied during training.

    Parameters
    ----------
    layer_name : str or int
        ``"layer.3"``, a longer module name containing it
        (``"distilbert.transformer.layer.3.ffn"``), or the layer index 3.
    config : mapping or object
        See the module docstring; checked with :func:`validate_sparsity_config`.
    step, total_steps : int, optional
        Current training step and total steps. When both are given the
        ratio is multiplied by :func:`warmup_factor`: it ramps linearly from
        0 over the first ``sparse_warmup_ratio * total_steps`` steps. Leave
        them out at inference.

    Returns
    -------
    float in [0, 1)
        ``layer_sparsity[layer]`` if listed, else ``ffn_sparsity``.

    Examples
    --------
    >>> from bknumba.ffn.config import SEED_ORIGINAL_CONFIG as cfg
    >>> get_layer_sparsity_ratio("layer.3", cfg), get_layer_sparsity_ratio("layer.7", cfg)
    (0.5, 0.5)
    >>> get_layer_sparsity_ratio("layer.5", cfg, step=50, total_steps=1000)  # half-way up the ramp
    0.35
    """
    cfg = validate_sparsity_config(config)
    if isinstance(layer_name, numbers.Integral) and not isinstance(layer_name, bool):
        if layer_name < 0:
            raise ValueError(f"layer index must be >= 0; got {layer_name}")
        layer_name = f"layer.{int(layer_name)}"
    if not isinstance(layer_name, str):
        raise TypeError(f"layer_name must be a string or an int; got {type(layer_name).__name__}")
    key = _match(layer_name, cfg["layer_sparsity"])
    ratio = cfg["ffn_sparsity"] if key is None else cfg["layer_sparsity"][key]
    if (step is None) != (total_steps is None):
        raise ValueError("give both step and total_steps (training) or neither (inference)")
    if step is not None:
        ratio *= warmup_factor(step, total_steps, cfg["sparse_warmup_ratio"])
    return float(ratio)


def average_sparsity(config, n_layers=None) -> float:
    """Mean sparsity over ``layer.0 .. layer.{n_layers-1}`` (default: the layers listed).

    Examples
    --------
    >>> from bknumba.ffn.config import SEED_ORIGINAL_CONFIG, SEED_OPTIMIZED_CONFIG
    >>> round(average_sparsity(SEED_ORIGINAL_CONFIG), 3), round(average_sparsity(SEED_OPTIMIZED_CONFIG), 3)
    (0.383, 0.692)
    """
    cfg = validate_sparsity_config(config)
    if n_layers is None:
        names = list(cfg["layer_sparsity"])
        if not names:
            return cfg["ffn_sparsity"]
    else:
        if isinstance(n_layers, bool) or not isinstance(n_layers, numbers.Integral) or n_layers < 1:
            raise ValueError(f"n_layers must be a positive integer; got {n_layers!r}")
        names = [f"layer.{i}" for i in range(n_layers)]
    return math.fsum(get_layer_sparsity_ratio(n, cfg) for n in names) / len(names)
