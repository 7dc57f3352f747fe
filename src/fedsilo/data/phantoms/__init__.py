"""fedsilo.data.phantoms: built-in synthetic images for running every workflow without real data."""

from fedsilo.data.phantoms.abdomen import (
    AbdomenAnatomy,
    PhantomVolume,
    generate_anatomy,
    phantom_patient,
    render_ct,
    render_mr,
)
from fedsilo.data.phantoms.fundus import (
    DEFAULT_GRADE_WEIGHTS,
    LESION_TYPES,
    NUM_GRADES,
    fundus_phantom_dataset,
    generate_fundus,
)
from fedsilo.data.phantoms.fundus_style import CameraStyle, camera_styles

__all__ = [
    "AbdomenAnatomy",
    "CameraStyle",
    "DEFAULT_GRADE_WEIGHTS",
    "LESION_TYPES",
    "NUM_GRADES",
    "PhantomVolume",
    "camera_styles",
    "fundus_phantom_dataset",
    "generate_anatomy",
    "generate_fundus",
    "phantom_patient",
    "render_ct",
    "render_mr",
]
