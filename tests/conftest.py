"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    """A temporary ``$SCORELAB_CACHE`` for one test module, so a cached classifier trains once per module."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("scorelab-cache")
        mp.setenv("SCORELAB_CACHE", str(path))
        yield path
