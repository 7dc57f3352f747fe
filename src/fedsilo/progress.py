"""Progress of long work: a rich display in a terminal, plain log lines elsewhere (CI, files).

Library code reports through :func:`current` and never prints; the CLI installs a reporter
with :func:`use`. Reports are cheap no-ops when nobody listens (e.g. inside Ray workers).

Runs report rounds, sites and batches; other long jobs (``audit``, ``sample``) report
:meth:`Reporter.step`: ``done`` of ``total`` units of a labelled job (an attack, a reference
model, a chunk of images).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

logger = logging.getLogger("fedsilo.progress")


class Reporter:
    """Plain reporter: log lines at round granularity (what CI and log files see)."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()
        self._total_rounds = 0

    def start(self, total_rounds: int, first_round: int = 1, label: str = "") -> None:
        self._total_rounds = total_rounds
        self._t0 = time.monotonic()
        logger.info("%s: rounds %d..%d", label or "run", first_round, total_rounds)

    def round_started(self, rnd: int, sites: list[str]) -> None:
        logger.info("Round %d/%d: %d site(s): %s", rnd, self._total_rounds, len(sites), ", ".join(sites))

    def site_started(self, site: str, total_batches: int) -> None:
        logger.debug("  %s: %d batches", site, total_batches)

    def batch_done(self, site: str, n: int = 1) -> None:
        pass

    def site_finished(self, site: str) -> None:
        logger.debug("  %s done", site)

    def round_finished(self, rnd: int, summary: str) -> None:
        logger.info("Round %d/%d done (%.1fs elapsed)%s", rnd, self._total_rounds,
                    time.monotonic() - self._t0, f": {summary}" if summary else "")

    def step(self, label: str, done: int, total: int, detail: str = "") -> None:
        """``done`` of ``total`` units of the job ``label`` have finished (``detail``: the last one)."""
        logger.info("%s %d/%d%s (%.1fs elapsed)", label, done, total, f": {detail}" if detail else "",
                    time.monotonic() - self._t0)

    def close(self) -> None:
        pass


class RichReporter(Reporter):
    """A live rich display: overall rounds, the round's sites, the current site's batches."""

    def __init__(self, console: object | None = None) -> None:
        super().__init__()
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=False,
        )
        self._rounds = self._sites = self._batches = None
        self._steps: dict[str, object] = {}

    def start(self, total_rounds: int, first_round: int = 1, label: str = "") -> None:
        super().start(total_rounds, first_round, label)
        self._progress.start()
        self._rounds = self._progress.add_task(label or "rounds", total=total_rounds, completed=first_round - 1)

    def round_started(self, rnd: int, sites: list[str]) -> None:
        if self._sites is not None:
            self._progress.remove_task(self._sites)
        self._sites = self._progress.add_task(f"round {rnd} sites", total=len(sites))

    def site_started(self, site: str, total_batches: int) -> None:
        if self._batches is not None:
            self._progress.remove_task(self._batches)
        self._batches = self._progress.add_task(f"  {site} batches", total=total_batches)

    def batch_done(self, site: str, n: int = 1) -> None:
        if self._batches is not None:
            self._progress.advance(self._batches, n)

    def site_finished(self, site: str) -> None:
        if self._sites is not None:
            self._progress.advance(self._sites)

    def round_finished(self, rnd: int, summary: str) -> None:
        if self._rounds is not None:
            self._progress.update(self._rounds, completed=rnd)
        if summary:
            self._progress.console.log(f"round {rnd}: {summary}")

    def step(self, label: str, done: int, total: int, detail: str = "") -> None:
        self._progress.start()  # (a no-op once started)
        if label not in self._steps:
            self._steps[label] = self._progress.add_task(label, total=total)
        self._progress.update(self._steps[label], completed=done, total=total,  # type: ignore[arg-type]
                              description=f"{label}: {detail}" if detail else label)

    def close(self) -> None:
        self._progress.stop()


_current: Reporter = Reporter()


def current() -> Reporter:
    """The reporter library code should report to."""
    return _current


@contextlib.contextmanager
def use(reporter: Reporter) -> Iterator[Reporter]:
    """Install ``reporter`` for the duration of a block."""
    global _current
    previous, _current = _current, reporter
    try:
        yield reporter
    finally:
        reporter.close()
        _current = previous
