"""The errors scorelab raises for input it cannot use: one base, so a caller (the command line) can
tell a user's mistake from a bug.

Each also derives from the built-in exception that fits it (``ValueError`` for bad data,
``RuntimeError`` for a run or sampler that cannot go on), so code that catches those keeps working.
"""

from __future__ import annotations


class ScorelabError(Exception):
    """Base of the errors that describe bad input or a state scorelab cannot continue from; the
    message says what is wrong and, where it can, what to do."""


class DataError(ScorelabError, ValueError):
    """Data failed validation (shape, dtype, range, finiteness, file layout)."""


class CheckpointError(ScorelabError, RuntimeError):
    """A checkpoint or run directory is missing, corrupted or does not fit the model it is loaded into."""


class TrainingError(ScorelabError, RuntimeError):
    """Training cannot go on (a non-finite loss, a run that does not match its config, ...)."""


class SamplingError(ScorelabError, RuntimeError):
    """A sampler cannot go on or produced no usable result (non-finite values)."""
