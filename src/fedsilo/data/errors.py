"""Errors raised for bad input data."""

from __future__ import annotations


class DataError(ValueError):
    """Input data is missing, unreadable or inconsistent; the message names the file and the problem."""
