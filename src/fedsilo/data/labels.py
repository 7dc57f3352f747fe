"""The organ vocabulary shared by every abdominal source, phantom and model.

Every label map that enters fedsilo is remapped to these ids, so that sites with different
label sets (CHAOS, AMOS, TotalSegmentator, a user's own) can federate one segmentation model.
A site records which of these organs it annotates; the others are *unannotated* there, never
silently background (see :data:`IGNORE_INDEX`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fedsilo.data.errors import DataError

#: Organ names in id order. Id 0 is background.
ORGANS: tuple[str, ...] = (
    "background",
    "liver",
    "right_kidney",
    "left_kidney",
    "spleen",
    "pancreas",
    "gallbladder",
    "stomach",
)

#: Name -> id.
ORGAN_IDS: dict[str, int] = {name: i for i, name in enumerate(ORGANS)}

#: Number of classes including background.
NUM_CLASSES: int = len(ORGANS)

#: Value used in label maps for voxels whose class is unknown at a site (never trained on).
IGNORE_INDEX: int = 255


# ---------------------------------------------------------------------------------------------
# Mapping tables: a source's label values -> the organ vocabulary above.
# ---------------------------------------------------------------------------------------------


#: What to do with label values that a table does not list.
Others = Literal["error", "background", "ignore"]
_OTHERS: tuple[str, ...] = ("error", "background", "ignore")

#: Other spellings of organ names found in public data sets' label lists.
ORGAN_ALIASES: dict[str, str] = {
    "kidney_right": "right_kidney",
    "kidney_left": "left_kidney",
    "gall_bladder": "gallbladder",
    "bg": "background",
}


def organ_id(name_or_id: str | int) -> int:
    """Resolve an organ name (``"liver"``, ``"right kidney"``), ``"ignore"`` or an id to an id.

    Parameters
    ----------
    name_or_id : str or int
        An organ name from :data:`ORGANS` or :data:`ORGAN_ALIASES` (spaces and hyphens are read
        as underscores, case ignored), ``"ignore"`` for :data:`IGNORE_INDEX`, or an integer id.

    Returns
    -------
    int
        The id, in ``0 .. NUM_CLASSES - 1`` or :data:`IGNORE_INDEX`.
    """
    if isinstance(name_or_id, (bool, np.bool_)):
        raise ValueError(f"organ must be a name or an integer id, got {name_or_id!r}")
    if isinstance(name_or_id, (int, np.integer)):
        value = int(name_or_id)
        if not (0 <= value < NUM_CLASSES or value == IGNORE_INDEX):
            raise ValueError(
                f"organ id must be in 0..{NUM_CLASSES - 1} or {IGNORE_INDEX} (ignore), got {value}"
            )
        return value
    key = str(name_or_id).strip().lower().replace(" ", "_").replace("-", "_")
    key = ORGAN_ALIASES.get(key, key)
    if key == "ignore":
        return IGNORE_INDEX
    if key not in ORGAN_IDS:
        raise ValueError(f"organ must be one of {list(ORGANS) + ['ignore']}, got {name_or_id!r}")
    return ORGAN_IDS[key]


@dataclass(frozen=True)
class LabelMapping:
    """A table from a source's label values to the organ vocabulary.

    Parameters
    ----------
    name : str
        Name of the table (appears in error messages and cache keys).
    table : Mapping[int, int]
        Source value -> organ id (``0 .. NUM_CLASSES - 1``) or :data:`IGNORE_INDEX`. Value 0 is
        background unless the table says otherwise.
    others : {"error", "background", "ignore"}
        Values missing from ``table``: ``"error"`` raises :class:`DataError` naming the file and
        the values (the default: a label we do not know is a sign of a wrong table or file);
        ``"background"`` maps them to 0 (right only when the source annotates those structures
        as *other* structures, as TotalSegmentator's 117 classes do); ``"ignore"`` maps them to
        :data:`IGNORE_INDEX`.

    Attributes
    ----------
    annotated : frozenset[int]
        Organ ids (> 0) that this source annotates. Organs outside this set are *unannotated*:
        their voxels may hide under background, so losses must not train them as background
        and evaluation must skip them (see :func:`annotated_class_mask`).
    """

    name: str
    table: Mapping[int, int]
    others: Others = "error"
    annotated: frozenset[int] = field(init=False)

    def __post_init__(self) -> None:
        if self.others not in _OTHERS:
            raise ValueError(f"others must be one of {_OTHERS}, got {self.others!r}")
        clean: dict[int, int] = {0: 0}
        for src, dst in dict(self.table).items():
            if isinstance(src, (bool, np.bool_)) or not isinstance(src, (int, np.integer)):
                raise ValueError(f"mapping {self.name!r}: source label must be an integer, got {src!r}")
            clean[int(src)] = organ_id(dst)
        object.__setattr__(self, "table", dict(sorted(clean.items())))
        organs = {v for v in clean.values() if 0 < v < NUM_CLASSES}
        object.__setattr__(self, "annotated", frozenset(organs))

    def remap(self, labels: np.ndarray, source: str | Path = "<array>") -> np.ndarray:
        """Map a label array to the organ vocabulary.

        Parameters
        ----------
        labels : np.ndarray
            Integer-valued label map of any shape (float arrays are accepted when every value is
            a whole number, as in NIfTI files saved as float64).
        source : str or Path
            File the labels came from, named in error messages.

        Returns
        -------
        np.ndarray
            ``uint8`` array of the same shape with organ ids and :data:`IGNORE_INDEX`.

        Raises
        ------
        DataError
            Non-finite or non-integer values, or values missing from the table when
            ``others == "error"``.
        """
        arr = np.asarray(labels)
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)):
                raise DataError(f"{source}: label map holds {int(np.sum(~np.isfinite(arr)))} NaN/inf voxels")
            if not np.array_equal(arr, np.round(arr)):
                raise DataError(f"{source}: label map holds non-integer values (e.g. {arr[arr != np.round(arr)][:3]})")
            arr = arr.astype(np.int64) if arr.min() < 0 or arr.max() >= 1 << 16 else arr.astype(np.uint16)
        elif arr.dtype.kind not in "iub":
            raise DataError(f"{source}: label map must be integer-valued, got dtype {arr.dtype}")
        elif arr.dtype.kind == "b":
            arr = arr.astype(np.uint8)
        if arr.size == 0:
            return np.zeros(arr.shape, dtype=np.uint8)
        lo, hi = int(arr.min()), int(arr.max())
        small = lo >= 0 and hi < 1 << 16  # fast path: a lookup table indexed by the value itself
        if small:
            values = np.flatnonzero(np.bincount(arr.ravel(), minlength=hi + 1))
        else:
            values, inverse = np.unique(arr, return_inverse=True)
        unknown = [int(v) for v in values if int(v) not in self.table]
        if unknown and self.others == "error":
            raise DataError(
                f"{source}: label values {unknown} are not in mapping {self.name!r} "
                f"(known values: {sorted(self.table)}); fix the file or extend the table"
            )
        fill = 0 if self.others == "background" else IGNORE_INDEX
        if small:
            lut = np.full(hi + 1, fill, dtype=np.uint8)
            for v in values:
                lut[v] = self.table.get(int(v), fill)
            return lut[arr]
        lut = np.array([self.table.get(int(v), fill) for v in values], dtype=np.uint8)
        return lut[inverse].reshape(arr.shape)

    def to_dict(self) -> dict[str, Any]:
        """TOML/JSON-able form: ``{"name", "others", "labels": {"1": "liver", ...}}``."""
        return {
            "name": self.name,
            "others": self.others,
            "labels": {str(k): ("ignore" if v == IGNORE_INDEX else ORGANS[v]) for k, v in self.table.items()},
        }


def mapping_from_dict(spec: Mapping[Any, Any], name: str = "user") -> LabelMapping:
    """Build a :class:`LabelMapping` from a plain (TOML-able) dict.

    Two forms are accepted: ``{"name": ..., "others": ..., "labels": {"1": "liver", ...}}`` or
    the bare table ``{1: "liver", "2": "right_kidney", 3: 4}``. Keys may be ints or digit
    strings (TOML keys are strings); values are organ names, ``"ignore"`` or ids.
    """
    if "labels" in spec:
        table_spec = spec["labels"]
        name = str(spec.get("name", name))
        others = spec.get("others", "error")
    else:
        table_spec, others = spec, "error"
    if not isinstance(table_spec, Mapping):
        raise ValueError(f"labels must be a table of source value -> organ, got {type(table_spec).__name__}")
    table: dict[int, int] = {}
    for key, value in table_spec.items():
        try:
            src = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"mapping {name!r}: source label must be an integer, got {key!r}") from None
        table[src] = organ_id(value)
    return LabelMapping(name=name, table=table, others=others)


def load_mapping(path: str | Path) -> LabelMapping:
    """Read a mapping table from a TOML file (see :func:`mapping_from_dict` for the layout)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    path = Path(path)
    with path.open("rb") as fh:
        return mapping_from_dict(tomllib.load(fh), name=path.stem)


#: CHAOS MR (T2-SPIR / T1-DUAL): 1 liver, 2 right kidney, 3 left kidney, 4 spleen (Kavur et al. 2021).
CHAOS_MR = LabelMapping("chaos_mr", {1: 1, 2: 2, 3: 3, 4: 4})

#: AMOS 2022 (Ji et al., NeurIPS 2022): 15 organs; those outside the vocabulary -> background
#: (they are annotated as *other* structures, so background there is correct).
AMOS = LabelMapping(
    "amos",
    {
        1: ORGAN_IDS["spleen"],
        2: ORGAN_IDS["right_kidney"],
        3: ORGAN_IDS["left_kidney"],
        4: ORGAN_IDS["gallbladder"],
        5: 0,  # esophagus
        6: ORGAN_IDS["liver"],
        7: ORGAN_IDS["stomach"],
        8: 0,  # aorta
        9: 0,  # postcava (inferior vena cava)
        10: ORGAN_IDS["pancreas"],
        11: 0,  # right adrenal gland
        12: 0,  # left adrenal gland
        13: 0,  # duodenum
        14: 0,  # bladder
        15: 0,  # prostate / uterus
    },
)

#: TotalSegmentator v2 (Wasserthal et al., Radiology: AI 2023): the abdominal organs; its other
#: ~110 classes are annotated structures that are not in the vocabulary -> background.
TOTALSEGMENTATOR_V2 = LabelMapping(
    "totalsegmentator_v2",
    {
        1: ORGAN_IDS["spleen"],
        2: ORGAN_IDS["right_kidney"],
        3: ORGAN_IDS["left_kidney"],
        4: ORGAN_IDS["gallbladder"],
        5: ORGAN_IDS["liver"],
        6: ORGAN_IDS["stomach"],
        7: ORGAN_IDS["pancreas"],
    },
    others="background",
)

#: Label maps already in the organ vocabulary (fedsilo's phantoms, ``fedsilo predict`` output).
FEDSILO = LabelMapping("fedsilo", {i: i for i in range(1, NUM_CLASSES)})

#: Built-in tables by name.
BUILTIN_MAPPINGS: dict[str, LabelMapping] = {m.name: m for m in (CHAOS_MR, AMOS, TOTALSEGMENTATOR_V2, FEDSILO)}


def get_mapping(spec: LabelMapping | Mapping[Any, Any] | str | Path) -> LabelMapping:
    """Resolve a mapping given as a table, a built-in name (see :data:`BUILTIN_MAPPINGS`), a
    dict (see :func:`mapping_from_dict`) or a path to a TOML file."""
    if isinstance(spec, LabelMapping):
        return spec
    if isinstance(spec, Mapping):
        return mapping_from_dict(spec)
    if isinstance(spec, str) and spec in BUILTIN_MAPPINGS:
        return BUILTIN_MAPPINGS[spec]
    if isinstance(spec, (str, Path)) and str(spec).endswith(".toml"):
        return load_mapping(spec)
    raise ValueError(f"mapping must be one of {sorted(BUILTIN_MAPPINGS)}, a dict or a .toml path, got {spec!r}")


def annotated_class_mask(annotated: Iterable[int]) -> np.ndarray:
    """Which classes a label map can be trusted for.

    Parameters
    ----------
    annotated : iterable of int
        Organ ids the label map annotates.

    Returns
    -------
    np.ndarray
        ``bool`` array ``(NUM_CLASSES,)``; background (0) is always True. A loss should merge the
        False classes' probabilities into background (marginal loss, Shi et al., MedIA 2021) or
        drop them; evaluation should report only the True organs.
    """
    mask = np.zeros(NUM_CLASSES, dtype=bool)
    mask[0] = True
    for organ in annotated:
        organ = organ_id(int(organ))
        if organ == IGNORE_INDEX:
            raise ValueError(f"annotated organs must be in 1..{NUM_CLASSES - 1}, got {IGNORE_INDEX}")
        mask[organ] = True
    return mask


def organ_names(ids: Iterable[int]) -> list[str]:
    """Names for organ ids, in id order."""
    return [ORGANS[i] for i in sorted(set(ids)) if 0 <= i < NUM_CLASSES]
