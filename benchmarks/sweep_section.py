"""Put a finished sweep's tables into RESULTS.md (the study benchmarks: FedGAN, FedGIN, privacy).

    python -m benchmarks.sweep_section SWEEP_DIR NAME "TITLE" "COMMAND" [--tables "3D Dice,..."]
        [--before FILE] [--after FILE] [--seconds S]

``--tables`` keeps the summary.md tables whose heading starts with one of the given texts (the
main table is kept unless --no-main); ``--before``/``--after`` are Markdown files with the prose
(protocol, paper figures, reading) around the tables.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import write_section


def sweep_tables(sweep_dir: Path, headings: list[str], main: bool = True) -> str:
    md = (sweep_dir / "summary.md").read_text(encoding="utf-8")
    first, *parts = md.split("\n## ")
    out = []
    if main:
        out.append(first.split("\n", 1)[1].strip())  # without the "# Sweep summary" title
    for part in parts:
        title, _, body = part.partition("\n")
        if not headings or any(title.startswith(h) for h in headings):
            out.append(f"**{title.strip()}**\n\n{body.strip()}")
    return "\n\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("sweep_dir", type=Path)
    p.add_argument("name")
    p.add_argument("title")
    p.add_argument("command")
    p.add_argument("--tables", default="")
    p.add_argument("--no-main", action="store_true")
    p.add_argument("--before", type=Path)
    p.add_argument("--after", type=Path)
    p.add_argument("--seconds", type=float, default=0.0)
    a = p.parse_args()
    headings = [h.strip() for h in a.tables.split(",") if h.strip()]
    body = ""
    if a.before:
        body += a.before.read_text(encoding="utf-8").strip() + "\n\n"
    body += sweep_tables(a.sweep_dir, headings, not a.no_main)
    if a.after:
        body += "\n\n" + a.after.read_text(encoding="utf-8").strip()
    write_section(a.name, a.title, a.command, body + "\n", time.monotonic() - a.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
