"""The reliability suite's ledger: every case a test tries is counted by kind, with whether it held,
and the table is printed at the end of the run (and written as JSON to $SCORELAB_RELIABILITY_REPORT)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

COUNTS: dict[str, list[int]] = {}  # kind -> [tried, held]


class Ledger:
    """``with ledger.case(kind): ...``: one case tried; it held if the block raised nothing."""

    @contextmanager
    def case(self, kind: str) -> Iterator[None]:
        counts = COUNTS.setdefault(kind, [0, 0])
        counts[0] += 1
        yield
        counts[1] += 1


@pytest.fixture(scope="session")
def ledger() -> Ledger:
    return Ledger()


def pytest_terminal_summary(terminalreporter) -> None:
    if not COUNTS:
        return
    width = max(len(kind) for kind in COUNTS)
    terminalreporter.write_sep("-", "reliability: cases tried and held")
    for kind, (tried, held) in sorted(COUNTS.items()):
        terminalreporter.write_line(f"{kind:<{width}}  {held:5d} of {tried:5d} held")
    total_tried, total_held = (sum(c[i] for c in COUNTS.values()) for i in (0, 1))
    terminalreporter.write_line(f"{'all':<{width}}  {total_held:5d} of {total_tried:5d} held")
    report = os.environ.get("SCORELAB_RELIABILITY_REPORT")
    if report:
        with open(report, "w") as f:
            json.dump({kind: {"tried": t, "held": h} for kind, (t, h) in COUNTS.items()}, f, indent=1)
