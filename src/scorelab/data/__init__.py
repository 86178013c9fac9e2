"""Data sources: 2-D toys with exact scores, image sets and dataset formats, synthetic shapes.

:func:`load_dataset` turns a data spec (a toy name, ``digits``, ``mmap:FILE.npy`` or a path) into
the data it names.
"""

from __future__ import annotations

from scorelab.data.formats import MappedImages
from scorelab.data.sources import load_dataset
from scorelab.errors import DataError

__all__ = ["DataError", "MappedImages", "load_dataset"]
