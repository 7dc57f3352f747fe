"""``fedsilo predict RUN_DIR --input PATH --out DIR``: segment new scans with a trained run.

Every case goes through the training run's own preprocessing (``[data.volume]``: CT window or
MR normalisation, crop, in-plane size, 2.5D context), the model predicts per-slice class
probabilities, and those are resampled back onto the scan's native grid (see
:mod:`fedsilo.inference.predict.geometry`). Written into ``DIR``:

- ``labels/<case>.nii.gz``: the label map, in the input NIfTI's own orientation and affine (a
  DICOM series gets its RAS+ affine from the headers); ids from the organ vocabulary;
- ``labels.json``: what the ids mean, which run/round/model made the maps, the preprocessing;
- ``volumes.csv``: per case and organ the voxel count and volume in mL;
- ``overlays/<case>.png``: axial slices with the predicted organs;
- ``failures.csv`` (only when some case failed): case, input and the error. A failing case never
  stops the others.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from fedsilo.data.errors import DataError
from fedsilo.data.labels import NUM_CLASSES, ORGANS
from fedsilo.data.sources.volume import CaseRef, Volume
from fedsilo.fileio import atomic_write_text
from fedsilo.inference.predict.cases import find_cases
from fedsilo.inference.predict.geometry import probabilities_to_native
from fedsilo.run.folder import RunDir, RunDirError
from fedsilo.run.load import TrainedModel, load_trained

logger = logging.getLogger(__name__)


@dataclass
class PredictSummary:
    """Outcome of :func:`predict_path`: written label maps and failed cases (name -> error)."""

    out: Path
    written: dict[str, Path] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def predict_path(run_dir: str | Path, input_path: str | Path, out: str | Path, *, modality: str | None = None,
                 round_: int | None = None, site: str | None = None, device: str | None = None) -> PredictSummary:
    """Segment every case under ``input_path`` with a segmentation run (see the module docstring).

    Parameters
    ----------
    run_dir
        A finished segmentation run.
    input_path
        A NIfTI file, a DICOM series folder, or a folder of them.
    out
        A new or empty folder.
    modality
        ``ct`` or ``mr`` for every case (required for NIfTI; DICOM says it in its headers).
    round_, site, device
        Which weights and where to compute (see :func:`fedsilo.run.load.load_trained`).
    """
    out = Path(out)
    # every argument and input is checked before the model is loaded
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunDirError(f"{str(out)!r} exists and is not an empty folder; predict into a new one "
                          f"(nothing was overwritten)")
    run = RunDir.open(run_dir)
    if run.cfg.data.source != "volumes":
        raise RunDirError(f"run {str(run.path)!r} is a {run.cfg.experiment.task} run; "
                          f"`fedsilo predict` needs a segmentation run on abdominal volumes")
    cases = find_cases(input_path, modality)
    unknown = [c for c in cases if c.modality is None and not c.image.is_dir()]
    if unknown:
        names = ", ".join(str(c.image) for c in unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
        raise DataError(f"{names}: NIfTI files do not say their modality; give --modality ct or mr")
    logger.info("Loading the model of %s", run.path)
    trained = load_trained(run_dir, round_=round_, site=site, device=device)
    out.mkdir(parents=True, exist_ok=True)
    summary = PredictSummary(out)
    volumes: list[list[Any]] = []
    for i, case in enumerate(cases, 1):
        logger.info("Segmenting %d/%d: %s", i, len(cases), case.image)
        try:
            path, rows = _predict_case(trained, case, out)
        except (DataError, ValueError, OSError, RuntimeError) as exc:
            summary.failed[case.case_id] = str(exc)
            logger.error("Case %s (%s) failed: %s", case.case_id, case.image, exc)
            continue
        summary.written[case.case_id] = path
        volumes += rows
    _write_volumes(out / "volumes.csv", volumes)
    atomic_write_text(out / "labels.json", json.dumps(_sidecar(trained, summary), indent=2) + "\n")
    if summary.failed:
        with (out / "failures.csv").open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["case", "input", "error"])
            inputs = {c.case_id: str(c.image) for c in cases}
            writer.writerows([name, inputs[name], err] for name, err in summary.failed.items())
    logger.info("Predicted %d of %d cases into %s", len(summary.written), len(cases), out)
    return summary


def segment_volume(trained: TrainedModel, native: Volume) -> np.ndarray:
    """The native-grid label map ``(D, H, W)`` uint8 of one decoded scan."""
    from fedsilo.data.abdomen import SliceDataset, preprocess_settings
    from fedsilo.data.preprocess_volume import preprocess_volume
    from fedsilo.data.slices import extract_slices

    vcfg = trained.run.cfg.data.volume
    if native.affine is None:
        raise DataError(f"{native.source[0] if native.source else native.case_id}: the scan has no affine, so a "
                        f"label map cannot be placed on it")
    pre = preprocess_volume(dataclasses.replace(native, labels=None), preprocess_settings(vcfg))
    data = SliceDataset.from_slices(extract_slices(pre, context=vcfg.context))
    probs = trained.task.predict_probabilities(trained.model, data, trained.device)
    if probs.shape[:2] != (pre.shape[0], NUM_CLASSES):
        raise RuntimeError(f"the model gave probabilities of shape {tuple(probs.shape)}, expected "
                           f"({pre.shape[0]}, {NUM_CLASSES}, H, W)")
    return probabilities_to_native(probs, pre.affine, native.affine, native.shape)


def _predict_case(trained: TrainedModel, case: CaseRef, out: Path) -> tuple[Path, list[list[Any]]]:
    from fedsilo.data.inspect import preview_grid
    from fedsilo.data.sources.loading import load_case

    if case.modality is None and not case.image.is_dir():
        raise DataError(f"{case.image}: a NIfTI file does not say its modality; give --modality ct or mr")
    native = load_case(case)
    labels = check_label_ids(segment_volume(trained, native))
    path = out / "labels" / f"{case.case_id}.nii.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_labels(labels, native, case, path)
    overlay = dataclasses.replace(native, labels=labels, annotated=frozenset(range(1, NUM_CLASSES)),
                                  site="prediction")
    preview_grid([overlay], out / "overlays" / f"{case.case_id}.png", slices_per_volume=4)
    voxel_ml = abs(float(np.linalg.det(np.asarray(native.affine)[:3, :3]))) / 1000.0
    counts = np.bincount(labels.ravel(), minlength=NUM_CLASSES)
    rows = [[case.case_id, native.modality, ORGANS[k], k, int(counts[k]), round(float(counts[k]) * voxel_ml, 3)]
            for k in range(1, NUM_CLASSES)]
    return path, rows


def check_label_ids(labels: np.ndarray) -> np.ndarray:
    """Guard: label ids must lie in the organ vocabulary."""
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise RuntimeError(f"predicted label id {int(labels.max())} is outside the organ vocabulary 0..{NUM_CLASSES - 1}")
    return labels


def _save_labels(labels: np.ndarray, native: Volume, case: CaseRef, path: Path) -> None:
    """Write ``labels`` (internal layout) as NIfTI; a NIfTI input's orientation and affine are kept."""
    from fedsilo.data.sources.nifti import internal_to_nifti

    canon = internal_to_nifti(labels.astype(np.uint8), native.affine)
    image = canon
    if not case.image.is_dir():
        original = nib.load(case.image)
        target = nib.orientations.io_orientation(original.affine)
        image = canon.as_reoriented(nib.orientations.ornt_transform(nib.orientations.io_orientation(canon.affine),
                                                                    target))
        if not np.allclose(image.affine, original.affine, atol=1e-3):
            raise RuntimeError(f"{case.image}: the label map's affine does not match the input's "
                               f"({np.round(image.affine, 3).tolist()} vs {np.round(original.affine, 3).tolist()})")
        image = nib.Nifti1Image(np.asarray(image.dataobj, dtype=np.uint8), original.affine)
        image.header.set_xyzt_units(*original.header.get_xyzt_units())
    image.header.set_data_dtype(np.uint8)
    tmp = path.with_name(f".{path.name}.tmp.nii.gz")
    nib.save(image, tmp)
    tmp.replace(path)


def _write_volumes(path: Path, rows: list[list[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case", "modality", "organ", "label_id", "voxels", "volume_ml"])
        writer.writerows(rows)


def _sidecar(trained: TrainedModel, summary: PredictSummary) -> dict[str, Any]:
    cfg = trained.run.cfg
    return {
        "labels": {str(i): name for i, name in enumerate(ORGANS)},
        "background": 0,
        "cases": {name: str(p.relative_to(summary.out)) for name, p in summary.written.items()},
        "failed": summary.failed,
        "model": {"run": str(trained.run.path), "experiment": cfg.experiment.name, "round": trained.round,
                  "site": trained.site, "mode": cfg.experiment.mode},
        "preprocessing": {"size": cfg.data.volume.size, "ct_window": [cfg.data.volume.ct_level, cfg.data.volume.ct_width],
                          "mr": [cfg.data.volume.mr_lower_percentile, cfg.data.volume.mr_upper_percentile,
                                 cfg.data.volume.mr_method],
                          "crop_foreground": cfg.data.volume.crop_foreground, "context": cfg.data.volume.context},
        "resampling": "class probabilities bilinearly resampled to the native grid, then arg-max",
    }
