"""``scorelab export``: a run's weights alone (no optimizer state), optionally in half precision."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a run's weights alone (no optimizer state) to a small file")
    options.add_model(p)
    p.add_argument("--out", type=Path, required=True, help="output .safetensors file")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="storage precision (float16 halves the file; loading casts back to float32; default "
                   "%(default)s)")
    p.set_defaults(run_command=run)


def run(args: argparse.Namespace) -> int:
    from ..runs import export_weights

    out = export_weights(args.run, args.out, weights=args.weights, dtype=args.dtype)
    print(f"{args.weights} weights of {args.run} as {args.dtype} -> {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0
