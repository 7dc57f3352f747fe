"""Presentation of the segmentation (FedGIN) task: per-organ, per-modality tables."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from fedsilo.data.abdomen import default_name
from fedsilo.data.labels import ORGANS
from fedsilo.report.markup import img_file
from fedsilo.report.summary import MetricTable
from fedsilo.report.tasks.base import TaskPresenter
from fedsilo.tasks.segmentation.evaluation import FAMILIES

#: ``overlays/<modality>-round-<NNN>.png``: image, truth and prediction of a few test patients.
OVERLAY_RE = re.compile(r"^([a-z0-9]+)-round-(\d+)$")
#: ``test_<family>_<modality>_<organ>``: the per-organ metrics of a modality's test set.
KEY_RE = re.compile(r"^test_(dice3d|dice2d|hd95)_([a-z]+)_([a-z_]+)$")
TITLES = {"dice3d": "3D Dice per patient", "dice2d": "2D Dice per slice", "hd95": "HD95 (mm, lower is better) per patient"}


def modalities(keys: Sequence[str]) -> list[str]:
    """The test-set modalities named by per-organ metric keys, sorted."""
    return sorted({m.group(2) for k in keys if (m := KEY_RE.match(k))})


class SegmentationPresenter(TaskPresenter):
    """Mean Dice per modality in sweep tables; one table per metric family and modality."""

    def site_modalities(self) -> dict[str, str]:
        """Site name -> modality, from the config (no data loaded)."""
        return {default_name(spec, i): spec.modality for i, spec in enumerate(self.cfg.data.sites)}

    def summary_columns(self, keys: Sequence[str]) -> list[str]:
        present = set(keys)
        cols = ["test_dice3d_mean"]
        for mod in modalities(keys):
            cols += [f"test_{fam}_{mod}_mean" for fam in FAMILIES]
        cols.append("val_dice2d_mean")
        return [c for c in cols if c in present]

    def percent_keys(self, keys: Sequence[str]) -> dict[str, bool]:
        present = set(keys)
        wanted = ["test_dice3d_mean", *(f"test_dice3d_{m}_mean" for m in modalities(keys))]
        return {k: True for k in wanted if k in present}

    def report_sections(self, run_dir: Path) -> list[tuple[str, str, list[str]]]:
        """The latest round's overlays of each test modality (image, truth, prediction)."""
        latest: dict[str, tuple[int, Path]] = {}
        for png in sorted((Path(run_dir) / "overlays").glob("*-round-*.png")):
            m = OVERLAY_RE.match(png.stem)
            if m and int(m.group(2)) >= latest.get(m.group(1), (-1, png))[0]:
                latest[m.group(1)] = (int(m.group(2)), png)
        if not latest:
            return []
        body = ("<p>What the model segments in the held-out test patients: one row per patient (the slice "
                "with the most labelled organ pixels), columns image, ground truth and prediction; colours "
                "as in each figure's legend.</p>")
        figures = ""
        for mod, (rnd, png) in sorted(latest.items()):
            figures += img_file(png, f"{mod.upper()} test patients, round {rnd}",
                             f"{mod.upper()} test patients after round {rnd}: image (left), ground truth "
                             f"(middle), the model's prediction (right). File: overlays/{png.name}.")
        return [("Segmentations of test patients", f"{body}<div class='figs'>{figures}</div>", [])]

    def counts_in_site_mean(self, key: str, site: str) -> bool:
        """Local reference: a modality's test metrics are averaged over the sites of that modality
        (each site's own model on its own modality), or over all sites if none has it."""
        m = KEY_RE.match(key)
        if m is None:
            return True
        mods = self.site_modalities()
        if m.group(2) not in mods.values():
            return True
        return mods.get(site) == m.group(2)

    def sweep_tables(self, keys: Sequence[str]) -> list[MetricTable]:
        """Per organ and modality: 3D Dice, 2D Dice and HD95 tables."""
        present = set(keys)
        tables = []
        for fam, hib in FAMILIES.items():
            for mod in modalities(keys):
                organs = [o for o in (*ORGANS[1:], "mean") if f"test_{fam}_{mod}_{o}" in present]
                if organs:
                    tables.append(MetricTable(f"{fam}_{mod}", f"{TITLES[fam]}, {mod.upper()} test set", organs,
                                              [f"test_{fam}_{mod}_{o}" for o in organs], hib))
        return tables

    def intended_use(self) -> str:
        return ("Research on federated multi-organ segmentation of abdominal CT and MRI across sites that hold "
                "one modality each (FedGIN): comparing intensity augmentations and normalisations. Not for "
                "clinical contouring: organ volumes and boundaries are not validated against expert review.")
