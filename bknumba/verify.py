"""``bknumba verify``: accuracy sweep of every method and sparse semantics.

For each N in the sweep, builds the model's inputs (``a = -2 + v``,
``v ~ U(-3, 3)``) and a general Hermitian problem with non-constant
off-diagonals (``Im z = 0.1``), runs both methods and the three sparse
semantics at several sparsities, and compares with SciPy's banded solver
(N <= ``--scipy-max-n``) or the extended-precision recursion
(:func:`bknumba.reference.bk_core_extended`). Prints a table of per-case
maximum relative errors and exits 1 if any exceeds its tolerance.

``--device cuda`` runs the same sweep through the GPU kernels (host arrays in,
results copied back); the references are always computed on the CPU.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

__all__ = ["main", "run_verification", "TOLERANCES"]

#: Tolerances on ``max_i |G - G_ref| / max_i |G_ref|`` (bk-core.md section 5).
#: The seed semantics combines long products of pivots, whose rounding
#: grows with the distance to the end of the row: its tolerance is looser.
TOLERANCES = {"ratio": 1e-12, "theta_phi": 1e-12, "exact": 1e-12, "local": 1e-12,
              "seed": 1e-10}


def _problems(n, rows, rng):
    v = rng.uniform(-3, 3, size=(rows, n))
    yield "model", -2.0 + v, np.ones((rows, n - 1)), np.ones((rows, n - 1)), 1j
    a = rng.uniform(-3, 3, size=(rows, n))
    b = rng.uniform(0.3, 1.5, size=(rows, n - 1))
    yield "hermitian", a, b, b, 0.25 + 0.1j


def run_verification(sizes, sparsities=(0.0, 0.25, 0.5, 0.9), rows=4, scipy_max_n=2048,
                     seed=0, progress=None, device="cpu"):
    """Run the sweep on ``device`` (``"cpu"`` or ``"cuda"``); returns a list of
    result dicts (one per case)."""
    import bknumba
    from bknumba.reference import bk_core_banded, bk_core_extended, relative_error

    rng = np.random.default_rng(seed)
    results = []
    cases = []
    for n in sizes:
        for kind, a, b, c, z in _problems(n, rows, rng):
            cases.append((n, kind, a, b, c, z))
    total = len(cases)
    for idx, (n, kind, a, b, c, z) in enumerate(cases, 1):
        if progress:
            progress(f"[{idx}/{total}] N={n} {kind}")
        use_scipy = n <= scipy_max_n
        ref_name = "scipy" if use_scipy else "longdouble"
        ref = bk_core_banded(a, b, c, z) if use_scipy else bk_core_extended(a, b, c, z)
        for method in ("ratio", "theta_phi"):
            t0 = time.perf_counter()
            g = bknumba.bk_core(a, b, c, z, method=method, device=device)
            err = float(relative_error(g, ref).max())
            results.append(dict(n=n, problem=kind, case=f"full/{method}", sparsity=0.0,
                                reference=ref_name, error=err, tolerance=TOLERANCES[method],
                                finite=bool(np.all(np.isfinite(g))),
                                seconds=time.perf_counter() - t0))
        for sparsity in sparsities:
            mask = rng.random(a.shape) >= sparsity
            for semantics in ("seed", "local", "exact"):
                g = bknumba.sparse_bk_core(a, b, c, mask, z, semantics=semantics,
                                           device=device)
                # each semantics against its own definition in extended precision;
                # "exact" also against SciPy where N allows
                if semantics == "exact" and use_scipy:
                    sref, rname = np.where(mask, ref, 0), "scipy"
                else:
                    sref = bk_core_extended(a, b, c, z, mask=mask, semantics=semantics)
                    rname = "longdouble"
                err = float(relative_error(g, sref).max())
                results.append(dict(n=n, problem=kind, case=f"sparse/{semantics}",
                                    sparsity=sparsity, reference=rname, error=err,
                                    tolerance=TOLERANCES[semantics],
                                    finite=bool(np.all(np.isfinite(g))), seconds=0.0))
    for r in results:
        r["ok"] = bool(r["finite"] and r["error"] <= r["tolerance"])
    return results


def format_table(results):
    lines = [f"{'N':>9} {'problem':<10} {'case':<18} {'sparsity':>8} {'reference':<10} "
             f"{'max rel err':>11} {'tol':>7}  ok"]
    for r in results:
        lines.append(
            f"{r['n']:>9} {r['problem']:<10} {r['case']:<18} {r['sparsity']:>8.2f} "
            f"{r['reference']:<10} {r['error']:>11.2e} {r['tolerance']:>7.0e}  "
            f"{'yes' if r['ok'] else 'NO'}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="bknumba verify",
        description="Verify every BK-Core method and sparse semantics against SciPy "
                    "(small N) and an extended-precision recursion (large N).")
    parser.add_argument("--sizes", type=int, nargs="+",
                        default=[8, 128, 1024, 2048, 10_000, 100_000],
                        help="sequence lengths N to sweep (default: %(default)s)")
    parser.add_argument("--large", action="store_true", help="also N = 10^6")
    parser.add_argument("--rows", type=int, default=4, help="rows per problem (default 4)")
    parser.add_argument("--scipy-max-n", type=int, default=2048,
                        help="largest N compared with SciPy's O(N^2) banded solve")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="run the kernels on the CPU (default) or the GPU")
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON")
    args = parser.parse_args(argv)
    sizes = list(args.sizes) + ([1_000_000] if args.large else [])
    t0 = time.perf_counter()

    def progress(msg):
        print(f"{msg} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)

    results = run_verification(sizes, rows=args.rows, scipy_max_n=args.scipy_max_n,
                               seed=args.seed, progress=progress, device=args.device)
    print(format_table(results))
    failed = [r for r in results if not r["ok"]]
    if args.json:
        import json

        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    worst = max(results, key=lambda r: r["error"] / r["tolerance"])
    print(f"\n{len(results)} cases, {len(failed)} failed; worst error/tolerance "
          f"{worst['error'] / worst['tolerance']:.2g} ({worst['case']}, N={worst['n']}); "
          f"{time.perf_counter() - t0:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
