"""Augmentation cost: each intensity augmentation on a batch vs one U-Net training step.

The step is what a site does per batch in the segmentation task: forward, masked Dice + CE,
backward and an Adam update of the 2D U-Net (MONAI UNet, batch norm) on (B, 1, H, W) slices.
Each augmentation is timed on the same batch, in the same process, medians over repeats.
"""

from __future__ import annotations

import torch

from benchmarks.common import median_time, table
from fedsilo.augment import AUGMENTATIONS, build_augmentation
from fedsilo.data.labels import NUM_CLASSES
from fedsilo.models.unet import build_unet
from fedsilo.tasks.segmentation.losses import masked_dice_ce

NAME = "augment"
TITLE = "Augmentation cost vs a U-Net training step (issue 9)"


def run(quick: bool = False) -> str:
    torch.set_num_threads(1)
    size, batch = (64, 8) if quick else (96, 16)
    repeats = 3 if quick else 7
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 1, size, size, generator=gen)
    y = torch.randint(0, NUM_CLASSES, (batch, size, size), generator=gen)
    net = build_unet(1, NUM_CLASSES, norm="batch")
    opt = torch.optim.Adam(net.parameters(), 1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        masked_dice_ce(net(x), y).backward()
        opt.step()

    step_s = median_time(step, repeats)
    rows = [["U-Net training step", f"{step_s * 1e3:.1f}", "100%"]]
    for name in AUGMENTATIONS:
        if name == "none":
            continue
        aug = build_augmentation(name, prob=1.0, generator=0)
        with torch.no_grad():
            t = median_time(lambda aug=aug: aug(x), repeats)
        rows.append([name, f"{t * 1e3:.2f}", f"{100 * t / step_s:.1f}%"])
    gin_pct = float(rows[[r[0] for r in rows].index("gin")][2].rstrip("%"))
    verdict = "met" if gin_pct <= 10 else "NOT met"
    return (f"Batch {batch} x 1 x {size} x {size}, one thread, median of {repeats}; augmentations applied to every "
            f"sample (prob = 1).\n\n" + table(["operation", "ms per batch", "% of a training step"], rows)
            + f"\n\nGoal GIN <= 10% of a U-Net step: {verdict} ({gin_pct:.1f}%).\n")
