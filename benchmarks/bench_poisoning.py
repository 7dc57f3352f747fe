"""``make bench`` entry for :mod:`benchmarks.poisoning`."""

from .poisoning import NAME, TITLE, run

__all__ = ["NAME", "TITLE", "run"]
