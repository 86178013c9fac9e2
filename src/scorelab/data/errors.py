"""The one exception data sources raise when what they read is not a valid input."""

from __future__ import annotations


class DataError(ValueError):
    """Data failed validation (shape, dtype, range, finiteness, file layout).

    A ``ValueError`` subclass, so callers that already catch ``ValueError`` keep working, while
    the CLI can catch exactly this and print the message without a traceback.
    """
