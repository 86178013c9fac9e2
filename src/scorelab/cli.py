"""The ``scorelab`` command: a thin dispatcher over the command modules in :mod:`scorelab.commands`.

Bad input and the project's own errors end in one ``error:`` line and exit status 2; an interruption
in status 130. Anything else is a bug and shows its traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .errors import ScorelabError

USER_ERRORS = (ScorelabError, ValueError, OSError)  # ValueError: bad arguments; OSError: files and folders


def build_parser() -> argparse.ArgumentParser:
    from .commands import COMMANDS

    parser = argparse.ArgumentParser(prog="scorelab", description="Train, sample and dissect score-based "
                                     "diffusion models (EDM denoiser convention).")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run_command(args))
    except USER_ERRORS as e:
        print(f"scorelab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"scorelab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
