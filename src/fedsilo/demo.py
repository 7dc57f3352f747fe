"""``fedsilo demo``: the headline demonstration on built-in phantoms, one report linking it all.

Each step is an ordinary fedsilo command on a shipped config (so every number in the demo can
be reproduced and changed by hand); the demo only chains them and writes ``index.html``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .report.html import Section, esc, markdown_tables, page
from .runs import RunDirError, atomic_write_text

logger = logging.getLogger(__name__)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@dataclass
class Step:
    """One demo step: a title, what it shows, and the function that runs it into a folder."""

    name: str
    title: str
    explains: str
    run: Callable[[Path], Path]


def _sweep(config: str, modes: str, *sets: str) -> Callable[[Path], Path]:
    def run(out: Path) -> Path:
        from .sweep import SweepSpec, run_sweep

        spec = SweepSpec(config=str(CONFIGS / config), modes=modes.split(","), seeds=[0], overrides=list(sets))
        run_sweep(spec, out)
        return out

    return run


def demo_steps() -> list[Step]:
    """The demo's steps, in order."""
    return [
        Step("classification", "Federated DR grading on fundus phantoms",
             "Three hospitals with different cameras and grade mixes (Dirichlet label skew) train one grading "
             "CNN with FedAvg; the same data pooled (centralised) is the upper reference, each hospital alone "
             "(local) the lower one.",
             _sweep("demo-classify.toml", "federated,centralised,local")),
    ]


def run_demo(out: str | Path) -> Path:
    """Run every step into ``out`` (a new folder) and write ``out/index.html``."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise RunDirError(f"demo folder {str(out)!r} exists and is not empty; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    t0 = time.monotonic()
    for i, step in enumerate(demo_steps(), start=1):
        logger.info("Demo step %d: %s", i, step.title)
        t = time.monotonic()
        folder = step.run(out / step.name)
        body = f"<p>{esc(step.explains)}</p><p><a href='{esc(folder.name)}/report.html'>Full report</a> " \
               f"({time.monotonic() - t:.0f} s)</p>"
        summary = folder / "summary.md"
        if summary.is_file():
            body += markdown_tables(summary.read_text(encoding="utf-8"))
        sections.append(Section(f"{i}. {step.title}", body))
    index = out / "index.html"
    atomic_write_text(index, page("fedsilo demo", f"{out} — {time.monotonic() - t0:.0f} s in all", sections))
    return index
