"""The documentation site (``docs/``, built by ``mkdocs build --strict``) says what the code does.

- Every ```python block of ``docs/**/*.md`` runs, each in a fresh namespace in a temporary folder; a block
  preceded by ``<!-- docs-test: slow -->`` runs only under ``-m slow``.
- Every ``scorelab ...`` line of its ```bash blocks is read by the real parser (``test_readme``'s reader).
- Every public module has its section in the API reference, every registered sampler its row on the
  sampling page, and every figure in ``docs/figures`` is shown somewhere.
"""

from __future__ import annotations

import pkgutil
import re
from pathlib import Path

import pytest
import torch
from test_readme import scorelab_commands

import scorelab
from scorelab.cli import build_parser
from scorelab.sample import SAMPLERS

DOCS = Path(__file__).parents[1] / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
MARKS = ("slow",)
BLOCK = re.compile(r"(?:<!--\s*docs-test:\s*(?P<mark>\S+)\s*-->\s*\n)?^```python\n(?P<code>.*?)^```",
                   re.DOTALL | re.MULTILINE)


def python_blocks() -> list:
    """One pytest parameter per ```python block: ``(page, first line, code)``, marked slow where the page says."""
    params = []
    for page in PAGES:
        text = page.read_text()
        for match in BLOCK.finditer(text):
            mark, line = match["mark"], text.count("\n", 0, match.start("code")) + 1
            assert mark in (None, *MARKS), f"{page.name}:{line}: unknown docs-test mark {mark!r}"
            name = f"{page.relative_to(DOCS)}:{line}"
            params.append(pytest.param(page, line, match["code"], id=name,
                                       marks=[pytest.mark.slow] if mark == "slow" else []))
    return params


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A temporary working folder and one torch thread (the snippets' tensors are small; on a busy 2-core
    machine two threads are many times slower), restored afterwards."""
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path
    torch.set_num_threads(threads)


@pytest.mark.parametrize(("page", "line", "code"), python_blocks())
def test_python_block_runs(page, line, code, sandbox):
    padded = "\n" * (line - 1) + code  # tracebacks point at the page's own line numbers
    exec(compile(padded, str(page), "exec"), {"__name__": "__docs__"})  # noqa: S102 - the docs' own code


def test_every_scorelab_command_of_the_docs_parses():
    commands = scorelab_commands("\n".join(page.read_text() for page in PAGES))
    assert len(commands) > 30
    parser = build_parser()
    for args in commands:
        parsed = parser.parse_args(args)  # argparse exits on an unknown or malformed option
        assert callable(parsed.run_command), args


def test_the_harness_finds_the_blocks():
    blocks = python_blocks()
    assert len(blocks) >= 10
    assert any(param.marks for param in blocks) and any(not param.marks for param in blocks)


def public_modules() -> list[str]:
    found = ["scorelab"]
    for info in pkgutil.walk_packages(scorelab.__path__, "scorelab."):
        parts = info.name.split(".")
        if not any(part.startswith("_") for part in parts):
            found.append(info.name)
    return found


def test_every_public_module_has_its_api_section():
    documented = set(re.findall(r"^::: ([\w.]+)\s*$", "\n".join(p.read_text() for p in (DOCS / "api").glob("*.md")),
                                flags=re.MULTILINE))
    missing = [name for name in public_modules() if name not in documented]
    assert not missing, f"add a '::: NAME' section to a page of docs/api/ for {missing}"


def test_every_registered_sampler_has_its_row_on_the_sampling_page():
    rows = set(re.findall(r"^\| `([\w-]+)` \|", (DOCS / "sampling.md").read_text(), flags=re.MULTILINE))
    missing = [name for name in SAMPLERS if name not in rows]
    assert not missing, f"docs/sampling.md's registry table lacks {missing}"


def test_every_figure_is_shown():
    text = "\n".join(page.read_text() for page in PAGES)
    unused = [f.name for f in (DOCS / "figures").glob("*.png") if f"figures/{f.name}" not in text]
    assert not unused, f"figures in docs/figures that no page shows: {unused}"
