"""Small PyTorch re-implementations of the original modules, for parity tests and benchmarks only.

Written from ``/work/shared/spec/original-model.md`` (sections 3-7). Only
what the parity needs is here (no losses, schedulers or backward). Two
things are made deterministic as the spec says: ``SparseBKCore``'s mask is
``logit > 0`` (its Gumbel noise switched off) and routing is top-k.

The BK features come from ``core``:

* ``"exact"`` - the diagonal of a dense ``torch.linalg.inv`` in complex128,
  zeroed where the mask is 0: what bknumba's default ``features="exact"``
  must produce;
* ``"sparse_v1"`` - a transcription of the original ``sparse_theta_recursion``
  / ``sparse_phi_recursion`` / ``optimized_sparse_bk_core`` (spec 3.1-3.3),
  with its batch-wide ``.any()`` and off-by-one phi;
* ``"raw_v1"`` - the original full core (``get_tridiagonal_inverse_diagonal``
  at ``9bc0b34``-``5fd3237``, vmapped as a per-row loop): raw complex128
  continuants, the ``+1e-18``, NaN -> 0, the clip at 50 and the complex64 cast.

The model's own modules use ``sparse_v1`` (``SparseBKCore``) and ``raw_v1``
(everything else); bknumba's ``features="model"`` reproduces those.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


# ------------------------------------------------------------------------------------------------
# BK cores
# ------------------------------------------------------------------------------------------------
def exact_g(he_diag, h0_super, h0_sub, z):
    bsz, n = he_diag.shape
    a = he_diag.to(torch.complex128)
    sup = h0_super.expand(bsz, n - 1).to(torch.complex128)
    sub = h0_sub.expand(bsz, n - 1).to(torch.complex128)
    t = torch.diag_embed(a) + torch.diag_embed(sup, 1) + torch.diag_embed(sub, -1)
    t = t - z.to(torch.complex128) * torch.eye(n, dtype=torch.complex128)
    return torch.linalg.inv(t).diagonal(dim1=-2, dim2=-1)


def sparse_theta_recursion(he_diag, h0_super, h0_sub, z, mask):
    bsz, n = he_diag.shape
    a = he_diag.to(torch.complex128)
    b = h0_super.to(torch.complex128)
    c = h0_sub.to(torch.complex128)
    zz = z.to(torch.complex128)
    theta = torch.zeros(bsz, n + 1, dtype=torch.complex128)
    theta[:, 0] = 1.0
    theta[:, 1] = a[:, 0] - zz
    for i in range(1, n):
        if (mask[:, i] < 0.5).any():
            theta[:, i + 1] = (a[:, i] - zz) * theta[:, i]
        else:
            theta[:, i + 1] = (a[:, i] - zz) * theta[:, i] - c[:, i - 1] * b[:, i - 1] * theta[:, i - 1]
    return theta


def sparse_phi_recursion(he_diag, h0_super, h0_sub, z, mask):
    bsz, n = he_diag.shape
    a = he_diag.to(torch.complex128)
    b = h0_super.to(torch.complex128)
    c = h0_sub.to(torch.complex128)
    zz = z.to(torch.complex128)
    phi = torch.zeros(bsz, n + 2, dtype=torch.complex128)
    phi[:, n] = 1.0
    for i in range(n - 1, -1, -1):
        if (mask[:, i] < 0.5).any():
            phi[:, i] = (a[:, i] - zz) * phi[:, i + 1]
        elif i < n - 1:
            phi[:, i] = (a[:, i] - zz) * phi[:, i + 1] - b[:, i] * c[:, i] * phi[:, i + 2]
        else:
            phi[:, i] = (a[:, i] - zz) * phi[:, i + 1]
    return phi[:, :n]


def optimized_sparse_bk_core(he_diag, h0_super, h0_sub, z, mask):
    bsz, n = he_diag.shape
    sup = h0_super.expand(bsz, n - 1)
    sub = h0_sub.expand(bsz, n - 1)
    theta = sparse_theta_recursion(he_diag, sup, sub, z, mask)
    phi = sparse_phi_recursion(he_diag, sup, sub, z, mask)
    det = theta[:, n]
    mag = det.abs()
    det_stable = torch.where(mag < 1e-9, det / mag * 1e-9, det)
    g = theta[:, :n] * phi / (det_stable.unsqueeze(-1) + 1e-18)
    return torch.stack([g.real, g.imag], dim=-1).to(torch.float32)


def raw_v1_row(a, b, c, z):
    n = a.shape[-1]
    a = a.to(torch.complex128)
    b = b.to(torch.complex128)
    c = c.to(torch.complex128)
    zz = z.to(torch.complex128)
    alpha = a - zz
    theta = [torch.ones((), dtype=torch.complex128), alpha[0]]
    for i in range(1, n):
        theta.append(alpha[i] * theta[i] - c[i - 1] * b[i - 1] * theta[i - 1])
    theta = torch.stack(theta)
    phi = [None] * n
    phi[n - 1] = torch.ones((), dtype=torch.complex128)
    if n > 1:
        phi[n - 2] = alpha[n - 1]
    for i in range(n - 3, -1, -1):
        phi[i] = alpha[i + 1] * phi[i + 1] - c[i] * b[i] * phi[i + 2]  # the original's index
    phi = torch.stack(phi)
    g = theta[:n] * phi / (theta[n] + 1e-18)
    g = torch.where(torch.isfinite(g.real) & torch.isfinite(g.imag), g, torch.zeros_like(g))
    mag = g.abs()
    g = torch.where(mag > 50, g * (50 / (mag + 1e-9)), g)
    return g.to(torch.complex64)


def raw_v1_features(he_diag, h0_super, h0_sub, z):
    bsz, n = he_diag.shape
    sup = h0_super.expand(bsz, n - 1)
    sub = h0_sub.expand(bsz, n - 1)
    g = torch.stack([raw_v1_row(he_diag[r], sup[r], sub[r], z) for r in range(bsz)])
    return torch.stack([g.real, g.imag], dim=-1).to(torch.float32)


def bk_features(core, he_diag, h0_super, h0_sub, z, mask=None):
    """Features (B, N, 2) float32; ``mask=None`` is the full core."""
    if core == "sparse_v1" and mask is not None:
        return optimized_sparse_bk_core(he_diag, h0_super, h0_sub, z, mask)
    if core == "raw_v1" or (core == "sparse_v1" and mask is None):
        f = raw_v1_features(he_diag, h0_super, h0_sub, z)
        return f if mask is None else f * mask.unsqueeze(-1)
    g = exact_g(he_diag, h0_super, h0_sub, z)
    if mask is not None:
        g = g * (mask > 0.5)
    return torch.stack([g.real, g.imag], dim=-1).to(torch.float32)


def _hamiltonian(m, n):
    m.register_buffer("h0_diag_base", torch.full((1, n), -2.0))
    m.register_buffer("h0_sub_base", torch.full((1, n - 1), 1.0))
    m.register_buffer("h0_super_base", torch.full((1, n - 1), 1.0))
    m.register_buffer("z", torch.tensor(1.0j, dtype=torch.complex64))


# ------------------------------------------------------------------------------------------------
# Section 3.4 / 3.5
# ------------------------------------------------------------------------------------------------
class SparseBKCore(nn.Module):
    def __init__(self, d_model, n_seq, target_sparsity=0.5, tau=1.0, core="exact"):
        super().__init__()
        self.d_model, self.n_seq, self.target_sparsity, self.tau = d_model, n_seq, target_sparsity, tau
        self.core = core
        self.importance_predictor = nn.Sequential(
            nn.Linear(d_model, d_model // 2), nn.ReLU(), nn.Linear(d_model // 2, 1))
        self.interpolator = nn.Sequential(
            nn.Conv1d(2, 16, 3, padding=1), nn.ReLU(), nn.Conv1d(16, 16, 3, padding=1), nn.ReLU(),
            nn.Conv1d(16, 2, 3, padding=1))
        _hamiltonian(self, n_seq)

    def forward(self, x, v, use_sparse_computation=True):
        bsz, n, _ = x.shape
        scores = self.importance_predictor(x).squeeze(-1)
        mask = (scores > 0).float()  # Gumbel-sigmoid without noise (deterministic)
        he = self.h0_diag_base.expand(bsz, -1) + v
        if use_sparse_computation:
            fs = bk_features(self.core, he, self.h0_super_base, self.h0_sub_base, self.z, mask)
            inp = fs * mask.unsqueeze(-1)
        else:
            full = bk_features("raw_v1" if self.core == "sparse_v1" else self.core, he,
                               self.h0_super_base, self.h0_sub_base, self.z)
            fs = full * mask.unsqueeze(-1)
            inp = fs
        interp = self.interpolator(inp.permute(0, 2, 1)).permute(0, 2, 1)
        final = torch.where(mask.unsqueeze(-1) > 0.5, fs, interp)
        return final, mask, 1.0 - mask.mean()


class SparseMoELayer(nn.Module):
    def __init__(self, d_model, num_experts=4, top_k=1, dropout_p=0.1, head_buffers=False):
        super().__init__()
        self.d_model, self.num_experts, self.top_k = d_model, num_experts, top_k
        self.experts = nn.ModuleList([
            nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.ReLU(), nn.Dropout(dropout_p),
                          nn.Linear(2 * d_model, d_model)) for _ in range(num_experts)])
        self.gating_network = nn.Linear(d_model, num_experts)
        if head_buffers:
            self.register_buffer("scattering_step_counter", torch.tensor(0, dtype=torch.long))

    def forward(self, x):
        bsz, n, d = x.shape
        flat = x.reshape(-1, d)
        logits = self.gating_network(flat)
        out = torch.zeros_like(flat)
        if self.top_k >= self.num_experts:
            gates = F.softmax(logits, dim=-1)
            for e, expert in enumerate(self.experts):
                out = out + gates[:, e:e + 1] * expert(flat)
        elif self.top_k == 1:
            idx = logits.argmax(dim=-1)
            for e, expert in enumerate(self.experts):
                sel = idx == e
                if sel.any():
                    out[sel] = expert(flat[sel])
        else:
            vals, idx = torch.topk(logits, self.top_k, dim=-1)
            gates = F.softmax(vals, dim=-1)
            for e, expert in enumerate(self.experts):
                hit = idx == e
                rows = hit.any(dim=-1)
                if rows.any():
                    g = (gates * hit).sum(dim=-1)[rows].unsqueeze(-1)
                    out[rows] = out[rows] + g * expert(flat[rows])
        return out.reshape(bsz, n, d)


class SparseMoEResNetBKLayer(nn.Module):
    def __init__(self, d_model, n_seq, num_experts=4, top_k=1, dropout_p=0.1, target_sparsity=0.5,
                 sparsity_loss_weight=0.01, sparsity_loss_type="adaptive",
                 use_sparse_computation=True, core="exact"):
        super().__init__()
        self.n_seq, self.use_sparse_computation = n_seq, use_sparse_computation
        self.moe_ffn = SparseMoELayer(d_model, num_experts, top_k, dropout_p)
        self.v_proj = nn.Linear(d_model, 1)
        self.sparse_bk_core = SparseBKCore(d_model, n_seq, target_sparsity, core=core)
        self.output_proj = nn.Linear(2, d_model)
        self.bk_scale = nn.Parameter(torch.tensor(1.0))
        self.last_mask = None

    def forward(self, x):
        assert x.shape[1] == self.n_seq
        ffn = self.moe_ffn(x)
        v = torch.clamp(self.v_proj(ffn).squeeze(-1), -3.0, 3.0)
        f, mask, ratio = self.sparse_bk_core(x, v, self.use_sparse_computation)
        self.last_mask, self.last_sparsity = mask.detach(), ratio.detach()
        f = torch.clamp(f, -10.0, 10.0)
        return ffn + self.bk_scale * self.output_proj(f)

    def get_sparsity_stats(self):
        return {"sparsity_ratio": self.last_sparsity.item(),
                "num_computed": self.last_mask.sum(dim=-1).mean().item(),
                "target_sparsity": self.sparse_bk_core.target_sparsity}


class MoEResNetBKLayer(nn.Module):
    def __init__(self, d_model, n_seq, num_experts=4, top_k=1, dropout_p=0.1, core="exact"):
        super().__init__()
        self.core = "raw_v1" if core == "sparse_v1" else core
        self.bk_scale = nn.Parameter(torch.tensor(1.0))
        _hamiltonian(self, n_seq)
        self.moe_ffn = SparseMoELayer(d_model, num_experts, top_k, dropout_p)
        self.v_proj = nn.Linear(d_model, 1)
        self.output_proj = nn.Linear(2, d_model)

    def forward(self, x):
        ffn = self.moe_ffn(x)
        v = torch.clamp(self.v_proj(ffn).squeeze(-1), -3.0, 3.0)
        he = self.h0_diag_base.expand(x.shape[0], -1) + v
        f = torch.clamp(bk_features(self.core, he, self.h0_super_base, self.h0_sub_base, self.z),
                        -10.0, 10.0)
        return ffn + self.bk_scale * self.output_proj(f)


# ------------------------------------------------------------------------------------------------
# Section 5
# ------------------------------------------------------------------------------------------------
class ImportancePredictor(nn.Module):
    def __init__(self, d_model, hidden_dim=None, use_context=True):
        super().__init__()
        h = hidden_dim or d_model // 2
        self.use_context = use_context
        if use_context:
            self.context_encoder = nn.Sequential(
                nn.Conv1d(d_model, h, 3, padding=1), nn.ReLU(), nn.Conv1d(h, h, 3, padding=1), nn.ReLU())
        self.importance_head = nn.Sequential(
            nn.Linear(h if use_context else d_model, h), nn.ReLU(), nn.Dropout(0.1), nn.Linear(h, 1))

    def forward(self, x):
        if self.use_context:
            x = self.context_encoder(x.transpose(1, 2)).transpose(1, 2)
        return self.importance_head(x).squeeze(-1)


class SparseG_iiComputation(nn.Module):
    def __init__(self, n_seq, interpolation_method="learned", core="exact"):
        super().__init__()
        self.n_seq, self.interpolation_method, self.core = n_seq, interpolation_method, core
        if interpolation_method == "learned":
            self.interpolator = nn.Sequential(
                nn.Conv1d(2, 32, 5, padding=2), nn.ReLU(), nn.Conv1d(32, 32, 5, padding=2), nn.ReLU(),
                nn.Conv1d(32, 2, 5, padding=2))
        _hamiltonian(self, n_seq)

    def interpolate_g_ii(self, sparse, mask):
        if self.interpolation_method == "learned":
            return self.interpolator(sparse.permute(0, 2, 1)).permute(0, 2, 1)
        out = sparse.clone()
        bsz, n, _ = sparse.shape
        for b in range(bsz):
            comp = torch.nonzero(mask[b] > 0.5).flatten().tolist()
            if not comp:
                continue
            for i in range(n):
                if mask[b, i] >= 0.5:
                    continue
                left = [j for j in comp if j < i]
                right = [j for j in comp if j > i]
                if left and right:
                    lo, hi = left[-1], right[0]
                    w = (i - lo) / (hi - lo)
                    out[b, i] = (1 - w) * sparse[b, lo] + w * sparse[b, hi]
                elif left:
                    out[b, i] = sparse[b, left[-1]]
                else:
                    out[b, i] = sparse[b, right[0]]
        return out

    def forward(self, v, mask):
        he = self.h0_diag_base.expand(v.shape[0], -1) + v
        core = "raw_v1" if self.core == "sparse_v1" else self.core
        sparse = bk_features(core, he, self.h0_super_base, self.h0_sub_base, self.z) * mask.unsqueeze(-1)
        interp = self.interpolate_g_ii(sparse, mask)
        return torch.where(mask.unsqueeze(-1) > 0.5, sparse, interp), sparse


class LearnedSparsityG_ii(nn.Module):
    def __init__(self, d_model, n_seq, target_sparsity=0.6, tau=1.0, interpolation_method="learned",
                 core="exact"):
        super().__init__()
        self.n_seq, self.target_sparsity = n_seq, target_sparsity
        self.importance_predictor = ImportancePredictor(d_model, use_context=True)
        self.sparse_computation = SparseG_iiComputation(n_seq, interpolation_method, core)
        self.register_buffer("total_flops_saved", torch.tensor(0.0))
        self.register_buffer("total_forward_calls", torch.tensor(0, dtype=torch.long))

    def forward(self, x, v, training=False):
        assert not training, "the reference implements the deterministic (training=False) path"
        logits = self.importance_predictor(x)
        bsz, n = logits.shape
        k = int(n * (1 - self.target_sparsity))
        _, idx = torch.topk(logits, k, dim=-1)
        mask = torch.zeros_like(logits).scatter(-1, idx, 1.0)
        f, _ = self.sparse_computation(v, mask)
        ratio = 1.0 - mask.mean()
        self.total_flops_saved += ratio * n * bsz
        self.total_forward_calls += 1
        return f, mask, ratio


# ------------------------------------------------------------------------------------------------
# Section 7.2
# ------------------------------------------------------------------------------------------------
class SparseBKLayerWithMoE(nn.Module):
    def __init__(self, d_model, n_seq, num_experts=4, target_sparsity=0.6, core="exact"):
        super().__init__()
        self.moe_ffn = SparseMoELayer(d_model, num_experts, 1, 0.1, head_buffers=True)
        self.v_proj = nn.Linear(d_model, 1)
        self.sparse_g_ii = LearnedSparsityG_ii(d_model, n_seq, target_sparsity, core=core)
        self.output_proj = nn.Linear(2, d_model)
        self.bk_scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        ffn = self.moe_ffn(x)
        if isinstance(ffn, tuple):
            ffn = ffn[0]
        v = torch.clamp(self.v_proj(ffn).squeeze(-1), -3.0, 3.0)
        f, mask, r = self.sparse_g_ii(x, v, training=self.training)
        f = torch.clamp(f, -10.0, 10.0)
        out = ffn + self.bk_scale * self.output_proj(f)
        return out, {"sparsity_ratio": r, "mask": mask, "num_computed": mask.sum() / mask.shape[0]}


class AdaptiveDownsampling(nn.Module):
    def __init__(self, d_model, n_seq, downsample_factor=2):
        super().__init__()
        self.f = downsample_factor
        self.importance_scorer = nn.Sequential(nn.Linear(d_model, d_model // 2), nn.ReLU(),
                                               nn.Linear(d_model // 2, 1))
        self.pool_weights = nn.Parameter(torch.randn(n_seq // downsample_factor, downsample_factor))
        self.refine = nn.Sequential(nn.Linear(d_model, d_model), nn.LayerNorm(d_model), nn.GELU())

    def forward(self, x):
        bsz, n, d = x.shape
        scores = self.importance_scorer(x).squeeze(-1)
        xg = x.view(bsz, n // self.f, self.f, d)
        w = F.softmax(self.pool_weights, dim=-1)
        y = (xg * w.unsqueeze(0).unsqueeze(-1)).sum(dim=2)
        return self.refine(y), scores


class AdaptiveUpsampling(nn.Module):
    def __init__(self, d_model, n_seq_down, upsample_factor=2):
        super().__init__()
        self.f, self.d = upsample_factor, d_model
        self.upsample_transform = nn.Sequential(
            nn.Linear(d_model, d_model * upsample_factor), nn.LayerNorm(d_model * upsample_factor),
            nn.GELU(), nn.Linear(d_model * upsample_factor, d_model * upsample_factor))
        self.position_embed = nn.Parameter(torch.randn(upsample_factor, d_model) * 0.02)

    def forward(self, x):
        bsz, m, d = x.shape
        t = self.upsample_transform(x).view(bsz, m, self.f, d) + self.position_embed
        return t.reshape(bsz, m * self.f, d)


class MultiScaleBKLayer(nn.Module):
    def __init__(self, d_model, n_seq, num_experts=4, target_sparsity=0.6, use_sparse_g_ii=True,
                 core="exact"):
        super().__init__()
        self.use_sparse_g_ii = use_sparse_g_ii
        self.downsample = AdaptiveDownsampling(d_model, n_seq, 2)
        if use_sparse_g_ii:
            self.bk_layer_low_res = SparseBKLayerWithMoE(d_model, n_seq // 2, num_experts,
                                                         target_sparsity, core=core)
        else:
            self.bk_layer_low_res = MoEResNetBKLayer(d_model, n_seq // 2, num_experts, core=core)
        self.upsample = AdaptiveUpsampling(d_model, n_seq // 2, 2)
        self.refine = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, d_model), nn.GELU(),
                                    nn.Linear(d_model, d_model))
        self.scale_low_res = nn.Parameter(torch.tensor(0.5))
        self.scale_refine = nn.Parameter(torch.tensor(0.3))
        self.register_buffer("total_flops_saved", torch.tensor(0.0))
        self.register_buffer("total_forward_calls", torch.tensor(0, dtype=torch.long))

    def forward(self, x):
        xd, scores = self.downsample(x)
        if self.use_sparse_g_ii:
            xl, st = self.bk_layer_low_res(xd)
        else:
            xl, st = self.bk_layer_low_res(xd), {}
        xu = self.upsample(xl)
        xc = x + self.scale_low_res * xu
        out = xc + self.scale_refine * self.refine(xc)
        ratio = 0.5 + 0.3 * float(st["sparsity_ratio"]) if "sparsity_ratio" in st else 0.5
        self.total_flops_saved += ratio
        self.total_forward_calls += 1
        stats = {"importance_scores": scores, "flops_saved_ratio": ratio}
        stats.update(st)
        return out, stats


# ------------------------------------------------------------------------------------------------
# Section 7.1
# ------------------------------------------------------------------------------------------------
class LearnedDownsampling(nn.Module):
    def __init__(self, d_model, n_seq):
        super().__init__()
        self.pool_weights = nn.Parameter(torch.randn(n_seq // 2, 2))
        self.refine = nn.Sequential(nn.Linear(d_model, d_model), nn.LayerNorm(d_model), nn.ReLU())

    def forward(self, x):
        bsz, n, d = x.shape
        w = F.softmax(self.pool_weights, dim=-1)
        y = (x.view(bsz, n // 2, 2, d) * w.unsqueeze(0).unsqueeze(-1)).sum(dim=2)
        return self.refine(y)


class LearnedUpsampling(nn.Module):
    def __init__(self, d_model, n_seq):
        super().__init__()
        self.upsample_transform = nn.Sequential(
            nn.Linear(d_model, 2 * d_model), nn.LayerNorm(2 * d_model), nn.ReLU(),
            nn.Linear(2 * d_model, 2 * d_model))
        self.position_refine = nn.Parameter(torch.randn(2, d_model))

    def forward(self, x):
        bsz, m, d = x.shape
        t = self.upsample_transform(x).view(bsz, m, 2, d) + self.position_refine
        return t.reshape(bsz, 2 * m, d)


class MultiScaleResNetBKLayer(nn.Module):
    def __init__(self, d_model, n_seq, num_experts=4, core="exact"):
        super().__init__()
        self.downsample = LearnedDownsampling(d_model, n_seq)
        self.bk_layer_low_res = MoEResNetBKLayer(d_model, n_seq // 2, num_experts, core=core)
        self.upsample = LearnedUpsampling(d_model, n_seq // 2)
        self.bk_layer_full_res = MoEResNetBKLayer(d_model, n_seq, num_experts, core=core)
        self.scale_low_res = nn.Parameter(torch.tensor(0.5))
        self.scale_full_res = nn.Parameter(torch.tensor(0.5))

    def forward(self, x):
        xu = self.upsample(self.bk_layer_low_res(self.downsample(x)))
        xr = self.bk_layer_full_res(x + self.scale_low_res * xu)
        return x + self.scale_full_res * xr


class HierarchicalMultiScaleLayer(nn.Module):
    def __init__(self, d_model, n_seq, num_experts=4, core="exact"):
        super().__init__()
        assert n_seq % 4 == 0
        self.down1 = LearnedDownsampling(d_model, n_seq)
        self.process1 = MoEResNetBKLayer(d_model, n_seq // 2, num_experts, core=core)
        self.down2 = LearnedDownsampling(d_model, n_seq // 2)
        self.process2 = MoEResNetBKLayer(d_model, n_seq // 4, num_experts, core=core)
        self.up1 = LearnedUpsampling(d_model, n_seq // 4)
        self.process3 = MoEResNetBKLayer(d_model, n_seq // 2, num_experts, core=core)
        self.up2 = LearnedUpsampling(d_model, n_seq // 2)
        self.process4 = MoEResNetBKLayer(d_model, n_seq, num_experts, core=core)
        self.skip_weight1 = nn.Parameter(torch.tensor(0.5))
        self.skip_weight2 = nn.Parameter(torch.tensor(0.5))

    def forward(self, x):
        x1 = self.process1(self.down1(x))
        x2 = self.process2(self.down2(x1))
        x3 = self.process3(self.up1(x2) + self.skip_weight1 * x1)
        return self.process4(self.up2(x3) + self.skip_weight2 * x)


class MultiScaleResNetBKBlock(nn.Module):
    def __init__(self, d_model, n_seq, num_experts=4, hierarchical=False, core="exact"):
        super().__init__()
        self.layer_norm = nn.LayerNorm(d_model)
        cls = HierarchicalMultiScaleLayer if hierarchical else MultiScaleResNetBKLayer
        self.multi_scale_layer = cls(d_model, n_seq, num_experts, core=core)

    def forward(self, x):
        return x + self.multi_scale_layer(self.layer_norm(x))


def randomize_(module, seed=0, scale=0.3):
    """Perturb every floating parameter and the h0 diagonal so that nothing is at its default."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
        for name, b in module.named_buffers():
            if name.endswith("h0_diag_base"):
                b.add_(0.2 * torch.randn(b.shape, generator=g))
    return module
