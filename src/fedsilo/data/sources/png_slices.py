"""Folders of 2D PNG slices, e.g. the RSNA 2023 abdominal-trauma PNG conversions laid out as
``<patient>/<series>/<slice>.png``: unlabelled corpora for GAN pre-training.

PNG carries no geometry: slice order is the numeric file stem (the DICOM instance number in the
RSNA conversions, whose direction is not known), spacing is the nominal ``spacing`` argument,
and the pixels are taken as already in radiological display (as DICOM-derived PNGs are).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from fedsilo.data.errors import DataError
from fedsilo.data.sources.volume import CaseRef, Modality, Volume, check_modality

if TYPE_CHECKING:
    from fedsilo.data.slices import Slice

__all__ = ["PngSliceSource", "read_png"]

logger = logging.getLogger(__name__)

Scale = Literal["dtype", "none"]


def read_png(path: Path, scale: Scale = "dtype") -> np.ndarray:
    """Read a grayscale PNG as ``float32`` ``(H, W)``; ``"dtype"`` divides by 255 (8-bit) or
    65535 (16-bit) into [0, 1], ``"none"`` keeps the stored values."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("L", "I;16", "I;16B", "I", "1"):
                raise DataError(f"{path}: expected a grayscale PNG, got mode {im.mode}")
            arr = np.asarray(im)
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot read PNG ({exc})") from exc
    if scale == "none":
        return arr.astype(np.float32)
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    peak = 255.0 if arr.dtype == np.uint8 else 65535.0
    return arr.astype(np.float32) / peak


def _slice_number(path: Path) -> tuple[int, str]:
    digits = re.findall(r"\d+", path.stem)
    return (int(digits[-1]) if digits else -1, path.name)


class PngSliceSource:
    """``<root>/<patient>/<series>/<slice>.png`` (or ``<root>/<patient>/<slice>.png``).

    Parameters
    ----------
    root : str or Path
    modality : {"ct", "mr"}
    site : str or None
    scale : {"dtype", "none"}
        See :func:`read_png`.
    spacing : tuple of float
        Nominal ``(dz, dy, dx)`` given to stacks (PNG has none).

    Notes
    -----
    It is also a :class:`~fedsilo.data.sources.volume.VolumeSource` (one unlabelled volume per
    series); preprocess such stacks with ``PreprocessSettings(normalize=False)`` since the PNG
    values are already display-scaled.
    """

    def __init__(
        self,
        root: str | Path,
        modality: Modality | str = "ct",
        site: str | None = None,
        scale: Scale = "dtype",
        spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    ) -> None:
        if scale not in ("dtype", "none"):
            raise ValueError(f"scale must be 'dtype' or 'none', got {scale!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: PNG folder not found")
        self.modality = check_modality(modality)
        self.site = site
        self.scale: Scale = scale
        self.spacing = spacing
        self.name = f"png:{self.root.name}"
        self._series = self._scan()
        if not self._series:
            raise DataError(f"{self.root}: no <patient>/<series>/<slice>.png files")

    def _scan(self) -> list[tuple[str, str, list[Path]]]:
        series = []
        for patient in sorted(p for p in self.root.iterdir() if p.is_dir()):
            direct = sorted(patient.glob("*.png"), key=_slice_number)
            if direct:
                series.append((patient.name, "", direct))
            for folder in sorted(p for p in patient.iterdir() if p.is_dir()):
                files = sorted(folder.glob("*.png"), key=_slice_number)
                if files:
                    series.append((patient.name, folder.name, files))
        return series

    def cases(self) -> Sequence[CaseRef]:
        """One case per series (``case_id`` = ``<patient>/<series>``)."""
        return [
            CaseRef(pid, self.modality, self.root / pid / sid, site=self.site, case_id=f"{pid}/{sid}" if sid else pid)
            for pid, sid, _ in self._series
        ]

    def _files(self, case: CaseRef) -> list[Path]:
        for pid, sid, files in self._series:
            if (f"{pid}/{sid}" if sid else pid) == case.case_id:
                return files
        raise ValueError(f"case must come from this source's cases(), got {case.case_id!r}")

    def load(self, case: CaseRef) -> Volume:
        """Stack one series into an unlabelled ``(D, H, W)`` volume."""
        files = self._files(case)
        planes = [read_png(f, self.scale) for f in files]
        shapes = {p.shape for p in planes}
        if len(shapes) > 1:
            raise DataError(f"{case.image}: slices of one series differ in size {sorted(shapes)}")
        return Volume(
            image=np.stack(planes),
            labels=None,
            spacing=self.spacing,
            patient_id=case.patient_id,
            modality=self.modality,
            site=self.site,
            source=(case.image,),
            case_id=case.case_id,
        )

    def iter_slices(self) -> Iterator[Slice]:
        """Every slice as a one-channel :class:`Slice` ``(1, H, W)``, decoding one file at a time;
        ``slice_index`` is the position in the series' numeric file order."""
        from fedsilo.data.slices import Slice  # here: fedsilo.data.slices imports this package
        for pid, sid, files in self._series:
            case_id = f"{pid}/{sid}" if sid else pid
            for index, path in enumerate(files):
                image = read_png(path, self.scale)
                yield Slice(
                    image[None], None, pid, case_id, index, len(files), self.modality, self.site, frozenset(), self.spacing
                )

    def num_slices(self) -> int:
        """Total number of PNG files."""
        return sum(len(files) for _, _, files in self._series)

    def __iter__(self) -> Iterator[Volume]:
        for case in self.cases():
            yield self.load(case)

    def __len__(self) -> int:
        return len(self._series)
