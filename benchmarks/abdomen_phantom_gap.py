"""Cross-modality gap on the abdomen phantom: a 2D U-Net trained on CT, tested on CT and MRI.

Trains MONAI's BasicUNet on axial slices of phantom CT patients (windowed W400/L40 to [0, 1]),
once without and once with a random intensity remapping (a random cubic Chebyshev polynomial of
the intensity, min-max rescaled: non-monotone, so it can invert and reorder tissues), and reports
the mean foreground Dice (per volume, over the organs present) on held-out phantom CT and on
phantom T2 and T1 MRI (per-volume 0.5-99.5 percentile min-max to [0, 1]). The phantom is
meant to show a large CT -> MR drop that intensity augmentation narrows (the FedGIN premise).

Usage: ``PYTHONPATH=src python benchmarks/abdomen_phantom_gap.py --steps 1500 --size 64``

Recorded (defaults, --steps 1500, 2 shared CPU cores, ~12 min; 16 CT train patients = 376
slices of 24x64x64 volumes; 4 CT, 6 T2 and 6 T1 test patients; mean foreground Dice):

    =============  =====  =====  =====
    training       CT     MR-T2  MR-T1
    =============  =====  =====  =====
    no augment     0.708  0.201  0.081
    random remap   0.563  0.431  0.501
    =============  =====  =====  =====
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.networks.nets import BasicUNet

from fedsilo.data.labels import NUM_CLASSES
from fedsilo.data.phantoms.abdomen import PhantomVolume, phantom_patient

logger = logging.getLogger("abdomen_phantom_gap")


def ct_window(v: np.ndarray) -> np.ndarray:
    """HU -> [0, 1] with window width 400, level 40."""
    return np.clip((v + 160.0) / 400.0, 0.0, 1.0).astype(np.float32)


def mr_minmax(v: np.ndarray) -> np.ndarray:
    """Per-volume 0.5-99.5 percentile min-max to [0, 1]."""
    lo, hi = np.percentile(v, [0.5, 99.5])
    return np.clip((v - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def random_remap(x: torch.Tensor, g: torch.Generator, p: float = 0.8) -> torch.Tensor:
    """Per image ``(B, 1, H, W)`` in [0, 1]: a random cubic of the intensity, min-max to [0, 1]."""
    b = x.shape[0]
    c = torch.randn(b, 4, generator=g).view(b, 4, 1, 1, 1)
    t = 2.0 * x - 1.0
    y = c[:, 0] + c[:, 1] * t + c[:, 2] * (2 * t * t - 1) + c[:, 3] * (4 * t ** 3 - 3 * t)
    lo, hi = y.amin((1, 2, 3), keepdim=True), y.amax((1, 2, 3), keepdim=True)
    y = (y - lo) / (hi - lo + 1e-6)
    return torch.where((torch.rand(b, generator=g) < p).view(b, 1, 1, 1), y, x)


def train(x: torch.Tensor, y: torch.Tensor, steps: int, augment: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=NUM_CLASSES,
                    features=(8, 16, 32, 64, 128, 8))
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    for step in range(steps):
        idx = torch.randint(0, len(x), (16,), generator=g)
        xb = random_remap(x[idx], g) if augment else x[idx]
        loss = loss_fn(net(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            logger.info("augment=%s step %d loss %.3f", augment, step, loss.item())
    return net.eval()


def mean_dice(net: torch.nn.Module, vols: list[PhantomVolume], norm) -> tuple[float, np.ndarray]:
    """Mean over volumes of the mean Dice over organs present; and per-organ means."""
    scores = []
    with torch.no_grad():
        for v in vols:
            x = torch.from_numpy(norm(v.image))[:, None]
            pred = torch.cat([net(x[i:i + 16]).argmax(1) for i in range(0, len(x), 16)]).numpy()
            scores.append([2.0 * ((pred == k) & (v.labels == k)).sum()
                           / ((pred == k).sum() + (v.labels == k).sum())
                           if (v.labels == k).any() else np.nan for k in range(1, NUM_CLASSES)])
    s = np.array(scores)
    return float(np.nanmean(np.nanmean(s, axis=1))), np.nanmean(s, axis=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=16, help="phantom CT training patients")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--size", type=int, default=64, help="slice height and width")
    ap.add_argument("--depth", type=int, default=24, help="slices per patient")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    shape = (args.depth, args.size, args.size)
    t0 = time.perf_counter()
    tr = [phantom_patient(i, modality="ct", seed=0, shape=shape) for i in range(args.train)]
    tests = {
        "CT": ([phantom_patient(i, modality="ct", seed=0, shape=shape) for i in range(100, 104)],
               ct_window),
        "MR-T2": ([phantom_patient(i, modality="mr", seed=0, shape=shape) for i in range(6)],
                  mr_minmax),
        "MR-T1": ([phantom_patient(i, modality="mr", seed=0, shape=shape, contrast="t1")
                   for i in range(6)], mr_minmax),
    }
    x = np.concatenate([ct_window(v.image) for v in tr])[:, None]
    y = np.concatenate([v.labels for v in tr]).astype(np.int64)[:, None]
    keep = (y > 0).reshape(len(y), -1).any(axis=1)
    x_t, y_t = torch.from_numpy(x[keep]), torch.from_numpy(y[keep])
    logger.info("data %.1fs, %d training slices", time.perf_counter() - t0, len(x_t))
    for augment in (False, True):
        t1 = time.perf_counter()
        net = train(x_t, y_t, args.steps, augment)
        logger.info("trained in %.0fs", time.perf_counter() - t1)
        for name, (vols, norm) in tests.items():
            m, per = mean_dice(net, vols, norm)
            logger.info("augment=%s %-5s mean Dice %.3f  per organ %s", augment, name, m,
                        np.round(per, 2))


if __name__ == "__main__":
    main()
