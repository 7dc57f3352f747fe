"""Inspection table and preview grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedsilo.data.inspect import inspect_volumes, preview_grid, rows_to_text
from fedsilo.data.sources import Volume, chaos_source, pair_source
from helpers import make_volume


def _vol(pid: str, site: str | None, modality: str, depth: int, organs: tuple[int, ...],
         spacing=(5.0, 1.0, 1.0)) -> Volume:
    """``depth`` slices of 8 x 8 with one voxel of each organ in ``organs``; liver, right kidney and
    spleen annotated."""
    labels = np.zeros((depth, 8, 8), dtype=np.uint8)
    for i, organ in enumerate(organs):
        labels[0, i, i] = organ
    return make_volume(labels=labels, spacing=spacing, patient_id=pid, modality=modality, site=site,
                       annotated={1, 2, 4})


def test_inspect_rows_hand_checked() -> None:
    vols = [
        _vol("a", "north", "ct", 3, (1, 4)),
        _vol("a", "north", "ct", 2, (1,), spacing=(2.0, 0.5, 0.5)),
        _vol("b", "north", "ct", 4, ()),
        _vol("c", None, "mr", 5, (2,)),
        Volume(np.zeros((6, 4, 4), np.float32), None, (1.0, 1.0, 1.0), "d", "mr"),
    ]
    rows = inspect_volumes(iter(vols))
    assert [(r["site"], r["modality"]) for r in rows] == [("-", "mr"), ("north", "ct")]
    north = rows[1]
    assert (north["patients"], north["volumes"], north["slices"]) == (2, 3, 9)
    assert north["spacing_min"] == (2.0, 0.5, 0.5) and north["spacing_max"] == (5.0, 1.0, 1.0)
    assert north["annotated"] == ["liver", "right_kidney", "spleen"]
    assert north["present"] == {"liver": 2, "spleen": 1}
    mr = rows[0]
    assert (mr["patients"], mr["volumes"], mr["slices"], mr["unlabelled"]) == (2, 2, 11, 1)
    assert mr["present"] == {"right_kidney": 1}
    assert "patients=2 volumes=3 slices=9" in rows_to_text(rows)


def test_preview_grid_real_data(tmp_path: Path, shared_data: Path) -> None:
    """Writes the CHAOS + TotalSegmentator grid (looked at by eye when written: radiological,
    overlays on the organs); here: the file is a real PNG and the overlay sits where the
    liver is, on the left half of each tile."""
    chaos = chaos_source(shared_data / "chaos_mr_t2", site="chaos")
    d = shared_data / "totalseg_ct"
    ts = pair_source(d / "ct.nii.gz", d / "seg.nii.gz", "s0011", "ct", "totalsegmentator_v2", site="tseg")
    vols = [chaos.load(chaos.cases()[0]), next(iter(ts))]
    out = preview_grid(vols, tmp_path / "grid.png", slices_per_volume=2)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (600, 680)
        rgb = np.asarray(im.convert("RGB")).astype(int)
    # liver overlay colour (reddish: R much larger than G and B) sits in the left half of the figure
    reddish = (rgb[..., 0] - rgb[..., 1] > 60) & (rgb[..., 0] - rgb[..., 2] > 60)
    cols = np.nonzero(reddish)[1]
    assert cols.size > 500 and np.mean(cols % 300 < 150) > 0.8


def test_preview_grid_unlabelled_and_errors(tmp_path: Path) -> None:
    vol = Volume(np.random.default_rng(0).normal(size=(5, 8, 6)).astype(np.float32), None, (1, 1, 1), "u", "mr")
    assert preview_grid([vol], tmp_path / "u.png", slices_per_volume=4).is_file()
    with pytest.raises(ValueError, match="slices_per_volume and max_volumes must be >= 1"):
        preview_grid([vol], tmp_path / "x.png", slices_per_volume=0)
    with pytest.raises(ValueError, match="alpha must be in"):
        preview_grid([vol], tmp_path / "x.png", alpha=2.0)
    with pytest.raises(ValueError, match="at least one volume"):
        preview_grid([], tmp_path / "x.png")
