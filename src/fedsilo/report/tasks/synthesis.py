"""Presentation of the synthesis (FedGAN) task: sample grids, GAN metrics, protocol notes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fedsilo.report.markup import img_file
from fedsilo.report.tasks.base import TaskPresenter

#: The generator metrics of sweep tables, in order.
GAN_METRICS = ("realism", "fd", "kid", "precision", "recall", "density", "coverage", "diversity", "tstr_kappa",
               "trtr_kappa")


class SynthesisPresenter(TaskPresenter):
    """Realism, FD and the diversity metrics; the latest sample grid and nearest real images."""

    percent_metrics = {"fd": False, "kid": False, "precision": True, "recall": True, "coverage": True}

    def curve_metrics(self) -> list[str]:
        return ["train_d_loss", "train_g_loss", "test_realism", "test_fd", "val_d_real", "val_d_fake"]

    def summary_columns(self, keys: Sequence[str]) -> list[str]:
        present = set(keys)
        cols = [f"test_{n}" for n in GAN_METRICS] + [f"sel_test_{n}" for n in ("realism", "fd")]
        cols += ["val_d_real", "val_d_fake"]
        return [c for c in cols if c in present]

    def report_sections(self, run_dir: Path) -> list[tuple[str, str, list[str]]]:
        folder = Path(run_dir) / "samples"
        rounds = sorted(folder.glob("round-*.png"))
        if not rounds:
            return []
        last, first = int(rounds[-1].stem.split("-")[1]), int(rounds[0].stem.split("-")[1])
        rows = " (rows: DR grades 0-4, repeating)" if self.cfg.gan.conditional else ""
        body = img_file(rounds[-1], f"generated samples, round {last}",
                        f"64 generated images after round {last}, from fixed latent codes{rows}.")
        if len(rounds) > 1:
            body += img_file(rounds[0], f"generated samples, round {first}",
                             f"The same latent codes before training (round {first}), for comparison.")
        nearest = folder / "nearest-real.png"
        if nearest.exists():
            body += img_file(nearest, "generated images and their nearest real training images",
                             "Top: generated; bottom: the closest real training image of each (pixel distance). "
                             "Copies of training images would show up here as identical pairs.")
        return [("Generated samples", f"<div class='figs'>{body}</div>", [])]

    def protocol_notes(self) -> list[str]:
        return [
            "No Inception-v3 weights are available offline: FD and KID are computed in the feature space of a "
            "reference DR-grade classifier trained on the run's real training images, so they are not comparable "
            "with published FIDs.",
            "Realism is the mean sigmoid output of a reference discriminator (of a GAN trained centrally on the "
            "pooled real training images), as the FedGAN paper defines it; it depends entirely on that "
            "discriminator, so compare realism only within one data set and seed.",
            "Real held-out images for FD/KID/precision/recall are the configured test split (RetinaMNIST: its 120 "
            "validation images), so these estimates carry the small-sample bias their intervals show.",
        ]

    def intended_use(self) -> str:
        return ("Research on federated synthesis of fundus images (FedGAN): measuring how close federated "
                "generators come to centralised ones and what they leak. Synthetic images are for method "
                "development and data-sharing studies, not for training clinical models without validation "
                "on real data.")
