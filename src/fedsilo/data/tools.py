"""What ``fedsilo data`` does: write phantoms in the layouts the loaders read, inspect data.

- ``phantom --kind abdomen``: CHAOS-style ``image_<id>.nii.gz`` + ``label_<id>.nii.gz`` (organ
  vocabulary ids, RAS+ affine from the phantom's spacing) — read back with ``kind = "chaos"``;
- ``phantom --kind fundus``: APTOS-style ``images/<id>.png`` + ``labels.csv`` (``id_code``,
  ``diagnosis``, ``camera``) — read back with ``data.source = "imagefolder"``;
- ``inspect``: a table of patients/slices/spacings/organs per site and modality, and a preview
  PNG grid of slices with label overlays, for a data folder, a NIfTI pair or a config.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from fedsilo.data.errors import DataError
from fedsilo.data.sources.nifti import internal_to_nifti
from fedsilo.data.sources.volume import Volume

logger = logging.getLogger(__name__)

#: Sidecar written next to phantom NIfTI files: modality and label table, for readers.
PHANTOM_INFO = "phantom.json"


def phantom_affine(spacing: tuple[float, float, float]) -> np.ndarray:
    """Internal (d, h, w) -> RAS+ mm for the phantom's convention.

    RAS+ axes point to the patient's right, anterior and superior; d runs feet -> head (+z),
    h anterior -> posterior (-y), w patient right -> left (-x).
    """
    dz, dy, dx = spacing
    return np.array([[0.0, 0.0, -dx, 0.0], [0.0, -dy, 0.0, 0.0], [dz, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


def _fresh_dir(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out}: output folder exists and is not empty; choose another --out")
    out.mkdir(parents=True, exist_ok=True)


def write_abdomen_phantom(out: str | Path, n: int, modality: str, *, seed: int = 0,
                          shape: tuple[int, int, int] = (32, 128, 128), contrast: str | None = None) -> list[Path]:
    """Write ``n`` phantom patients as CHAOS-style NIfTI pairs; return the image paths."""
    from fedsilo.data.phantoms.abdomen import phantom_patient

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    out = Path(out)
    _fresh_dir(out)
    paths = []
    for i in range(n):
        p = phantom_patient(i, modality=modality, seed=seed, shape=shape, contrast=contrast)
        affine = phantom_affine(p.spacing)
        image = out / f"image_{i + 1}.nii.gz"
        nib.save(internal_to_nifti(p.image.astype(np.float32), affine), image)
        nib.save(internal_to_nifti(p.labels.astype(np.uint8), affine), out / f"label_{i + 1}.nii.gz")
        paths.append(image)
    (out / PHANTOM_INFO).write_text(json.dumps({"kind": "abdomen", "modality": modality, "mapping": "fedsilo",
                                                "n": n, "seed": seed, "shape": list(shape)}, indent=2) + "\n")
    (out / "README.txt").write_text(
        f"fedsilo abdomen phantom: {n} {modality.upper()} patients, seed {seed}, shape (D, H, W) = {shape}.\n"
        "image_<id>.nii.gz: CT in Hounsfield units / MR in arbitrary units; label_<id>.nii.gz: organ ids\n"
        "0 background, 1 liver, 2 right kidney, 3 left kidney, 4 spleen, 5 pancreas, 6 gallbladder, 7 stomach.\n"
        "Read it with [[data.sites]] kind = \"chaos\", modality = \"" + modality + "\", mapping = \"fedsilo\".\n", encoding="utf-8")
    logger.info("Wrote %d phantom %s patients to %s", n, modality, out)
    return paths


def write_fundus_phantom(out: str | Path, n: int, *, size: int = 128, seed: int = 0, n_cameras: int = 3) -> Path:
    """Write ``n`` phantom fundus images as PNG files + labels.csv; return the CSV path."""
    from PIL import Image

    from fedsilo.data.phantoms.fundus import fundus_phantom_dataset

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    out = Path(out)
    _fresh_dir(out)
    images, grades, cams = fundus_phantom_dataset(n, size, seed=seed, n_cameras=n_cameras)
    (out / "images").mkdir()
    csv_path = out / "labels.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id_code", "diagnosis", "camera"])
        for i, (img, grade, cam) in enumerate(zip(images, grades, cams)):
            image_id = f"phantom{i:05d}"
            Image.fromarray(img).save(out / "images" / f"{image_id}.png")
            writer.writerow([image_id, int(grade), f"camera-{int(cam) + 1}"])
    logger.info("Wrote %d phantom fundus images to %s", n, out)
    return csv_path


#: The folder layouts :func:`volumes_at` reads, as an error names them.
LAYOUTS = ("a CHAOS folder (image_<id>.nii.gz + label_<id>.nii.gz)",
           "an nnU-Net/MSD folder (dataset.json or imagesTr/)",
           "one scan NIfTI with its label NIfTI (e.g. ct.nii.gz + seg.nii.gz)",
           "DICOM series (.dcm files, in sub-folders or not)")


def volumes_at(path: str | Path, modality: str | None = None, mapping: str | None = None) -> list[Volume]:
    """Every labelled volume found at ``path``: a CHAOS-style folder, an nnU-Net/MSD folder, a
    folder holding one scan NIfTI and its label map, a DICOM folder, a manifest CSV, or a single
    NIfTI file (its ``seg``/``label`` sibling as labels).

    Raises
    ------
    DataError
        ``path`` does not exist, or is a folder in none of these layouts (the error names them).
    """
    from fedsilo.data.sources import chaos_source, dicom_source, manifest_source, nnunet_source
    from fedsilo.data.sources.dicom import find_series_folders
    from fedsilo.data.sources.nifti import NIFTI_SUFFIXES, label_named

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    kw: dict[str, Any] = {"mapping": mapping} if mapping else {}
    if path.is_file() and path.suffix == ".csv":
        return list(manifest_source(path, **kw))
    if path.is_file():
        label = next((p for p in (path.with_name("seg.nii.gz"), path.with_name("label.nii.gz")) if p.is_file()), None)
        return _pair(path, label, modality, mapping)
    if (path / "dataset.json").is_file() or (path / "imagesTr").is_dir():
        return list(nnunet_source(path, **kw))
    if any(path.glob("image_*.nii*")):
        info = json.loads((path / PHANTOM_INFO).read_text()) if (path / PHANTOM_INFO).is_file() else {}
        if not mapping and info.get("mapping"):
            kw["mapping"] = info["mapping"]
        return list(chaos_source(path, modality=modality or info.get("modality", "mr"), **kw))
    nifti = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(NIFTI_SUFFIXES))
    scans = [p for p in nifti if not label_named(p)]
    labels = [p for p in nifti if label_named(p)]
    if len(scans) == 1 and len(labels) <= 1:  # e.g. TotalSegmentator's ct.nii.gz + seg.nii.gz
        return _pair(scans[0], labels[0] if labels else None, modality, mapping)
    if nifti or not find_series_folders(path):
        found = f"{len(nifti)} NIfTI file(s): {', '.join(p.name for p in nifti[:6])}" if nifti else "no NIfTI file"
        raise DataError(f"{path}: no layout fedsilo reads; looked for {'; '.join(LAYOUTS)}; found {found} and "
                        f"no DICOM file (a single NIfTI file or a manifest .csv can be given directly)")
    return list(dicom_source(path, modality=modality))


def _pair(image: Path, label: Path | None, modality: str | None, mapping: str | None) -> list[Volume]:
    """One scan and its label map (TotalSegmentator's ``seg`` ids unless ``mapping`` says otherwise)."""
    from fedsilo.data.sources import pair_source
    from fedsilo.data.sources.nifti import nifti_stem

    if label is not None and not mapping and nifti_stem(label) == "seg":
        mapping = "totalsegmentator_v2"
    kw: dict[str, Any] = {"mapping": mapping} if mapping else {}
    return list(pair_source(image, label, patient_id=nifti_stem(image), modality=modality or "ct", **kw))


def inspect_path(path: str | Path, out_png: str | Path, modality: str | None = None,
                 mapping: str | None = None) -> tuple[str, Path]:
    """Summary table (text) and preview PNG of the volumes at ``path`` or in a config's sites."""
    from fedsilo.data.inspect import inspect_volumes, preview_grid, rows_to_text

    path = Path(path)
    if path.suffix == ".toml":
        vols = _config_volumes(path)
    else:
        vols = volumes_at(path, modality, mapping)
    if not vols:
        raise DataError(f"{path}: no volumes found")
    text = rows_to_text(inspect_volumes(vols))
    preview_grid(vols, out_png)
    return text, Path(out_png)


def _config_volumes(path: Path) -> list[Volume]:
    from fedsilo.config import load_config
    from fedsilo.data.abdomen import default_name, load_volumes
    from fedsilo.data.preprocess_volume import PreprocessSettings

    cfg = load_config(path)
    if cfg.data.source != "volumes":
        raise DataError(f"{path}: data.source is {cfg.data.source!r}; inspect reads abdominal configs (volumes)")
    raw = PreprocessSettings(normalize=False, size=None)
    vols: list[Volume] = []
    for pos, spec in enumerate([*cfg.data.sites, *cfg.data.test]):
        vols += load_volumes(spec, raw, seed=cfg.experiment.seed, name=default_name(spec, pos), use_cache=False)
    return vols

