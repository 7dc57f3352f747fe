"""Framework overhead: a site's local training throughput through fedsilo vs a plain PyTorch loop.

The same model (same initial weights), batch size, number of steps and images: fedsilo's path is
the task's ``train`` (one round of local training as a site runs it: batch sampling, optimiser,
progress reporting, metrics); the plain loop is what one would write by hand. Measured alternately
in one process, median of repeats.
"""

from __future__ import annotations

import statistics
import time

import torch

from benchmarks.common import table
from fedsilo.config import config_from_dict
from fedsilo.data.images import iterate_batches
from fedsilo.models.dcgan import sample_latent
from fedsilo.models.gan_losses import discriminator_loss, generator_loss
from fedsilo.tasks import TrainContext, make_task
from fedsilo.tasks.segmentation.losses import masked_dice_ce
from fedsilo.training import train_site

NAME = "framework"
TITLE = "Framework overhead: site training through fedsilo vs a plain PyTorch loop (issue 9)"


def _gan_cfg(steps: int):
    return config_from_dict({
        "experiment": {"name": "bench-gan", "task": "synthesis", "threads": 1},
        "data": {"source": "phantom", "image_size": 28, "val_fraction": 0.0, "phantom": {"n_train": 600, "n_test": 50}},
        "partition": {"name": "iid"}, "federation": {"num_sites": 1, "rounds": 1},
        "train": {"local_steps": steps, "batch_size": 64},
        "gan": {"latent_dim": 64, "g_width": 32, "d_width": 32},
    })


def _seg_cfg(steps: int):
    shape = [16, 64, 64]
    return config_from_dict({
        "experiment": {"name": "bench-seg", "task": "segmentation", "threads": 1},
        "data": {"source": "volumes", "val_fraction": 0.0, "volume": {"size": 64, "skip_empty": True, "cache": False},
                 "sites": [{"name": "ct", "kind": "phantom", "modality": "ct", "count": 4, "shape": shape}]},
        "federation": {"num_sites": 1, "rounds": 1},
        "train": {"local_steps": steps, "batch_size": 16, "lr": 2e-3, "optimizer": "adam"},
        "segmentation": {"method": "none"}, "unet": {"base_width": 16, "depth": 4},
    })


def _plain_gan(model, data, steps: int, batch: int, lr: float) -> None:
    g, d = model.generator, model.discriminator
    opt_d = torch.optim.Adam(d.parameters(), lr, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(g.parameters(), lr, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(0)
    done = 0
    while done < steps:
        for idx in iterate_batches(len(data), batch, generator=gen, shuffle=True):
            real, _ = data.batch(idx)
            with torch.no_grad():  # the usual hand-written DCGAN step: no graph for the D step's fakes
                fake = g(sample_latent(len(idx), g.latent_dim, gen))
            loss_d = discriminator_loss(d(real), d(fake))
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            loss_g = generator_loss(d(g(sample_latent(len(idx), g.latent_dim, gen))))
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
            done += 1
            if done == steps:
                return


def _plain_seg(model, data, steps: int, batch: int, lr: float) -> None:
    opt = torch.optim.Adam(model.parameters(), lr)
    gen = torch.Generator().manual_seed(0)
    done = 0
    while done < steps:
        for idx in iterate_batches(len(data), batch, generator=gen, shuffle=True):
            x, y, mask = data.batch(idx)
            loss = masked_dice_ce(model(x), y, mask)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                return


def _measure(cfg, plain, batch: int, lr: float, steps: int, repeats: int) -> tuple[float, float]:
    task = make_task(cfg)
    data = task.site_data(0).train
    init = task.initial_state()
    fed_times, plain_times = [], []
    for r in range(repeats + 1):
        for which in ("fedsilo", "plain"):
            model = task.build_model()
            model.load_state_dict(init)
            model.train()
            t = time.perf_counter()
            if which == "fedsilo":
                train_site(task, model, data, TrainContext(round=1, site_index=0, site_name="bench", device=torch.device("cpu")))
            else:
                plain(model, data, steps, batch, lr)
            if r:  # the first pair warms up
                (fed_times if which == "fedsilo" else plain_times).append(time.perf_counter() - t)
    return statistics.median(fed_times), statistics.median(plain_times)


def run(quick: bool = False) -> str:
    torch.set_num_threads(1)
    steps, repeats = (10, 2) if quick else (30, 5)
    rows, ratios = [], {}
    for name, cfg, plain, batch, lr in (
        ("DCGAN 28 px (G+D step), batch 64", _gan_cfg(steps), _plain_gan, 64, 2e-4),
        ("U-Net 64 px (masked Dice+CE), batch 16", _seg_cfg(steps), _plain_seg, 16, 2e-3),
    ):
        fed, ref = _measure(cfg, plain, batch, lr, steps, repeats)
        images = steps * batch
        ratios[name] = ref / fed
        rows.append([name, steps, f"{images / ref:.0f}", f"{images / fed:.0f}", f"{ref / fed:.3f}"])
    verdict = "; ".join(f"{n}: {r:.3f}x ({'met' if r >= 0.95 else 'NOT met'})" for n, r in ratios.items())
    return (f"One thread; {steps} steps per measurement, median of {repeats} alternating repeats after a warm-up.\n\n"
            + table(["model", "steps", "plain images/s", "fedsilo images/s", "fedsilo / plain"], rows)
            + f"\n\nGoal >= 0.95x: {verdict}.\n")
