"""Low-rank (truncated SVD) estimators of FFN intermediate pre-activations."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import numbers

import numpy as np

from ._common import activation_code, apply_activation, as_float_array

__all__ = ["SVDSparsityEstimator", "FFNEstimator", "build_ffn_estimators"]


class SVDSparsityEstimator:
    """Rank-``r`` predictor of ``x W^T + b`` from a truncated SVD of ``W``.

    ``W = U S V^T`` (computed once, in float64); the estimator keeps
    ``left = U_r S_r`` (out, r) and ``right = V_r^T`` (r, in) and predicts
    ``(x right^T) left^T + b`` at ``2 r (in + out)`` FLOPs per token (plus
    ``out`` for the bias) instead of ``2 in out``. At full rank
    (``r = min(out, in)``) the prediction equals ``x W^T + b`` to rounding.

    Parameters
    ----------
    weight : array_like, (out_features, in_features)
        PyTorch ``nn.Linear`` layout. Copied, never modified.
    bias : array_like (out_features,) or None
    rank : int
        ``1 <= rank <= min(out_features, in_features)``.
    dtype : {None, "float32", "float64"}
        Dtype of the stored factors; default: that of ``weight`` when it is
        float32, else float64.

    Attributes
    ----------
    left : ndarray (out_features, rank)
    right : ndarray (rank, in_features)
    bias : ndarray (out_features,)
    singular_values : ndarray, all ``min(out, in)`` of them (float64)

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> W = rng.standard_normal((6, 4)); b = rng.standard_normal(6)
    >>> est = SVDSparsityEstimator(W, b, rank=4)       # full rank
    >>> x = rng.standard_normal((3, 4))
    >>> bool(np.allclose(est.estimate(x), x @ W.T + b))
    True
    >>> SVDSparsityEstimator(W, b, rank=2).flops_per_token
    46
    """

    def __init__(self, weight, bias=None, rank: int = 8, *, dtype=None):
        W = as_float_array("weight", weight, ndim=2)
        out_f, in_f = W.shape
        if out_f == 0 or in_f == 0:
            raise ValueError(f"weight has shape {W.shape}; both dimensions must be > 0")
        if isinstance(rank, bool) or not isinstance(rank, numbers.Integral):
            raise TypeError(f"rank must be an integer; got {rank!r}")
        full = min(out_f, in_f)
        if not 1 <= rank <= full:
            raise ValueError(
                f"rank={rank} is outside [1, min(out_features, in_features) = {full}] "
                f"for weight of shape {W.shape}"
            )
        if dtype is None:
            dtype = np.float32 if W.dtype == np.float32 else np.float64
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64; got {dtype}")
        if bias is None:
            b = np.zeros(out_f)
        else:
            b = as_float_array("bias", bias, ndim=1)
            if b.shape != (out_f,):
                raise ValueError(
                    f"bias has shape {b.shape}; expected ({out_f},) for weight of shape {W.shape}"
                )
        U, s, Vt = np.linalg.svd(np.asarray(W, dtype=np.float64), full_matrices=False)
        self.rank = int(rank)
        self.singular_values = s
        self.left = np.ascontiguousarray(U[:, :rank] * s[:rank], dtype=dtype)
        self.right = np.ascontiguousarray(Vt[:rank], dtype=dtype)
        self.bias = np.array(b, dtype=dtype)
        for arr in (self.left, self.right, self.bias, self.singular_values):
            arr.setflags(write=False)

    @property
    def in_features(self) -> int:
        return self.right.shape[1]

    @property
    def out_features(self) -> int:
        return self.left.shape[0]

    @property
    def dtype(self) -> np.dtype:
        return self.left.dtype

    @property
    def flops_per_token(self) -> int:
        """``2 r (in + out) + out`` (2 FLOPs per multiply-add, plus the bias)."""
        return 2 * self.rank * (self.in_features + self.out_features) + self.out_features

    @property
    def energy(self) -> float:
        """Fraction of ``||W||_F^2`` captured by the kept singular values."""
        s2 = self.singular_values**2
        total = s2.sum()
        return float(s2[: self.rank].sum() / total) if total > 0 else 1.0

    def estimate(self, x) -> np.ndarray:
        """Estimated pre-activations, ``(n, out)`` for ``x`` of shape ``(n, in)``.

        A 1-D ``x`` gives a 1-D result. ``x`` is not modified.
        """
        x = as_float_array("x", x, ndim=(1, 2))
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"x has shape {x.shape}; its last axis must be in_features = {self.in_features}"
            )
        dtype = self.dtype if x.dtype == np.float32 else np.result_type(self.dtype, np.float64)
        xr = np.asarray(x, dtype=dtype) @ self.right.T
        z = xr @ self.left.T
        z += self.bias
        return z

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(out_features={self.out_features}, "
            f"in_features={self.in_features}, rank={self.rank}, dtype={self.dtype})"
        )


class FFNEstimator(SVDSparsityEstimator):
    """Estimator of an FFN's intermediate activations, with channel selection.

    Built from the first projection ``W1 (d_ff, d_model)`` and ``b1``; adds
    the activation and :meth:`select`.

    Parameters
    ----------
    W1 : array_like (d_ff, d_model)
    b1 : array_like (d_ff,) or None
    rank : int
    activation : {"gelu", "gelu_tanh", "relu", "identity"} or None
    dtype : see :class:`SVDSparsityEstimator`

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> W1 = rng.standard_normal((16, 8)); b1 = np.zeros(16)
    >>> est = FFNEstimator(W1, b1, rank=4, activation="relu")
    >>> est.select(rng.standard_normal((5, 8)), sparsity=0.75).shape
    (5, 4)
    """

    def __init__(self, W1, b1=None, rank: int = 8, *, activation="gelu", dtype=None):
        activation_code(activation)
        super().__init__(W1, b1, rank, dtype=dtype)
        self.activation = activation

    @property
    def d_model(self) -> int:
        return self.in_features

    @property
    def d_ff(self) -> int:
        return self.out_features

    def estimate_activation(self, x) -> np.ndarray:
        """``act(estimate(x))`` (NumPy)."""
        return apply_activation(self.estimate(x), self.activation)

    def select(self, x, sparsity, *, k=None) -> np.ndarray:
        """Channels to compute for each token of ``x``; see :func:`select_ffn_channels`."""
        from .select import select_ffn_channels

        return select_ffn_channels(self.estimate(x), sparsity, activation=self.activation, k=k)

    def __repr__(self) -> str:
        return (
            f"FFNEstimator(d_ff={self.d_ff}, d_model={self.d_model}, rank={self.rank}, "
            f"activation={self.activation!r}, dtype={self.dtype})"
        )


def _first_projection(name, layer):
    if hasattr(layer, "W1"):
        return layer.W1, getattr(layer, "b1", None)
    if isinstance(layer, Mapping):
        if "W1" not in layer:
            raise ValueError(f"layer {name!r}: mapping has no 'W1' key (keys: {sorted(layer)})")
        return layer["W1"], layer.get("b1")
    if isinstance(layer, (tuple, list)) and len(layer) in (1, 2, 4):
        return layer[0], (layer[1] if len(layer) > 1 else None)
    if isinstance(layer, np.ndarray):
        return layer, None
    raise TypeError(
        f"layer {name!r}: expected FFNWeights, a mapping with 'W1' (and 'b1'), a tuple "
        f"(W1, b1[, W2, b2]) or an array W1; got {type(layer).__name__}"
    )


def build_ffn_estimators(weights, rank, *, activation="gelu", dtype=None) -> dict:
    """One :class:`FFNEstimator` per layer of a stack.

    Parameters
    ----------
    weights : mapping name -> layer, or sequence of layers
        A layer is an :class:`FFNWeights`, a mapping with ``"W1"`` (and
        ``"b1"``), a tuple ``(W1, b1[, W2, b2])`` or a bare ``W1``. A
        sequence gets the names ``"layer.0"``, ``"layer.1"``, ... (the keys
        of the layer-wise sparsity config).
    rank : int or mapping name -> int
        One rank for all layers, or one per layer name.
    activation, dtype : see :class:`FFNEstimator`

    Returns
    -------
    dict name -> FFNEstimator, in the order of ``weights``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> layers = [(rng.standard_normal((12, 4)), np.zeros(12)) for _ in range(2)]
    >>> ests = build_ffn_estimators(layers, rank=2)
    >>> list(ests), ests["layer.1"].rank
    (['layer.0', 'layer.1'], 2)
    """
    if isinstance(weights, Mapping):
        items = list(weights.items())
    elif isinstance(weights, Sequence) and not isinstance(weights, (str, bytes)):
        items = [(f"layer.{i}", w) for i, w in enumerate(weights)]
    else:
        raise TypeError(
            f"weights must be a mapping name -> layer or a sequence of layers; "
            f"got {type(weights).__name__}"
        )
    out = {}
    for name, layer in items:
        if isinstance(rank, Mapping):
            if name not in rank:
                raise ValueError(f"rank has no entry for layer {name!r} (keys: {sorted(rank)})")
            r = rank[name]
        else:
            r = rank
        W1, b1 = _first_projection(name, layer)
        out[name] = FFNEstimator(W1, b1, r, activation=activation, dtype=dtype)
    return out
