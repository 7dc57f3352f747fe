"""The sweep report: a sweep folder's comparison tables, bar charts per setting and mode, the
privacy-utility trade-off when the sweep varied epsilon, and links to its runs' reports."""

from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path

from fedsilo.fileio import atomic_write_text
from fedsilo.report import plots
from fedsilo.report.markup import REPORT_FILE, Section, esc, img, markdown_tables, page, table
from fedsilo.report.summary import mean_std

logger = logging.getLogger(__name__)


def sweep_report(sweep_dir: str | Path) -> Path:
    """Write ``report.html`` for a sweep folder: its comparison tables, bars and run links."""
    sweep_dir = Path(sweep_dir)
    spec = json.loads((sweep_dir / "sweep.json").read_text(encoding="utf-8"))
    md_path = sweep_dir / "summary.md"
    sections = [Section("Sweep", table(["setting", "value"], [
        ["config", spec["config"]], ["grid", json.dumps(spec["grid"])], ["modes", ", ".join(spec["modes"])],
        ["seeds", ", ".join(map(str, spec["seeds"]))], ["overrides", " ".join(spec["overrides"]) or "none"]],
        cls="kv"))]
    metrics: list[str] = []
    if md_path.is_file():
        md = md_path.read_text(encoding="utf-8")
        metrics = re.findall(r"\b(?:test|val)_[a-z0-9_]+", md)
        title = "Comparison (mean ± std over seeds)" if len(spec["seeds"]) > 1 else "Comparison (one seed)"
        sections.append(Section(title, markdown_tables(re.sub(r"\A# [^\n]*\n", "", md)), metrics))
    bars = _sweep_bars(sweep_dir, len(spec["seeds"]))
    if bars:
        sections.append(Section("Test metrics by setting and mode", bars))
    trade_off = _privacy_utility(sweep_dir)
    if trade_off:
        sections.append(Section("Privacy-utility trade-off", trade_off, ["privacy_epsilon"]))
    links = []
    for report in sorted(sweep_dir.glob("*/*/seed-*/" + REPORT_FILE)):
        rel = report.relative_to(sweep_dir)
        links.append(f"<li><a href='{esc(rel)}'>{esc(rel.parent)}</a></li>")
    if links:
        sections.append(Section("Runs", "<ul>" + "".join(links) + "</ul>"))
    out = sweep_dir / REPORT_FILE
    atomic_write_text(out, page("Sweep report", str(sweep_dir), sections))
    logger.info("Sweep report: %s", out)
    return out


def setting_label(values: dict[str, str]) -> str:
    """A short axis label of one grid point: ``key=value`` per swept setting (the key's last part,
    numbers to 3 significant digits), one per line; ``one setting`` when nothing was swept."""
    if not values:
        return "one setting"
    return "\n".join(f"{key.split('.')[-1]}={short_value(v)}" for key, v in values.items())


def short_value(value: str) -> str:
    """A swept value as written on an axis: ``0.5199999809265137`` -> ``0.52``, text unchanged."""
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.3g}" if number == number and abs(number) != float("inf") else value


def _sweep_bars(sweep_dir: Path, seeds: int = 1) -> str:
    """Bar charts (mean ± std over seeds) of the test metrics in summary.csv, grid point x mode.

    The grid points are the columns before ``mode`` in summary.csv (the swept settings)."""
    path = sweep_dir / "summary.csv"
    if not path.is_file():
        return ""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return ""
    columns = list(rows[0])
    metric_cols = [c for c in columns if c.startswith("test_") and not c.endswith(("_n", "_loss", "_ci_low", "_ci_high"))]
    grid_cols = columns[:columns.index("mode")] if "mode" in columns else []
    spread = "mean ± std over seeds" if seeds > 1 else "one seed"
    parts = []
    for metric in metric_cols[:6]:
        values: dict[str, dict[str, list[float]]] = {}
        for r in rows:
            if r.get(metric, "") == "":
                continue
            combo = setting_label({c: r[c] for c in grid_cols})
            values.setdefault(combo, {}).setdefault(r["mode"], []).append(float(r[metric]))
        groups = {g: {m: mean_std(v) for m, v in d.items()} for g, d in values.items()}
        where = "per swept setting (x-axis) and mode (colour)" if grid_cols else "per mode (colour)"
        parts.append(img(plots.bars_png(groups, metric), metric, f"Final {metric} {where}; {spread}."))
    return f"<div class='figs'>{''.join(parts)}</div>" if parts else ""


def _privacy_utility(sweep_dir: Path) -> str:
    """Quality and the strongest attack's AUC over ``privacy.epsilon`` when the sweep varied it."""
    path = sweep_dir / "summary.csv"
    spec = json.loads((sweep_dir / "sweep.json").read_text(encoding="utf-8"))
    if not path.is_file() or "privacy.epsilon" not in spec.get("grid", {}):
        return ""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("mode") == "federated"]
    if not rows or "privacy.epsilon" not in rows[0]:
        return ""
    quality = next((c for c in rows[0] if c.startswith("test_") and not c.endswith(("_n", "_loss", "_ci_low",
                                                                                     "_ci_high"))), None)
    aucs = [c for c in rows[0] if c.startswith("audit_") and c.endswith("_auc")]
    if quality is None:
        return ""
    attack = max(aucs, key=lambda c: max((float(r[c]) for r in rows if r.get(c)), default=0.0)) if aucs else None

    def order(eps: str) -> float:
        return float("inf") if eps in ("inf", "") else float(eps)

    points = []
    for eps in sorted({r["privacy.epsilon"] for r in rows}, key=order):
        group = [r for r in rows if r["privacy.epsilon"] == eps]
        q = mean_std([float(r[quality]) for r in group if r.get(quality)])
        a = None
        if attack is not None and any(r.get(attack) for r in group):
            a = mean_std([float(r[attack]) for r in group if r.get(attack)])
        points.append((eps, q, a))
    png = plots.privacy_utility_png(points, quality, attack or "")
    note = ("<p>Federated runs; left axis: final test quality, right axis: the attack with the highest AUC "
            "in any run (0.5 = the attacker cannot tell members from non-members).</p>")
    caption = (f"Final {quality} (left axis) and {attack or 'no attack'} (right axis) over the privacy budget "
               "epsilon, from the strongest privacy to none (inf).")
    return note + img(png, "privacy-utility trade-off", caption) if png else ""
