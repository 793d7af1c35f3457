"""Write the exploration notebooks (``python notebooks/make_notebooks.py [--readme-image]``).

The notebooks are generated from the cells below so that they stay reviewable
as code; they are committed without outputs and executed by
``tests/test_notebooks.py`` in CI (each in well under a minute here).
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

SETUP = """\
%matplotlib inline
import numpy as np
import matplotlib.pyplot as plt
import bknumba
from bknumba.reference import bk_core_banded, bk_core_extended, relative_error
rng = np.random.default_rng(0)"""

NOTEBOOKS = {
    "01_accuracy_and_stability.ipynb": [
        "# 1. Accuracy and stability\n\nError of both methods against SciPy's banded solver "
        "and an extended-precision (longdouble) recursion as N grows; the raw continuants "
        "overflowing near N = 900 against the scaled ones; what the engine reports when a "
        "pivot approaches zero.",
        SETUP,
        """\
sizes = [8, 32, 128, 512, 2048, 10_000, 100_000]
errors = {"ratio": [], "theta_phi": []}
for n in sizes:
    a = -2 + rng.uniform(-3, 3, size=(2, n))
    ref = bk_core_banded(a, 1.0, 1.0) if n <= 2048 else bk_core_extended(a, 1.0, 1.0)
    for method in errors:
        errors[method].append(relative_error(bknumba.bk_core(a, 1.0, 1.0, method=method), ref).max())
fig, ax = plt.subplots(figsize=(6, 3.5))
for method, err in errors.items():
    ax.loglog(sizes, np.maximum(err, 1e-17), "o-", label=method)
ax.axhline(1e-12, color="k", ls=":", label="tolerance 1e-12")
ax.axvline(2048, color="grey", lw=0.5)
ax.set(xlabel="N", ylabel="max rel. error", title="SciPy (N <= 2048), longdouble beyond")
ax.legend(); plt.show()
print({m: f"{max(e):.1e}" for m, e in errors.items()})""",
        "## Raw continuants overflow; scaled ones do not\n\nThe model's raw complex128 "
        "recursion (and the original code's NaN -> 0 rule) returns zeros past N ~ 900. "
        "`bknumba.theta_phi` carries a power-of-two exponent.",
        """\
n = 3000
a = -2 + rng.uniform(-3, 3, size=n)
theta = np.empty(n + 1, complex); theta[0] = 1; theta[1] = a[0] - 1j
with np.errstate(all="ignore"):
    for i in range(1, n):
        theta[i + 1] = (a[i] - 1j) * theta[i] - theta[i - 1]
tp = bknumba.theta_phi(a, 1.0, 1.0)
first_inf = int(np.argmax(~np.isfinite(theta)))
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(np.log10(np.abs(theta)), label="raw complex128")
ax.plot(tp.log_abs_theta() / np.log(10), "--", label="bknumba.theta_phi (scaled)")
ax.axhline(np.log10(np.finfo(float).max), color="k", ls=":")
ax.set(xlabel="i", ylabel="log10 |theta_i|"); ax.legend(); plt.show()
print("raw recursion first non-finite at i =", first_inf)
print("G from the scaled continuants vs SciPy:", relative_error(tp.g(), bk_core_banded(a, 1.0, 1.0))[0])""",
        "## Pivots near zero\n\nA real shift `z` on an eigenvalue makes `T - zI` singular. "
        "The engine raises `SingularResolventError` naming the row and position, or marks the "
        "row NaN with `on_singular=\"nan\"`; it never returns a silent 0.",
        """\
a = np.full(8, -2.0)
T = np.diag(a) + np.diag(np.ones(7), 1) + np.diag(np.ones(7), -1)
ev = np.linalg.eigvalsh(T)[3]
for shift in [0.1, 1e-3, 1e-8, 1e-13, 0.0]:
    try:
        g = bknumba.bk_core(a, 1.0, 1.0, z=ev + shift * 1j)
        print(f"Im z = {shift:7.0e}: max |G| = {np.abs(g).max():.3e}")
    except bknumba.SingularResolventError as exc:
        print(f"Im z = {shift:7.0e}: SingularResolventError: {str(exc)[:90]}...")
rows = np.stack([a, a + 0.3])
print(bknumba.bk_core(rows, 1.0, 1.0, z=ev, on_singular="nan")[:, :3])""",
    ],
    "02_sparse_semantics.ipynb": [
        "# 2. Sparse semantics\n\nError at computed positions against the full result, as "
        "a function of sparsity, for the seed, local and exact semantics; what the masks look "
        "like; the original model's own sparse scheme (compatibility mode) beside them.",
        SETUP,
        """\
a = -2 + rng.uniform(-3, 3, size=(20, 128))
full = bknumba.bk_core(a, 1.0, 1.0)
sparsities = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9]
curves = {s: [] for s in ("seed", "local", "exact")}
for sp in sparsities:
    mask = rng.random(a.shape) >= sp
    for sem in curves:
        g = bknumba.sparse_bk_core(a, 1.0, 1.0, mask, semantics=sem)
        err = np.max(np.abs(g - full) * mask, axis=1) / np.max(np.abs(full), axis=1)
        curves[sem].append(np.median(err))
fig, ax = plt.subplots(figsize=(6, 3.5))
for sem, err in curves.items():
    ax.semilogy(sparsities, np.maximum(err, 1e-17), "o-", label=sem)
ax.set(xlabel="sparsity", ylabel="median max rel. error", title="N = 128, model inputs")
ax.legend(); plt.show()
print({s: [f"{e:.2g}" for e in err] for s, err in curves.items()})""",
        """\
mask = rng.random((8, 128)) >= 0.5
g_local = bknumba.sparse_bk_core(a[:8], 1.0, 1.0, mask, semantics="local")
fig, axes = plt.subplots(3, 1, figsize=(7, 4), sharex=True)
axes[0].imshow(mask, aspect="auto", cmap="gray_r"); axes[0].set_title("mask (black = computed)")
axes[1].imshow(np.abs(full[:8]), aspect="auto"); axes[1].set_title("|G| full")
axes[2].imshow(np.abs(full[:8] - g_local) * mask, aspect="auto"); axes[2].set_title("|error| local")
plt.tight_layout(); plt.show()""",
        "## The original model's sparse scheme\n\n`bknumba.nn.compat.sparse_v1_g` reproduces "
        "the original code exactly (mask decided per position across the batch with "
        "`any`, phi off by one). At zero sparsity it returns `1 - b G_{i,i-1}`, not `G_ii`; "
        "with every position masked it returns exactly 1.",
        """\
from bknumba.nn.compat import sparse_v1_g
he = (-2 + rng.uniform(-3, 3, size=(4, 64))).astype(np.float32)
ones = np.ones((4, 63), np.float32)
ref = bknumba.bk_core(he.astype(float), 1.0, 1.0)
for sp in (0.0, 0.5, 1.0):
    mask = (rng.random(he.shape) >= sp).astype(np.float32)
    g_model = sparse_v1_g(he, ones, ones, 1j, mask)
    g_exact = bknumba.sparse_bk_core(he, 1.0, 1.0, mask.astype(bool), semantics="exact")
    m = mask.astype(bool)
    print(f"sparsity {sp:.1f}: model max |err| {np.max(np.abs(g_model - ref) * m, initial=0):.3f}, "
          f"exact {np.max(np.abs(g_exact - ref) * m, initial=0):.1e}, "
          f"model mean value {np.mean(g_model):.3f}")""",
    ],
    "03_learned_sparsity.ipynb": [
        "# 3. Learned sparsity\n\nExport a small PyTorch model's weights (`SparseBKCore` and "
        "`LearnedSparsityG_ii` built in PyTorch when torch is installed, random and untrained; "
        "otherwise random weights with the shapes the modules declare) in the exporter's format, "
        "load them with `bknumba.nn.load`, and run `SparseBKCore`, `LearnedSparsityG_ii` and "
        "`MultiScaleBKLayer` in NumPy: importance scores, masks, interpolated against exact "
        "features; then the sparsity scheduler's three schedules.",
        SETUP + """
import tempfile, os
import bknumba.nn as bnn
try:
    import torch
    from bknumba.bench import _torch_layer_classes  # small torch versions of two layers
    TORCH = _torch_layer_classes()
except ImportError:
    TORCH = {}

def random_weights(kind, **config):
    \"\"\"A state dict with the shapes the module declares (h0 buffers and z as the model's).\"\"\"
    sd = {}
    for key, spec in bnn.build(kind, config).specs().items():
        if key.endswith("h0_diag_base"):
            sd[key] = np.full(spec.shape, -2.0, np.float32)
        elif "h0_" in key:
            sd[key] = np.ones(spec.shape, np.float32)
        elif key.endswith(".z") or key == "z":
            sd[key] = np.array(1j, np.complex64)
        elif spec.kind == "i":
            sd[key] = np.zeros(spec.shape, np.int64)
        else:
            sd[key] = (0.3 * rng.standard_normal(spec.shape)).astype(np.float32)
    return sd

def torch_weights(kind, **config):
    \"\"\"state_dict() of the PyTorch module (parameters perturbed so nothing is at its default).\"\"\"
    torch.manual_seed(0)
    module = TORCH[kind](**config).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape))
    sd = module.state_dict()
    if kind == "LearnedSparsityG_ii":  # the model's counters (ignored at inference)
        sd.update(total_flops_saved=torch.tensor(0.0), total_forward_calls=torch.tensor(0))
    return sd

tmp = tempfile.mkdtemp()
def export_and_load(kind, **config):
    path = os.path.join(tmp, kind + ".safetensors")
    from_torch = kind in TORCH
    sd = torch_weights(kind, **config) if from_torch else random_weights(kind, **config)
    bnn.export_state_dict(sd, path, kind, source={"origin": "notebook 3, untrained"}, **config)
    print(f"{kind}: weights from {'a PyTorch module' if from_torch else 'NumPy'} -> {os.path.basename(path)}")
    return bnn.load(path)""",
        """\
d, n, batch = 32, 64, 4
core = export_and_load("SparseBKCore", d_model=d, n_seq=n, target_sparsity=0.5)
x = rng.standard_normal((batch, n, d)).astype(np.float32)
v = (0.5 * rng.standard_normal((batch, n))).astype(np.float32)
features, mask, ratio = core(x, v)
scores = core.importance_logits(x)
exact = bknumba.bk_core(-2.0 + v.astype(float), 1.0, 1.0)
fig, axes = plt.subplots(3, 1, figsize=(7, 5.5), sharex=True)
axes[0].plot(scores[0], ".-"); axes[0].axhline(0, color="k", lw=0.5)
axes[0].set_title("importance logits, row 0 (mask = logit > 0)")
axes[1].imshow(mask, aspect="auto", cmap="gray_r", interpolation="nearest")
axes[1].set_title(f"SparseBKCore mask (black = computed; sparsity {float(ratio):.2f})")
axes[2].plot(exact[0].real, "k-", lw=1, label="exact Re G")
m0 = mask[0].astype(bool)
axes[2].plot(np.flatnonzero(m0), features[0, m0, 0], "o", ms=3, label="computed")
axes[2].plot(np.flatnonzero(~m0), features[0, ~m0, 0], "x", ms=4, label="interpolated (untrained CNN)")
axes[2].legend(fontsize=7); plt.tight_layout(); plt.show()
print("computed positions equal the exact G:", np.allclose(features[0, m0, 0], exact[0, m0].real, atol=1e-5))""",
        """\
lsg = export_and_load("LearnedSparsityG_ii", d_model=d, n_seq=n, target_sparsity=0.6)
feats, mask_topk, ratio = lsg(x, v, False)
print("LearnedSparsityG_ii top-k mask keeps", int(mask_topk[0].sum()), "of", n,
      "per row (k = int(N (1 - 0.6)))", "sparsity", float(ratio))
if "LearnedSparsityG_ii" in TORCH:  # the same weights in PyTorch eager give the same features
    tmod = TORCH["LearnedSparsityG_ii"](d, n, 0.6).eval()
    tmod.load_state_dict(torch_weights("LearnedSparsityG_ii", d_model=d, n_seq=n, target_sparsity=0.6), strict=False)
    with torch.no_grad():
        f_t, m_t = tmod(torch.from_numpy(x), torch.from_numpy(v))
    print("max |bknumba - torch| =", float(np.abs(feats - f_t.numpy()).max()))
ms = export_and_load("MultiScaleBKLayer", d_model=d, n_seq=n, num_experts=2, target_sparsity=0.6)
out, stats = ms(x)
print("MultiScaleBKLayer output", out.shape, "stats keys", sorted(stats))
fig, ax = plt.subplots(figsize=(7, 2.5))
ax.plot(stats["importance_scores"][0]); ax.set_title("AdaptiveDownsampling importance scores (unused by the model's pooling)")
plt.show()""",
        """\
from bknumba.sparsity import AdaptiveSparsityScheduler
fig, ax = plt.subplots(figsize=(6, 3.5))
for kind in ("linear", "cosine", "step"):
    sched = AdaptiveSparsityScheduler(0.2, 0.5, 0.001, 0.01, warmup_steps=100, schedule_type=kind)
    ax.plot([sched.step()["sparsity_target"] for _ in range(120)], label=kind)
ax.set(xlabel="step", ylabel="sparsity target"); ax.legend(); plt.show()""",
    ],
    "04_performance.ipynb": [
        "# 4. Performance\n\nPlots from `bknumba bench --json` stored in `notebooks/data/` "
        "(`bench_cpu.json`: the full CPU run recorded in `docs/benchmarks-cpu.md`; "
        "`bench_gpu_api.json`: `bknumba bench --sections gpu` on the lent H100; "
        "`bench_gpu.json`: `benchmarks/bench_cuda.py` on the same GPU, when present): "
        "throughput per method against N, achieved bandwidth against the copy bandwidth "
        "measured in the same run, and the FLOP model's predicted sparse speed-up against the "
        "measured one. Re-run `bknumba bench --json notebooks/data/bench_cpu.json` to see your "
        "machine here.",
        SETUP + """
import json, pathlib
from bknumba._benchmarks_md import render
data = pathlib.Path("data") if pathlib.Path("data").exists() else pathlib.Path("notebooks/data")
cpu = json.loads((data / "bench_cpu.json").read_text())
meta, rows = cpu["meta"], cpu["rows"]
copy = meta["copy_bandwidth_GBps"]
print({k: meta[k] for k in ("date", "machine", "cpus", "numba_threads", "copy_bandwidth_GBps")})""",
        """\
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
full = [r for r in rows if r["semantics"] == "full"]
for name in dict.fromkeys(r["name"] for r in full):
    pts = sorted((r["n"], r["elements_per_s"] / 1e6, r["GBps"] / copy) for r in full if r["name"] == name)
    n, thr, frac = zip(*pts)
    style = "o-" if name.startswith("bknumba") else "s--"
    axes[0].plot(n, thr, style, label=name)
    axes[1].plot(n, frac, style, label=name)
axes[0].set(xscale="log", yscale="log", xlabel="N (B*N about 2^21)", ylabel="M elements/s", title="throughput, full result")
axes[1].set(xscale="log", yscale="log", xlabel="N", ylabel="fraction of copy bandwidth", title=f"32 B/element vs copy ({copy:.0f} GB/s)")
axes[1].axhline(1, color="k", lw=0.5)
axes[0].legend(fontsize=7); plt.tight_layout(); plt.show()""",
        "## Why a few per cent of the bandwidth\n\nThe kernels are recursions: each position waits for the previous pivot (a division, "
        "about 10-20 cycles of latency), so the CPU kernels sit at a few to 15 % of the copy "
        "bandwidth; interleaving rows (tiles) hides part of the latency. The FLOP model below "
        "counts operations, not latency, so it over-predicts sparse speed-ups.",
        """\
from bknumba.sparsity import predicted_sparse_speedup
shapes = sorted({(r["batch"], r["n"]) for r in rows}, key=lambda s: s[1])
pick = [s for s in shapes if s[0] > 1][-3:]
fig, axes = plt.subplots(1, 3, figsize=(13, 3.5), sharey=True)
sp = np.linspace(0, 0.9, 10)
for ax, sem in zip(axes, ("seed", "local", "exact")):
    for s in pick:
        ref = next(r for r in rows if (r["batch"], r["n"]) == s and r["impl"] == "bknumba ratio")
        pts = sorted((r["sparsity"], r["elements_per_s"] / ref["elements_per_s"]) for r in rows
                     if (r["batch"], r["n"]) == s and r["semantics"] == sem)
        if pts:
            ax.plot(*zip(*pts), "o-", label=f"measured {s}")
    ax.plot(sp, [predicted_sparse_speedup(4096, x, semantics=sem, full_method="ratio") for x in sp], "k--", label="FLOP model (N 4096)")
    ax.axhline(1, color="grey", lw=0.5)
    ax.set(xlabel="sparsity", title=sem)
axes[0].set_ylabel("speed-up vs full ratio"); axes[0].legend(fontsize=7); plt.tight_layout(); plt.show()""",
        """\
print(render(cpu).split("<details>")[0][:3000])""",
        "## GPU (H100, stored)",
        """\
api_file, runs_file = data / "bench_gpu_api.json", data / "bench_gpu.json"
fig, ax = plt.subplots(figsize=(7, 3.8))
if api_file.exists():
    g = json.loads(api_file.read_text())["gpu"]
    gcopy = g["meta"]["copy_bandwidth_GBps"]
    for name in ("gpu ratio", "gpu theta_phi"):
        by_n = {}  # the largest batch per N
        for r in sorted(g["rows"], key=lambda r: r["batch"]):
            if r["impl"] == name:
                by_n[r["n"]] = r["GBps"] / gcopy
        pts = sorted(by_n.items())
        ax.plot(*zip(*pts), "o-", label=f"{name} (public API, device inputs)")
if runs_file.exists():
    gr = json.loads(runs_file.read_text())
    rcopy = gr["copy"][0]["GBps"]
    for label in ("ratio", "theta_phi"):
        best = {}
        for r in gr["runs"]:
            if r["method"] == label and r.get("semantics") is None:
                best[r["N"]] = max(best.get(r["N"], 0), r["GBps_32B"] / rcopy)
        if best:
            ax.plot(*zip(*sorted(best.items())), "s--", label=f"{label} (bench_cuda.py: kernel only, best config)")
ax.set(xscale="log", xlabel="N", ylabel="fraction of copy bandwidth", title="NVIDIA H100")
ax.legend(fontsize=7); plt.show()
if not (api_file.exists() or runs_file.exists()):
    print("no GPU results stored")""",
    ],
    "05_sparse_ffn.ipynb": [
        "# 5. Sparse FFN\n\nFidelity and recall of the rank-r SVD channel estimator against "
        "rank and sparsity, the FLOP table (dense, the seed's configurations, both "
        "projections sparse), and where the sparse path beats dense BLAS on this machine.",
        SETUP + """
import time
from bknumba import ffn""",
        """\
w = ffn.synthetic_ffn_weights(n_layers=1, d_model=256, d_ff=1024, spectrum_decay=1.0, seed=0)["layer.0"]
x = rng.standard_normal((256, 256)).astype(np.float32)
dense = ffn.dense_ffn(x, w.W1, w.b1, w.W2, w.b2)
true_pre = x @ w.W1.T + w.b1
ranks, sparsities = [4, 8, 32, 128], [0.5, 0.75, 0.9]
fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
for sp in sparsities:
    rec, err = [], []
    truth = ffn.select_ffn_channels(true_pre, sp)
    for r in ranks:
        est = ffn.FFNEstimator(w.W1, w.b1, rank=r)
        ch = est.select(x, sp)
        out = ffn.sparse_ffn(x, w.W1, w.b1, w.W2, w.b2, ch)
        rec.append(ffn.channel_recall(ch, truth))
        err.append(np.linalg.norm(out - dense) / np.linalg.norm(dense))
    axes[0].plot(ranks, rec, "o-", label=f"sparsity {sp}")
    axes[1].plot(ranks, err, "o-", label=f"sparsity {sp}")
axes[0].set(xscale="log", xlabel="rank", ylabel="recall of true top channels")
axes[1].set(xscale="log", xlabel="rank", ylabel="relative output error")
axes[0].legend(); plt.tight_layout(); plt.show()""",
        """\
table = ffn.seed_ffn_flop_table()
for row in table["comparison"]:
    print(row)
print()
for line in table["inconsistencies"]:
    print("-", line)""",
        """\
W = ffn.synthetic_ffn_weights(n_layers=1, d_model=768, d_ff=3072, seed=1)["layer.0"]
xt = rng.standard_normal((128, 768)).astype(np.float32)
def best(f, n=3):
    f()
    times = []
    for _ in range(n):
        t0 = time.perf_counter(); f(); times.append(time.perf_counter() - t0)
    return min(times)
t_dense = best(lambda: ffn.dense_ffn(xt, W.W1, W.b1, W.W2, W.b2))
for sp in (0.5, 0.75, 0.9, 0.95):
    ch = ffn.select_ffn_channels(xt @ W.W1.T + W.b1, sp)
    t = best(lambda: ffn.sparse_ffn(xt, W.W1, W.b1, W.W2, W.b2, ch))
    print(f"sparsity {sp:.2f}: sparse kernel {t * 1e3:6.2f} ms vs dense BLAS {t_dense * 1e3:6.2f} ms -> {t_dense / t:.2f}x")""",
    ],
}


def readme_image(path=HERE.parent / "docs" / "img" / "sparse_semantics.png"):
    """The README's plot: notebook 2's first figure (error of the semantics against sparsity)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    import bknumba

    rng = np.random.default_rng(0)
    a = -2 + rng.uniform(-3, 3, size=(20, 128))
    full = bknumba.bk_core(a, 1.0, 1.0)
    sparsities = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9]
    curves = {s: [] for s in ("seed", "local", "exact")}
    for sp in sparsities:
        mask = rng.random(a.shape) >= sp
        for sem in curves:
            g = bknumba.sparse_bk_core(a, 1.0, 1.0, mask, semantics=sem)
            err = np.max(np.abs(g - full) * mask, axis=1) / np.max(np.abs(full), axis=1)
            curves[sem].append(np.median(err))
    fig, ax = plt.subplots(figsize=(5, 2.8))
    for sem, err in curves.items():
        ax.semilogy(sparsities, np.maximum(err, 1e-17), "o-", label=sem)
    ax.set_xlabel("sparsity")
    ax.set_ylabel("median max rel. error at computed positions", fontsize=7)
    ax.set_title("Sparse semantics vs full G (N = 128, model inputs)", fontsize=8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print("wrote", path)


def main():
    import sys

    if "--readme-image" in sys.argv:
        readme_image()
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        nb.cells = [new_markdown_cell(c) if c.startswith("#") else new_code_cell(c)
                    for c in cells]
        nbformat.write(nb, HERE / name)
        print("wrote", HERE / name)


if __name__ == "__main__":
    main()
