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

from benchmarks.common import write_section


def keep_columns(table_md: str, columns: list[str]) -> str:
    """The Markdown table with only the grid/mode/seeds columns and those whose header starts with
    one of ``columns``."""
    lines = [line for line in table_md.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    keep = [i for i, h in enumerate(header) if h in ("grid", "mode", "seeds") or h.startswith(tuple(columns))]
    out = []
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        out.append("| " + " | ".join(cells[i] for i in keep if i < len(cells)) + " |")
    return "\n".join(out)


def sweep_tables(sweep_dir: Path, headings: list[str], main: bool = True, columns: list[str] | None = None) -> str:
    md = (sweep_dir / "summary.md").read_text(encoding="utf-8")
    first, *parts = md.split("\n## ")
    out = []
    if main:
        text = first.split("\n", 1)[1].strip()  # without the "# Sweep summary" title
        if columns:
            prose, _, table_md = text.partition("\n|")
            text = prose.strip() + "\n\n" + keep_columns("|" + table_md, columns)
        out.append(text)
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
    p.add_argument("--columns", default="", help="main table: keep only columns starting with these (comma-separated)")
    a = p.parse_args()
    headings = [h.strip() for h in a.tables.split(",") if h.strip()]
    body = ""
    if a.before:
        body += a.before.read_text(encoding="utf-8").strip() + "\n\n"
    columns = [c.strip() for c in a.columns.split(",") if c.strip()]
    body += sweep_tables(a.sweep_dir, headings, not a.no_main, columns or None)
    if a.after:
        body += "\n\n" + a.after.read_text(encoding="utf-8").strip()
    write_section(a.name, a.title, a.command, body + "\n", time.monotonic() - a.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
