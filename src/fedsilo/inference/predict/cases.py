"""What ``fedsilo predict --input PATH`` segments: a NIfTI file, a DICOM series folder, or a
folder holding any number of both (DICOM series in sub-folders)."""

from __future__ import annotations

import logging
from pathlib import Path

from fedsilo.data.errors import DataError
from fedsilo.data.sources.nifti import NIFTI_SUFFIXES, label_named
from fedsilo.data.sources.volume import CaseRef, check_modality

logger = logging.getLogger(__name__)

#: Folders that hold label maps, not scans (nnU-Net ``labelsTr``): skipped when a folder is searched
#: (as are files named like label maps, :func:`~fedsilo.data.sources.nifti.label_named`).
_LABEL_DIRS = {"labelstr", "labelsts", "labels", "segmentations"}


def looks_like_labels(path: Path, root: Path) -> bool:
    """Whether a NIfTI file under ``root`` is named like a label map rather than a scan."""
    if label_named(path):
        return True
    return any(part.lower() in _LABEL_DIRS for part in path.relative_to(root).parts[:-1])


def case_name(path: Path) -> str:
    """``ct.nii.gz`` -> ``ct``; a DICOM folder -> its name."""
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def find_cases(path: str | Path, modality: str | None = None) -> list[CaseRef]:
    """The cases under ``path``, unlabelled, each named after its file or folder.

    Parameters
    ----------
    path
        A ``.nii``/``.nii.gz`` file, a DICOM series folder, or a folder of those (in a folder,
        files named like label maps -- ``label_*``, ``*_seg``, ``seg``, ``mask``, or inside
        ``labelsTr/`` -- are skipped).
    modality
        ``ct`` or ``mr`` for every case; None takes DICOM's Modality tag (NIfTI files then
        fail to load with a message asking for ``--modality``).

    Raises
    ------
    DataError
        The path does not exist, is a file of another kind, or holds no case.
    """
    from fedsilo.data.sources.dicom import find_series_folders

    root = Path(path)
    mod = check_modality(modality, "--modality") if modality else None
    if not root.exists():
        raise DataError(f"{root}: input not found")
    if root.is_file():
        if not root.name.endswith(NIFTI_SUFFIXES):
            raise DataError(f"{root}: unsupported input; expected a .nii/.nii.gz file, a DICOM series folder "
                            f"or a folder of them")
        files = [root]
        series: list[Path] = []
    else:
        found = sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(NIFTI_SUFFIXES))
        files = [p for p in found if not looks_like_labels(p, root)]
        if len(files) < len(found):
            logger.info("Skipping %d label map(s) under %s (names like label_*, seg, labelsTr/): %s",
                        len(found) - len(files), root, ", ".join(p.name for p in found if p not in files))
        series = find_series_folders(root)
    cases = [CaseRef(case_name(p), mod, p) for p in files] + [CaseRef(case_name(p), mod, p) for p in series]
    if not cases:
        raise DataError(f"{root}: no NIfTI file or DICOM series found (expected .nii/.nii.gz files or folders "
                        f"of .dcm files)")
    names = [c.case_id for c in cases]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"{root}: several cases share the name(s) {dup}; outputs are named after the cases, "
                        f"so give each file or series folder its own name")
    return cases
