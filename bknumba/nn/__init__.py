"""Learned sparse BK-Core layers: autodiff-free NumPy inference from exported PyTorch weights.

Load a module exported from a PyTorch checkpoint and call it like the
PyTorch module (eval mode)::

    >>> import bknumba.nn as bnn                                # doctest: +SKIP
    >>> layer = bnn.load("layer.safetensors")                   # doctest: +SKIP
    >>> out = layer(x)                                          # doctest: +SKIP

BK features are exact by default (``sparse_bk_core(..., semantics="exact")``);
the original model's feature arithmetic is opt-in (``features="model"``,
``"sparse_v1"``, ``clip=50.0``, ``complex64=True``; see
:mod:`bknumba.nn.compat`). Importing this package does not import torch.
"""
from __future__ import annotations

from ._base import IGNORED_BUFFERS, Module, StateDictError
from .features import FEATURE_MODES, bk_features
from .io import FileFormatError, build, export_state_dict, load, read_file
from .masks import gumbel_sigmoid_mask, threshold_mask, topk_count, topk_mask
from .modules import (
    MODULES,
    AdaptiveDownsampling,
    AdaptiveUpsampling,
    HierarchicalMultiScaleLayer,
    ImportancePredictor,
    LearnedDownsampling,
    LearnedSparsityG_ii,
    LearnedUpsampling,
    MoEResNetBKLayer,
    MultiScaleBKLayer,
    MultiScaleResNetBKBlock,
    MultiScaleResNetBKLayer,
    SparseBKCore,
    SparseBKLayerWithMoE,
    SparseG_iiComputation,
    SparseMoELayer,
    SparseMoEResNetBKLayer,
    sparsity_loss,
)

__all__ = [
    "load", "export_state_dict", "build", "read_file", "Module", "MODULES", "StateDictError",
    "FileFormatError", "IGNORED_BUFFERS", "FEATURE_MODES", "bk_features", "threshold_mask",
    "topk_mask", "topk_count", "gumbel_sigmoid_mask", "sparsity_loss",
    *sorted(MODULES),
]
