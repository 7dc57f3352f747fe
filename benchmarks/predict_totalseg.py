"""``fedsilo predict`` on the TotalSegmentator CT in ../shared/data with a trained segmentation run,
Dice per organ against its (TotalSegmentator-model) label map, and the overlay.

    python -m benchmarks.predict_totalseg RUN_DIR [--out DIR]

Writes the RESULTS.md section ``predict-totalseg``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from benchmarks.common import REPO, table, write_section
from fedsilo.data.labels import ORGANS, get_mapping
from fedsilo.inference.predict import predict_path

SHARED = REPO.parent / "shared" / "data" / "totalseg_ct"


def run(run_dir: Path, out: Path) -> str:
    summary = predict_path(run_dir, SHARED / "ct.nii.gz", out, modality="ct")
    pred_img = nib.load(summary.written["ct"])
    truth_img = nib.load(SHARED / "seg.nii.gz")
    assert np.allclose(pred_img.affine, truth_img.affine, atol=1e-3) and pred_img.shape == truth_img.shape
    pred = np.asarray(pred_img.dataobj)
    truth = get_mapping("totalsegmentator_v2").remap(np.asarray(truth_img.dataobj), source=SHARED / "seg.nii.gz")
    voxel_ml = abs(float(np.linalg.det(truth_img.affine[:3, :3]))) / 1000
    rows, dices = [], []
    for k, organ in enumerate(ORGANS[1:], start=1):
        p, t = pred == k, truth == k
        if not t.any() and not p.any():
            continue
        dice = 2 * (p & t).sum() / (p.sum() + t.sum())
        dices.append(dice)
        rows.append([organ, f"{t.sum() * voxel_ml:.1f}", f"{p.sum() * voxel_ml:.1f}", f"{dice:.3f}"])
    return (f"Model: `{run_dir}` (its config: `{run_dir / 'config.toml'}`). Input: `../shared/data/totalseg_ct/ct.nii.gz` "
            f"({' x '.join(map(str, truth_img.shape))} voxels, 3 mm); the label map keeps the input's affine and shape. "
            f"Reference: the TotalSegmentator model's own output (`seg.nii.gz`, not a manual annotation), mapped to the "
            f"organ vocabulary. Overlay: `{summary.out / 'overlays' / 'ct.png'}`.\n\n"
            + table(["organ", "reference mL", "predicted mL", "Dice"], rows)
            + f"\n\nMean Dice over these organs: {np.mean(dices):.3f}.\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("runs/predict-totalseg"))
    args = parser.parse_args()
    t0 = time.monotonic()
    body = run(args.run_dir, args.out)
    write_section("predict-totalseg", "fedsilo predict on the TotalSegmentator CT (issue 10)",
                  f"python -m benchmarks.predict_totalseg {args.run_dir}", body, t0)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
