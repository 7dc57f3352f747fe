"""The organ vocabulary shared by every abdominal source, phantom and model.

Every label map that enters fedsilo is remapped to these ids, so that sites with different
label sets (CHAOS, AMOS, TotalSegmentator, a user's own) can federate one segmentation model.
A site records which of these organs it annotates; the others are *unannotated* there, never
silently background (see :data:`IGNORE_INDEX`).
"""

from __future__ import annotations

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
