"""HTML building blocks of every report page: the page itself, sections, captioned figures, tables.

Pages are self-contained (images embedded as data URIs, styles inline) and read at laptop and
half-screen widths: tables sit in horizontally scrollable wrappers, wide ones are turned on their
side, headers break only between words (and after underscores), every image has a caption.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fedsilo.report.glossary import definitions

#: The file name of every report page in its folder.
REPORT_FILE = "report.html"

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:1.6rem;margin:0 0 4px} h2{font-size:1.2rem;margin:28px 0 8px;border-bottom:2px solid #dfe3ea;padding-bottom:4px}
h3{font-size:1rem;margin:18px 0 6px}
.sub{color:#5a6472;margin-bottom:18px;overflow-wrap:anywhere}
section{background:#fff;border:1px solid #e3e6ec;border-radius:8px;padding:4px 18px 14px;margin:14px 0}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:.85rem;margin:8px 0}
th,td{border:1px solid #dfe3ea;padding:4px 8px;text-align:right;white-space:nowrap}
th{background:#eef1f5;white-space:normal;word-break:normal;overflow-wrap:normal;hyphens:manual;vertical-align:bottom}
td:first-child,th:first-child{text-align:left}
figure{margin:8px 0 16px;max-width:100%} figcaption{font-size:.85rem;color:#4a5463;margin-top:2px}
img{max-width:100%;height:auto;border:1px solid #eef0f3;border-radius:4px;margin:4px 0;display:block}
.note{background:#fff8e6;border-left:4px solid #f0b429;padding:6px 10px;font-size:.88rem;margin:8px 0}
dl{font-size:.86rem} dt{font-weight:600;margin-top:6px} dd{margin:0 0 0 14px;color:#404a59}
code{background:#eef1f5;padding:1px 4px;border-radius:3px;font-size:.85em;overflow-wrap:anywhere}
.kv th,.kv td{text-align:left} .kv td+td{white-space:normal;overflow-wrap:anywhere}
.figs{display:flex;flex-wrap:wrap;gap:4px 20px;align-items:flex-start} .figs figure{max-width:100%}
@media (min-width:1000px){.figs figure{max-width:calc(50% - 10px)}}
"""

#: A table with more columns than this (and fewer rows than columns) is shown on its side.
MAX_COLUMNS = 8


@dataclass
class Section:
    """A report section: a title and its HTML body."""

    title: str
    body: str
    metrics: list[str] = field(default_factory=list)


def esc(text: object) -> str:
    return html.escape(str(text))


def figure(inner: str, caption: str, width: int | None = None) -> str:
    """``inner`` (an image) in a <figure> with ``caption`` below it; ``width`` (px, the image's)
    keeps the caption from widening the figure past its image."""
    style = f" style='width:{width}px'" if width else ""
    return f"<figure{style}>{inner}<figcaption>{esc(caption)}</figcaption></figure>"


def img(png: bytes | None, alt: str, caption: str | None = None) -> str:
    """A captioned <img> with the PNG embedded as a data URI ('' when there is no image).

    ``caption`` defaults to ``alt``; an empty caption gives the bare image. An image narrower
    than :data:`MIN_IMAGE_WIDTH` is shown enlarged by a whole factor (sharp pixels).
    """
    if not png:
        return ""
    width = png_width(png)
    shown = width * math.ceil(MIN_IMAGE_WIDTH / width) if 0 < width < MIN_IMAGE_WIDTH else width
    style = f' style="width:{shown}px;image-rendering:pixelated"' if shown != width else ""
    tag = f'<img alt="{esc(alt)}"{style} src="data:image/png;base64,{base64.b64encode(png).decode()}">'
    caption = alt if caption is None else caption
    return figure(tag, caption, shown or None) if caption else tag


#: Images narrower than this (e.g. a strip of 28 px samples) are shown enlarged, pixel for pixel.
MIN_IMAGE_WIDTH = 320


def png_width(png: bytes) -> int:
    """The width in pixels of PNG bytes (0 when they are not a PNG)."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or len(png) < 24:
        return 0
    return int.from_bytes(png[16:20], "big")


def img_file(path: Path, alt: str, caption: str | None = None) -> str:
    """:func:`img` of a PNG file ('' when the file does not exist)."""
    return img(path.read_bytes(), alt, caption) if path.is_file() else ""


def header_cell(text: object) -> str:
    """Escaped header text that may break after an underscore, slash or '=' (and at spaces), never
    inside a word: ``test_accuracy`` wraps as ``test_`` / ``accuracy``, not ``test_accurac`` / ``y``."""
    return re.sub(r"([_/=])", r"\1<wbr>", esc(text))


def table(header: Sequence[object], rows: Sequence[Sequence[object]], cls: str = "") -> str:
    """A table in a horizontally scrollable wrapper (a narrow window scrolls it, not the page)."""
    head = "".join(f"<th>{header_cell(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    attr = f" class='{cls}'" if cls else ""
    return f"<div class='scroll'><table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def fit_table(header: Sequence[object], rows: Sequence[Sequence[object]], max_columns: int = MAX_COLUMNS) -> str:
    """:func:`table`, turned on its side when it has more than ``max_columns`` columns and fewer
    rows than columns: each row becomes a column, headed by the leading cells that tell the rows
    apart (e.g. ``federated`` or ``method=gin / federated``); each former column becomes a row."""
    header, rows = [str(h) for h in header], [[str(c) for c in r] for r in rows]
    if len(header) <= max_columns or len(rows) + 1 >= len(header) or not rows:
        return table(header, rows)
    k = next((k for k in range(1, min(3, len(header) - 1) + 1) if len({tuple(r[:k]) for r in rows}) == len(rows)), 1)
    varying = [j for j in range(k) if len({r[j] for r in rows}) > 1] or [0]
    labels = [" / ".join(r[j] for j in varying) for r in rows]
    new_header = [" / ".join(header[j] for j in varying), *labels]
    new_rows = [[header[j], *(r[j] if j < len(r) else "" for r in rows)] for j in range(len(header)) if j not in varying]
    return table(new_header, new_rows)


def markdown_tables(md: str) -> str:
    """Render the Markdown tables (and plain paragraphs) of a summary.md as HTML."""
    out, block = [], []

    def flush() -> None:
        if block:
            cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in block]
            cells = [r for r in cells if not all(re.fullmatch(r":?-+:?", c) for c in r)]
            out.append(fit_table(cells[0], cells[1:]))
            block.clear()

    for line in md.splitlines():
        if line.strip().startswith("|"):
            block.append(line)
            continue
        flush()
        if line.startswith("#"):
            level = min(3, len(line) - len(line.lstrip("#")) + 1)
            out.append(f"<h{level}>{esc(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{_inline_code(esc(line))}</p>")
    flush()
    return "\n".join(out)


def _inline_code(text: str) -> str:
    """Markdown's `code` spans as <code> (in already escaped text)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """A whole HTML page: title, subtitle, the non-empty sections, and the definitions of the
    metrics they name."""
    metrics = [m for s in sections for m in s.metrics]
    defs = definitions(metrics)
    body = "".join(f"<section><h2>{esc(s.title)}</h2>{s.body}</section>" for s in sections if s.body)
    if defs:
        items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in defs)
        body += f"<section><h2>Metric definitions</h2><dl>{items}</dl></section>"
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body><main><h1>{esc(title)}</h1><div class='sub'>{esc(subtitle)}</div>"
            f"{body}</main></body></html>")
