"""The public layouts of abdominal scans, each read into a :class:`~fedsilo.data.sources.loading.CaseListSource`:
CHAOS-style pairs, nnU-Net / Medical Segmentation Decathlon folders (AMOS), single image/label
pairs (NIfTI), and folders of DICOM series."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from fedsilo.data.errors import DataError
from fedsilo.data.labels import AMOS, CHAOS_MR, LabelMapping, get_mapping
from fedsilo.data.sources.dicom import find_series_folders
from fedsilo.data.sources.loading import CaseListSource
from fedsilo.data.sources.nifti import NIFTI_SUFFIXES, nifti_stem
from fedsilo.data.sources.volume import CaseRef, Modality, check_modality

__all__ = ["amos_modality", "chaos_source", "dicom_source", "nnunet_source", "pair_source"]

logger = logging.getLogger(__name__)


def chaos_source(
    root: str | Path,
    modality: Modality | str = "mr",
    mapping: LabelMapping | str = CHAOS_MR,
    site: str | None = None,
    allow_empty_labels: bool = False,
) -> CaseListSource:
    """CHAOS-style folder: ``image_<id>.nii.gz`` + ``label_<id>.nii.gz`` (label optional).

    Parameters
    ----------
    root : str or Path
        The folder (e.g. ``shared/data/chaos_mr_t2``).
    modality : {"ct", "mr"}
    mapping : LabelMapping or str
        Defaults to the CHAOS MR table (1 liver, 2 right kidney, 3 left kidney, 4 spleen).
    site : str or None
    allow_empty_labels : bool
        Accept label maps without any labelled voxel (otherwise :class:`DataError`).

    Returns
    -------
    CaseListSource
        One case per ``image_<id>``, sorted by numeric id; ``patient_id`` is ``<id>``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: CHAOS folder not found")
    table = get_mapping(mapping)
    pattern = re.compile(r"^image_(.+?)\.nii(\.gz)?$")
    cases = []
    for path in root.iterdir():
        match = pattern.match(path.name)
        if not match:
            continue
        pid = match.group(1)
        label = next((root / f"label_{pid}{s}" for s in NIFTI_SUFFIXES if (root / f"label_{pid}{s}").is_file()), None)
        cases.append(CaseRef(pid, check_modality(modality), path, label, table if label else None, site))
    if not cases:
        raise DataError(f"{root}: no image_<id>.nii[.gz] files")
    cases.sort(key=lambda c: (0, int(c.patient_id), "") if c.patient_id.isdigit() else (1, 0, c.patient_id))
    return CaseListSource(cases, name=f"chaos:{root.name}", allow_empty_labels=allow_empty_labels)


def _channel_modality(name: str) -> Modality | None:
    """``"CT"`` -> ct; MR sequence names (``MRI``, ``T1``, ``T2``, ``ADC``, ``FLAIR``, ``DWI`` ...) -> mr."""
    key = name.strip().lower()
    if key.startswith("ct"):
        return "ct"
    if key.startswith(("mr", "t1", "t2", "adc", "flair", "dwi", "pd")):
        return "mr"
    return None


def amos_modality(case_id: str) -> Modality:
    """AMOS 2022 rule: case ids <= 500 are CT, > 500 MRI (``amos_0507`` -> ``"mr"``)."""
    digits = re.findall(r"\d+", case_id)
    if not digits:
        raise ValueError(f"case_id must contain a number for the AMOS rule, got {case_id!r}")
    return "ct" if int(digits[-1]) <= 500 else "mr"


def nnunet_source(
    root: str | Path,
    mapping: LabelMapping | str | None = None,
    modality: Modality | str | Callable[[str], Modality] | None = None,
    site: str | None = None,
    split: str = "Tr",
    allow_empty_labels: bool = False,
) -> CaseListSource:
    """nnU-Net / Medical Segmentation Decathlon layout: ``imagesTr/<case>[_0000].nii.gz`` +
    ``labelsTr/<case>.nii.gz`` + ``dataset.json``.

    Parameters
    ----------
    root : str or Path
        Folder holding ``dataset.json`` and ``images<split>/`` (``labels<split>/`` optional).
    mapping : LabelMapping, str or None
        Label table; None picks the AMOS table when ``dataset.json``'s name mentions AMOS, and is
        an error otherwise (a wrong guess would silently mislabel organs).
    modality : {"ct", "mr"}, callable or None
        A fixed modality, a function ``case_id -> modality``, or None: the AMOS id rule
        (:func:`amos_modality`) for AMOS, else the single channel of ``dataset.json``
        (``"modality"`` in MSD, ``"channel_names"`` in nnU-Net v2; MR sequence names such as
        ``T2`` or ``ADC`` count as MR).
    site : str or None
    split : {"Tr", "Ts"}
    allow_empty_labels : bool

    Returns
    -------
    CaseListSource
        One case per image (only channel ``_0000`` is read); ``patient_id`` = case id.
    """
    root = Path(root)
    if split not in ("Tr", "Ts"):
        raise ValueError(f"split must be 'Tr' or 'Ts', got {split!r}")
    meta_path = root / "dataset.json"
    meta: dict = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{meta_path}: not valid JSON ({exc})") from exc
    is_amos = "amos" in str(meta.get("name", "")).lower() or "amos" in root.name.lower()
    table = AMOS if mapping is None and is_amos else (get_mapping(mapping) if mapping is not None else None)
    images_dir, labels_dir = root / f"images{split}", root / f"labels{split}"
    if not images_dir.is_dir():
        raise DataError(f"{images_dir}: folder not found (expected nnU-Net/MSD layout)")

    if callable(modality):
        modality_of: Callable[[str], Modality] = modality
    elif modality is not None:
        fixed = check_modality(modality)
        modality_of = lambda _cid: fixed  # noqa: E731
    elif is_amos:
        modality_of = amos_modality
    else:
        channels = meta.get("channel_names") or meta.get("modality") or {}
        names = {_channel_modality(str(v)) for v in channels.values()}
        if len(names) != 1 or None in names:
            raise DataError(f"{meta_path}: cannot tell CT from MR (channels {channels}); pass modality=")
        only = names.pop()
        modality_of = lambda _cid: only  # noqa: E731

    cases = []
    for path in sorted(images_dir.iterdir()):
        stem = nifti_stem(path)
        if not path.name.endswith(NIFTI_SUFFIXES) or path.name.startswith("."):
            continue
        if re.search(r"_\d{4}$", stem):
            if not stem.endswith("_0000"):
                continue  # other channels: only the first is read
            stem = stem[:-5]
        label = next((labels_dir / f"{stem}{s}" for s in NIFTI_SUFFIXES if (labels_dir / f"{stem}{s}").is_file()), None)
        if label is not None and table is None:
            raise ValueError(f"mapping is required for {root} (its dataset.json is not AMOS), got None")
        cases.append(CaseRef(stem, modality_of(stem), path, label, table if label else None, site))
    if not cases:
        raise DataError(f"{images_dir}: no NIfTI images")
    return CaseListSource(cases, name=f"nnunet:{root.name}", allow_empty_labels=allow_empty_labels)


def pair_source(
    image: str | Path,
    label: str | Path | None,
    patient_id: str,
    modality: Modality | str,
    mapping: LabelMapping | str | None = None,
    site: str | None = None,
    allow_empty_labels: bool = False,
) -> CaseListSource:
    """A single image (NIfTI file or DICOM folder) with an optional NIfTI label map, e.g.
    ``totalseg_ct/ct.nii.gz`` + ``seg.nii.gz`` with ``mapping="totalsegmentator_v2"``."""
    table = get_mapping(mapping) if mapping is not None else None
    case = CaseRef(patient_id, check_modality(modality), Path(image), Path(label) if label else None, table, site)
    return CaseListSource([case], name=f"pair:{patient_id}", allow_empty_labels=allow_empty_labels)


def _first_header(folder: Path) -> pydicom.Dataset | None:
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            return pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError):
            continue
    return None


def dicom_source(
    root: str | Path,
    modality: Modality | str | None = None,
    site: str | None = None,
) -> CaseListSource:
    """Every DICOM series folder under ``root`` as an unlabelled case.

    Parameters
    ----------
    root : str or Path
    modality : {"ct", "mr"} or None
        None takes each series' DICOM ``Modality`` tag.
    site : str or None

    Returns
    -------
    CaseListSource
        ``patient_id`` is the series' ``PatientID`` (from its first file's header) or,
        when empty, the folder name; ``case_id`` is the folder path relative to ``root``.
        Label maps for DICOM images go through a manifest (:mod:`.manifest`).
    """
    cases = []
    for folder in find_series_folders(root):
        first = _first_header(folder)
        if first is None:
            continue
        pid = str(first.get("PatientID", "") or folder.name)
        rel = folder.relative_to(root).as_posix() if folder != Path(root) else folder.name
        cases.append(CaseRef(pid, check_modality(modality) if modality else None, folder, site=site, case_id=rel))
    if not cases:
        raise DataError(f"{root}: no DICOM series found")
    return CaseListSource(cases, name=f"dicom:{Path(root).name}")
