"""Progress reporting of long jobs that are not rounds (audit, sample): log lines or a rich bar."""

from __future__ import annotations

import io
import logging

from rich.console import Console

from fedsilo import progress
from fedsilo.progress import Reporter, RichReporter


def test_plain_reporter_logs_one_line_per_step(caplog):
    with caplog.at_level(logging.INFO, logger="fedsilo.progress"):
        reporter = Reporter()
        reporter.step("audit: reference models", 2, 4)
        reporter.step("audit", 1, 3, "membership done")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("audit: reference models 2/4 (") and lines[0].endswith("s elapsed)")
    assert lines[1].startswith("audit 1/3: membership done (")


def test_rich_reporter_draws_a_bar_per_job_and_use_restores_the_previous_reporter():
    out = io.StringIO()
    before = progress.current()
    with progress.use(RichReporter(console=Console(file=out, width=100, force_terminal=False))) as reporter:
        assert progress.current() is reporter
        reporter.step("sample: images generated", 256, 600)
        reporter.step("sample: images generated", 600, 600)
        reporter.step("audit", 1, 2, "gan done")
    assert progress.current() is before
    text = out.getvalue()
    assert "sample: images generated" in text and "600/600" in text
    assert "audit: gan done" in text and "1/2" in text
