"""The trainer's domain error."""

from __future__ import annotations


class DataError(ValueError):
    """Bad training data; the message names the file and line."""
