"""``bknumba export``: convert a PyTorch checkpoint to a bknumba ``.npz`` / ``.safetensors`` file.

Needs torch (the ``torch`` extra); nothing else in :mod:`bknumba.nn` does.

Examples
--------
::

    bknumba export ckpt.pt layer.safetensors --module SparseMoEResNetBKLayer \\
        --config '{"d_model": 64, "n_seq": 128, "target_sparsity": 0.5}'
    bknumba export model.pt core.npz --module SparseBKCore --prefix layers.0.sparse_bk_core \\
        --config '{"d_model": 64, "n_seq": 128}'
"""
from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["main", "extract_state_dict", "STATE_DICT_KEYS"]

#: Keys under which checkpoint dicts usually hold the state dict, tried in order.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "weights")


def _is_tensor_map(obj):
    return isinstance(obj, dict) and obj and all(
        hasattr(v, "shape") and hasattr(v, "dtype") for v in obj.values())


def extract_state_dict(obj, key=None, prefix=None):
    """The state dict inside a loaded checkpoint.

    ``obj`` is a state dict, or a dict holding one under ``key`` (or, if
    ``key`` is None, one of :data:`STATE_DICT_KEYS`). A ``"module."`` prefix
    on every key (DataParallel) is removed. With ``prefix``, only the keys
    under ``prefix + "."`` are kept, with the prefix removed (a submodule).

    Examples
    --------
    >>> import numpy as np
    >>> ckpt = {"epoch": 3, "state_dict": {"module.a.w": np.zeros(2), "module.b": np.ones(1)}}
    >>> sorted(extract_state_dict(ckpt, prefix="a"))
    ['w']
    """
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            raise KeyError(f"the checkpoint has no entry {key!r}")
        sd = obj[key]
    elif _is_tensor_map(obj):
        sd = obj
    else:
        sd = None
        if isinstance(obj, dict):
            for k in STATE_DICT_KEYS:
                if k in obj and _is_tensor_map(obj[k]):
                    sd = obj[k]
                    break
        if sd is None:
            found = sorted(obj)[:20] if isinstance(obj, dict) else type(obj).__name__
            raise ValueError(f"no state dict found in the checkpoint (looked for "
                             f"{', '.join(STATE_DICT_KEYS)}; top-level entries: {found}); "
                             "use --key")
    if not _is_tensor_map(sd):
        raise ValueError("the selected checkpoint entry is not a mapping of tensors")
    sd = dict(sd)
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    if prefix:
        pre = prefix.rstrip(".") + "."
        sub = {k[len(pre):]: v for k, v in sd.items() if k.startswith(pre)}
        if not sub:
            raise ValueError(f"no state dict key starts with {pre!r}")
        sd = sub
    return sd


def _parser():
    p = argparse.ArgumentParser(
        prog="bknumba export",
        description="Export a PyTorch checkpoint of a sparse BK-Core module to .npz or "
                    ".safetensors for bknumba.nn.load (needs torch).")
    p.add_argument("checkpoint", help="PyTorch file with a state_dict or a checkpoint dict")
    p.add_argument("out", help="output file, .npz or .safetensors")
    p.add_argument("--module", required=True, metavar="KIND",
                   help="the model's class name, e.g. SparseBKCore, SparseMoEResNetBKLayer, "
                        "LearnedSparsityG_ii, MultiScaleBKLayer")
    p.add_argument("--config", default="{}", metavar="JSON",
                   help="constructor arguments as a JSON object, e.g. "
                        "'{\"d_model\": 64, \"n_seq\": 128, \"target_sparsity\": 0.5}'")
    p.add_argument("--key", default=None,
                   help="checkpoint entry holding the state dict (default: the file itself, or "
                        + ", ".join(STATE_DICT_KEYS) + ")")
    p.add_argument("--prefix", default=None, help="export only the submodule under this key prefix")
    p.add_argument("--source-note", default=None,
                   help="free text recorded in the metadata (e.g. model commit, which BK core "
                        "the weights were trained with)")
    p.add_argument("--unsafe-pickle", action="store_true",
                   help="torch.load with weights_only=False (only for trusted files)")
    return p


def main(argv=None) -> int:
    """Run ``bknumba export``; returns the exit status (0 ok, 1 bad input, 2 usage)."""
    args = _parser().parse_args(argv)
    try:
        config = json.loads(args.config)
    except json.JSONDecodeError as exc:
        print(f"bknumba export: --config is not valid JSON: {exc}", file=sys.stderr)
        return 2
    if not isinstance(config, dict):
        print("bknumba export: --config must be a JSON object", file=sys.stderr)
        return 2
    try:
        import torch
    except ImportError:
        print("bknumba export: needs PyTorch (pip install 'bknumba[torch]')", file=sys.stderr)
        return 1
    from .io import export_state_dict

    try:
        obj = torch.load(args.checkpoint, map_location="cpu", weights_only=not args.unsafe_pickle)
        sd = extract_state_dict(obj, args.key, args.prefix)
        source = {"checkpoint": os.path.basename(args.checkpoint), "key": args.key,
                  "prefix": args.prefix, "torch_version": torch.__version__}
        if args.source_note:
            source["note"] = args.source_note
        export_state_dict(sd, args.out, args.module, source=source, **config)
    except Exception as exc:  # noqa: BLE001 - a CLI reports, it does not trace back
        print(f"bknumba export: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} ({args.module}, {len(sd)} arrays)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
