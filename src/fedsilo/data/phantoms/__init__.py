"""fedsilo.data.phantoms: built-in synthetic data sets that need no download."""

from fedsilo.data.phantoms.abdomen import (
    AbdomenAnatomy,
    PhantomVolume,
    generate_anatomy,
    phantom_patient,
    render_ct,
    render_mr,
)

__all__ = [
    "AbdomenAnatomy",
    "PhantomVolume",
    "generate_anatomy",
    "phantom_patient",
    "render_ct",
    "render_mr",
]
