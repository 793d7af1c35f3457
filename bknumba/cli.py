"""The ``bknumba`` command: one entry point, subcommands imported on use."""
from __future__ import annotations

import importlib
import sys

#: subcommand -> (module, one-line help)
COMMANDS = {
    "verify": ("bknumba.verify", "accuracy sweep against SciPy and extended precision"),
    "bench": ("bknumba.bench", "benchmarks: BK-Core on CPU/GPU, baselines, layers, sparse FFN"),
    "export": ("bknumba.nn.export", "export PyTorch weights to .npz / .safetensors"),
    "flops": ("bknumba.sparsity.flops", "FLOP accounting: the seeds' claims vs an honest count"),
}


def _usage() -> str:
    lines = ["usage: bknumba COMMAND [options]", "", "commands:"]
    for name, (_, text) in COMMANDS.items():
        lines.append(f"  {name:<8} {text}")
    lines.append("")
    lines.append("'bknumba COMMAND --help' describes a command's options.")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from ._version import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"bknumba: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[name][0])
    except ImportError as exc:
        print(f"bknumba {name}: not available ({exc})", file=sys.stderr)
        return 2
    return int(module.main(rest) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
