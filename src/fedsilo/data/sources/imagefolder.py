"""A folder of images with a CSV of labels (APTOS 2019 / EyePACS layout).

The CSV has an image id column (``id_code`` in APTOS, ``image`` in EyePACS) and a grade column
(``diagnosis`` / ``level``); column names are configurable. Images are found as
``<image_dir>/<id><ext>`` for the configured extensions (or ``<id>`` if it has one already).
Images are decoded with Pillow, converted to RGB and resized on load, so a folder of full-size
photographs fits in memory.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from fedsilo.data.errors import DataError
from fedsilo.data.images import ImageArrays

logger = logging.getLogger(__name__)


def read_label_csv(
    csv_path: Path, id_column: str, label_column: str, site_column: str = ""
) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """Ids, int labels and optional site ids from a label CSV; errors name the row."""
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: label CSV does not exist")
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        for col in (id_column, label_column, site_column):
            if col and col not in columns:
                raise DataError(f"{csv_path}: no column {col!r}; columns are {', '.join(columns)}")
        ids, labels, sites = [], [], []
        for line, row in enumerate(reader, start=2):
            try:
                labels.append(int(str(row[label_column]).strip()))
            except ValueError:
                raise DataError(
                    f"{csv_path}, line {line}: label {row[label_column]!r} in column {label_column!r} is not an integer"
                ) from None
            ids.append(str(row[id_column]).strip())
            if site_column:
                sites.append(str(row[site_column]).strip())
    if not ids:
        raise DataError(f"{csv_path}: no rows")
    return ids, np.asarray(labels, dtype=np.int64), (np.asarray(sites) if site_column else None)


def find_image(image_dir: Path, image_id: str, extensions: Sequence[str]) -> Path:
    """Path of the image file for an id; :class:`DataError` when none exists."""
    direct = image_dir / image_id
    if direct.suffix and direct.is_file():
        return direct
    for ext in extensions:
        candidate = image_dir / f"{image_id}{ext}"
        if candidate.is_file():
            return candidate
    raise DataError(f"{image_dir}: no image file for id {image_id!r} (tried extensions {', '.join(extensions)})")


def load_image_folder(
    root: str | Path,
    csv_name: str,
    *,
    image_dir: str = "",
    id_column: str = "id_code",
    label_column: str = "diagnosis",
    site_column: str = "",
    extensions: Sequence[str] = (".png", ".jpg", ".jpeg", ".tif"),
    size: int | None = None,
    num_classes: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ImageArrays:
    """Load every image listed in the CSV, resized to ``size`` x ``size`` RGB.

    Raises
    ------
    DataError
        Missing CSV/columns/images, unreadable image (the file is named), labels out of range.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    csv_path = Path(csv_name) if Path(csv_name).is_absolute() else root / csv_name
    folder = root / image_dir if image_dir else root
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder does not exist")
    ids, labels, sites = read_label_csv(csv_path, id_column, label_column, site_column)
    arrays = []
    for i, image_id in enumerate(ids):
        path = find_image(folder, image_id, extensions)
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if size is not None:
                    im = im.resize((size, size), Image.Resampling.LANCZOS)
                arrays.append(np.asarray(im, dtype=np.uint8))
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{path}: unreadable image ({exc})") from None
        if progress is not None:
            progress(i + 1, len(ids))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataError(f"{folder}: images have different sizes {sorted(shapes)[:3]}; set data.image_size")
    out = ImageArrays(np.stack(arrays), labels, sites, origin=str(csv_path))
    if num_classes is not None:
        out.check_labels(num_classes)
    logger.info("Loaded %d images from %s", len(out), folder)
    return out
