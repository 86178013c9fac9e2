"""``scorelab demo``: train, sample, measure and draw on gmm3 and digits."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train on gmm3 and digits, sample, measure and draw (several minutes on a "
                       "2-core CPU; run it again to resume)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output directory: the two runs, their "
                   "figures and summary.json (default %(default)s)")
    p.add_argument("--quick", action="store_true", help="a few steps only (checks the plumbing, not quality)")
    p.set_defaults(run_command=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    run_demo(args.out, quick=args.quick, progress=not args.no_progress)
    return 0
