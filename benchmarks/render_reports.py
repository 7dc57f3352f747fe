"""Render fedsilo HTML reports to PNG with headless Chromium, and check them, as a reader sees them.

    python -m benchmarks.render_reports REPORT.html [...] [--out DIR] [--widths 1400,800] [--check]

Every plot must be visible, nothing cut off, readable at laptop and half-screen width. With
``--check`` each page is also checked (:func:`fedsilo.report.browser.check_page`: horizontal
overflow, table headers broken inside a word, images without captions) and the command fails when
any page has a problem. Needs Debian's ``chromium`` (or ``chromium-browser``/``google-chrome``) on
PATH; it is not a Python dependency.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fedsilo.report.browser import check_page, screenshot

logger = logging.getLogger(__name__)


def render(html: Path, png: Path, width: int = 1280, height: int = 8000) -> Path:
    """Screenshot ``html`` (a tall window, so the whole page fits) into ``png``."""
    return screenshot(html, png, width, height)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("runs/screenshots"))
    parser.add_argument("--widths", default="1400,800", help="comma-separated window widths in px")
    parser.add_argument("--check", action="store_true", help="check each page; exit 1 on any problem")
    args = parser.parse_args(argv)
    widths = [int(w) for w in args.widths.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for i, report in enumerate(args.reports):
        for width in widths:
            png = render(report, args.out / f"{i:02d}-{report.parent.name}-{report.stem}-{width}.png", width)
            logger.info("%s", png)
        if args.check:
            problems = check_page(report, widths)
            failed += bool(problems)
            for problem in problems:
                logger.error("%s: %s", report, problem)
            if not problems:
                logger.info("%s: no problem at %s px", report, ", ".join(map(str, widths)))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
