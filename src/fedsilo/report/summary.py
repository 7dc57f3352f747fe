"""Tables of results from metrics.jsonl: a run's final metrics, per scope, and across runs."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedsilo.run.folder import RunDir


def final_rows(run: RunDir) -> dict[str, dict[str, Any]]:
    """Last value of every metric per scope (later rows of the same round win)."""
    out: dict[str, dict[str, Any]] = {}
    for row in run.read_metrics():
        scope = out.setdefault(row["scope"], {})
        for k, v in row.items():
            if k not in ("round", "scope"):
                scope[k] = v
    return out


@dataclass
class MetricTable:
    """An extra sweep table: one row per grid point and mode, one column per metric key.

    Attributes
    ----------
    name
        File stem (``<name>.csv``, ``<name>.md``).
    title
        Heading in summary.md.
    columns
        Column titles (e.g. organ names).
    keys
        Final-metric key of each column (e.g. ``test_dice3d_mr_liver``).
    higher_is_better
        Direction of "% of centralised".
    """

    name: str
    title: str
    columns: list[str]
    keys: list[str]
    higher_is_better: bool = True


def final_metrics(run: RunDir, include: Callable[[str, str], bool] | None = None) -> dict[str, float]:
    """The run's headline numbers: global metrics, or the mean over sites where there is no
    global model (the ``local`` reference evaluates each site's own model).

    ``include(key, site)`` chooses which sites' values enter that mean (default: all sites).
    """
    rows = final_rows(run)
    metrics = {k: float(v) for k, v in rows.get("global", {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and k.startswith(("test_", "val_"))}
    site_names = [s for s in rows if s != "global"]
    for key in {k for s in site_names for k in rows[s] if k.startswith(("test_", "val_"))}:
        if key in metrics:
            continue
        vals = [float(rows[s][key]) for s in site_names
                if isinstance(rows[s].get(key), (int, float)) and rows[s][key] is not None
                and (include is None or include(key, s))]
        if vals:
            metrics[key] = float(np.mean(vals))
    metrics.update(privacy_metrics(rows))
    metrics.update(audit_metrics(run))
    return metrics


def privacy_metrics(rows: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """``privacy_epsilon``: the epsilon a run spent (client level: the federation's; sample level:
    the largest over sites), when it used DP."""
    glob = rows.get("global", {}).get("privacy_epsilon")
    if isinstance(glob, (int, float)):
        return {"privacy_epsilon": float(glob)}
    sites = [v["train_epsilon"] for s, v in rows.items()
             if s != "global" and isinstance(v.get("train_epsilon"), (int, float))]
    return {"privacy_epsilon": float(max(sites))} if sites else {}


def audit_metrics(run: RunDir) -> dict[str, float]:
    """``audit_<key>`` numbers of the run's ``audit.json`` summary (``fedsilo audit``), if any."""
    import json

    path = run.path / "audit.json"
    if not path.exists():
        return {}
    summary = json.loads(path.read_text(encoding="utf-8")).get("summary", {})
    return {f"audit_{k}": float(v) for k, v in summary.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def selected_metrics(run: RunDir, metric: str, higher_is_better: bool = True) -> dict[str, float]:
    """Test metrics of the round whose validation ``metric`` was best (model selection on the
    sites' validation splits, never on the test split), prefixed ``sel_``, plus ``sel_round``.

    Global rows are used when they hold ``val_<metric>``; otherwise (local mode) the mean over sites.
    """
    by_round: dict[int, dict[str, list[float]]] = {}
    for row in run.read_metrics():
        for k, v in row.items():
            if k.startswith(("val_", "test_")) and isinstance(v, (int, float)) and not isinstance(v, bool):
                by_round.setdefault(row["round"], {}).setdefault(f"{row['scope'] == 'global'}:{k}", []).append(float(v))

    def value(values: dict[str, list[float]], key: str) -> float | None:
        for scope in ("True", "False"):
            if f"{scope}:{key}" in values:
                return float(np.mean(values[f"{scope}:{key}"]))
        return None

    candidates = [(value(v, f"val_{metric}"), r) for r, v in by_round.items()
                  if value(v, f"val_{metric}") is not None and value(v, f"test_{metric}") is not None]
    candidates = [(v, r) for v, r in candidates if math.isfinite(v)]
    if not candidates:
        return {}
    sign = 1.0 if higher_is_better else -1.0
    _, best = max(candidates, key=lambda vr: (sign * vr[0], -vr[1]))
    keys = {k.split(":", 1)[1] for k in by_round[best] if k.split(":", 1)[1].startswith("test_")}
    out = {f"sel_{k}": value(by_round[best], k) for k in sorted(keys)}
    out["sel_round"] = float(best)
    return {k: v for k, v in out.items() if v is not None}


def fmt(value: Any, digits: int = 4) -> str:
    """A number for a table cell (NaN/None as an en dash)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def scope_table(run: RunDir, columns: Sequence[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per scope (sites, then global), the run's final metrics; a metric
    with a recorded 95% interval (``<name>_ci_low``/``_ci_high``) shows it as ``value [low, high]``."""
    rows = final_rows(run)
    scopes = [s for s in rows if s != "global"] + (["global"] if "global" in rows else [])
    if columns is None:
        seen: dict[str, None] = {}
        for s in scopes:
            for k, v in rows[s].items():
                if (k.startswith(("val_", "test_")) and isinstance(v, (int, float))
                        and not k.endswith(("_n", "_ci_low", "_ci_high"))):
                    seen.setdefault(k, None)
        columns = sorted(seen)

    def cell(values: Mapping[str, Any], key: str) -> str:
        lo, hi = values.get(f"{key}_ci_low"), values.get(f"{key}_ci_high")
        ci = f" [{fmt(lo, 3)}, {fmt(hi, 3)}]" if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) else ""
        return fmt(values.get(key)) + ci

    body = [[s, *(cell(rows[s], c) for c in columns)] for s in scopes]
    return ["scope", *columns], body


def headline_columns(run: RunDir, presenter: Any) -> list[str]:
    """The columns of a run's final-metrics table: the task's sweep columns (without the
    model-selection ``sel_*`` ones), e.g. kappa and accuracy, or mean Dice per modality."""
    keys = sorted({k for values in final_rows(run).values() for k, v in values.items()
                   if k.startswith(("val_", "test_")) and isinstance(v, (int, float))})
    return [c for c in presenter.summary_columns(keys) if not c.startswith("sel_")]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


def text_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A fixed-width plain-text table (logs, CI output)."""
    rows = [list(map(str, r)) for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h)) for i, h in enumerate(header)]
    fmt_row = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([fmt_row(list(header)), fmt_row(["-" * w for w in widths]), *(fmt_row(r) for r in rows)])


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value), NaNs ignored."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def pm(mean: float, std: float, digits: int = 3, n: int = 2) -> str:
    """``mean ± std`` for a table cell (just the mean for a single value, ``n = 1``)."""
    if not math.isfinite(mean):
        return "–"
    if n < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def percent_of(value: float, reference: float, higher_is_better: bool = True) -> float:
    """``value`` as a percentage of ``reference`` (inverted for lower-is-better metrics such as FD)."""
    if not (math.isfinite(value) and math.isfinite(reference)) or reference == 0 or value == 0:
        return float("nan")
    return 100.0 * (value / reference if higher_is_better else reference / value)


PERCENT_EXPLAINED = ("`% of centralised`: how close a mode comes to the centralised run of the same setting "
                     "(100% = as good): value ÷ centralised where higher is better (Dice, kappa, realism), "
                     "centralised ÷ value where lower is better (HD95, FD, KID), so above 100% always means "
                     "better than centralised.")


def percent_note(higher_is_better: bool) -> str:
    """One line under a per-metric table: what its "(NN%)" after a value means, in its direction."""
    if higher_is_better:
        return ("Higher is better. (NN%) after a value: that value ÷ the centralised run's value of the same "
                "setting; 100% = as good as centralised.")
    return ("Lower is better. (NN%) after a value: the centralised run's value ÷ that value (centralised/this), "
            "so that, as for Dice, 100% = as good as centralised and below 100% = worse.")


def group_metrics(per_run: Mapping[str, Mapping[str, float]]) -> dict[str, tuple[float, float]]:
    """Mean ± std of each metric over runs (seeds)."""
    keys = sorted({k for m in per_run.values() for k in m})
    return {k: mean_std([m.get(k, float("nan")) for m in per_run.values()]) for k in keys}


def secure_aggregation_line(run: RunDir) -> str:
    """One sentence on what the coordinator saw of the sites' updates."""
    fed = run.cfg.federation
    if run.cfg.experiment.mode != "federated":
        return ""
    if not fed.secure_aggregation:
        return ("The coordinator received each site's model update in the clear (no secure aggregation; "
                "federation.secure_aggregation = true hides them).")
    s = fed.secagg
    return (f"Secure aggregation (SecAgg+, Bell et al. 2020): the coordinator saw only masked updates and their "
            f"weighted mean, never a single site's update (updates clipped to +-{s.clipping_range:g} per weight and "
            f"rounded to {s.quantization_range} levels; integer buffers keep their initial value).")


def empirical_epsilon_line(run: RunDir) -> str:
    """One sentence on the one-run audit's epsilon lower bound beside the accountant's, or ''."""
    path = run.path / "audit.json"
    if not path.is_file():
        return ""
    summary = json.loads(path.read_text(encoding="utf-8")).get("summary", {})
    bound = summary.get("dp_canary_epsilon_lower_bound")
    if bound is None:
        return ""
    claimed = summary.get("dp_canary_claimed_epsilon")
    verdict = ""
    if isinstance(claimed, (int, float)):
        verdict = (f"; the accountant's epsilon is {claimed:.3g}"
                   + (" (the bound is ABOVE it: the mechanism is less private than claimed)" if bound > claimed else
                      ", and a sound mechanism keeps the bound at or below it"))
    return (f"Empirical epsilon (one-run audit with {int(summary.get('dp_canary_count', 0))} canaries): at least "
            f"{bound:.2f} at 95% confidence{verdict}. It is a lower bound measured on this run, not a guarantee.")


def privacy_spent(run: RunDir) -> dict[str, Any]:
    """The run's DP settings and the epsilon it reported (per site, or client level)."""
    p = run.cfg.privacy
    out: dict[str, Any] = {"mode": p.mode, "target_epsilon": p.epsilon if p.epsilon else None,
                           "noise_multiplier": p.noise_multiplier if not p.epsilon else None,
                           "max_grad_norm": p.max_grad_norm if p.mode == "sample" else None}
    rows = final_rows(run)
    sites = {s: v["train_epsilon"] for s, v in rows.items() if s != "global" and v.get("train_epsilon") is not None}
    if sites:
        out["site_epsilon"] = sites
        out["epsilon"] = max(sites.values())
        out["delta"] = max(v.get("train_delta", 0.0) or 0.0 for v in rows.values())
    if rows.get("global", {}).get("privacy_epsilon") is not None:
        out["epsilon"] = rows["global"]["privacy_epsilon"]
        out["delta"] = rows["global"].get("privacy_delta")
    if not p.active:
        out["epsilon"] = math.inf
    out["noise"] = p.guarantee
    return out
