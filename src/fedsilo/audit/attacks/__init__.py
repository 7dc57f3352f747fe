"""Attacks that measure what a trained model, a generator or a client update leaks.

One module per attack family; every attack takes models and data explicitly and returns an
:class:`~fedsilo.audit.attacks.metrics.AttackResult` (or, for reconstructions, images and
their PSNR/SSIM). :data:`ATTACKS` names them for the audit and reports.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedsilo.audit.attacks.dcr import DCRResult, dcr_grid, dcr_result, distance_to_closest_record
from fedsilo.audit.attacks.gan_mia import (
    discriminator_scores,
    gan_leaks_blackbox,
    gan_leaks_whitebox,
    generator_sampler,
    logan_attack,
    real_vs_synthetic_detector,
)
from fedsilo.audit.attacks.gradient_inversion import (
    InversionTrial,
    attack_batch,
    client_update,
    infer_labels,
    inversion_grid,
    invert_update,
)
from fedsilo.audit.attacks.inversion import InversionResult, inversion_attack, invert_generator
from fedsilo.audit.attacks.metrics import (
    AttackResult,
    attack_result,
    auc_score,
    plot_roc,
    psnr,
    roc_curve,
    ssim,
    tpr_at_fpr,
)
from fedsilo.audit.attacks.mia import (
    calibrated_attacks,
    cross_entropy_losses,
    lira_scores,
    loss_attack,
    reference_losses,
    rmia_scores,
    sample_losses,
)


@dataclass(frozen=True)
class AttackInfo:
    """What an attack is, for reports: its family, what it needs and the paper it comes from."""

    name: str
    kind: str
    needs: str
    reference: str


ATTACKS: dict[str, AttackInfo] = {
    info.name: info
    for info in (
        AttackInfo("loss", "membership", "model, per-sample loss", "Yeom et al., CSF 2018"),
        AttackInfo("lira", "membership", "model, reference models", "Carlini et al., S&P 2022"),
        AttackInfo("rmia", "membership", "model, reference models", "Zarifzadeh et al., ICML 2024"),
        AttackInfo("logan", "membership", "discriminator (white-box)", "Hayes et al., PoPETs 2019"),
        AttackInfo("gan_leaks_blackbox", "membership", "generator samples", "Chen et al., CCS 2020"),
        AttackInfo("gan_leaks_whitebox", "membership", "generator (latent optimisation)", "Chen et al., CCS 2020"),
        AttackInfo("inversion", "membership", "generator (latent optimisation)", "Kamran et al., PLOS ONE 2025"),
        AttackInfo("dcr", "distance", "synthetic, train and hold-out images", "Platzer & Reutterer 2021"),
        AttackInfo("real_vs_synthetic", "realism", "real and synthetic images (NOT membership)",
                   "Kamran et al., PLOS ONE 2025"),
        AttackInfo("gradient_inversion", "reconstruction", "global model, a client update",
                   "Geiping et al., NeurIPS 2020"),
    )
}

__all__ = [
    "ATTACKS",
    "AttackInfo",
    "AttackResult",
    "DCRResult",
    "InversionResult",
    "InversionTrial",
    "attack_batch",
    "attack_result",
    "auc_score",
    "calibrated_attacks",
    "client_update",
    "cross_entropy_losses",
    "dcr_grid",
    "dcr_result",
    "discriminator_scores",
    "distance_to_closest_record",
    "gan_leaks_blackbox",
    "gan_leaks_whitebox",
    "generator_sampler",
    "infer_labels",
    "inversion_attack",
    "inversion_grid",
    "invert_generator",
    "invert_update",
    "lira_scores",
    "logan_attack",
    "loss_attack",
    "plot_roc",
    "psnr",
    "real_vs_synthetic_detector",
    "reference_losses",
    "rmia_scores",
    "roc_curve",
    "sample_losses",
    "ssim",
    "tpr_at_fpr",
]
