"""Self-contained HTML reports (images embedded, no external files) for runs and sweeps."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from fedsilo.fileio import atomic_write_text
from fedsilo.report import plots
from fedsilo.report.markup import REPORT_FILE, Section, esc, fit_table, img, img_file, markdown_tables, page, table
from fedsilo.report.summary import (
    empirical_epsilon_line,
    final_rows,
    fmt,
    headline_columns,
    scope_table,
    secure_aggregation_line,
)
from fedsilo.report.sweep_page import _privacy_utility, sweep_report  # noqa: F401  (re-exported)
from fedsilo.report.tasks import presenter_for
from fedsilo.run.folder import RunDir

logger = logging.getLogger(__name__)

__all__ = ["REPORT_FILE", "Section", "compare_report", "esc", "fit_table", "img", "img_file", "markdown_tables",
           "page", "run_report", "sweep_report", "table"]


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
    body = ("<div class='scroll'><table class='kv'>"
            + "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in items) + "</table></div>")
    body += "<p>Repeat with <code>fedsilo run config.toml --out NEW_DIR</code> from this folder " \
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
    chart = img_file(png, "training samples per site and class",
                     "Training samples per site and class: how the training data are divided among the sites "
                     "(counts in the table below).")
    return Section("Data at each site", chart + (fit_table(lines[0], lines[1:]) if lines else ""))


def _curves_section(run: RunDir, rows: list[dict], metrics: Sequence[str]) -> Section:
    png = plots.curves_png(rows, metrics, title="global (black) and per site", max_cols=2)  # legible at 800 px
    note = ("<p>Global = the aggregated model on the held-out test split (server side) or the "
            "example-weighted mean of the sites' validation metrics; site lines are each site's own "
            "validation (or, in local mode, its own model).</p>")
    caption = ("Metrics over rounds: global in black (squares), each site in colour (circles); "
               "one panel per metric.")
    return Section("Convergence", note + img(png, "convergence curves", caption), list(metrics))


def _final_section(run: RunDir) -> Section:
    header, body = scope_table(run, headline_columns(run, presenter_for(run.cfg)))
    return Section("Final metrics", fit_table(header, body) if body else "", list(header[1:]))


#: Captions of the audit's figures (``audit/<stem>.png``).
AUDIT_CAPTIONS = {
    "roc": "ROC curves of the membership attacks, on linear (left) and log-log (right) axes; the dotted "
           "diagonal is guessing, and the log-log panel shows the low false-positive rates that matter.",
    "dcr_nearest": "Distance to closest record: the synthetic images closest to a training image (top row), "
                   "their nearest training images (middle) and their nearest never-used images (bottom). A "
                   "generator that copies would show near-identical top and middle rows.",
    "inversion_members": "Latent inversion of training images (members): the targets (top row) and the closest "
                         "images the generator can produce (bottom row).",
    "inversion_nonmembers": "Latent inversion of never-used images (non-members): the targets (top row) and the "
                            "generator's closest images (bottom row). Members reconstructed visibly better than "
                            "these would mean the generator memorised its training images.",
    "gradient_inversion": "Gradient inversion: for each trial, a site's training images (top row) and what an "
                          "attacker reconstructed from one model update (bottom row), with PSNR and SSIM.",
}


def audit_caption(stem: str) -> str:
    """The caption of the audit figure ``audit/<stem>.png`` (a generic one for an unknown figure)."""
    return AUDIT_CAPTIONS.get(stem, f"Audit figure: {stem.replace('_', ' ')} (see audit.md).")


def _attack_table(attacks: dict[str, dict]) -> str:
    """The audit's attacks side by side: one column per attack, one row per number it reports."""
    if not attacks:
        return ""
    keys = list(dict.fromkeys(k for r in attacks.values() for k, v in r.items()
                              if isinstance(v, (int, float)) and not isinstance(v, bool)))
    rows = [[k, *(fmt(r.get(k)) for r in attacks.values())] for k in keys]
    return ("<h3>Attacks</h3><p>One column per attack (AUC 0.5 = the attacker cannot tell members from "
            "non-members); the notes below say how to read an attack where it needs one.</p>"
            + table(["measure", *attacks], rows))


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
        parts.append(img(plots.curves_png(rows, eps, title="privacy budget spent"), "epsilon spent",
                         "Privacy budget (epsilon) spent by the end of each round, per site and for the federation."))
        metrics += eps
    audit = run.path / "audit.json"
    if audit.is_file():
        attacks = json.loads(audit.read_text(encoding="utf-8")).get("attacks", {})
        parts.append(_attack_table(attacks))
        metrics += [k for r in attacks.values() for k, v in r.items() if isinstance(v, (int, float))]
        for name, result in attacks.items():
            notes = [n for n in (result.get("note"), (result.get("details") or {}).get("bound")) if n]
            if notes:
                parts.append(f"<h3>{esc(name)}</h3>" + "".join(f"<div class='note'>{esc(n)}</div>" for n in notes))
        figures = [img_file(png, png.stem.replace("_", " "), audit_caption(png.stem))
                   for png in sorted(run.path.glob("audit/*.png"))]
        parts.append(f"<div class='figs'>{''.join(figures)}</div>" if figures else "")
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
    sections = [Section("Runs", table(["setting", *names], settings, cls="kv")),
                Section("Final metrics", table(["metric", *names], rows), keys),
                Section("Curves (global)", img(png, "overlaid curves",
                                               "The global metrics of each run over rounds, one colour per run."),
                        curve_keys)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, page("Comparison", ", ".join(names), sections))
    return out


def _unique_names(runs: Sequence[RunDir]) -> list[str]:
    """The shortest trailing parts of the runs' paths that tell them apart (``federated/seed-0``)."""
    parts = [r.path.resolve().parts for r in runs]
    for k in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-k:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(r.path) for r in runs]
