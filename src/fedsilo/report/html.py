"""Self-contained HTML reports (images embedded, no external files) for runs and sweeps."""

from __future__ import annotations

import base64
import html
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fedsilo.fileio import atomic_write_text
from fedsilo.report import plots
from fedsilo.report.glossary import definitions
from fedsilo.report.summary import (
    empirical_epsilon_line,
    final_rows,
    fmt,
    headline_columns,
    scope_table,
    secure_aggregation_line,
)
from fedsilo.report.tasks import presenter_for
from fedsilo.run.folder import RunDir

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:1.6rem;margin:0 0 4px} h2{font-size:1.2rem;margin:28px 0 8px;border-bottom:2px solid #dfe3ea;padding-bottom:4px}
h3{font-size:1rem;margin:18px 0 6px}
.sub{color:#5a6472;margin-bottom:18px}
section{background:#fff;border:1px solid #e3e6ec;border-radius:8px;padding:4px 18px 14px;margin:14px 0}
table{border-collapse:collapse;font-size:.85rem;margin:8px 0;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #dfe3ea;padding:4px 8px;text-align:right;white-space:nowrap}
th{background:#eef1f5;white-space:normal;overflow-wrap:anywhere;vertical-align:bottom;max-width:9em} td:first-child,th:first-child{text-align:left}
img{max-width:100%;height:auto;border:1px solid #eef0f3;border-radius:4px;margin:6px 0}
.note{background:#fff8e6;border-left:4px solid #f0b429;padding:6px 10px;font-size:.88rem;margin:8px 0}
dl{font-size:.86rem} dt{font-weight:600;margin-top:6px} dd{margin:0 0 0 14px;color:#404a59}
code{background:#eef1f5;padding:1px 4px;border-radius:3px;font-size:.85em}
.kv td{text-align:left}
"""


@dataclass
class Section:
    """A report section: a title and its HTML body."""

    title: str
    body: str
    metrics: list[str] = field(default_factory=list)


def esc(text: object) -> str:
    return html.escape(str(text))


def img(png: bytes | None, alt: str) -> str:
    """An <img> with the PNG embedded as a data URI ('' when there is no image)."""
    if not png:
        return ""
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def img_file(path: Path, alt: str) -> str:
    return img(path.read_bytes(), alt) if path.is_file() else ""


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def markdown_tables(md: str) -> str:
    """Render the Markdown tables (and plain paragraphs) of a summary.md as HTML."""
    out, block = [], []

    def flush() -> None:
        if block:
            cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in block]
            cells = [r for r in cells if not all(re.fullmatch(r":?-+:?", c) for c in r)]
            out.append(table(cells[0], cells[1:]))
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
            out.append(f"<p>{esc(line)}</p>")
    flush()
    return "\n".join(out)


def page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    metrics = [m for s in sections for m in s.metrics]
    defs = definitions(metrics)
    body = "".join(f"<section><h2>{esc(s.title)}</h2>{s.body}</section>" for s in sections if s.body)
    if defs:
        items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in defs)
        body += f"<section><h2>Metric definitions</h2><dl>{items}</dl></section>"
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{esc(title)}</title>"
            f"<style>{_CSS}</style></head><body><main><h1>{esc(title)}</h1><div class='sub'>{esc(subtitle)}</div>"
            f"{body}</main></body></html>")


# --------------------------------------------------------------------------------------------
# Run reports
# --------------------------------------------------------------------------------------------


def _summary_section(run: RunDir) -> Section:
    cfg, env = run.cfg, run.read_env()
    ver = env.get("versions", {})
    git = env.get("git", {})
    resumes = env.get("resumes", [])
    items = [
        ("task", cfg.experiment.task), ("mode", cfg.experiment.mode), ("engine", env.get("engine", "?")),
        ("sites", f"{cfg.federation.num_sites}: {', '.join(_site_names(run))}"),
        ("rounds", cfg.federation.rounds), ("strategy", cfg.federation.strategy.name),
        ("partition", cfg.partition.name if cfg.data.source != "volumes" else "one data source per site"),
        ("data", cfg.data.source + (f" ({cfg.data.path})" if cfg.data.path else "")),
        ("seed", cfg.experiment.seed), ("started", env.get("start_time", "?")),
        ("resumed", ", ".join(f"after round {r['from_round']}" for r in resumes) or "no"),
        ("versions", ", ".join(f"{k} {v}" for k, v in ver.items() if v != "not installed")),
        ("commit", f"{git.get('commit', '?')}{' (uncommitted changes)' if git.get('dirty') else ''}"),
    ]
    body = "<table class='kv'>" + "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in items)
    body += "</table><p>Repeat with <code>fedsilo run config.toml --out NEW_DIR</code> from this folder " \
            "(the resolved config holds every setting, including the seed).</p>"
    return Section("Experiment", body)


def _site_names(run: RunDir) -> list[str]:
    rows = final_rows(run)
    return [s for s in rows if s != "global"] or [f"site-{i + 1}" for i in range(run.cfg.federation.num_sites)]


def _partition_section(run: RunDir) -> Section:
    png = run.path / "partition.png"
    csv_path = run.path / "partition.csv"
    if not png.is_file():
        return Section("Data at each site", "")
    lines = [line.split(",") for line in csv_path.read_text(encoding="utf-8").splitlines()] if csv_path.is_file() else []
    return Section("Data at each site", img_file(png, "partition") + (table(lines[0], lines[1:]) if lines else ""))


def _curves_section(run: RunDir, rows: list[dict], metrics: Sequence[str]) -> Section:
    png = plots.curves_png(rows, metrics, title="global (black) and per site")
    note = ("<p>Global = the aggregated model on the held-out test split (server side) or the "
            "example-weighted mean of the sites' validation metrics; site lines are each site's own "
            "validation (or, in local mode, its own model).</p>")
    return Section("Convergence", note + img(png, "convergence curves"), list(metrics))


def _final_section(run: RunDir) -> Section:
    header, body = scope_table(run, headline_columns(run, presenter_for(run.cfg)))
    return Section("Final metrics", table(header, body) if body else "", list(header[1:]))


def _privacy_section(run: RunDir, rows: list[dict]) -> Section:
    parts, metrics = [], []
    privacy = run.cfg.privacy
    if privacy.active:
        parts.append(f"<p>Differential privacy ({esc(privacy.mode)} level): {esc(privacy.guarantee)}.</p>")
    empirical = empirical_epsilon_line(run)
    if empirical:
        parts.append(f"<p><b>{esc(empirical)}</b></p>")
    secure = secure_aggregation_line(run)
    if secure:
        parts.append(f"<p>{esc(secure)}</p>")
    eps = [m for m in ("train_epsilon", "epsilon") if plots.series(rows, m)]
    if eps:
        parts.append(img(plots.curves_png(rows, eps, title="privacy budget spent"), "epsilon"))
        metrics += eps
    audit = run.path / "audit.json"
    if audit.is_file():
        data = json.loads(audit.read_text(encoding="utf-8"))
        for name, result in data.get("attacks", {}).items():
            numbers = {k: v for k, v in result.items() if isinstance(v, (int, float))}
            parts.append(f"<h3>{esc(name)}</h3>" + table(list(numbers), [[fmt(v) for v in numbers.values()]]))
            metrics += list(numbers)
            for note in (result.get("note"), (result.get("details") or {}).get("bound")):
                if note:
                    parts.append(f"<div class='note'>{esc(note)}</div>")
        for png in sorted(run.path.glob("audit/*.png")):
            parts.append(img_file(png, png.stem))
    if not parts:
        parts.append("<p>No formal differential privacy in this run and no audit yet "
                     f"(<code>fedsilo audit {esc(run.path)}</code> measures leakage).</p>")
    return Section("Privacy", "".join(parts), metrics)


def run_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` into a run folder; return its path."""
    run = RunDir.open(run_dir)
    rows = run.read_metrics()
    task = presenter_for(run.cfg)
    sections = [
        _summary_section(run),
        _partition_section(run),
        _curves_section(run, rows, task.curve_metrics()),
        _final_section(run),
        *[Section(t, b, m) for t, b, m in task.report_sections(run.path)],
        _privacy_section(run, rows),
    ]
    departures = task.protocol_notes()
    if departures:
        sections.append(Section("Departures from the reference protocols",
                                "<ul>" + "".join(f"<li>{esc(d)}</li>" for d in departures) + "</ul>"))
    title = f"{run.cfg.experiment.name}: {run.cfg.experiment.task}, {run.cfg.experiment.mode}"
    out = run.path / REPORT_FILE
    atomic_write_text(out, page(title, str(run.path), sections))
    logger.info("Report: %s", out)
    return out


# --------------------------------------------------------------------------------------------
# Sweep reports
# --------------------------------------------------------------------------------------------


def sweep_report(sweep_dir: str | Path) -> Path:
    """Write ``report.html`` for a sweep folder: its comparison tables, bars and run links."""
    sweep_dir = Path(sweep_dir)
    spec = json.loads((sweep_dir / "sweep.json").read_text(encoding="utf-8"))
    md_path = sweep_dir / "summary.md"
    sections = [Section("Sweep", table(["setting", "value"], [
        ["config", spec["config"]], ["grid", json.dumps(spec["grid"])], ["modes", ", ".join(spec["modes"])],
        ["seeds", ", ".join(map(str, spec["seeds"]))], ["overrides", " ".join(spec["overrides"]) or "none"]]))]
    metrics: list[str] = []
    if md_path.is_file():
        md = md_path.read_text(encoding="utf-8")
        metrics = re.findall(r"\b(?:test|val)_[a-z0-9_]+", md)
        title = "Comparison (mean ± std over seeds)" if len(spec["seeds"]) > 1 else "Comparison (one seed)"
        sections.append(Section(title, markdown_tables(md), metrics))
    bars = _sweep_bars(sweep_dir)
    if bars:
        sections.append(Section("Primary metric by setting and mode", bars))
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


def _sweep_bars(sweep_dir: Path) -> str:
    """Bar charts (mean ± std over seeds) of the test metrics in summary.csv, grid point x mode."""
    import csv

    from fedsilo.report.summary import mean_std

    path = sweep_dir / "summary.csv"
    if not path.is_file():
        return ""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return ""
    fixed = {"mode", "seed", "run"}
    metric_cols = [c for c in rows[0] if c.startswith("test_") and not c.endswith(("_n", "_loss", "_ci_low", "_ci_high"))]
    grid_cols = [c for c in rows[0] if c not in fixed and not c.startswith(("test_", "val_"))]
    parts = []
    for metric in metric_cols[:6]:
        values: dict[str, dict[str, list[float]]] = {}
        for r in rows:
            if r.get(metric, "") == "":
                continue
            combo = ", ".join(f"{c.split('.')[-1]}={r[c]}" for c in grid_cols) or "default"
            values.setdefault(combo, {}).setdefault(r["mode"], []).append(float(r[metric]))
        groups = {g: {m: mean_std(v) for m, v in d.items()} for g, d in values.items()}
        parts.append(img(plots.bars_png(groups, metric), metric))
    return "".join(parts)


def _privacy_utility(sweep_dir: Path) -> str:
    """Quality and the strongest attack's AUC over ``privacy.epsilon`` when the sweep varied it."""
    import csv

    from fedsilo.report.summary import mean_std

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
    return note + img(png, "privacy-utility") if png else ""


# --------------------------------------------------------------------------------------------
# Comparisons
# --------------------------------------------------------------------------------------------


def compare_report(run_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Side-by-side final metrics and overlaid curves of several runs, written to ``out`` (HTML)."""
    from fedsilo.report.summary import final_metrics

    runs = [RunDir.open(p) for p in run_dirs]
    names = _unique_names(runs)
    metrics = {n: final_metrics(r) for n, r in zip(names, runs)}
    keys = sorted({k for m in metrics.values() for k in m if not k.endswith("_n")})
    settings = [["task", *(r.cfg.experiment.task for r in runs)], ["mode", *(r.cfg.experiment.mode for r in runs)],
                ["strategy", *(r.cfg.federation.strategy.name for r in runs)],
                ["sites", *(r.cfg.federation.num_sites for r in runs)], ["rounds", *(r.cfg.federation.rounds for r in runs)],
                ["seed", *(r.cfg.experiment.seed for r in runs)], ["folder", *(r.path for r in runs)]]
    rows = [[k, *(fmt(metrics[n].get(k)) for n in names)] for k in keys]
    curve_keys = list(dict.fromkeys(k for r in runs for k in presenter_for(r.cfg).curve_metrics()))
    png = plots.overlay_curves_png({n: r.read_metrics() for n, r in zip(names, runs)}, curve_keys)
    sections = [Section("Runs", table(["", *names], settings)),
                Section("Final metrics", table(["metric", *names], rows), keys),
                Section("Curves (global)", img(png, "overlaid curves"), curve_keys)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, page("Comparison", ", ".join(names), sections))
    return out


def _unique_names(runs: Sequence[RunDir]) -> list[str]:
    names = [r.path.name for r in runs]
    if len(set(names)) < len(names):
        names = [str(r.path) for r in runs]
    return names
