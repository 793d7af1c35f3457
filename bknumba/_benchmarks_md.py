"""Render benchmark JSON as the markdown of ``BENCHMARKS.md``.

Two inputs are understood:

* the report written by ``bknumba bench --json OUT`` (keys ``meta``, ``rows``
  and optionally ``gpu``, ``layers``, ``ffn``): :func:`render`;
* the JSON of ``benchmarks/bench_cuda.py`` (keys ``info``, ``copy``, ``runs``):
  :func:`render_cuda_runs`.

:func:`render_file` picks the right one. From the command line::

    python -m bknumba._benchmarks_md bench_cpu.json [bench_gpu.json ...] [-o OUT.md]

Nothing here imports Numba, SciPy or a GPU library: rendering works on any
machine from the stored JSON.
"""
from __future__ import annotations

import argparse
import json
import sys

__all__ = ["render", "render_cuda_runs", "render_file", "page", "main"]

SEMANTICS = ("seed", "local", "exact")


def _pct(x):
    return f"{round(100 * x)}%"


def _num(x):
    return f"{x:.1f}" if x >= 10 else f"{x:.2g}"


def _shape(r):
    return f"({r['batch']}, {r['n']})"


def _find(rows, batch, n, impl):
    return next((r for r in rows if r["batch"] == batch and r["n"] == n and r["impl"] == impl),
                None)


def _header(meta, mode=None, total_s=None):
    mem = f", {meta['memory_GiB']:.0f} GiB" if meta.get("memory_GiB") else ""
    load = ""
    if "loadavg_start" in meta:
        load = (f" Load average {meta['loadavg_start']} at the start, "
                f"{meta.get('loadavg_end', '?')} at the end (the machine is shared).")
    run = f"`bknumba bench{' --quick' if mode == 'quick' else ''}`"
    took = f" in {total_s:.0f} s" if total_s else ""
    return (f"{run}{took} on {meta['date']}: {meta['machine']} ({meta.get('arch', '')}, "
            f"{meta['cpus']} CPUs{mem}), numba threads {meta['numba_threads']}, "
            f"Python {meta.get('python', '?')}, NumPy {meta['numpy']}, numba {meta['numba']}."
            f"{load} Memory copy (`np.copyto`, 256 MiB, read + write) in the same run: "
            f"**{meta['copy_bandwidth_GBps']:.1f} GB/s**.")


def render_core(meta, rows):
    """Full-result throughput per shape, sparse speed-ups, and every row in detail."""
    copy = meta["copy_bandwidth_GBps"]
    shapes = list(dict.fromkeys((r["batch"], r["n"]) for r in rows))
    full_names = list(dict.fromkeys(r["impl"] for r in rows if r["semantics"] == "full"))
    out = ["Throughput of the full result, M elements/s (B*N per second; baselines timed on "
           "their first rows where marked *); the last columns are the ratio method's "
           "bandwidth at 32 B/element and its share of the copy bandwidth.", "",
           "| (B, N) | " + " | ".join(full_names) + " | ratio GB/s | % of copy |",
           "|---|" + "---:|" * (len(full_names) + 2)]
    for batch, n in shapes:
        cells = []
        for name in full_names:
            r = _find(rows, batch, n, name)
            if r is None:
                cells.append("–")
            else:
                star = "*" if r.get("rows_timed", batch) < batch else ""
                cells.append(f"{_num(r['elements_per_s'] / 1e6)}{star}")
        ratio = _find(rows, batch, n, "bknumba ratio")
        bw = (f"{ratio['GBps']:.2f} | {100 * ratio['GBps'] / copy:.1f}" if ratio else "– | –")
        out.append(f"| ({batch}, {n}) | " + " | ".join(cells) + f" | {bw} |")

    sparsities = sorted({r["sparsity"] for r in rows if r["semantics"] in SEMANTICS})
    if sparsities:
        out += ["", "Sparse semantics: throughput (all B*N elements, masked or not) relative to "
                "the full ratio method on the same inputs (> 1: faster than computing "
                "everything).", "",
                "| (B, N) | semantics | " + " | ".join(_pct(s) for s in sparsities) + " |",
                "|---|---|" + "---:|" * len(sparsities)]
        for batch, n in shapes:
            ref = _find(rows, batch, n, "bknumba ratio")
            if ref is None:
                continue
            for sem in SEMANTICS:
                cells = []
                for s in sparsities:
                    r = next((x for x in rows if (x["batch"], x["n"]) == (batch, n)
                              and x["semantics"] == sem and x["sparsity"] == s), None)
                    cells.append("–" if r is None
                                 else f"{r['elements_per_s'] / ref['elements_per_s']:.2f}")
                out.append(f"| ({batch}, {n}) | {sem} | " + " | ".join(cells) + " |")

    first = [r for r in rows if r["first_call_extra_s"] > 0.05]
    if first:
        out += ["", "First-call extra time (compilation, or loading from Numba's cache; not in "
                "the numbers above): " + ", ".join(
                    f"{r['impl']} {_shape(r)} {r['first_call_extra_s']:.1f} s"
                    for r in sorted(first, key=lambda r: -r["first_call_extra_s"])[:8]) + "."]
    worst = max(rows, key=lambda r: r["error"])
    out += ["", f"Validation before timing (probe rows against SciPy for N <= 2048, else the "
            f"longdouble recursion): worst relative error {worst['error']:.1e} "
            f"({worst['impl']}, {_shape(worst)})."]
    out += ["", "<details><summary>every row</summary>", "",
            "| (B, N) | implementation | rows timed | Melem/s | GB/s | % of copy | vs full ratio "
            "| first call extra (s) | rel. error |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ref = _find(rows, r["batch"], r["n"], "bknumba ratio")
        vs = f"{r['elements_per_s'] / ref['elements_per_s']:.2f}x" if ref else "–"
        out.append(f"| {_shape(r)} | {r['impl']} | {r.get('rows_timed', r['batch'])} "
                   f"| {r['elements_per_s'] / 1e6:.1f} | {r['GBps']:.2f} "
                   f"| {100 * r['GBps'] / copy:.1f} | {vs} | {r['first_call_extra_s']:.2f} "
                   f"| {r['error']:.0e} |")
    out += ["", "</details>"]
    return out


def render_gpu_section(gpu):
    """The ``gpu`` section of a ``bknumba bench`` report."""
    if not gpu or "rows" not in gpu:
        return [f"GPU: not measured ({(gpu or {}).get('skipped', 'no GPU section')})."]
    meta, rows = gpu["meta"], gpu["rows"]
    copy = meta["copy_bandwidth_GBps"]
    out = [f"GPU: **{meta['device']}**, device-to-device copy {copy:.0f} GB/s (read + write) in "
           "the same run; device-resident inputs, CUDA events, median of repeats.", "",
           "| (B, N) | implementation | G elem/s | GB/s (32 B/elem) | % of copy | rel. error |",
           "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {_shape(r)} | {r['impl']} | {r['elements_per_s'] / 1e9:.2f} "
                   f"| {r['GBps']:.0f} | {100 * r['GBps'] / copy:.1f} | {r['error']:.0e} |")
    return out


def render_layers(sec):
    if not sec or "rows" not in sec:
        return [f"Learned layers: not measured ({(sec or {}).get('skipped', 'not run')})."]
    r0 = sec["rows"][0]
    out = [f"Learned layers, forward latency (B {r0['batch']}, N {r0['n']}, d_model "
           f"{r0['d_model']}, float32, random weights copied from the torch module; outputs "
           "compared first). torch eager: the faster of 1 and 2 threads; `exact` features from "
           "a batched `torch.linalg.inv`, `model` = the model's own sparse recursion.", "",
           "| layer | features | torch eager ms | bknumba.nn ms | speed-up | rel. error |",
           "|---|---|---:|---:|---:|---:|"]
    for r in sec["rows"]:
        out.append(f"| {r['layer']} | {r['features']} | {1e3 * r['torch_s']:.2f} "
                   f"| {1e3 * r['bknumba_s']:.2f} | {r['speedup']:.1f}x | {r['error']:.0e} |")
    return out


def render_ffn(sec):
    if not sec or "rows" not in sec:
        return [f"Sparse FFN: not measured ({(sec or {}).get('skipped', 'not run')})."]
    r0 = sec["rows"][0]
    out = [f"Sparse FFN ({r0['tokens']} tokens, {r0['d_model']} -> {r0['d_ff']} -> "
           f"{r0['d_model']}, float32, synthetic weights with a decaying spectrum) against "
           "dense BLAS (`x @ W1.T`, GELU, `@ W2.T`). Output error: relative Frobenius error "
           "against dense; recall: of the exact top channels.", "",
           "| implementation | sparsity | ms | vs dense | output error | recall |",
           "|---|---:|---:|---:|---:|---:|"]
    for r in sec["rows"]:
        out.append(f"| {r['impl']} | {_pct(r['sparsity'])} | {1e3 * r['seconds']:.2f} "
                   f"| {r['speedup']:.2f}x | {r['error']:.2f} | {r['recall']:.2f} |")
    first = max((r.get("first_call_extra_s", 0.0) for r in sec["rows"]), default=0.0)
    if first > 0.05:
        out += ["", f"First call of the sparse kernel: {first:.1f} s extra (compilation)."]
    return out


def render(report, *, title=None, level=2):
    """Markdown for a ``bknumba bench --json`` report (any subset of its sections)."""
    h = "#" * level
    out = []
    if title:
        out += [f"{h} {title}", ""]
    if "meta" in report:
        out += [_header(report["meta"], report.get("mode"), report.get("total_s")), ""]
        out += render_core(report["meta"], report["rows"]) + [""]
    if "gpu" in report:
        out += render_gpu_section(report["gpu"]) + [""]
    if "layers" in report:
        out += render_layers(report["layers"]) + [""]
    if "ffn" in report:
        out += render_ffn(report["ffn"]) + [""]
    return "\n".join(out).rstrip() + "\n"


def render_cuda_runs(data, *, title=None, level=2):
    """Markdown for the JSON of ``benchmarks/bench_cuda.py`` (``info``, ``copy``, ``runs``)."""
    h = "#" * level
    info = data.get("info", {})
    copy = data["copy"][0]["GBps"] if data.get("copy") else None
    out = [f"{h} {title}", ""] if title else []
    out += [f"`benchmarks/bench_cuda.py` on {info.get('date', '?')}: **{info.get('gpu', '?')}**, "
            f"Python {info.get('python', '?')}, NumPy {info.get('numpy', '?')}, numba "
            f"{info.get('numba', '?')}; B*N = {info.get('total_elements', '?')}, median of "
            f"{info.get('reps', '?')}."
            + (f" Device-to-device copy in the same run: **{copy:.0f} GB/s**." if copy else ""),
            ""]
    if data.get("h2d"):
        h2d = ", ".join(f"{x['GBps']:.1f}" for x in data["h2d"])
        out += [f"Host-to-device copies of the inputs: {h2d} GB/s (a GPU call on host arrays is "
                "bound by these).", ""]
    out += ["| configuration | B | N | G elem/s | GB/s (32 B/elem) | % of copy | rel. error |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for r in data.get("runs", []):
        pct = r.get("pct_copy_bw")
        if pct is None and copy:
            pct = 100 * r["GBps_32B"] / copy
        out.append(f"| {r['label']} | {r['B']} | {r['N']} | {r['Gelem_s']:.2f} "
                   f"| {r['GBps_32B']:.0f} | {pct:.1f} | {r.get('rel_err', float('nan')):.0e} |")
    return "\n".join(out) + "\n"


def render_file(path, **kwargs):
    """Render a stored JSON of either kind."""
    with open(path) as fh:
        data = json.load(fh)
    if "runs" in data and "info" in data:
        return render_cuda_runs(data, **kwargs)
    return render(data, **kwargs)


def page(cpu=None, gpu=(), *, title="Benchmarks", notes=None, image=None, level=2):
    """One markdown page: ``cpu`` (a ``bknumba bench --json`` file) then each GPU JSON.

    ``gpu`` holds paths of ``bknumba bench --sections gpu --json`` reports or
    of ``benchmarks/bench_cuda.py`` JSON, in any mix; ``notes`` (markdown) goes
    after the title; ``image`` is a plot path linked after the CPU tables.
    This is what the lead calls to assemble BENCHMARKS.md::

        from bknumba._benchmarks_md import page
        text = page("notebooks/data/bench_cpu.json",
                    ["notebooks/data/bench_gpu_api.json", "notebooks/data/bench_gpu.json"])
    """
    h = "#" * level
    out = [f"{h} {title}", ""]
    if notes:
        out += [notes.strip(), ""]
    if cpu:
        out += [render_file(cpu, title="CPU", level=level + 1)]
        if image:
            out += [f"![bknumba bench plots]({image})", ""]
    for path in gpu:
        with open(path) as fh:
            kind = "kernels only (benchmarks/bench_cuda.py)" if "runs" in json.load(fh) \
                else "public API (bknumba bench --sections gpu)"
        out += [render_file(path, title=f"GPU, {kind}", level=level + 1)]
    return "\n".join(out).rstrip() + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bknumba._benchmarks_md",
                                     description="Render benchmark JSON as markdown.")
    parser.add_argument("inputs", nargs="+", help="bknumba bench --json or bench_cuda.py JSON")
    parser.add_argument("-o", "--output", help="write here (default: stdout)")
    parser.add_argument("--level", type=int, default=2, help="heading level of the titles")
    args = parser.parse_args(argv)
    text = "\n".join(render_file(p, level=args.level) for p in args.inputs)
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
