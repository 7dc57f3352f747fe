"""fedsilo.data.phantoms: built-in synthetic images for running every workflow without real data."""

from .fundus import DEFAULT_GRADE_WEIGHTS, LESION_TYPES, NUM_GRADES, fundus_phantom_dataset, generate_fundus
from .fundus_style import CameraStyle, camera_styles

__all__ = [
    "CameraStyle",
    "DEFAULT_GRADE_WEIGHTS",
    "LESION_TYPES",
    "NUM_GRADES",
    "camera_styles",
    "fundus_phantom_dataset",
    "generate_fundus",
]
