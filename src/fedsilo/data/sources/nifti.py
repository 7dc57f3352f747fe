"""NIfTI reading (nibabel) and the public NIfTI layouts: CHAOS-style pairs, nnU-Net / Medical
Segmentation Decathlon folders (AMOS), and single image/label pairs.

Orientation: every array is reoriented with :func:`nibabel.as_closest_canonical` (RAS+) and then
to the internal ``(D, H, W)`` radiological convention by :func:`canonical_to_internal`.
"""

from __future__ import annotations

import json
import logging
import re
import zlib
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

from fedsilo.data.errors import DataError
from fedsilo.data.labels import AMOS, CHAOS_MR, LabelMapping, get_mapping
from fedsilo.data.sources.loading import CaseListSource
from fedsilo.data.sources.volume import CaseRef, Modality, check_modality

__all__ = [
    "amos_modality",
    "canonical_to_internal",
    "chaos_source",
    "internal_to_nifti",
    "nnunet_source",
    "pair_source",
    "read_nifti",
]

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")


def _internal_index_map(shape: tuple[int, int, int]) -> np.ndarray:
    """``(4, 4)`` map from internal ``(d, h, w, 1)`` to canonical ``(i, j, k, 1)``.

    For an internal array of shape ``(D, H, W)``: ``i = W-1-w``, ``j = H-1-h``, ``k = d``.
    """
    d, h, w = shape
    return np.array(
        [[0, 0, -1, w - 1], [0, -1, 0, h - 1], [1, 0, 0, 0], [0, 0, 0, 1]],
        dtype=np.float64,
    )


def canonical_to_internal(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Turn a RAS+ canonical array ``(I, J, K)`` into the internal ``(D, H, W)`` layout.

    Parameters
    ----------
    data : np.ndarray
        ``(I, J, K)`` with i increasing toward the patient's right (R), j toward anterior (A),
        k toward superior (S), as :func:`nibabel.as_closest_canonical` returns it.
    affine : np.ndarray
        ``(4, 4)`` canonical voxel -> RAS+ mm.

    Returns
    -------
    tuple
        ``(array (D, H, W), affine (4, 4))`` where ``D = K`` (inferior -> superior),
        ``H = J`` flipped (anterior at row 0) and ``W = I`` flipped (patient right at col 0),
        and the affine maps internal ``(d, h, w, 1)`` to RAS+ mm.
    """
    out = np.ascontiguousarray(np.transpose(data, (2, 1, 0))[:, ::-1, ::-1])
    return out, np.asarray(affine, dtype=np.float64) @ _internal_index_map(out.shape)


def internal_to_nifti(array: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """Inverse of :func:`canonical_to_internal`: a RAS+ NIfTI image from an internal array.

    Parameters
    ----------
    array : np.ndarray
        ``(D, H, W)`` internal array.
    affine : np.ndarray
        ``(4, 4)`` internal index -> RAS+ mm (``Volume.affine``).
    """
    data = np.ascontiguousarray(np.transpose(array[:, ::-1, ::-1], (2, 1, 0)))
    canon_affine = np.asarray(affine, dtype=np.float64) @ np.linalg.inv(_internal_index_map(array.shape))
    return nib.Nifti1Image(data, canon_affine)


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """``(dz, dy, dx)`` of an internal affine: column norms of its ``(d, h, w)`` part, rounded to
    1e-6 mm (float32 headers otherwise give 7.699999809 for 7.7)."""
    norms = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    return round(float(norms[0]), 6), round(float(norms[1]), 6), round(float(norms[2]), 6)


def read_nifti(path: str | Path, kind: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """Read a 3D NIfTI file into the internal layout.

    Parameters
    ----------
    path : str or Path
        ``.nii`` or ``.nii.gz`` file; a trailing singleton 4th axis is dropped.
    kind : {"image", "label"}
        ``"image"`` returns ``float32``; ``"label"`` returns the values in the file's own dtype
        (both with scl_slope/scl_inter applied when the header sets them).

    Returns
    -------
    tuple
        ``(array (D, H, W), affine (4, 4) internal index -> RAS+ mm)``.

    Raises
    ------
    DataError
        Missing, truncated or corrupted file, or not 3D.
    """
    if kind not in ("image", "label"):
        raise ValueError(f"kind must be 'image' or 'label', got {kind!r}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: NIfTI file not found")
    try:
        img = nib.load(path)
        if len(img.shape) == 4 and img.shape[3] == 1:
            img = img.slicer[..., 0]
        if len(img.shape) != 3:
            raise DataError(f"{path}: expected a 3D volume, got shape {img.shape}")
        canon = nib.as_closest_canonical(img)
        if kind == "image":
            data = np.asarray(canon.get_fdata(dtype=np.float32))
        else:
            data = np.asanyarray(canon.dataobj)
    except DataError:
        raise
    except (OSError, EOFError, zlib.error, ValueError, nib.filebasedimages.ImageFileError) as exc:
        raise DataError(
            f"{path}: cannot read NIfTI ({type(exc).__name__}: {exc}); the file is truncated or corrupted"
        ) from exc
    return canonical_to_internal(data, canon.affine)


def _nifti_stem(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


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
        stem = _nifti_stem(path)
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
