"""Sparsity toolkit: the model's sparsity losses, scheduler, statistics and an
honest FLOP cost model (NumPy only; importing it does not import numba).

* :func:`sparsity_loss`, :func:`balanced_sparsity_loss`, :func:`current_sparsity`
* :class:`AdaptiveSparsityScheduler`
* :func:`sparsity_stats`
* :mod:`bknumba.sparsity.flops`: :func:`bk_core_flops`,
  :func:`sparse_bk_core_flops`, layer counts, the seeds' ``claimed_*``
  formulas and :func:`flops_report` (``bknumba flops``)
"""
from .flops import (
    bk_core_flops,
    claimed_bk_core_flops,
    claimed_ffn_flops,
    claimed_multi_scale_bk_flops,
    claimed_multi_scale_flops,
    claimed_sparse_g_ii_flops,
    conv1d_flops,
    downsampling_flops,
    ffn_flops,
    flops_report,
    flops_rows,
    importance_predictor_flops,
    interpolator_flops,
    learned_sparsity_g_ii_flops,
    linear_flops,
    moe_bk_layer_flops,
    moe_flops,
    multi_scale_bk_layer_flops,
    multi_scale_resnet_bk_layer_flops,
    predicted_sparse_speedup,
    refine_flops,
    sparse_bk_core_flops,
    sparse_moe_bk_layer_flops,
    speedup_report,
    speedup_rows,
    upsampling_flops,
    weighted_cost,
)
from .losses import LOSS_KINDS, balanced_sparsity_loss, current_sparsity, sparsity_loss
from .scheduler import SCHEDULE_TYPES, AdaptiveSparsityScheduler
from .stats import sparsity_stats

__all__ = [
    "LOSS_KINDS", "SCHEDULE_TYPES",
    "sparsity_loss", "balanced_sparsity_loss", "current_sparsity",
    "AdaptiveSparsityScheduler", "sparsity_stats",
    "bk_core_flops", "sparse_bk_core_flops", "weighted_cost", "predicted_sparse_speedup",
    "linear_flops", "conv1d_flops", "importance_predictor_flops", "interpolator_flops",
    "moe_flops", "downsampling_flops", "upsampling_flops", "refine_flops", "ffn_flops",
    "moe_bk_layer_flops", "sparse_moe_bk_layer_flops", "learned_sparsity_g_ii_flops",
    "multi_scale_bk_layer_flops", "multi_scale_resnet_bk_layer_flops",
    "claimed_sparse_g_ii_flops", "claimed_multi_scale_bk_flops", "claimed_multi_scale_flops",
    "claimed_bk_core_flops", "claimed_ffn_flops",
    "flops_rows", "flops_report", "speedup_rows", "speedup_report",
]
