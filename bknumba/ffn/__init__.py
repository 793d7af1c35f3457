"""Sparse FFN channel selection with a low-rank SVD estimator.

For a transformer feed-forward block ``y = act(x W1^T + b1) W2^T + b2``
(DistilBERT: 768 -> 3072 -> 768), a rank-``r`` truncated SVD of ``W1``
predicts the intermediate pre-activations at ``2 r (d + d_ff)`` FLOPs per
token; per token, the channels with the largest predicted activation are
kept, and both projections are computed on those channels only (Numba
kernels, parallel over tiles of tokens). Layer-wise sparsity ratios and a
warm-up follow the seed's configuration format.

Importing this package compiles nothing (kernels compile at first use).

Examples
--------
>>> import numpy as np
>>> from bknumba.ffn import synthetic_ffn_weights, FFNEstimator, sparse_ffn
>>> w = synthetic_ffn_weights(1, 32, 128, seed=0)["layer.0"]
>>> est = FFNEstimator(w.W1, w.b1, rank=8)
>>> x = np.random.default_rng(0).standard_normal((4, 32)).astype(np.float32)
>>> channels = est.select(x, sparsity=0.75)            # (4, 32) channel indices
>>> y = sparse_ffn(x, w.W1, w.b1, w.W2, w.b2, channels)
>>> y.shape, y.dtype
((4, 32), dtype('float32'))
"""
from ._common import ACTIVATIONS, apply_activation
from .config import (
    SEED_FALLBACK_CONFIG,
    SEED_OPTIMIZED_CONFIG,
    SEED_ORIGINAL_CONFIG,
    average_sparsity,
    get_layer_sparsity_ratio,
    validate_sparsity_config,
    warmup_factor,
)
from .core import dense_ffn, sparse_ffn
from .estimator import FFNEstimator, SVDSparsityEstimator, build_ffn_estimators
from .flops import dense_ffn_flops, layerwise_ffn_flops, seed_ffn_flop_table, sparse_ffn_flops
from .io import (
    FFNWeights,
    load_ffn_weights,
    minilm_safetensors_path,
    save_ffn_weights,
    synthetic_ffn_weights,
)
from .metrics import channel_recall, ffn_fidelity
from .select import channels_kept, select_ffn_channels

__all__ = [
    "ACTIVATIONS",
    "FFNEstimator",
    "FFNWeights",
    "SEED_FALLBACK_CONFIG",
    "SEED_OPTIMIZED_CONFIG",
    "SEED_ORIGINAL_CONFIG",
    "SVDSparsityEstimator",
    "apply_activation",
    "average_sparsity",
    "build_ffn_estimators",
    "channel_recall",
    "channels_kept",
    "dense_ffn",
    "dense_ffn_flops",
    "ffn_fidelity",
    "get_layer_sparsity_ratio",
    "layerwise_ffn_flops",
    "load_ffn_weights",
    "minilm_safetensors_path",
    "save_ffn_weights",
    "seed_ffn_flop_table",
    "select_ffn_channels",
    "sparse_ffn",
    "sparse_ffn_flops",
    "synthetic_ffn_weights",
    "validate_sparsity_config",
    "warmup_factor",
]
