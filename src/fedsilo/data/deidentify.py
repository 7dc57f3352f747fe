"""De-identification of DICOM files before they leave a hospital, through ``dicognito``.

``dicognito`` (maintained, implements the DICOM PS3.15 Annex E basic profile's actions for
names, IDs, UIDs, dates/times, addresses and institution data) does the work; this module adds
what a site operator needs around it: private tags removed (pydicom ``remove_private_tags``, as
the basic profile requires), pixel data and geometry verified unchanged, neutral output file
names (input paths often carry patient names), a per-file change log, and a refusal to write
into a non-empty folder.

The log names changed attributes, never their values, and is written *beside* the output folder
(not inside it) because it lists input paths: keep it with the source data.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from dicognito.anonymizer import Anonymizer
from pydicom.errors import InvalidDicomError

from fedsilo.data.errors import DataError

__all__ = ["GEOMETRY_KEYWORDS", "DeidReport", "deidentify"]

logger = logging.getLogger(__name__)

#: Attributes that must come out exactly as they went in.
GEOMETRY_KEYWORDS: tuple[str, ...] = (
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "Rows",
    "Columns",
    "RescaleSlope",
    "RescaleIntercept",
)


@dataclass
class DeidReport:
    """What :func:`deidentify` did.

    Attributes
    ----------
    files : list of dict
        One row per written file: ``input`` (path relative to the input folder), ``output``
        (relative to the output folder), ``replaced``, ``removed``, ``added`` (attribute keywords).
    skipped : list of str
        Input files that are not DICOM (not copied).
    burned_in : list of str
        Outputs whose header says ``BurnedInAnnotation = YES`` (pixels may show identity; review).
    log_path : Path
    """

    files: list[dict[str, object]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    burned_in: list[str] = field(default_factory=list)
    log_path: Path | None = None


def _flat(ds: pydicom.Dataset) -> dict[str, str]:
    """Every element except pixel data as ``path -> str(value)`` (sequences flattened)."""
    out: dict[str, str] = {}

    def visit(dataset: pydicom.Dataset, prefix: str) -> None:
        for elem in dataset:
            if elem.tag == 0x7FE00010:
                continue
            name = prefix + (elem.keyword or str(elem.tag))
            if elem.VR == "SQ":
                for i, item in enumerate(elem.value):
                    visit(item, f"{name}[{i}].")
            else:
                out[name] = str(elem.value)

    visit(ds.file_meta, "")
    visit(ds, "")
    return out


def deidentify(
    dicom_dir: str | Path,
    out_dir: str | Path,
    seed: str | None = None,
    log_format: str = "csv",
    log_path: str | Path | None = None,
) -> DeidReport:
    """De-identify every DICOM file under ``dicom_dir`` into ``out_dir``.

    Parameters
    ----------
    dicom_dir : str or Path
        Input folder (searched recursively; non-DICOM files are skipped and listed).
    out_dir : str or Path
        Output folder; must be absent or empty. Files are written as
        ``series_<k>/<nnnnn>.dcm`` (k numbers the input series, n the files within it).
    seed : str or None
        Seed of dicognito's replacement values. None (recommended) draws a secret one
        (``os.urandom`` inside dicognito): with a known seed, replaced IDs and the date shift can
        be recomputed from guessed originals. Give a seed only for reproducible tests, or to keep
        pseudonyms stable across batches, and keep it secret.
    log_format : {"csv", "json"}
    log_path : str, Path or None
        Default ``<out_dir parent>/<out_dir name>_deid_log.<csv|json>``.

    Returns
    -------
    DeidReport

    Raises
    ------
    ValueError
        ``out_dir`` is not empty, or a bad ``log_format``.
    DataError
        ``dicom_dir`` missing or without DICOM files, or dicognito changed pixels or geometry.
    """
    if log_format not in ("csv", "json"):
        raise ValueError(f"log_format must be 'csv' or 'json', got {log_format!r}")
    src, out = Path(dicom_dir), Path(out_dir)
    if not src.is_dir():
        raise DataError(f"{src}: DICOM folder not found")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"out_dir must be absent or an empty folder, got {out} (not empty); refusing to write")
    if out.resolve().is_relative_to(src.resolve()):
        raise ValueError(f"out_dir must not lie inside dicom_dir, got {out} inside {src}")
    log_file = Path(log_path) if log_path is not None else out.parent / f"{out.name}_deid_log.{log_format}"

    inputs: list[tuple[Path, pydicom.Dataset]] = []
    report = DeidReport(log_path=log_file)
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        try:
            inputs.append((path, pydicom.dcmread(path)))
        except (InvalidDicomError, OSError, EOFError):
            report.skipped.append(path.relative_to(src).as_posix())
    if not inputs:
        raise DataError(f"{src}: no DICOM files found")

    anonymizer = Anonymizer(seed=seed)
    series_index: dict[str, int] = {}
    per_series: dict[int, int] = defaultdict(int)
    out.mkdir(parents=True, exist_ok=True)
    for path, ds in inputs:
        rel = path.relative_to(src).as_posix()
        before = _flat(ds)
        geometry = {k: str(ds.get(k)) for k in GEOMETRY_KEYWORDS if k in ds}
        pixels = ds.get("PixelData")
        k = series_index.setdefault(str(ds.get("SeriesInstanceUID", "")), len(series_index))
        anonymizer.anonymize(ds)
        ds.remove_private_tags()
        after = _flat(ds)
        changed_geometry = [k_ for k_, v in geometry.items() if str(ds.get(k_)) != v]
        if changed_geometry or ds.get("PixelData") != pixels:
            raise DataError(f"{path}: de-identification altered {changed_geometry or ['PixelData']}; nothing written for it")
        name = f"series_{k:03d}/{per_series[k]:05d}.dcm"
        per_series[k] += 1
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(target, enforce_file_format=False)
        report.files.append(
            {
                "input": rel,
                "output": name,
                "replaced": sorted(key for key in before.keys() & after.keys() if before[key] != after[key]),
                "removed": sorted(before.keys() - after.keys()),
                "added": sorted(after.keys() - before.keys()),
            }
        )
        if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
            report.burned_in.append(name)
    _write_log(report, log_file, log_format)
    logger.info(
        "de-identified %d files into %s (%d skipped); log %s", len(report.files), out, len(report.skipped), log_file
    )
    return report


def _write_log(report: DeidReport, path: Path, log_format: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if log_format == "json":
        payload = {"files": report.files, "skipped": report.skipped, "burned_in": report.burned_in}
        path.write_text(json.dumps(payload, indent=1))
        return
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["input", "output", "replaced", "removed", "added"])
        for row in report.files:
            lists = (";".join(row[k]) for k in ("replaced", "removed", "added"))  # type: ignore[arg-type]
            writer.writerow([row["input"], row["output"], *lists])
        for rel in report.skipped:
            writer.writerow([rel, "", "", "", "skipped: not DICOM"])
