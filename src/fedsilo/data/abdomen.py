"""Abdominal CT/MRI sites as 2D slice datasets: ``[[data.sites]]`` -> preprocessing -> slices.

Each ``[[data.sites]]`` entry is one hospital's scans (a phantom cohort, a CHAOS folder, an
nnU-Net/AMOS data set, a CSV manifest, a single image/label pair, DICOM series or PNG slices).
Its patients are split into training and validation *by patient* (``data.val_fraction``); every
``[[data.test]]`` entry is a held-out set the server evaluates. Real volumes are cached on disk
after preprocessing (keyed by file content and settings); phantom patients are regenerated from
their seed, which is cheaper than hashing them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from fedsilo.config import ExperimentConfig, config_hash
from fedsilo.config.data_schema import VolumePreprocessSection, VolumeSourceSection
from fedsilo.data.errors import DataError
from fedsilo.data.federated import FederatedData, SiteData, process_cached
from fedsilo.data.labels import NUM_CLASSES, ORGANS
from fedsilo.data.pipeline import preprocessed_volumes
from fedsilo.data.preprocess_volume import CTIntensity, MRIntensity, PreprocessSettings, preprocess_volume
from fedsilo.data.slices import Slice, extract_slices
from fedsilo.data.sources.volume import Volume
from fedsilo.data.splits import split_patients
from fedsilo.seeding import derive_seed

logger = logging.getLogger(__name__)


@dataclass
class SliceDataset:
    """Axial slices with labels and provenance, in memory.

    Attributes
    ----------
    images
        float32 (N, C, H, W), C = 2 * context + 1; intensities as preprocessed (CT window and MR
        min-max give [0, 1]).
    labels
        uint8 (N, H, W) organ ids (255 = ignore) or None for unlabelled corpora.
    class_mask
        bool (N, K): classes each slice's site annotates (background always True).
    patient_ids, modalities
        Per slice.
    slice_index, num_slices
        int64 (N,): position of the slice in its volume and the volume's depth (3D Dice).
    spacing
        patient id -> (dz, dy, dx) in mm of the preprocessed volume.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    class_mask: torch.Tensor
    patient_ids: np.ndarray
    modalities: np.ndarray
    slice_index: np.ndarray
    num_slices: np.ndarray
    spacing: dict[str, tuple[float, float, float]]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @classmethod
    def from_slices(cls, slices: Sequence[Slice]) -> SliceDataset:
        if not slices:
            return cls.empty()
        labelled = slices[0].label is not None
        return cls(
            images=torch.from_numpy(np.stack([s.image for s in slices]).astype(np.float32)),
            labels=torch.from_numpy(np.stack([s.label for s in slices])) if labelled else None,
            class_mask=torch.from_numpy(np.stack([s.class_mask for s in slices])),
            patient_ids=np.array([s.patient_id for s in slices]),
            modalities=np.array([s.modality for s in slices]),
            slice_index=np.array([s.slice_index for s in slices], dtype=np.int64),
            num_slices=np.array([s.num_slices for s in slices], dtype=np.int64),
            spacing={s.patient_id: s.spacing for s in slices},
        )

    @classmethod
    def empty(cls, channels: int = 1, size: int = 8) -> SliceDataset:
        return cls(torch.zeros(0, channels, size, size), torch.zeros(0, size, size, dtype=torch.uint8),
                   torch.zeros(0, NUM_CLASSES, dtype=torch.bool), np.array([], dtype=str), np.array([], dtype=str),
                   np.zeros(0, np.int64), np.zeros(0, np.int64), {})

    def subset(self, idx: np.ndarray | torch.Tensor) -> SliceDataset:
        idx_np = np.asarray(idx, dtype=np.int64)
        idx_t = torch.as_tensor(idx_np)
        pids = self.patient_ids[idx_np]
        return SliceDataset(
            self.images[idx_t], None if self.labels is None else self.labels[idx_t], self.class_mask[idx_t],
            pids, self.modalities[idx_np], self.slice_index[idx_np], self.num_slices[idx_np],
            {p: self.spacing[p] for p in set(pids.tolist())},
        )

    @staticmethod
    def concat(parts: Sequence[SliceDataset]) -> SliceDataset:
        parts = [p for p in parts if len(p)]
        if not parts:
            return SliceDataset.empty()
        labels = None if any(p.labels is None for p in parts) else torch.cat([p.labels for p in parts])
        spacing: dict[str, tuple[float, float, float]] = {}
        for p in parts:
            spacing.update(p.spacing)
        return SliceDataset(
            torch.cat([p.images for p in parts]), labels, torch.cat([p.class_mask for p in parts]),
            np.concatenate([p.patient_ids for p in parts]), np.concatenate([p.modalities for p in parts]),
            np.concatenate([p.slice_index for p in parts]), np.concatenate([p.num_slices for p in parts]), spacing,
        )

    def batch(self, idx: torch.Tensor, device: torch.device | str = "cpu"
              ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Images (B, C, H, W), labels (B, H, W) int64 or None, class mask (B, K) on ``device``."""
        x = self.images[idx].to(device)
        y = None if self.labels is None else self.labels[idx].to(device=device, dtype=torch.long)
        return x, y, self.class_mask[idx].to(device)

    def patients(self) -> list[str]:
        """Patient ids in first-appearance order."""
        return list(dict.fromkeys(self.patient_ids.tolist()))

    def organ_counts(self) -> np.ndarray:
        """Labelled pixels per class, shape (K,) (0 for unlabelled data)."""
        if self.labels is None or not len(self):
            return np.zeros(NUM_CLASSES, dtype=np.int64)
        return np.bincount(self.labels.flatten().numpy(), minlength=256)[:NUM_CLASSES]


def preprocess_settings(cfg: VolumePreprocessSection) -> PreprocessSettings:
    """The data layer's settings for the ``[data.volume]`` section."""
    return PreprocessSettings(
        ct=CTIntensity(level=cfg.ct_level, width=cfg.ct_width),
        mr=MRIntensity(cfg.mr_lower_percentile, cfg.mr_upper_percentile, method=cfg.mr_method),
        size=cfg.size,
        crop_foreground=cfg.crop_foreground,
    )


def default_name(spec: VolumeSourceSection, position: int) -> str:
    return spec.name or f"{spec.kind}-{spec.modality}-{position + 1}"


def _select(cases: list, spec: VolumeSourceSection, where: str) -> list:
    if spec.patients:
        wanted = set(spec.patients)
        found = [c for c in cases if c.patient_id in wanted]
        missing = sorted(wanted - {c.patient_id for c in found})
        if missing:
            raise DataError(f"{where}: patients {missing} not found in {spec.path}")
        cases = found
    cases = cases[spec.offset:]
    return cases[: spec.count] if spec.count else cases


def load_volumes(spec: VolumeSourceSection, settings: PreprocessSettings, *, seed: int, name: str,
                 use_cache: bool) -> list[Volume]:
    """Preprocessed volumes of one ``[[data.sites]]`` / ``[[data.test]]`` entry."""
    if spec.kind == "phantom":
        from fedsilo.data.phantoms.abdomen import phantom_patient

        vols = []
        for i in range(spec.offset, spec.offset + spec.count):
            p = phantom_patient(i, modality=spec.modality, seed=derive_seed(seed, "abdomen-phantom"),
                                shape=tuple(spec.shape), contrast=spec.contrast or None)
            vol = Volume(p.image.astype(np.float32), p.labels, p.spacing, p.patient_id, p.modality, site=name,
                         annotated=frozenset(range(1, NUM_CLASSES)))
            vols.append(preprocess_volume(vol, settings))
        return vols
    from fedsilo.data.cache import VolumeCache
    from fedsilo.data.sources import (
        PngSliceSource,
        chaos_source,
        dicom_source,
        manifest_source,
        nnunet_source,
        pair_source,
    )

    kwargs = {"mapping": spec.mapping} if spec.mapping else {}
    if spec.kind == "chaos":
        source = chaos_source(spec.path, modality=spec.modality, site=name, **kwargs)
    elif spec.kind == "nnunet":
        source = nnunet_source(spec.path, modality=spec.modality, site=name, **kwargs)
    elif spec.kind == "manifest":
        source = manifest_source(spec.path, **kwargs)
    elif spec.kind == "pair":
        source = pair_source(spec.path, spec.label_path or None, patient_id=name, modality=spec.modality,
                             site=name, **kwargs)
    elif spec.kind == "dicom":
        source = dicom_source(spec.path, modality=spec.modality, site=name)
    else:  # png: unlabelled slice corpora (GAN pre-training)
        source = PngSliceSource(spec.path, modality=spec.modality)
    subset = _Subset(source, _select(list(source.cases()), spec, name), name)
    return list(preprocessed_volumes(subset, settings, VolumeCache() if use_cache else None))


class _Subset:
    """The selected cases of a source (a VolumeSource that decodes through the original)."""

    def __init__(self, source: object, cases: list, name: str) -> None:
        self._source, self._cases, self.name = source, cases, name

    def cases(self) -> list:
        return list(self._cases)

    def load(self, case: object) -> Volume:
        return self._source.load(case)  # type: ignore[attr-defined]

    def __iter__(self):
        return (self.load(c) for c in self._cases)

    def __len__(self) -> int:
        return len(self._cases)


def _slices(vols: Sequence[Volume], vcfg: VolumePreprocessSection, skip_empty: bool) -> SliceDataset:
    out: list[Slice] = []
    for v in vols:
        out.extend(extract_slices(v, context=vcfg.context, skip_empty=skip_empty))
    return SliceDataset.from_slices(out)


def federated_volumes(cfg: ExperimentConfig) -> FederatedData[SliceDataset]:
    """Per-site slice datasets (train/val by patient) and the held-out test sets (cached per process)."""
    key = ("volumes", config_hash(cfg, "data"), cfg.experiment.seed)
    return process_cached(key, lambda: _build(cfg))


def _build(cfg: ExperimentConfig) -> FederatedData[SliceDataset]:
    sites = [_site(cfg, pos, spec) for pos, spec in enumerate(cfg.data.sites)]
    table = np.array([s.info["class_counts"] for s in sites]) if sites else np.zeros((0, NUM_CLASSES))
    return FederatedData(sites, volume_tests(cfg), table, ORGANS)


def _site(cfg: ExperimentConfig, pos: int, spec: VolumeSourceSection) -> SiteData[SliceDataset]:
    """Site ``pos`` of ``[[data.sites]]`` (read from ``spec``): its patients split into train/val."""
    data, vcfg, seed = cfg.data, cfg.data.volume, cfg.experiment.seed
    name = default_name(spec, pos)
    vols = load_volumes(spec, preprocess_settings(vcfg), seed=seed, name=name, use_cache=vcfg.cache)
    if not vols:
        raise DataError(f"site {name!r}: no volumes found in {spec.path or 'the phantom'}")
    ids = [v.patient_id for v in vols]
    if len(ids) > 1 and data.val_fraction > 0:
        n_val = max(1, int(round(data.val_fraction * len(ids))))
        groups = split_patients(ids, counts=(len(ids) - n_val, n_val), names=("train", "val"),
                                seed=derive_seed(seed, "patient-split", pos))
    else:
        groups = {"train": sorted(ids), "val": []}
    train_v = [v for v in vols if v.patient_id in set(groups["train"])]
    val_v = [v for v in vols if v.patient_id in set(groups["val"])]
    train = _slices(train_v, vcfg, vcfg.skip_empty)
    val = _slices(val_v, vcfg, False)
    annotated = sorted(set().union(*(v.annotated for v in vols)))
    logger.info("Site %s (%s): %d train / %d val patients, %d / %d slices", name, spec.modality,
                len(groups["train"]), len(groups["val"]), len(train), len(val))
    return SiteData(name, train, val, info={
        "modality": spec.modality, "annotated": ",".join(ORGANS[i] for i in annotated),
        "patients_train": len(groups["train"]), "patients_val": len(groups["val"]),
        "class_counts": train.organ_counts().tolist(),
    })


def volume_tests(cfg: ExperimentConfig) -> dict[str, SliceDataset] | None:
    """Every ``[[data.test]]`` set by name (None without any); loads no site's data (cached per process)."""
    vcfg, seed = cfg.data.volume, cfg.experiment.seed

    def build() -> dict[str, SliceDataset] | None:
        tests = {}
        for pos, spec in enumerate(cfg.data.test):
            name = spec.name or f"test-{spec.kind}-{spec.modality}-{pos + 1}"
            vols = load_volumes(spec, preprocess_settings(vcfg), seed=derive_seed(seed, "test"), name=name,
                                use_cache=vcfg.cache)
            tests[name] = _slices(vols, vcfg, False)
        return tests or None

    return process_cached(("volume-tests", config_hash(cfg, "data"), seed), build)


def volume_site_from_path(cfg: ExperimentConfig, path: str, name: str) -> SiteData[SliceDataset]:
    """One site's slices from its own folder (deployment: the SuperNode's ``data-path``).

    The site is the ``[[data.sites]]`` entry called ``name``: its kind, modality, label mapping and
    patient selection come from the config, its files from ``path`` (the config's ``path`` is the
    coordinator's view and is ignored). Patients are split into train/val exactly as
    :func:`federated_volumes` splits that entry, so a deployment sees the same slices as the
    in-process engines reading the same folder.

    Raises
    ------
    DataError
        ``name`` is not a site of the config, the entry is a built-in phantom (which has no
        folder), or the folder holds no readable volumes.
    """
    names = [default_name(spec, pos) for pos, spec in enumerate(cfg.data.sites)]
    if name not in names:
        raise DataError(f"site-name {name!r} is not a [[data.sites]] entry of the experiment (sites: {names})")
    pos = names.index(name)
    spec = cfg.data.sites[pos]
    if spec.kind == "phantom":
        raise DataError(f"[[data.sites]] {name!r} is a built-in phantom (kind = 'phantom'), which has no data "
                        f"folder; in a deployment give the site its real kind (chaos, nnunet, manifest, pair, "
                        f"dicom, png) — `fedsilo data phantom --kind abdomen` writes a phantom in the chaos layout")
    return _site(cfg, pos, replace(spec, path=str(path)))
