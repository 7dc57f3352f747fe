"""Check report pages as a reader's browser lays them out: headless Chromium at given widths.

:func:`check_page` loads an HTML page (a run, sweep or comparison report, the demo's index) in
headless Chromium at each width and returns what a reader would trip over:

- horizontal overflow: the page is wider than the window, or an element reaches past its right
  edge outside a horizontally scrollable wrapper; at a laptop width (1200 px or more) a table
  that needs its scroll wrapper counts too (it should fit there);
- table headers and row labels (a row's first cell) that break inside a word (they may break
  at spaces and at the ``<wbr>`` after an underscore, nowhere else) or overflow their cell;
- images without a caption (an ``<img>`` needs a non-empty ``alt`` and a ``<figure>`` with a
  non-empty ``<figcaption>``) or that did not load.

The measurements run in the page itself (a script measures the laid-out elements and writes its
findings into the DOM, which ``--dump-dom`` prints). Chromium is not a Python dependency: Debian's
``chromium`` (or ``chromium-browser``/``google-chrome``) must be on PATH.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--disable-dev-shm-usage", "--mute-audio"]
#: At this width or wider, a table that needs its horizontal scroll wrapper is a problem too.
LAPTOP_WIDTH = 1200
_MARK = "data-fedsilo-check"

# Runs after the page (and its images) loaded; writes {width, problems, scrollers} into the DOM.
_SCRIPT = r"""
<script>
window.addEventListener('load', function () {
  var W = window.innerWidth, doc = document.documentElement, problems = [], scrollers = [];
  function where(el) {
    var sec = el.closest('section'), h = sec && sec.querySelector('h2,h3');
    var text = (el.getAttribute('alt') || el.textContent || '').replace(/\s+/g, ' ').trim().slice(0, 60);
    return el.tagName.toLowerCase() + (text ? ' "' + text + '"' : '') +
      (h ? ' in "' + h.textContent.trim() + '"' : '');
  }
  function scrolls(el) {
    var s = getComputedStyle(el).overflowX;
    return (s === 'auto' || s === 'scroll') && el !== document.body && el !== doc;
  }
  function inScroller(el) {
    for (var p = el.parentElement; p; p = p.parentElement) { if (scrolls(p)) return true; }
    return false;
  }
  if (doc.scrollWidth > W + 1) {
    problems.push('the page is ' + doc.scrollWidth + ' px wide in a ' + W + ' px window (horizontal scrolling)');
  }
  var wide = [];
  document.body.querySelectorAll('*').forEach(function (el) {
    var r = el.getBoundingClientRect();
    if (r.width === 0 || inScroller(el)) return;
    if (r.right > W + 1 && !wide.some(function (w) { return w.contains(el); })) {
      wide.push(el);
      problems.push(where(el) + ' reaches ' + Math.round(r.right) + ' px, past the ' + W + ' px window');
    }
    if (scrolls(el) && el.scrollWidth > el.clientWidth + 1) {
      scrollers.push(where(el.firstElementChild || el) + ' needs horizontal scrolling (' + el.scrollWidth +
                     ' px in ' + el.clientWidth + ' px)');
    }
  });
  document.querySelectorAll('th, tr > td:first-child').forEach(function (th) {
    var label = th.textContent.replace(/\s+/g, ' ').trim();
    var kind = th.tagName === 'TH' ? 'header' : 'row label';
    if (th.scrollWidth > th.clientWidth + 1) problems.push(kind + ' "' + label + '" overflows its cell');
    var walker = document.createTreeWalker(th, NodeFilter.SHOW_TEXT), node;
    while ((node = walker.nextNode())) {
      var re = /\S+/g, m;
      while ((m = re.exec(node.data))) {
        var range = document.createRange();
        range.setStart(node, m.index);
        range.setEnd(node, m.index + m[0].length);
        var tops = {};
        Array.prototype.forEach.call(range.getClientRects(), function (rc) {
          if (rc.width > 0) tops[Math.round(rc.top)] = 1;
        });
        if (Object.keys(tops).length > 1) {
          problems.push(kind + ' "' + label + '" breaks inside "' + m[0] + '"');
        }
      }
    }
  });
  document.querySelectorAll('img').forEach(function (im) {
    var fig = im.closest('figure'), cap = fig && fig.querySelector('figcaption');
    if (!(im.getAttribute('alt') || '').trim()) problems.push(where(im) + ' has no alt text');
    if (!cap || !cap.textContent.trim()) problems.push(where(im) + ' has no caption (figure/figcaption)');
    if (!im.complete || im.naturalWidth === 0) problems.push(where(im) + ' did not load');
  });
  var json = JSON.stringify({width: W, problems: problems, scrollers: scrollers});
  document.body.setAttribute('MARK', btoa(unescape(encodeURIComponent(json))));
});
</script>
""".replace("MARK", _MARK)


def find_browser() -> str | None:
    """Path of a headless-capable Chromium on PATH, or None."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _browser(browser: str | None) -> str:
    found = browser or find_browser()
    if not found:
        raise FileNotFoundError(f"no headless browser found on PATH (tried {', '.join(BROWSERS)}); "
                                "install Debian's chromium (apt-get install chromium)")
    return found


def _instrumented(html: str, base: Path) -> str:
    """The page with a <base> (its relative links resolve as before) and the measuring script."""
    head = f'<base href="{base.resolve().as_uri()}/">'
    m = re.search(r"<head[^>]*>", html, flags=re.IGNORECASE)
    html = html[:m.end()] + head + html[m.end():] if m else head + html
    end = html.lower().rfind("</body>")
    return html[:end] + _SCRIPT + html[end:] if end >= 0 else html + _SCRIPT


def measure(html_path: str | Path, width: int, browser: str | None = None, height: int = 900,
            timeout: float = 120.0) -> dict:
    """Lay out ``html_path`` at ``width`` px in headless Chromium; return the script's findings
    (``width``, ``problems``, ``scrollers``)."""
    html_path = Path(html_path)
    if not html_path.is_file():
        raise FileNotFoundError(f"no HTML page at {html_path}")
    if width < 200:
        raise ValueError(f"width must be at least 200 px, got {width}")
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(_instrumented(html_path.read_text(encoding="utf-8"), html_path.parent), encoding="utf-8")
        proc = subprocess.run([_browser(browser), *FLAGS, f"--user-data-dir={tmp}/profile",
                               f"--window-size={width},{height}", "--virtual-time-budget=10000", "--dump-dom",
                               page.as_uri()], capture_output=True, text=True, timeout=timeout)
    m = re.search(rf'{_MARK}="([A-Za-z0-9+/=]*)"', proc.stdout)
    if proc.returncode != 0 or not m:
        raise RuntimeError(f"headless Chromium did not measure {html_path} at {width} px (exit {proc.returncode}): "
                           f"{proc.stderr.strip()[-400:]}")
    found = json.loads(base64.b64decode(m.group(1)).decode("utf-8"))
    if found["width"] != width:
        raise RuntimeError(f"headless Chromium laid {html_path} out {found['width']} px wide, not {width} px")
    return found


def check_page(html_path: str | Path, widths: Sequence[int] = (1400, 800), browser: str | None = None) -> list[str]:
    """What a reader would trip over in ``html_path`` at each width (empty: nothing).

    Each problem reads ``"<width> px: <what and where>"``. Raises :class:`FileNotFoundError`
    when the page or a browser is missing, :class:`RuntimeError` when the browser fails.
    """
    problems = []
    for width in widths:
        found = measure(html_path, width, browser)
        issues = found["problems"] + (found["scrollers"] if width >= LAPTOP_WIDTH else [])
        problems += [f"{width} px: {p}" for p in dict.fromkeys(issues)]
    return problems


def screenshot(html_path: str | Path, png: str | Path, width: int = 1280, height: int = 8000,
               browser: str | None = None) -> Path:
    """Screenshot ``html_path`` in a ``width`` x ``height`` window (tall, so the page fits) into ``png``."""
    png = Path(png)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([_browser(browser), *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--screenshot={png.resolve()}", Path(html_path).resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
    return png
