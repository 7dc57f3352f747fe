"""Fundus data for DR grading and synthesis: sources -> preprocessing -> sites.

One function, :func:`federated_fundus`, turns the ``[data]``, ``[partition]`` and
``[federation]`` sections into per-site train/validation sets and the global test set. The
result is cached per process (sites of the in-process engine share it; each Ray worker builds
it once), keyed by the config sections that determine it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fedsilo.config import ExperimentConfig, config_hash
from fedsilo.data.errors import DataError
from fedsilo.data.federated import FederatedData, SiteData, default_site_names, process_cached
from fedsilo.data.images import ImageArrays, ImageDataset
from fedsilo.data.partition import partition_indices, partition_table, split_validation
from fedsilo.data.preprocess_fundus import preprocess_fundus
from fedsilo.seeding import derive_seed, np_rng

logger = logging.getLogger(__name__)

NUM_GRADES = 5
GRADE_NAMES = ("0 no DR", "1 mild", "2 moderate", "3 severe", "4 proliferative")


def load_fundus_arrays(cfg: ExperimentConfig) -> tuple[ImageArrays, ImageArrays | None]:
    """Raw (training pool, global test) arrays from the configured source."""
    data = cfg.data
    if data.source == "phantom":
        from fedsilo.data.phantoms.fundus import fundus_phantom_dataset

        ph = data.phantom
        seed = cfg.experiment.seed
        imgs, grades, cams = fundus_phantom_dataset(
            ph.n_train, data.image_size, seed=derive_seed(seed, "phantom-train"),
            grade_weights=ph.grade_weights, n_cameras=ph.n_cameras,
        )
        train = ImageArrays(imgs, grades, cams, origin="fundus phantom (train)")
        test = None
        if ph.n_test:
            imgs, grades, cams = fundus_phantom_dataset(
                ph.n_test, data.image_size, seed=derive_seed(seed, "phantom-test"),
                grade_weights=ph.grade_weights, n_cameras=ph.n_cameras,
            )
            test = ImageArrays(imgs, grades, cams, origin="fundus phantom (test)")
        return train, test
    if data.source == "medmnist":
        from fedsilo.data.sources.medmnist import load_medmnist

        train = load_medmnist(data.path, data.train_split, num_classes=NUM_GRADES)
        test = load_medmnist(data.path, data.test_split, num_classes=NUM_GRADES) if data.test_split else None
        return train, test
    if data.source == "imagefolder":
        from fedsilo.data.sources.imagefolder import load_image_folder

        f = data.imagefolder
        if not f.csv:
            raise DataError("data.imagefolder.csv must name the label CSV when data.source = 'imagefolder'")
        pool = load_image_folder(
            data.path, f.csv, image_dir=f.image_dir, id_column=f.id_column, label_column=f.label_column,
            site_column=f.site_column, extensions=f.extensions, size=data.image_size, num_classes=NUM_GRADES,
        )
        return pool, None
    raise DataError(f"data.source {data.source!r} is not a fundus source (phantom, medmnist, imagefolder)")


def federated_fundus(cfg: ExperimentConfig) -> FederatedData[ImageDataset]:
    """Per-site fundus splits for ``cfg`` (cached per process)."""
    fed = cfg.federation
    key = ("fundus", config_hash(cfg, "data", "partition"), cfg.experiment.seed, fed.num_sites, tuple(fed.site_names))
    return process_cached(key, lambda: _build(cfg))


def site_splits(cfg: ExperimentConfig, train_raw: ImageArrays) -> tuple[list[str], list[tuple[np.ndarray, np.ndarray]]]:
    """Site names and each site's (train, val) indices into ``train_raw`` for ``cfg``."""
    seed, num_sites = cfg.experiment.seed, cfg.federation.num_sites
    parts = partition_indices(
        train_raw.labels, num_sites, cfg.partition, derive_seed(seed, "partition"), groups=train_raw.groups
    )
    site_names = default_site_names(num_sites, cfg.federation.site_names)
    rng = np_rng(seed, "site-val")
    return site_names, [split_validation(idx, cfg.data.val_fraction, rng) for idx in parts]


def _build(cfg: ExperimentConfig) -> FederatedData[ImageDataset]:
    train_raw, test_raw = load_fundus_arrays(cfg)
    pool = preprocess_fundus(train_raw, cfg.data.image_size, cfg.data.preprocess)
    test = preprocess_fundus(test_raw, cfg.data.image_size, cfg.data.preprocess) if test_raw is not None else None
    site_names, splits = site_splits(cfg, train_raw)
    table = partition_table([tr for tr, _ in splits], train_raw.labels, NUM_GRADES)
    sites = [
        SiteData(name, pool.subset(tr), pool.subset(va), info={"class_counts": table[i].tolist()})
        for i, (name, (tr, va)) in enumerate(zip(site_names, splits, strict=True))
    ]
    return FederatedData(sites, test, table, GRADE_NAMES)


def fundus_site_from_path(cfg: ExperimentConfig, path: str | Path, name: str) -> SiteData[ImageDataset]:
    """One site's fundus data from its own folder (deployment: the SuperNode's ``data-path``).

    ``path`` is a MedMNIST-layout ``.npz`` file (``train_images``/``train_labels`` and, if the
    site has fixed its validation split, ``val_images``/``val_labels``), a folder holding exactly
    one such file, or an image folder with a label CSV (``data.imagefolder.csv``, default
    ``labels.csv``; APTOS layout as ``fedsilo data phantom --kind fundus`` writes it). Without a
    ``val`` split, ``data.val_fraction`` of the training images is held out with a generator
    seeded by the experiment seed and the site's name. Images are preprocessed as
    ``[data.preprocess]`` says, exactly as in the in-process engines.

    Raises
    ------
    DataError
        Missing, unreadable, truncated or inconsistent files (named in the message).
    """
    from fedsilo.data.sources.imagefolder import load_image_folder
    from fedsilo.data.sources.medmnist import load_medmnist, medmnist_splits

    root = Path(path)
    if not root.exists():
        raise DataError(f"{root}: the site's data-path does not exist")
    npz = root if root.is_file() else None
    if npz is None:
        files = sorted(root.glob("*.npz"))
        if len(files) > 1:
            raise DataError(f"{root}: holds {len(files)} .npz files ({', '.join(f.name for f in files)}); "
                            f"point data-path at one of them")
        npz = files[0] if files else None
    val: ImageArrays | None = None
    if npz is not None:
        if npz.suffix != ".npz":
            raise DataError(f"{npz}: a site's data file must be a MedMNIST-layout .npz, got {npz.suffix or 'no'} suffix")
        splits = medmnist_splits(npz)
        train = load_medmnist(npz, "train", num_classes=NUM_GRADES)
        if "val" in splits:
            val = load_medmnist(npz, "val", num_classes=NUM_GRADES)
    else:
        f = cfg.data.imagefolder
        csv_name = f.csv or "labels.csv"
        if not (root / csv_name).is_file():
            raise DataError(f"{root}: no .npz file and no label CSV {csv_name!r}; a site folder holds a "
                            f"MedMNIST-layout .npz or images with a label CSV")
        train = load_image_folder(root, csv_name, image_dir=f.image_dir or ("images" if (root / "images").is_dir()
                                                                            else ""),
                                  id_column=f.id_column, label_column=f.label_column, extensions=f.extensions,
                                  size=cfg.data.image_size, num_classes=NUM_GRADES)
    size, prep = cfg.data.image_size, cfg.data.preprocess
    pool = preprocess_fundus(train, size, prep)
    if val is not None:
        tr_set, va_set = pool, preprocess_fundus(val, size, prep)
        labels = train.labels
    else:
        tr, va = split_validation(np.arange(len(train)), cfg.data.val_fraction,
                                  np_rng(cfg.experiment.seed, "site-val", name))
        tr_set, va_set, labels = pool.subset(tr), pool.subset(va), train.labels[tr]
    if len(tr_set) == 0:
        raise DataError(f"{root}: the site has no training images")
    counts = np.bincount(labels, minlength=NUM_GRADES)[:NUM_GRADES]
    return SiteData(name, tr_set, va_set, info={"class_counts": counts.tolist()})
