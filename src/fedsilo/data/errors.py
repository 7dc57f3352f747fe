"""Errors raised by the data layer for corrupted or inconsistent input."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """Input data is unreadable, corrupted or inconsistent.

    The message always names the offending file (or folder) and what was wrong with it, so
    that a site operator can find and fix it without reading a traceback.
    """
