"""NumPy inference modules of the sparse BK-Core model (eval mode, no autodiff).

Every class mirrors one PyTorch module of ``original-model.md`` (sections
3-7): the same constructor arguments, the same state-dict keys and shapes,
the same positional ``forward`` arguments and the same outputs, as NumPy
arrays and Python floats. Weights come from :func:`bknumba.nn.load` (or
:meth:`Module.load_state_dict`).

Common keyword-only options (passed down to the sub-modules):

``dtype``
    ``np.float32`` (default, like the model) or ``np.float64``.
``features``
    How the BK features are computed: ``"exact"`` (default; the true
    resolvent diagonal at computed positions, 0 where masked),
    ``"local"``, ``"seed"`` (the :func:`bknumba.sparse_bk_core` semantics),
    ``"sparse_v1"`` (the original sparse recursion, defective by design, see
    :mod:`bknumba.nn.compat`) or ``"model"`` (whatever the original module
    computed: ``sparse_v1`` for ``SparseBKCore``; the full core with the
    clip at 50 and the complex64 cast for ``LearnedSparsityG_ii`` and
    ``MoEResNetBKLayer``).
``clip``, ``complex64``
    The original core's post-processing (``|G|`` clipped to ``clip``, then a
    complex64 cast); off by default, on for ``features="model"`` where the
    original had them.
``mask``
    ``"threshold"`` (logit > 0), ``"topk"`` (k = int(N (1 - target_sparsity))
    per row) or ``"gumbel"`` (the training-time Gumbel-sigmoid with NumPy's
    generator ``rng``; it cannot bit-match torch's generator).
"""
from __future__ import annotations

import numpy as np

from ._base import Module
from .features import bk_features, resolve_feature_options
from .interp import cnn_interpolate, linear_interpolate
from .layers import (_fast32, _mlp, _relu_, conv1d, layer_norm, linear, linear_gelu,
                     linear_ln_gelu, softmax)
from .masks import MASK_MODES, gumbel_sigmoid_mask, threshold_mask, topk_count, topk_mask

__all__ = [
    "SparseBKCore", "SparseMoELayer", "SparseMoEResNetBKLayer", "MoEResNetBKLayer",
    "ImportancePredictor", "SparseG_iiComputation", "LearnedSparsityG_ii",
    "SparseBKLayerWithMoE", "AdaptiveDownsampling", "AdaptiveUpsampling", "MultiScaleBKLayer",
    "LearnedDownsampling", "LearnedUpsampling", "MultiScaleResNetBKLayer",
    "HierarchicalMultiScaleLayer", "MultiScaleResNetBKBlock", "MODULES", "sparsity_loss",
]


def _hamiltonian(m, n):
    m._declare("h0_diag_base", (1, n))
    m._declare("h0_sub_base", (1, n - 1))
    m._declare("h0_super_base", (1, n - 1))
    m._declare("z", (), "c")


def _z(m):
    return complex(m.p("z"))


def _lin(m, name, x):
    return linear(x, m.p(f"{name}.weight"), m.p(f"{name}.bias"))


def _mlp_relu(m, lin1, lin2, x):
    """``Linear -> ReLU -> Linear`` of the sub-modules ``lin1`` and ``lin2`` (one fused
    region where it applies, :func:`bknumba.nn.layers.mlp`)."""
    p = m.p
    return _mlp(x, p(f"{lin1}.weight"), p(f"{lin1}.bias"), "relu", p(f"{lin2}.weight"),
                p(f"{lin2}.bias"))[0]


def _decl_lin(m, name, out_f, in_f):
    m._declare(f"{name}.weight", (out_f, in_f))
    m._declare(f"{name}.bias", (out_f,))


def _decl_conv(m, name, out_c, in_c, k):
    m._declare(f"{name}.weight", (out_c, in_c, k))
    m._declare(f"{name}.bias", (out_c,))


def _decl_ln(m, name, d):
    m._declare(f"{name}.weight", (d,))
    m._declare(f"{name}.bias", (d,))


def _ln(m, name, x):
    return layer_norm(x, m.p(f"{name}.weight"), m.p(f"{name}.bias"))


def _check_mask_mode(mask):
    if mask not in MASK_MODES:
        raise ValueError(f"mask={mask!r} is not one of {', '.join(map(repr, MASK_MODES))}")


def _positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def sparsity_loss(mask, target, loss_type="l2"):
    """The model's sparsity regulariser on a mask, as a Python float.

    ``cs = 1 - mean(mask)``; ``'l2'``: ``(cs - t)^2``; ``'l1'``: ``|cs - t|``;
    ``'kl'``: Bernoulli ``KL(t || cs)`` (l2 when ``t`` is within 1e-8 of 0 or 1);
    ``'adaptive'``: Huber with delta 0.1.

    >>> sparsity_loss(np.array([[1.0, 0.0, 0.0, 0.0]]), 0.5)
    0.0625
    """
    cs = 1.0 - float(np.mean(mask))
    t = float(target)
    d = cs - t
    if loss_type == "l2":
        return d * d
    if loss_type == "l1":
        return abs(d)
    if loss_type == "kl":
        eps = 1e-8
        if eps < t < 1 - eps:
            c = min(max(cs, eps), 1 - eps)
            return float(t * np.log(t / c) + (1 - t) * np.log((1 - t) / (1 - c)))
        return d * d
    if loss_type == "adaptive":
        return 0.5 * d * d if abs(d) < 0.1 else 0.1 * (abs(d) - 0.05)
    raise ValueError(f"unknown sparsity loss type {loss_type!r}")


# ---------------------------------------------------------------------------------------------
# Section 3.4: SparseBKCore
# ---------------------------------------------------------------------------------------------
class SparseBKCore(Module):
    """``SparseBKCore(d_model, n_seq, target_sparsity=0.5, tau=1.0)``.

    ``forward(x, v, use_sparse_computation=True)`` returns
    ``(features (B, N, 2), mask (B, N), sparsity_ratio: float)``.

    The default mask is ``logit > 0`` (the model's Gumbel-sigmoid without
    noise; the model itself draws noise even in eval). Features are exact
    (``features="exact"``); ``features="model"`` (= ``"sparse_v1"``)
    reproduces the original ``optimized_sparse_bk_core``. An explicit 0/1
    ``mask=`` array may be given to ``forward`` to bypass the predictor's
    mask.
    """

    def __init__(self, d_model, n_seq, target_sparsity=0.5, tau=1.0, *, dtype=np.float32,
                 features="exact", clip=None, complex64=None, mask="threshold", rng=None):
        super().__init__(dtype)
        d = _positive_int("d_model", d_model, 2)
        n = _positive_int("n_seq", n_seq, 2)
        self.config = dict(d_model=d, n_seq=n, target_sparsity=float(target_sparsity), tau=float(tau))
        self.d_model, self.n_seq = d, n
        self.target_sparsity, self.tau = float(target_sparsity), float(tau)
        self.features, self.clip, self.complex64 = resolve_feature_options(
            features, clip, complex64, ("sparse_v1", None, False))
        self._model_full = features == "model"
        _check_mask_mode(mask)
        self.mask_mode = mask
        self.rng = np.random.default_rng(rng)
        h = d // 2
        _decl_lin(self, "importance_predictor.0", h, d)
        _decl_lin(self, "importance_predictor.2", 1, h)
        _decl_conv(self, "interpolator.0", 16, 2, 3)
        _decl_conv(self, "interpolator.2", 16, 16, 3)
        _decl_conv(self, "interpolator.4", 2, 16, 3)
        _hamiltonian(self, n)

    def importance_logits(self, x):
        """Per-token importance logits ``(B, N)`` (Linear -> ReLU -> Linear)."""
        return _mlp_relu(self, "importance_predictor.0", "importance_predictor.2", x)[..., 0]

    def make_mask(self, logits):
        """The configured mask (threshold, top-k or Gumbel) from the logits."""
        if self.mask_mode == "threshold":
            return threshold_mask(logits)
        if self.mask_mode == "topk":
            return topk_mask(logits, topk_count(logits.shape[-1], self.target_sparsity))
        return gumbel_sigmoid_mask(logits, self.tau, self.rng)

    def interpolate(self, masked_features):
        """The learned CNN interpolator on ``(B, N, 2)`` masked features."""
        return cnn_interpolate(masked_features, [
            self.p(f"interpolator.{i}.{w}") for i in (0, 2, 4) for w in ("weight", "bias")])

    def forward(self, x, v, use_sparse_computation=True, *, mask=None):
        x = self._input("x", x, 3, self.d_model, self.n_seq)
        v = self._input("v", v, 2, None, self.n_seq)
        if v.shape[0] != x.shape[0]:
            raise ValueError(f"SparseBKCore: v has batch {v.shape[0]}, x has batch {x.shape[0]}")
        if mask is None:
            mask = self.make_mask(self.importance_logits(x))
        else:
            mask = self._input("mask", mask, 2, None, self.n_seq)
            if mask.shape[0] != x.shape[0]:
                raise ValueError("SparseBKCore: mask and x have different batch sizes")
        he = self.p("h0_diag_base") + v
        if use_sparse_computation:
            feats = bk_features(he, self.p("h0_super_base"), self.p("h0_sub_base"), _z(self), mask,
                                features=self.features, clip=self.clip,
                                complex64=self.complex64, dtype=self.dtype)
        else:
            # the model's "full" path: full core (BKCoreFunction at 6182361: clip 50, complex64)
            full = bk_features(he, self.p("h0_super_base"), self.p("h0_sub_base"), _z(self), None,
                               features="exact",
                               clip=50.0 if self._model_full else self.clip,
                               complex64=True if self._model_full else self.complex64,
                               dtype=self.dtype)
            feats = full * mask[..., None]
        sparse_in = feats * mask[..., None]
        interpolated = self.interpolate(sparse_in)
        keep = (mask > 0.5)[..., None]
        final = np.where(keep, feats if use_sparse_computation else sparse_in, interpolated)
        ratio = float(1.0 - mask.mean(dtype=self.dtype))
        return final, mask, ratio

    def sparsity_loss(self, mask, loss_type="l2"):
        """See :func:`sparsity_loss` (float)."""
        return sparsity_loss(mask, self.target_sparsity, loss_type)


# ---------------------------------------------------------------------------------------------
# Section 6.1: SparseMoELayer
# ---------------------------------------------------------------------------------------------
class SparseMoELayer(Module):
    """``SparseMoELayer(d_model, num_experts=4, top_k=1, dropout_p=0.1)``, eval mode.

    ``forward(x)`` returns the output ``(B, N, D)`` (a plain array, as at
    commit ``6182361``; the later tuple return is not reproduced). Routing:
    the ``top_k`` largest router logits per token, softmax over those
    (gate 1.0 for ``top_k = 1``; softmax over all experts when
    ``top_k >= num_experts``); ties go to the lower expert index. The HEAD
    buffer ``scattering_step_counter`` is accepted and ignored (its
    "legacy scattering modulation" is a per-token constant shift of the
    logits and cannot change the routing).
    """

    def __init__(self, d_model, num_experts=4, top_k=1, dropout_p=0.1, *, dtype=np.float32, **_):
        super().__init__(dtype)
        d = _positive_int("d_model", d_model)
        e = _positive_int("num_experts", num_experts)
        k = _positive_int("top_k", top_k)
        self.config = dict(d_model=d, num_experts=e, top_k=k, dropout_p=float(dropout_p))
        self.d_model, self.num_experts, self.top_k = d, e, min(k, e)
        for i in range(e):
            _decl_lin(self, f"experts.{i}.0", 2 * d, d)
            _decl_lin(self, f"experts.{i}.3", d, 2 * d)
        _decl_lin(self, "gating_network", e, d)
        self._declare("scattering_step_counter", (), "i", ignored=True)

    def route(self, tokens):
        """``(expert indices (T, k), gates (T, k))`` for tokens ``(T, D)``."""
        logits = _lin(self, "gating_network", tokens)
        k = self.top_k
        if k >= self.num_experts:
            idx = np.broadcast_to(np.arange(self.num_experts), logits.shape)
            return idx, softmax(logits, -1)
        if k == 1:
            idx = np.argmax(logits, axis=-1)[:, None]  # first maximal index
            return idx, np.ones(idx.shape, dtype=logits.dtype)
        idx = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
        return idx, softmax(np.take_along_axis(logits, idx, -1), -1)

    def expert(self, i, tokens):
        """Expert ``i`` (Linear -> ReLU -> Linear) on ``(T, D)`` tokens."""
        return _mlp_relu(self, f"experts.{i}.0", f"experts.{i}.3", tokens)

    def forward(self, x):
        x = self._input("x", x, 3, self.d_model)
        tokens = x.reshape(-1, self.d_model)
        idx, gates = self.route(tokens)
        out = np.zeros_like(tokens)
        for e in range(self.num_experts):
            sel_t, sel_k = np.nonzero(idx == e)
            if sel_t.size == 0:
                continue
            y = self.expert(e, tokens[sel_t])
            if self.top_k == 1:
                out[sel_t] = y
            else:
                out[sel_t] += gates[sel_t, sel_k][:, None] * y  # each token once per expert
        return out.reshape(x.shape)


# ---------------------------------------------------------------------------------------------
# Section 3.5 and 6.2: the BK ResNet layers with an MoE
# ---------------------------------------------------------------------------------------------
class SparseMoEResNetBKLayer(Module):
    """``SparseMoEResNetBKLayer(d_model, n_seq, num_experts=4, top_k=1, dropout_p=0.1,
    target_sparsity=0.5, sparsity_loss_weight=0.01, sparsity_loss_type='adaptive',
    use_sparse_computation=True)``.

    ``forward(x)`` returns ``(B, N, D)``: ``ffn + bk_scale * output_proj(clamp(features, +-10))``
    with ``ffn = moe_ffn(x)``, ``v = clamp(v_proj(ffn), +-3)`` and
    ``features = sparse_bk_core(x, v)``. :meth:`get_sparsity_stats` gives the
    model's statistics of the last call.
    """

    def __init__(self, d_model, n_seq, num_experts=4, top_k=1, dropout_p=0.1,
                 target_sparsity=0.5, sparsity_loss_weight=0.01, sparsity_loss_type="adaptive",
                 use_sparse_computation=True, *, dtype=np.float32, **options):
        super().__init__(dtype)
        self.config = dict(d_model=d_model, n_seq=n_seq, num_experts=num_experts, top_k=top_k,
                           dropout_p=dropout_p, target_sparsity=target_sparsity,
                           sparsity_loss_weight=sparsity_loss_weight,
                           sparsity_loss_type=sparsity_loss_type,
                           use_sparse_computation=use_sparse_computation)
        self.moe_ffn = self._child("moe_ffn", SparseMoELayer(d_model, num_experts, top_k, dropout_p,
                                                             dtype=dtype))
        self.sparse_bk_core = self._child("sparse_bk_core", SparseBKCore(
            d_model, n_seq, target_sparsity, dtype=dtype, **options))
        self.d_model, self.n_seq = self.sparse_bk_core.d_model, self.sparse_bk_core.n_seq
        self.target_sparsity = float(target_sparsity)
        self.sparsity_loss_weight = float(sparsity_loss_weight)
        self.sparsity_loss_type = sparsity_loss_type
        self.use_sparse_computation = bool(use_sparse_computation)
        self.v_max, self.feature_clamp = 3.0, 10.0
        _decl_lin(self, "v_proj", 1, d_model)
        _decl_lin(self, "output_proj", d_model, 2)
        self._declare("bk_scale", ())
        self.last_mask = None
        self.last_sparsity = None

    def forward(self, x):
        x = self._input("x", x, 3, self.d_model, self.n_seq)
        ffn = self.moe_ffn(x)
        v = np.clip(_lin(self, "v_proj", ffn)[..., 0], -self.v_max, self.v_max)
        feats, mask, ratio = self.sparse_bk_core(x, v, self.use_sparse_computation)
        self.last_mask, self.last_sparsity = mask, ratio
        feats = np.clip(feats, -self.feature_clamp, self.feature_clamp)
        return ffn + self.p("bk_scale") * _lin(self, "output_proj", feats)

    def get_sparsity_stats(self):
        """``{'sparsity_ratio', 'num_computed', 'target_sparsity'}`` of the last call.

        Before any call: ``{'sparsity_ratio': 0.0, 'num_computed': n_seq}``, like the model.
        """
        if self.last_mask is None:
            return {"sparsity_ratio": 0.0, "num_computed": self.n_seq}
        return {"sparsity_ratio": float(self.last_sparsity),
                "num_computed": float(self.last_mask.sum(axis=-1).mean()),
                "target_sparsity": self.target_sparsity}

    def get_sparsity_loss(self, loss_type=None):
        """``sparsity_loss_weight * sparsity_loss(last_mask)`` (0.0 before any call)."""
        if self.last_mask is None:
            return 0.0
        return self.sparsity_loss_weight * sparsity_loss(
            self.last_mask, self.target_sparsity, loss_type or self.sparsity_loss_type)


class MoEResNetBKLayer(Module):
    """``MoEResNetBKLayer(d_model, n_seq, num_experts=4, top_k=1, dropout_p=0.1)`` as of ``6182361``.

    ``forward(x)``: ``ffn + bk_scale * output_proj(clamp(features, +-10))``
    with the full BK core on ``h0 + clamp(v_proj(ffn), +-3)``. Exact by
    default; ``features="model"`` adds the original clip at 50 and complex64
    cast. (The later config-object version is a different module.)
    """

    def __init__(self, d_model, n_seq, num_experts=4, top_k=1, dropout_p=0.1, *,
                 dtype=np.float32, features="exact", clip=None, complex64=None, **_):
        super().__init__(dtype)
        d = _positive_int("d_model", d_model)
        n = _positive_int("n_seq", n_seq, 2)
        self.config = dict(d_model=d, n_seq=n, num_experts=num_experts, top_k=top_k,
                           dropout_p=dropout_p)
        self.d_model, self.n_seq = d, n
        if features in ("local", "seed", "sparse_v1"):
            features = "exact"  # a full core: the sparse semantics do not apply
        _, self.clip, self.complex64 = resolve_feature_options(
            features, clip, complex64, ("exact", 50.0, True))
        self.moe_ffn = self._child("moe_ffn", SparseMoELayer(d, num_experts, top_k, dropout_p,
                                                             dtype=dtype))
        _decl_lin(self, "v_proj", 1, d)
        _decl_lin(self, "output_proj", d, 2)
        self._declare("bk_scale", ())
        _hamiltonian(self, n)

    def forward(self, x):
        x = self._input("x", x, 3, self.d_model, self.n_seq)
        ffn = self.moe_ffn(x)
        v = np.clip(_lin(self, "v_proj", ffn)[..., 0], -3.0, 3.0)
        he = self.p("h0_diag_base") + v
        feats = bk_features(he, self.p("h0_super_base"), self.p("h0_sub_base"), _z(self), None,
                            clip=self.clip, complex64=self.complex64, dtype=self.dtype)
        feats = np.clip(feats, -10.0, 10.0)
        return ffn + self.p("bk_scale") * _lin(self, "output_proj", feats)


# ---------------------------------------------------------------------------------------------
# Section 5: learned_sparsity_g_ii.py
# ---------------------------------------------------------------------------------------------
class ImportancePredictor(Module):
    """``ImportancePredictor(d_model, hidden_dim=None, use_context=True)``: logits ``(B, N)``.

    With context: Conv1d(d, h, 3) -> ReLU -> Conv1d(h, h, 3) -> ReLU ("same"
    zero padding, non-causal), then Linear(h, h) -> ReLU -> Linear(h, 1).
    """

    def __init__(self, d_model, hidden_dim=None, use_context=True, *, dtype=np.float32, **_):
        super().__init__(dtype)
        d = _positive_int("d_model", d_model, 2)
        h = _positive_int("hidden_dim", hidden_dim or d // 2)
        self.config = dict(d_model=d, hidden_dim=hidden_dim, use_context=bool(use_context))
        self.d_model, self.use_context = d, bool(use_context)
        if self.use_context:
            _decl_conv(self, "context_encoder.0", h, d, 3)
            _decl_conv(self, "context_encoder.2", h, h, 3)
        _decl_lin(self, "importance_head.0", h, h if self.use_context else d)
        _decl_lin(self, "importance_head.3", 1, h)

    def forward(self, x):
        x = self._input("x", x, 3, self.d_model)
        return self._logits(x)

    def _logits(self, x):
        if self.use_context:
            x = _relu_(conv1d(x, self.p("context_encoder.0.weight"), self.p("context_encoder.0.bias")))
            x = _relu_(conv1d(x, self.p("context_encoder.2.weight"), self.p("context_encoder.2.bias")))
        return _mlp_relu(self, "importance_head.0", "importance_head.3", x)[..., 0]


class SparseG_iiComputation(Module):
    """``SparseG_iiComputation(n_seq, interpolation_method='learned')``.

    ``forward(v, mask)`` returns ``(final, sparse)``, both ``(B, N, 2)``:
    ``sparse`` is the BK features times the mask, ``final`` takes ``sparse``
    where ``mask > 0.5`` and the interpolation elsewhere. ``'learned'``:
    the 3-layer CNN (kernel 5, 32 channels); ``'linear'`` and ``'cubic'``
    (which the model implements as linear): :func:`~bknumba.nn.interp.linear_interpolate`.
    """

    def __init__(self, n_seq, interpolation_method="learned", *, dtype=np.float32,
                 features="exact", clip=None, complex64=None, **_):
        super().__init__(dtype)
        n = _positive_int("n_seq", n_seq, 2)
        if interpolation_method not in ("learned", "linear", "cubic"):
            raise ValueError(f"unknown interpolation_method {interpolation_method!r}")
        self.config = dict(n_seq=n, interpolation_method=interpolation_method)
        self.n_seq, self.interpolation_method = n, interpolation_method
        if features == "sparse_v1":
            raise ValueError("features='sparse_v1' is SparseBKCore's recursion; the original "
                             "SparseG_iiComputation used the full core (features='model')")
        self.features, self.clip, self.complex64 = resolve_feature_options(
            features, clip, complex64, ("exact", 50.0, True))
        if interpolation_method == "learned":
            _decl_conv(self, "interpolator.0", 32, 2, 5)
            _decl_conv(self, "interpolator.2", 32, 32, 5)
            _decl_conv(self, "interpolator.4", 2, 32, 5)
        _hamiltonian(self, n)

    def forward(self, v, mask):
        v = self._input("v", v, 2, None, self.n_seq)
        mask = self._input("mask", mask, 2, None, self.n_seq)
        if mask.shape != v.shape:
            raise ValueError(f"SparseG_iiComputation: mask shape {mask.shape} != v shape {v.shape}")
        he = self.p("h0_diag_base") + v
        feats = bk_features(he, self.p("h0_super_base"), self.p("h0_sub_base"), _z(self), mask,
                            features=self.features, clip=self.clip, complex64=self.complex64,
                            dtype=self.dtype)
        sparse = feats * mask[..., None]
        if self.interpolation_method == "learned":
            interp = cnn_interpolate(sparse, [self.p(f"interpolator.{i}.{w}")
                                              for i in (0, 2, 4) for w in ("weight", "bias")])
        else:
            interp = linear_interpolate(sparse, mask)
        final = np.where((mask > 0.5)[..., None], sparse, interp)
        return final, sparse


class LearnedSparsityG_ii(Module):
    """``LearnedSparsityG_ii(d_model, n_seq, target_sparsity=0.6, tau=1.0, interpolation_method='learned')``.

    ``forward(x, v, training=False)`` returns ``(features (B, N, 2), mask (B, N), ratio: float)``.
    The mask is the top-k logits per row, ``k = int(N (1 - target_sparsity))``
    (the model with ``training=False``); ``training=True`` (or
    ``mask="gumbel"``) draws the Gumbel-sigmoid mask from ``rng``. The
    model's default is ``training=True``; here inference is the default.
    The counters ``total_flops_saved`` / ``total_forward_calls`` are
    bookkeeping and are ignored.
    """

    def __init__(self, d_model, n_seq, target_sparsity=0.6, tau=1.0, interpolation_method="learned",
                 *, dtype=np.float32, mask="topk", rng=None, **options):
        super().__init__(dtype)
        self.config = dict(d_model=d_model, n_seq=n_seq, target_sparsity=target_sparsity, tau=tau,
                           interpolation_method=interpolation_method)
        self.importance_predictor = self._child(
            "importance_predictor", ImportancePredictor(d_model, None, True, dtype=dtype))
        self.sparse_computation = self._child(
            "sparse_computation", SparseG_iiComputation(n_seq, interpolation_method, dtype=dtype,
                                                        **options))
        self.d_model, self.n_seq = int(d_model), int(n_seq)
        self.target_sparsity, self.tau = float(target_sparsity), float(tau)
        _check_mask_mode(mask)
        self.mask_mode = mask
        self.rng = np.random.default_rng(rng)
        self._declare("total_flops_saved", (), "f", ignored=True)
        self._declare("total_forward_calls", (), "i", ignored=True)

    def make_mask(self, logits, training=False):
        """Top-k (default), threshold, or Gumbel when ``training`` or ``mask="gumbel"``."""
        if training or self.mask_mode == "gumbel":
            return gumbel_sigmoid_mask(logits, self.tau, self.rng)
        if self.mask_mode == "threshold":
            return threshold_mask(logits)
        return topk_mask(logits, topk_count(logits.shape[-1], self.target_sparsity))

    def forward(self, x, v, training=False, *, mask=None):
        x = self._input("x", x, 3, self.d_model, self.n_seq)
        v = self._input("v", v, 2, None, self.n_seq)
        if v.shape[0] != x.shape[0]:
            raise ValueError(f"LearnedSparsityG_ii: v has batch {v.shape[0]}, x has {x.shape[0]}")
        if mask is None:
            mask = self.make_mask(self.importance_predictor._logits(x), training)
        else:
            mask = self._input("mask", mask, 2, None, self.n_seq)
        feats, _ = self.sparse_computation(v, mask)
        ratio = float(1.0 - mask.mean(dtype=self.dtype))
        return feats, mask, ratio

    def sparsity_loss(self, mask):
        """``(1 - mean(mask) - target)^2`` as a float."""
        return sparsity_loss(mask, self.target_sparsity, "l2")


# ---------------------------------------------------------------------------------------------
# Section 7.2: multi_scale_bk_layer.py
# ---------------------------------------------------------------------------------------------
class SparseBKLayerWithMoE(Module):
    """``SparseBKLayerWithMoE(d_model, n_seq, num_experts=4, target_sparsity=0.6)``, eval mode.

    ``forward(x)`` returns ``(out (B, N, D), stats)`` with
    ``stats = {'sparsity_ratio': float, 'mask': (B, N), 'num_computed': float}``.
    """

    def __init__(self, d_model, n_seq, num_experts=4, target_sparsity=0.6, *, dtype=np.float32,
                 **options):
        super().__init__(dtype)
        self.config = dict(d_model=d_model, n_seq=n_seq, num_experts=num_experts,
                           target_sparsity=target_sparsity)
        self.moe_ffn = self._child("moe_ffn", SparseMoELayer(d_model, num_experts, 1, 0.1,
                                                             dtype=dtype))
        self.sparse_g_ii = self._child("sparse_g_ii", LearnedSparsityG_ii(
            d_model, n_seq, target_sparsity, dtype=dtype, **options))
        self.d_model, self.n_seq = int(d_model), int(n_seq)
        _decl_lin(self, "v_proj", 1, d_model)
        _decl_lin(self, "output_proj", d_model, 2)
        self._declare("bk_scale", ())

    def forward(self, x):
        x = self._input("x", x, 3, self.d_model, self.n_seq)
        ffn = self.moe_ffn(x)
        v = np.clip(_lin(self, "v_proj", ffn)[..., 0], -3.0, 3.0)
        f, mask, ratio = self.sparse_g_ii(x, v, False)
        f = np.clip(f, -10.0, 10.0)
        out = ffn + self.p("bk_scale") * _lin(self, "output_proj", f)
        stats = {"sparsity_ratio": ratio, "mask": mask,
                 "num_computed": float(mask.sum(dtype=self.dtype) / mask.shape[0])}
        return out, stats


def _pool(x, weights):
    """Grouped pooling: ``y_j = sum_r softmax(weights)[j, r] x[f j + r]``."""
    bsz, n, d = x.shape
    m, f = weights.shape
    w = softmax(weights, -1)
    if _fast32(x, w):
        from .layers import _kernels

        out = np.empty((bsz, m, d), dtype=np.float32)
        _kernels().pool(x, w, out)
        return out
    return (x.reshape(bsz, m, f, d) * w[None, :, :, None]).sum(axis=2)


def _lin_ln_gelu(m, lin, ln, x):
    """``GELU(LayerNorm(Linear(x)))`` of the sub-modules ``lin`` and ``ln``, fused."""
    return linear_ln_gelu(x, m.p(f"{lin}.weight"), m.p(f"{lin}.bias"), m.p(f"{ln}.weight"),
                          m.p(f"{ln}.bias"))


class AdaptiveDownsampling(Module):
    """``AdaptiveDownsampling(d_model, n_seq, downsample_factor=2)``.

    ``forward(x)`` returns ``(x_down (B, N/f, D), scores (B, N))``. As in the
    model, the importance scores are computed and returned but not used.
    """

    def __init__(self, d_model, n_seq, downsample_factor=2, *, dtype=np.float32, **_):
        super().__init__(dtype)
        d = _positive_int("d_model", d_model, 2)
        n = _positive_int("n_seq", n_seq)
        f = _positive_int("downsample_factor", downsample_factor)
        if n % f:
            raise ValueError(f"n_seq={n} is not divisible by downsample_factor={f}")
        self.config = dict(d_model=d, n_seq=n, downsample_factor=f)
        self.d_model, self.n_seq, self.factor = d, n, f
        _decl_lin(self, "importance_scorer.0", d // 2, d)
        _decl_lin(self, "importance_scorer.2", 1, d // 2)
        self._declare("pool_weights", (n // f, f))
        _decl_lin(self, "refine.0", d, d)
        _decl_ln(self, "refine.1", d)

    def forward(self, x):
        x = self._input("x", x, 3, self.d_model, self.n_seq)
        scores = _mlp_relu(self, "importance_scorer.0", "importance_scorer.2", x)[..., 0]
        y = _lin_ln_gelu(self, "refine.0", "refine.1", _pool(x, self.p("pool_weights")))
        return y, scores


class AdaptiveUpsampling(Module):
    """``AdaptiveUpsampling(d_model, n_seq_down, upsample_factor=2)``: ``(B, M, D) -> (B, M f, D)``.

    Output token ``f j + r`` is chunk ``r`` of
    ``Linear -> LayerNorm -> GELU -> Linear`` applied to token ``j``, plus
    ``position_embed[r]``.
    """

    def __init__(self, d_model, n_seq_down, upsample_factor=2, *, dtype=np.float32, **_):
        super().__init__(dtype)
        d = _positive_int("d_model", d_model)
        m = _positive_int("n_seq_down", n_seq_down)
        f = _positive_int("upsample_factor", upsample_factor)
        self.config = dict(d_model=d, n_seq_down=m, upsample_factor=f)
        self.d_model, self.n_seq_down, self.factor = d, m, f
        _decl_lin(self, "upsample_transform.0", d * f, d)
        _decl_ln(self, "upsample_transform.1", d * f)
        _decl_lin(self, "upsample_transform.3", d * f, d * f)
        self._declare("position_embed", (f, d))

    def forward(self, x):
        # the NaN test runs inside the fused two-layer kernel (each thread on its rows)
        x = self._input("x", x, 3, self.d_model, self.n_seq_down, finite=False)
        p = self.p
        # the position embedding is a per-column constant of the (B M, f D) GEMM output:
        # folded into the last Linear's bias (one pass instead of two)
        bias = self._once("bias", lambda: p("upsample_transform.3.bias")
                          + p("position_embed").reshape(-1))
        t, finite = _mlp(x, p("upsample_transform.0.weight"), p("upsample_transform.0.bias"),
                         "ln_gelu", p("upsample_transform.3.weight"), bias,
                         p("upsample_transform.1.weight"), p("upsample_transform.1.bias"),
                         check_finite=True)
        if not finite:
            self._not_finite("x")
        bsz, m, _ = x.shape
        return t.reshape(bsz, m * self.factor, self.d_model)


class MultiScaleBKLayer(Module):
    """``MultiScaleBKLayer(d_model, n_seq, num_experts=4, target_sparsity=0.6, use_sparse_g_ii=True)``.

    ``forward(x)`` returns ``(out (B, N, D), stats)``; ``stats`` has
    ``'importance_scores'`` (B, N), ``'flops_saved_ratio'`` (the model's
    hard-coded ``0.5 + 0.3 * sparsity_ratio``, not a measurement) and, with
    ``use_sparse_g_ii``, the low-resolution layer's ``'sparsity_ratio'``,
    ``'mask'`` and ``'num_computed'``.
    """

    def __init__(self, d_model, n_seq, num_experts=4, target_sparsity=0.6, use_sparse_g_ii=True,
                 *, dtype=np.float32, **options):
        super().__init__(dtype)
        n = _positive_int("n_seq", n_seq, 4)
        if n % 2:
            raise ValueError(f"MultiScaleBKLayer needs an even n_seq, got {n}")
        d = _positive_int("d_model", d_model, 2)
        self.config = dict(d_model=d, n_seq=n, num_experts=num_experts,
                           target_sparsity=target_sparsity, use_sparse_g_ii=bool(use_sparse_g_ii))
        self.d_model, self.n_seq, self.use_sparse_g_ii = d, n, bool(use_sparse_g_ii)
        self.downsample = self._child("downsample", AdaptiveDownsampling(d, n, 2, dtype=dtype))
        if self.use_sparse_g_ii:
            low = SparseBKLayerWithMoE(d, n // 2, num_experts, target_sparsity, dtype=dtype,
                                       **options)
        else:
            opts = {k: v for k, v in options.items() if k in ("features", "clip", "complex64")}
            low = MoEResNetBKLayer(d, n // 2, num_experts, dtype=dtype, **opts)
        self.bk_layer_low_res = self._child("bk_layer_low_res", low)
        self.upsample = self._child("upsample", AdaptiveUpsampling(d, n // 2, 2, dtype=dtype))
        _decl_ln(self, "refine.0", d)
        _decl_lin(self, "refine.1", d, d)
        _decl_lin(self, "refine.3", d, d)
        self._declare("scale_low_res", ())
        self._declare("scale_refine", ())
        self._declare("total_flops_saved", (), "f", ignored=True)
        self._declare("total_forward_calls", (), "i", ignored=True)

    def forward(self, x):
        x = self._input("x", x, 3, self.d_model, self.n_seq)
        xd, scores = self.downsample(x)
        if self.use_sparse_g_ii:
            xl, st = self.bk_layer_low_res(xd)
        else:
            xl, st = self.bk_layer_low_res(xd), {}
        xu = self.upsample(xl)
        xc = x + self.p("scale_low_res") * xu
        r = linear_gelu(_ln(self, "refine.0", xc), self.p("refine.1.weight"),
                        self.p("refine.1.bias"))
        out = xc + self.p("scale_refine") * _lin(self, "refine.3", r)
        ratio = 0.5 + 0.3 * st["sparsity_ratio"] if "sparsity_ratio" in st else 0.5
        stats = {"importance_scores": scores, "flops_saved_ratio": float(ratio)}
        stats.update(st)
        return out, stats


# ---------------------------------------------------------------------------------------------
# Section 7.1: multi_scale_layer.py (6182361)
# ---------------------------------------------------------------------------------------------
class LearnedDownsampling(Module):
    """``LearnedDownsampling(d_model, n_seq)``: pair pooling then Linear -> LayerNorm -> ReLU."""

    def __init__(self, d_model, n_seq, *, dtype=np.float32, **_):
        super().__init__(dtype)
        d = _positive_int("d_model", d_model)
        n = _positive_int("n_seq", n_seq, 2)
        if n % 2:
            raise ValueError(f"n_seq={n} must be even")
        self.config = dict(d_model=d, n_seq=n)
        self.d_model, self.n_seq = d, n
        self._declare("pool_weights", (n // 2, 2))
        _decl_lin(self, "refine.0", d, d)
        _decl_ln(self, "refine.1", d)

    def forward(self, x):
        x = self._input("x", x, 3, self.d_model, self.n_seq)
        y = _pool(x, self.p("pool_weights"))
        return _relu_(_ln(self, "refine.1", _lin(self, "refine.0", y)))


class LearnedUpsampling(Module):
    """``LearnedUpsampling(d_model, n_seq)``, ``n_seq`` the *input* length: ``(B, n, D) -> (B, 2n, D)``."""

    def __init__(self, d_model, n_seq, *, dtype=np.float32, **_):
        super().__init__(dtype)
        d = _positive_int("d_model", d_model)
        n = _positive_int("n_seq", n_seq)
        self.config = dict(d_model=d, n_seq=n)
        self.d_model, self.n_seq = d, n
        _decl_lin(self, "upsample_transform.0", 2 * d, d)
        _decl_ln(self, "upsample_transform.1", 2 * d)
        _decl_lin(self, "upsample_transform.3", 2 * d, 2 * d)
        self._declare("position_refine", (2, d))

    def forward(self, x):
        x = self._input("x", x, 3, self.d_model, self.n_seq)
        t = _relu_(_ln(self, "upsample_transform.1", _lin(self, "upsample_transform.0", x)))
        t = _lin(self, "upsample_transform.3", t)
        bsz, m, _ = x.shape
        t = t.reshape(bsz, m, 2, self.d_model) + self.p("position_refine")
        return t.reshape(bsz, 2 * m, self.d_model)


class MultiScaleResNetBKLayer(Module):
    """``MultiScaleResNetBKLayer(d_model, n_seq, num_experts=4)``: ``x + 0.5-scaled`` two-scale BK processing."""

    def __init__(self, d_model, n_seq, num_experts=4, *, dtype=np.float32, **options):
        super().__init__(dtype)
        self.config = dict(d_model=d_model, n_seq=n_seq, num_experts=num_experts)
        self.d_model, self.n_seq = int(d_model), int(n_seq)
        opts = {k: v for k, v in options.items() if k in ("features", "clip", "complex64")}
        self._child("downsample", LearnedDownsampling(d_model, n_seq, dtype=dtype))
        self._child("bk_layer_low_res", MoEResNetBKLayer(d_model, n_seq // 2, num_experts,
                                                         dtype=dtype, **opts))
        self._child("upsample", LearnedUpsampling(d_model, n_seq // 2, dtype=dtype))
        self._child("bk_layer_full_res", MoEResNetBKLayer(d_model, n_seq, num_experts,
                                                          dtype=dtype, **opts))
        self._declare("scale_low_res", ())
        self._declare("scale_full_res", ())

    def forward(self, x):
        x = self._input("x", x, 3, self.d_model, self.n_seq)
        c = self._children
        xu = c["upsample"](c["bk_layer_low_res"](c["downsample"](x)))
        xr = c["bk_layer_full_res"](x + self.p("scale_low_res") * xu)
        return x + self.p("scale_full_res") * xr


class HierarchicalMultiScaleLayer(Module):
    """``HierarchicalMultiScaleLayer(d_model, n_seq, num_experts=4)``: N -> N/2 -> N/4 -> N/2 -> N."""

    def __init__(self, d_model, n_seq, num_experts=4, *, dtype=np.float32, **options):
        super().__init__(dtype)
        n = _positive_int("n_seq", n_seq, 4)
        if n % 4:
            raise ValueError(f"HierarchicalMultiScaleLayer needs n_seq divisible by 4, got {n}")
        self.config = dict(d_model=d_model, n_seq=n, num_experts=num_experts)
        self.d_model, self.n_seq = int(d_model), n
        opts = {k: v for k, v in options.items() if k in ("features", "clip", "complex64")}
        ch = self._child
        ch("down1", LearnedDownsampling(d_model, n, dtype=dtype))
        ch("process1", MoEResNetBKLayer(d_model, n // 2, num_experts, dtype=dtype, **opts))
        ch("down2", LearnedDownsampling(d_model, n // 2, dtype=dtype))
        ch("process2", MoEResNetBKLayer(d_model, n // 4, num_experts, dtype=dtype, **opts))
        ch("up1", LearnedUpsampling(d_model, n // 4, dtype=dtype))
        ch("process3", MoEResNetBKLayer(d_model, n // 2, num_experts, dtype=dtype, **opts))
        ch("up2", LearnedUpsampling(d_model, n // 2, dtype=dtype))
        ch("process4", MoEResNetBKLayer(d_model, n, num_experts, dtype=dtype, **opts))
        self._declare("skip_weight1", ())
        self._declare("skip_weight2", ())

    def forward(self, x):
        x = self._input("x", x, 3, self.d_model, self.n_seq)
        c = self._children
        x1 = c["process1"](c["down1"](x))
        x2 = c["process2"](c["down2"](x1))
        x3 = c["process3"](c["up1"](x2) + self.p("skip_weight1") * x1)
        return c["process4"](c["up2"](x3) + self.p("skip_weight2") * x)


class MultiScaleResNetBKBlock(Module):
    """``MultiScaleResNetBKBlock(d_model, n_seq, num_experts=4, hierarchical=False)``: ``x + layer(LN(x))``."""

    def __init__(self, d_model, n_seq, num_experts=4, hierarchical=False, *, dtype=np.float32,
                 **options):
        super().__init__(dtype)
        self.config = dict(d_model=d_model, n_seq=n_seq, num_experts=num_experts,
                           hierarchical=bool(hierarchical))
        self.d_model, self.n_seq = int(d_model), int(n_seq)
        cls = HierarchicalMultiScaleLayer if hierarchical else MultiScaleResNetBKLayer
        self._child("multi_scale_layer", cls(d_model, n_seq, num_experts, dtype=dtype, **options))
        _decl_ln(self, "layer_norm", d_model)

    def forward(self, x):
        x = self._input("x", x, 3, self.d_model, self.n_seq)
        return x + self._children["multi_scale_layer"](_ln(self, "layer_norm", x))


#: Module kind (the PyTorch class name) -> class.
MODULES = {cls.__name__: cls for cls in (
    SparseBKCore, SparseMoELayer, SparseMoEResNetBKLayer, MoEResNetBKLayer, ImportancePredictor,
    SparseG_iiComputation, LearnedSparsityG_ii, SparseBKLayerWithMoE, AdaptiveDownsampling,
    AdaptiveUpsampling, MultiScaleBKLayer, LearnedDownsampling, LearnedUpsampling,
    MultiScaleResNetBKLayer, HierarchicalMultiScaleLayer, MultiScaleResNetBKBlock)}
