"""The command line's commands, one module each: a module registers its options beside the code that
uses them (``register(subparsers)``, setting ``run_command``); shared option groups are in
:mod:`.options`."""

from . import analyze, data, demo, evaluate, export, inpaint, sample, train

COMMANDS = (train, sample, inpaint, evaluate, export, data, analyze, demo)

__all__ = ["COMMANDS"]
