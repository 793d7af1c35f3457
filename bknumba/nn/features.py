"""BK features ``stack(Re G, Im G)`` for the layers, correct by default, model-compatible on request."""
from __future__ import annotations

import numpy as np

from .. import bk_core, sparse_bk_core
from .compat import clip_magnitude, sparse_v1_g

__all__ = ["FEATURE_MODES", "bk_features", "resolve_feature_options"]

#: ``features=`` choices. The first three are :func:`bknumba.sparse_bk_core`
#: semantics; ``"sparse_v1"`` is the original sparse recursion (defective,
#: see :mod:`bknumba.nn.compat`); ``"model"`` picks, per module, whatever the
#: original module computed (see :func:`resolve_feature_options`).
FEATURE_MODES = ("exact", "local", "seed", "sparse_v1", "model")


def resolve_feature_options(features, clip, complex64, model_default):
    """Turn the user's ``features``/``clip``/``complex64`` into concrete settings.

    ``model_default`` is the module's original behaviour as a tuple
    ``(features, clip, complex64)``; it is used when ``features="model"``,
    and the ``clip``/``complex64`` left as ``None`` take the model's values
    then (else: no clip, no cast).
    """
    if features not in FEATURE_MODES:
        raise ValueError(f"features={features!r} is not one of {', '.join(map(repr, FEATURE_MODES))}")
    if features == "model":
        features, m_clip, m_c64 = model_default
        clip = m_clip if clip is None else clip
        complex64 = m_c64 if complex64 is None else complex64
    if clip is not None and not (clip > 0):
        raise ValueError(f"clip must be a positive number or None, got {clip!r}")
    return features, (None if clip is None else float(clip)), bool(complex64)


def bk_features(he_diag, h0_super, h0_sub, z, mask=None, *, features="exact", clip=None,
                complex64=False, dtype=np.float32):
    """``stack(Re G, Im G)`` of the resolvent diagonal of ``tridiag(h0_sub, he_diag, h0_super) - z``.

    Parameters
    ----------
    he_diag : ndarray, (B, N)
    h0_super, h0_sub : ndarray, (1, N - 1) or (B, N - 1)
    z : complex
    mask : ndarray (B, N) or None
        None: the full core (:func:`bknumba.bk_core`). Otherwise
        :func:`bknumba.sparse_bk_core` with ``semantics=features``
        (``G = 0`` where ``mask < 0.5``), or the original recursion for
        ``features="sparse_v1"`` (not zeroed where masked).
    features : {"exact", "local", "seed", "sparse_v1"}
    clip : float or None
        Scale ``G`` with ``|G| > clip`` back to ``clip`` (the model used 50).
    complex64 : bool
        Round ``G`` to complex64 before splitting (the model did).
    dtype : float32 or float64

    Returns
    -------
    ndarray, (B, N, 2) of ``dtype``
    """
    bsz, n = he_diag.shape
    sup = _row(h0_super, bsz)
    sub = _row(h0_sub, bsz)
    if features == "sparse_v1":
        if mask is None:
            mask = np.ones((bsz, n))
        g = sparse_v1_g(he_diag, sup, sub, z, mask)
    elif mask is None:
        g = bk_core(he_diag, sup, sub, z)
    else:
        g = sparse_bk_core(he_diag, sup, sub, mask > 0.5, z, semantics=features)
    if clip is not None:
        g = clip_magnitude(g, clip)
    if complex64:
        g = g.astype(np.complex64)
    out = np.empty((bsz, n, 2), dtype=dtype)
    out[..., 0] = g.real
    out[..., 1] = g.imag
    return out


def _row(arr, bsz):
    arr = np.asarray(arr)
    if arr.ndim == 2 and arr.shape[0] == 1:
        return arr[0]
    return np.broadcast_to(arr, (bsz, arr.shape[-1]))
