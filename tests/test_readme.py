"""The READMEs' command lines still parse: every ``scorelab ...`` line of their bash blocks (README.md
and examples/README.md) is read by the real parser, so a moved or renamed option fails here instead
of in a reader's shell."""

import re
import shlex
from pathlib import Path

from scorelab.cli import build_parser

READMES = [Path(__file__).parents[1] / name for name in ("README.md", "examples/README.md")]


def readme_commands() -> list[list[str]]:
    """The argument lists of the READMEs' ``scorelab`` commands."""
    return scorelab_commands("\n".join(readme.read_text() for readme in READMES))


def scorelab_commands(markdown: str) -> list[list[str]]:
    """The argument lists of the ``scorelab`` commands (``torchrun ... -m scorelab`` too) in the bash and
    indented code blocks of ``markdown``; lines with placeholders (``...``, ``[OPTIONAL]``) are left out."""
    commands = []
    text = markdown.replace("\\\n", " ")
    fenced = re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)
    indented = re.findall(r"^ {4}(scorelab .*)$", text, flags=re.MULTILINE)  # indented code blocks
    for block in fenced + indented:
        for line in block.splitlines():
            for part in line.split("#")[0].split("&&"):
                words = shlex.split(part)
                if "scorelab" not in words or "..." in part or "[" in part:
                    continue
                commands.append(words[words.index("scorelab") + 1:])
    return commands


def test_every_readme_command_parses():
    commands = readme_commands()
    assert len(commands) > 20 and any(c[0] == "inpaint" for c in commands)
    parser = build_parser()
    for args in commands:
        parsed = parser.parse_args(args)  # argparse exits on an unknown or malformed option
        assert callable(parsed.run_command), args
