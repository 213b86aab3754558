"""The one exception type for user mistakes."""
from __future__ import annotations


class TunevisionError(Exception):
    """A mistake in a search file, a flag or the data, reported as one line without a traceback."""
