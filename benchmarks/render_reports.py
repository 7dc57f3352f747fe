"""Render fedsilo HTML reports to PNG with headless Chromium, to look at them as a reader would.

    python -m benchmarks.render_reports REPORT.html [...] [--out DIR] [--width 1280]

Every plot must be visible, nothing cut off, readable at laptop width. Needs Debian's
``chromium`` (or ``chromium-browser``/``google-chrome``) on PATH; it is not a Python dependency.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit(f"no headless browser found (tried {', '.join(BROWSERS)}); install Debian's chromium")


def render(html: Path, png: Path, width: int = 1280, height: int = 8000) -> Path:
    """Screenshot ``html`` (a tall window, so the whole page fits) into ``png``."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--screenshot={png}", html.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
    return png


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("runs/screenshots"))
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for i, report in enumerate(args.reports):
        png = render(report, args.out / f"{i:02d}-{report.parent.name}-{report.stem}.png", args.width)
        print(png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
