"""Plots for reports: convergence curves per site and global, comparison bars.

Every function returns PNG bytes (matplotlib, Agg backend), so reports can embed them without
writing files, and tests can check them without a display.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

_COLOURS = plt.get_cmap("tab10")


def figure_png(fig: Any, dpi: int = 110) -> bytes:
    """PNG bytes of a matplotlib figure (the figure is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def marker_size(points: int) -> float:
    """Marker size for a line of ``points`` points: large when there are few, so that a two-point
    "curve" reads as two measurements, not as a trend; small on long curves."""
    return 7.0 if points <= 3 else 5.0 if points <= 10 else 3.0


def series(rows: Sequence[Mapping[str, Any]], metric: str) -> dict[str, tuple[list[int], list[float]]]:
    """Per scope, the rounds and values of ``metric`` (later rows of a round win)."""
    out: dict[str, dict[int, float]] = {}
    for row in rows:
        v = row.get(metric)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out.setdefault(row["scope"], {})[int(row["round"])] = float(v)
    return {s: (sorted(d), [d[r] for r in sorted(d)]) for s, d in out.items()}


def curves_png(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], title: str = "",
               labels: Mapping[str, str] | None = None, max_cols: int = 3) -> bytes | None:
    """One panel per metric, one line per scope (global thick and black, sites coloured).

    Returns None when none of ``metrics`` has a value.
    """
    present = [m for m in metrics if series(rows, m)]
    if not present:
        return None
    cols = min(max_cols, len(present))
    nrows = math.ceil(len(present) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.0 * nrows), squeeze=False)
    for ax, metric in zip(axes.flat, present):
        data = series(rows, metric)
        sites = sorted(s for s in data if s != "global")
        for i, scope in enumerate(sites):
            x, y = data[scope]
            ax.plot(x, y, marker="o", ms=marker_size(len(x)), lw=1.2, color=_COLOURS(i % 10), label=scope)
        if "global" in data:
            x, y = data["global"]
            ax.plot(x, y, marker="s", ms=marker_size(len(x)) + 1, lw=2.4, color="black", label="global")
        ax.set_title((labels or {}).get(metric, metric), fontsize=10)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.ticklabel_format(axis="y", useOffset=False)  # 0.49128, not "1e-5 + 4.912e-1" over the title
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(present):]:
        ax.axis("off")
    legend = {name: h for ax in axes.flat for h, name in zip(*ax.get_legend_handles_labels())}
    names = sorted(legend, key=lambda n: (n == "global", n))
    handles = [legend[n] for n in names]
    if len(names) > 1:
        fig.legend(handles, names, loc="lower center", ncols=min(len(names), 6), fontsize=8,
                   bbox_to_anchor=(0.5, -0.02 - 0.03 * math.ceil(len(names) / 6)))
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return figure_png(fig)


def overlay_curves_png(runs: Mapping[str, Sequence[Mapping[str, Any]]], metrics: Sequence[str],
                       scope: str = "global", max_cols: int = 3) -> bytes | None:
    """Compare runs: one panel per metric, one line per run (the ``scope`` series of each)."""
    present = [m for m in metrics if any(scope in series(r, m) for r in runs.values())]
    if not present:
        return None
    cols = min(max_cols, len(present))
    nrows = math.ceil(len(present) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.0 * nrows), squeeze=False)
    for ax, metric in zip(axes.flat, present):
        for i, (name, rows) in enumerate(runs.items()):
            data = series(rows, metric).get(scope)
            if data:
                ax.plot(*data, marker="o", ms=marker_size(len(data[0])), lw=1.6, color=_COLOURS(i % 10), label=name)
        ax.set_title(f"{metric} ({scope})", fontsize=10)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(present):]:
        ax.axis("off")
    fig.tight_layout()
    return figure_png(fig)


def bars_png(groups: Mapping[str, Mapping[str, tuple[float, float]]], metric: str) -> bytes | None:
    """Grouped bars with error bars: ``groups[group][series] = (mean, std)`` (e.g. grid x mode)."""
    names = list(groups)
    series_names = list(dict.fromkeys(s for g in groups.values() for s in g))
    if not names or not series_names:
        return None
    labels = [_wrap_label(g) for g in names]
    widest = max(len(line) for label in labels for line in label.split("\n"))
    per_group = max(0.35 * len(series_names) + 0.4, 0.075 * widest + 0.3)
    fig, ax = plt.subplots(figsize=(min(12.0, max(4.5, per_group * len(names) + 1.8)), 3.4))
    width = 0.8 / len(series_names)
    for j, s in enumerate(series_names):
        xs = [i + (j - (len(series_names) - 1) / 2) * width for i in range(len(names))]
        means = [groups[g].get(s, (float("nan"), 0.0))[0] for g in names]
        stds = [groups[g].get(s, (float("nan"), 0.0))[1] for g in names]
        spread = any(sd == sd and sd > 0 for sd in stds)  # no error bars over single runs
        ax.bar(xs, means, width, yerr=stds if spread else None, capsize=3, label=s, color=_COLOURS(j % 10))
    crowded = per_group * len(names) + 1.8 > 12.0
    ax.set_xticks(range(len(names)), labels, fontsize=8, rotation=30 if crowded else 0,
                  ha="right" if crowded else "center")
    ax.set_ylabel(metric)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return figure_png(fig)


def _wrap_label(label: str, width: int = 22) -> str:
    """An axis label wrapped at spaces to lines of at most ``width`` characters."""
    return "\n".join(textwrap.fill(line, width, break_on_hyphens=False) for line in label.split("\n"))


def privacy_utility_png(points: Sequence[tuple[str, tuple[float, float], tuple[float, float] | None]],
                        quality: str, attack: str) -> bytes | None:
    """Quality and attack success side by side over privacy levels (a privacy-utility sweep).

    ``points`` are ``(label, (quality mean, std), (attack mean, std) or None)`` from the strongest
    privacy (smallest epsilon) to none (``inf``), plotted in that order on a categorical axis.
    """
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    xs = list(range(len(points)))
    ax.errorbar(xs, [p[1][0] for p in points], yerr=[p[1][1] for p in points], marker="o", capsize=3,
                color=_COLOURS(0), label=quality)
    ax.set_ylabel(quality, color=_COLOURS(0))
    ax.set_xticks(xs, [p[0] for p in points])
    ax.set_xlabel("privacy budget (epsilon; inf = no DP)")
    ax.grid(alpha=0.3)
    attacked = [(x, p[2]) for x, p in zip(xs, points, strict=True) if p[2] is not None]
    if attacked:
        ax2 = ax.twinx()
        ax2.errorbar([x for x, _ in attacked], [a[0] for _, a in attacked], yerr=[a[1] for _, a in attacked],
                     marker="s", capsize=3, color=_COLOURS(3), label=attack)
        ax2.axhline(0.5, color=_COLOURS(3), ls=":", lw=1)
        ax2.set_ylabel(f"{attack} (0.5 = chance)", color=_COLOURS(3))
    ax.set_title("privacy-utility trade-off", fontsize=9)
    fig.tight_layout()
    return figure_png(fig)
