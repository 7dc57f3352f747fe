"""DP cost: an Opacus DP-SGD step (per-sample gradients, clipping, noise) vs a plain step.

Models as DP trains them (GroupNorm instead of BatchNorm): the DCGAN discriminator (the only
part of the GAN that sees real data) and the segmentation U-Net. Opacus' per-sample gradients by
module hooks (its default, what fedsilo trains with), by ``torch.func`` vmap ("functorch"), by
torch's expanded weights ("ew"), and ghost clipping ("ghost", Li et al. ICLR 2022; no per-sample
gradient is materialised) are timed on the same batches in one process.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.common import median_time, table
from fedsilo.data.labels import NUM_CLASSES
from fedsilo.models.dcgan import DCGANDiscriminator
from fedsilo.models.unet import build_unet

NAME = "dp"
#: Opacus' ways to get per-sample gradients: hooks (default), functorch (vmap), ew (torch's expanded
#: weights), and ghost clipping (norms only).
MODES = ("hooks", "functorch", "ew", "ghost")
TITLE = "DP-SGD cost vs non-private training steps (issue 9)"


def _models(quick: bool):
    d_size, u_size = (28, 48) if quick else (64, 96)
    gen = torch.Generator().manual_seed(0)
    disc = (lambda: DCGANDiscriminator(d_size, 3, base_width=32 if quick else 64, norm="group"),
            torch.rand(64, 3, d_size, d_size, generator=gen) * 2 - 1, torch.ones(64), "bce")
    unet = (lambda: build_unet(1, NUM_CLASSES, norm="group"),
            torch.rand(8, 1, u_size, u_size, generator=gen),
            torch.randint(0, NUM_CLASSES, (8, u_size, u_size), generator=gen), "ce")
    return {f"DCGAN discriminator {d_size} px, batch 64": disc, f"U-Net {u_size} px, batch 8": unet}


def _loss(kind: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(out, y) if kind == "bce" else F.cross_entropy(out, y)


def _plain(make, x, y, kind):
    model = make()
    opt = torch.optim.Adam(model.parameters(), 2e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        _loss(kind, model(x), y).backward()
        opt.step()

    return step


def _private(make, x, y, kind, mode: str):
    from opacus import PrivacyEngine

    model = make()
    opt = torch.optim.Adam(model.parameters(), 2e-4)
    loader = DataLoader(TensorDataset(x, y), batch_size=len(x))
    engine = PrivacyEngine(accountant="rdp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if mode == "ghost":
            criterion = torch.nn.BCEWithLogitsLoss() if kind == "bce" else torch.nn.CrossEntropyLoss()
            model, opt, criterion, _ = engine.make_private(module=model, optimizer=opt, data_loader=loader,
                                                           criterion=criterion, noise_multiplier=1.0,
                                                           max_grad_norm=1.0, grad_sample_mode="ghost",
                                                           poisson_sampling=False)

            def step() -> None:
                opt.zero_grad(set_to_none=True)
                loss = criterion(model(x), y)
                loss.backward()
                opt.step()

            return step
        model, opt, _ = engine.make_private(module=model, optimizer=opt, data_loader=loader, noise_multiplier=1.0,
                                            max_grad_norm=1.0, poisson_sampling=False, grad_sample_mode=mode)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        _loss(kind, model(x), y).backward()
        opt.step()

    return step


def run(quick: bool = False) -> str:
    torch.set_num_threads(1)
    repeats = 3 if quick else 5
    rows, ratios = [], []
    for name, (make, x, y, kind) in _models(quick).items():
        plain = median_time(_plain(make, x, y, kind), repeats)
        cells = [name, f"{plain * 1e3:.0f}"]
        for mode in MODES:
            try:
                t = median_time(_private(make, x, y, kind, mode), repeats)
                cells += [f"{t * 1e3:.0f}", f"{t / plain:.2f}x"]
                ratios.append((name, mode, t / plain))
            except Exception as exc:  # noqa: BLE001 - report what Opacus cannot do, keep measuring
                cells += ["–", f"fails: {type(exc).__name__}"]
        rows.append(cells)
    best = {n: min(r for m, mo, r in ratios if m == n) for n in {m for m, _, _ in ratios}}
    verdict = "; ".join(f"{n}: best {r:.2f}x ({'met' if r <= 3 else 'NOT met'})" for n, r in sorted(best.items()))
    return (f"One thread, median of {repeats} steps after a warm-up; noise 1.0, clipping norm 1.0, Adam.\n\n"
            + table(["model", "plain ms", *[h for m in MODES for h in (f"{m} ms", f"{m} ratio")]], rows)
            + f"\n\nGoal DP step <= 3x a plain step: {verdict}.\n")
