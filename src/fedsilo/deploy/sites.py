"""Site data folders for deployment rehearsals (``fedsilo deploy split-data``).

In a real study each hospital already holds its own data. To rehearse a deployment (or to test
one on loopback) this writes, for an experiment config, each site's share of the configured data
exactly as the in-process engines partition it: ``OUT/<site>/data.npz`` in MedMNIST layout
(``train_images``, ``train_labels``, ``val_images``, ``val_labels``; raw uint8 images (N, H, W, C)).
A SuperNode given that folder as ``data-path`` then trains on the very samples the local engine
gives that site, so the two engines produce the same global model for a seed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fedsilo.config import ExperimentConfig
from fedsilo.data.errors import DataError
from fedsilo.data.fundus import load_fundus_arrays, site_splits

logger = logging.getLogger(__name__)

DATA_FILE = "data.npz"


def write_site_folders(cfg: ExperimentConfig, out: str | Path) -> dict[str, Path]:
    """Write each site's train/val images of ``cfg`` to ``out/<site>/data.npz``; return site -> folder.

    Raises
    ------
    DataError
        When ``out`` exists and is not empty (nothing is overwritten) or the task has no fundus data.
    """
    if cfg.experiment.task != "classification" and cfg.data.source == "volumes":
        raise DataError(f"split-data writes fundus sites; experiment.task {cfg.experiment.task!r} with "
                        f"data.source = 'volumes' already names one folder per site in [[data.sites]]")
    root = Path(out)
    if root.exists() and any(root.iterdir()):
        raise DataError(f"{root} exists and is not empty; choose a new --out")
    train_raw, _ = load_fundus_arrays(cfg)
    names, splits = site_splits(cfg, train_raw)
    folders = {}
    for name, (tr, va) in zip(names, splits, strict=True):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / DATA_FILE, train_images=train_raw.images[tr], train_labels=train_raw.labels[tr],
                 val_images=train_raw.images[va], val_labels=train_raw.labels[va])
        folders[name] = folder
        logger.info("Site %s: %d training and %d validation images in %s", name, len(tr), len(va), folder)
    return folders
