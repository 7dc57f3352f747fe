"""Inspection helpers: a summary table of volumes per site and modality, and a PNG preview grid
of slices with label overlays (matplotlib, Agg; no pyplot global state)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from fedsilo.data.labels import NUM_CLASSES, ORGANS, organ_names
from fedsilo.data.sources.volume import Volume

__all__ = ["ORGAN_COLORS", "inspect_volumes", "preview_grid", "rows_to_text"]

logger = logging.getLogger(__name__)

#: Overlay colour per organ id (RGB in [0, 1]); index 0 (background) unused.
ORGAN_COLORS: tuple[tuple[float, float, float], ...] = (
    (0.0, 0.0, 0.0),
    (0.90, 0.30, 0.25),  # liver
    (0.20, 0.60, 0.95),  # right kidney
    (0.15, 0.85, 0.55),  # left kidney
    (0.95, 0.80, 0.15),  # spleen
    (0.80, 0.35, 0.90),  # pancreas
    (0.35, 0.90, 0.95),  # gallbladder
    (0.98, 0.55, 0.20),  # stomach
)


def inspect_volumes(volumes: Iterable[Volume]) -> list[dict[str, Any]]:
    """Summarise volumes per ``(site, modality)``, streaming (volumes are not kept).

    Parameters
    ----------
    volumes : iterable of Volume

    Returns
    -------
    list of dict
        One row per ``(site, modality)``, sorted, with keys ``site``, ``modality``, ``patients``,
        ``volumes``, ``slices``, ``shape_hw`` (distinct in-plane shapes), ``spacing_min`` and
        ``spacing_max`` ((dz, dy, dx) mm), ``annotated`` (organ names annotated by any volume),
        ``present`` (organ name -> number of volumes where it has voxels), ``unlabelled``
        (volumes without labels).
    """
    groups: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"patients": set(), "volumes": 0, "slices": 0, "shapes": set(), "spacings": [],
                 "annotated": set(), "present": defaultdict(int), "unlabelled": 0}
    )
    for vol in volumes:
        g = groups[(vol.site or "-", vol.modality)]
        g["patients"].add(vol.patient_id)
        g["volumes"] += 1
        g["slices"] += vol.shape[0]
        g["shapes"].add(vol.shape[1:])
        g["spacings"].append(vol.spacing)
        g["annotated"] |= vol.annotated
        g["unlabelled"] += vol.labels is None
        for organ in vol.organ_voxels():
            g["present"][ORGANS[organ]] += 1
    rows = []
    for (site, modality), g in sorted(groups.items()):
        spacings = np.asarray(g["spacings"])
        rows.append(
            {
                "site": site,
                "modality": modality,
                "patients": len(g["patients"]),
                "volumes": g["volumes"],
                "slices": g["slices"],
                "shape_hw": sorted(g["shapes"]),
                "spacing_min": tuple(round(float(x), 3) for x in spacings.min(axis=0)),
                "spacing_max": tuple(round(float(x), 3) for x in spacings.max(axis=0)),
                "annotated": organ_names(g["annotated"]),
                "present": {name: g["present"][name] for name in ORGANS if name in g["present"]},
                "unlabelled": g["unlabelled"],
            }
        )
    return rows


def rows_to_text(rows: list[dict[str, Any]]) -> str:
    """Plain-text rendering of :func:`inspect_volumes` rows (one line per row)."""
    lines = []
    for r in rows:
        lines.append(
            f"{r['site']:>10} {r['modality']:>2}  patients={r['patients']} volumes={r['volumes']} slices={r['slices']} "
            f"spacing={r['spacing_min']}..{r['spacing_max']} annotated={','.join(r['annotated']) or '-'} "
            f"present={r['present']}"
        )
    return "\n".join(lines)


def _display_range(vol: Volume) -> tuple[float, float]:
    if vol.modality == "ct" and float(vol.image.min()) < -200:
        return -160.0, 240.0  # raw HU: abdomen window W400/L40
    lo, hi = np.percentile(vol.image, [0.5, 99.5])
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


def _pick_slices(vol: Volume, n: int) -> list[int]:
    depth = vol.shape[0]
    if vol.labels is not None and np.any((vol.labels > 0) & (vol.labels < NUM_CLASSES)):
        rows = np.flatnonzero(((vol.labels > 0) & (vol.labels < NUM_CLASSES)).reshape(depth, -1).any(axis=1))
        lo, hi = int(rows[0]), int(rows[-1])
    else:
        lo, hi = 0, depth - 1
    return sorted({int(round(lo + (hi - lo) * (i + 1) / (n + 1))) for i in range(n)})


def preview_grid(
    volumes: Iterable[Volume],
    out_png: str | Path,
    slices_per_volume: int = 3,
    max_volumes: int = 6,
    alpha: float = 0.45,
) -> Path:
    """Write a PNG grid: one row per volume, ``slices_per_volume`` axial slices spread over the
    labelled extent, organ overlays in :data:`ORGAN_COLORS`, shown radiologically (patient's
    right on the image left, anterior up, with R/L/A/P marks) at the true in-plane aspect.

    Parameters
    ----------
    volumes : iterable of Volume
        Only the first ``max_volumes`` are read.
    out_png : str or Path
    slices_per_volume, max_volumes : int
    alpha : float
        Overlay opacity in [0, 1].

    Returns
    -------
    Path
        ``out_png``.
    """
    if slices_per_volume < 1 or max_volumes < 1:
        raise ValueError(f"slices_per_volume and max_volumes must be >= 1, got {slices_per_volume} and {max_volumes}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    chosen: list[Volume] = []
    for vol in volumes:
        chosen.append(vol)
        if len(chosen) >= max_volumes:
            break
    if not chosen:
        raise ValueError("volumes must hold at least one volume, got none")
    fig = Figure(figsize=(3.0 * slices_per_volume, 3.1 * len(chosen) + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    cmap = ListedColormap([(*c, 1.0) for c in ORGAN_COLORS])
    axes = fig.subplots(len(chosen), slices_per_volume, squeeze=False)
    seen: set[int] = set()
    for row, vol in zip(axes, chosen, strict=False):
        vmin, vmax = _display_range(vol)
        aspect = vol.spacing[1] / vol.spacing[2]
        for ax, d in zip(row, _pick_slices(vol, slices_per_volume) + [None] * slices_per_volume, strict=False):
            ax.set_axis_off()
            if d is None:
                continue
            ax.imshow(vol.image[d], cmap="gray", vmin=vmin, vmax=vmax, aspect=aspect, interpolation="nearest")
            if vol.labels is not None:
                lab = vol.labels[d]
                organs = (lab > 0) & (lab < NUM_CLASSES)
                seen |= set(np.unique(lab[organs]).tolist())
                ax.imshow(np.ma.masked_where(~organs, lab), cmap=cmap, vmin=0, vmax=NUM_CLASSES - 1,
                          alpha=alpha, aspect=aspect, interpolation="nearest")
            h, w = vol.shape[1:]
            for text, x, y in (("R", 0.02, 0.5), ("L", 0.98, 0.5), ("A", 0.5, 0.97), ("P", 0.5, 0.03)):
                ax.text(x, y, text, color="yellow", fontsize=8, ha="center", va="center", transform=ax.transAxes)
            ax.set_title(f"{vol.site or '-'} {vol.modality} {vol.case_id} z={d}/{vol.shape[0]}", fontsize=8)
    if seen:
        fig.legend(handles=[Patch(color=ORGAN_COLORS[i], label=ORGANS[i]) for i in sorted(seen)],
                   loc="lower center", ncol=min(len(seen), 7), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05 if seen else 0, 1, 1))
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    logger.info("wrote preview of %d volumes to %s", len(chosen), out)
    return out
