"""``fedsilo demo``: the headline demonstration on built-in phantoms, one page linking it all.

Each step is an ordinary fedsilo command on a shipped config (:mod:`.steps`); the demo only
chains them, checks what each step narrates against its own numbers (:mod:`.claims`) and writes
``index.html``:

1. federated DR grading (classification), with and without label skew, against centralised;
2. FedGIN: CT-rich hospitals and an MRI-scarce hospital train one organ segmenter, without and
   with GIN augmentation;
3. a DCGAN pre-trained on phantom CT;
4. FedGAN: that DCGAN fine-tuned on fundus images across 3 hospitals;
5. a privacy audit of that generator (membership inference, distance to closest record, inversion).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

from fedsilo.demo.claims import Claim, step_claims
from fedsilo.demo.steps import CONFIGS, Step, demo_steps
from fedsilo.fileio import atomic_write_text
from fedsilo.report.markup import Section, esc, fit_table, img_file, markdown_tables, page, table
from fedsilo.run.folder import RunDir, RunDirError

__all__ = ["CONFIGS", "Claim", "Step", "demo_steps", "run_demo"]

logger = logging.getLogger(__name__)


def _summary(folder: Path, tables: tuple[str, ...] = ()) -> str:
    """The step's numbers: a sweep's summary tables (those under the ``tables`` headings, or all),
    a run's final metrics, an audit's summary."""
    summary = folder / "summary.md"
    if summary.is_file():
        md = summary.read_text(encoding="utf-8")
        if tables:
            parts = md.split("\n## ")
            md = "\n".join(f"### {p}" for p in parts[1:] if p.startswith(tables))
        return markdown_tables(md)
    audit = folder / "audit.md"
    if audit.is_file() and (folder / "audit.json").is_file():
        s = json.loads((folder / "audit.json").read_text(encoding="utf-8")).get("summary", {})
        rows = [[k, f"{v:.3f}" if isinstance(v, float) else str(v)] for k, v in s.items()]
        return table(["attack / measure", "value"], rows)
    if (folder / "config.toml").is_file():
        from fedsilo.report.summary import headline_columns, scope_table
        from fedsilo.report.tasks import presenter_for

        run = RunDir.open(folder)
        header, body = scope_table(run, headline_columns(run, presenter_for(run.cfg)))
        glob = [r for r in body if r[0] == "global"]
        return fit_table(header, glob or body)
    return ""


def _claims_html(claims: list[Claim]) -> str:
    if not claims:
        return ""
    rows = [["shown" if c.holds else "NOT shown", c.statement, c.evidence] for c in claims]
    return ("<p>What this step claims, checked on its own test numbers:</p><div class='kv'>"
            + table(["in this run", "claim", "measured"], rows) + "</div>")


def run_demo(out: str | Path, seed: int = 0, reduced: bool = False) -> Path:
    """Run every step into ``out`` (a new folder) and write ``out/index.html`` and ``out/claims.json``.

    Parameters
    ----------
    out : str or Path
        A new (or empty) folder.
    seed : int
        ``experiment.seed`` of every run.
    reduced : bool
        Run only the steps that narrate an effect, at their reduced size (the test suite's check
        that the story holds; the full demo's three-seed check is ``benchmarks/demo_seeds.py``).
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"demo seed must be a non-negative integer, got {seed!r}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise RunDirError(f"demo folder {str(out)!r} exists and is not empty; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    steps: list[Step] = [s for s in demo_steps() if s.reduced] if reduced else demo_steps()
    sections, claims, seconds = [], [], {}
    t0 = time.monotonic()
    for i, step in enumerate(steps, start=1):
        logger.info("Demo step %d/%d: %s", i, len(steps), step.title)
        t = time.monotonic()
        common = [f"experiment.seed={seed}", *(step.reduced if reduced else ())]
        folder = step.run(out / step.name, common)
        seconds[step.name] = round(time.monotonic() - t, 1)
        found = step_claims(step.name, out / step.name)
        claims += found
        for c in found:
            logger.info("Demo claim %s: %s (%s)", "shown" if c.holds else "NOT shown", c.statement, c.evidence)
        rel = folder.relative_to(out)
        body = (f"<p>{esc(step.explains)}</p><p><a href='{esc(rel)}/report.html'>Full report</a> "
                f"({seconds[step.name]:.0f} s)</p>" + _claims_html(found) + _summary(folder, step.tables))
        for caption, path in step.figures:
            path = path.replace("seed-0", f"seed-{seed}")
            if (folder / path).is_file():
                body += img_file(folder / path, caption)
        sections.append(Section(f"{i}. {step.title}", body))
    record = {"seed": seed, "reduced": reduced, "seconds": seconds, "claims": [asdict(c) for c in claims]}
    atomic_write_text(out / "claims.json", json.dumps(record, indent=2) + "\n")
    index = out / "index.html"
    atomic_write_text(index, page("fedsilo demo", f"{out} — seed {seed}, {time.monotonic() - t0:.0f} s in all",
                                  sections))
    return index
