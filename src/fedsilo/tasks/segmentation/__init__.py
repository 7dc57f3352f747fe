"""fedsilo.tasks.segmentation: cross-modality organ segmentation (FedGIN)."""

from fedsilo.tasks.segmentation.losses import marginal_log_probs, masked_dice_ce
from fedsilo.tasks.segmentation.methods import METHODS, Method, make_augmentation, resolve_method
from fedsilo.tasks.segmentation.metrics import (
    as_annotated,
    dice_per_class,
    hd95_per_class,
    nanmean_per_class,
    per_patient_dice,
    per_patient_hd95,
    stack_slices,
)
from fedsilo.tasks.segmentation.task import SegmentationTask

__all__ = [
    "METHODS",
    "Method",
    "SegmentationTask",
    "make_augmentation",
    "resolve_method",
    "as_annotated",
    "dice_per_class",
    "hd95_per_class",
    "marginal_log_probs",
    "masked_dice_ce",
    "nanmean_per_class",
    "per_patient_dice",
    "per_patient_hd95",
    "stack_slices",
]
