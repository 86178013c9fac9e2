"""The command line's help is complete and cannot fall behind the code: every option of every command
(walked from the real parser) says what it does and shows its actual default; ``--sampler`` offers the
registry's samplers and ``--pretrained`` names the shipped models (both read from their registries)."""

from __future__ import annotations

import argparse
import re
from dataclasses import fields

import pytest

from scorelab.cli import build_parser
from scorelab.pretrained import PRETRAINED
from scorelab.sample import SAMPLERS
from scorelab.train import TrainConfig

TRAIN_DEFAULTS = {f.name: getattr(TrainConfig(), f.name) for f in fields(TrainConfig)}


def commands(parser: argparse.ArgumentParser | None = None, prefix: str = "scorelab") -> dict[str, argparse.ArgumentParser]:
    """Every command's parser, nested ones too (``scorelab analyze field``), keyed by its command line."""
    parser = parser or build_parser()
    found = {prefix: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= commands(sub, f"{prefix} {name}")
    return found


COMMANDS = commands()
LEAVES = {name: p for name, p in COMMANDS.items()
          if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)}


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


def expanded_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help text as ``--help`` prints it (``%(default)s`` and friends filled in), on one line."""
    return " ".join(parser._get_formatter()._expand_help(action).split())


def renderings(value: object) -> set[str]:
    """The ways a help text may write a default: ``0.001`` / ``1e-3``, ``500.0`` / ``500``, ``0.1,1,10``."""
    if isinstance(value, (list, tuple)):
        return {",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)}
    if isinstance(value, float):
        return {str(value), f"{value:g}", f"{value:.0e}".replace("e-0", "e-"), f"{value:.0e}"}
    return {str(value)}


def test_the_walk_finds_every_command():
    assert {"scorelab train", "scorelab sample", "scorelab inpaint", "scorelab eval", "scorelab export",
            "scorelab demo", "scorelab data shapes", "scorelab analyze gaussianity", "scorelab analyze field",
            "scorelab analyze trajectories", "scorelab analyze dynamics"} <= set(LEAVES)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_and_option_says_what_it_does(command):
    parser = COMMANDS[command]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                assert choice.help, f"{command} {choice.dest}: the command has no help"
    for action in options(parser):
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help != argparse.SUPPRESS and len(expanded_help(parser, action)) > 10, \
            f"{command} {name}: no help"


@pytest.mark.parametrize("command", sorted(LEAVES))
def test_every_option_shows_its_actual_default(command):
    parser = LEAVES[command]
    for action in options(parser):
        if not action.option_strings or action.required or action.nargs == 0:
            continue  # positionals, required options and flags have no default to show
        name = "/".join(action.option_strings)
        text = expanded_help(parser, action)
        assert re.search(r"\bdefault", text, flags=re.IGNORECASE), f"{command} {name}: the help shows no default"
        value = action.default
        if value is None and command == "scorelab train":
            value = TRAIN_DEFAULTS.get(action.dest)  # train's options fall back on TrainConfig's defaults
        if value is None:
            continue  # the help says in words what happens without the option
        assert any(r in text for r in renderings(value)), f"{command} {name}: default {value!r} is not in {text!r}"


def test_sample_and_inpaint_offer_every_registered_sampler():
    for command in ("scorelab sample", "scorelab inpaint"):
        action = next(a for a in options(COMMANDS[command]) if a.dest == "sampler")
        assert list(action.choices) == list(SAMPLERS), command
        assert action.default in SAMPLERS


def test_every_other_sampler_choice_is_a_registered_sampler():
    for command, parser in LEAVES.items():
        for action in options(parser):
            if action.dest == "sampler":
                assert set(action.choices) <= set(SAMPLERS), command
                assert action.default is None or action.default in action.choices, command


def test_the_help_names_every_shipped_model():
    parser = COMMANDS["scorelab sample"]
    action = next(a for a in options(parser) if a.dest == "pretrained")
    text = expanded_help(parser, action)
    assert all(re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text) for name in PRETRAINED), text


def test_the_help_promises_no_time():
    text = " ".join(p.format_help() for p in COMMANDS.values())
    assert not re.search(r"under \d+ min", text)
