"""``make bench`` entry for :mod:`benchmarks.poisoning`."""

from benchmarks.poisoning import NAME, TITLE, run

__all__ = ["NAME", "TITLE", "run"]
