"""Config sections of privacy: differential privacy in training and the audit of a finished run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fedsilo.config.loader import param

PrivacyMode = Literal["none", "sample", "client"]
CLIENT_DP_STRATEGIES = ("fedavg", "fedprox")


@dataclass
class PrivacySection:
    mode: PrivacyMode = param(
        "none",
        "none = no differential privacy; sample = DP-SGD at each site (Opacus; protects each training "
        "sample of a site); client = DP-FedAvg (Flower's DP wrappers; protects each site's whole contribution).",
    )
    epsilon: float = param(
        0.0,
        "Target epsilon of the whole run (per site for sample, for the federation for client): the noise "
        "multiplier is calibrated to reach it after federation.rounds rounds. 0 = use noise_multiplier; "
        "inf = no DP (the model keeps its DP-compatible layers, but nothing is clipped or noised: the "
        "non-private point of a privacy sweep).",
        ge=0.0,
    )
    noise_multiplier: float = param(1.0, "Noise standard deviation over the clipping norm, used when epsilon = 0.", gt=0.0)
    delta: float = param(
        0.0,
        "Target delta; 0 = min(1e-5, 1/n) with n a site's training samples (sample) or the number of sites (client).",
        ge=0.0,
        lt=1.0,
    )
    max_grad_norm: float = param(1.0, "Sample level: per-sample gradient clipping norm C.", gt=0.0)
    max_epsilon: float = param(
        0.0,
        "Hard budget: a site (sample) stops being sampled, or the run (client) stops, before a round that "
        "would take its epsilon above this; when no site can train the run ends cleanly. 0 = no cap.",
        ge=0.0,
    )
    reproducible_noise: bool = param(
        False,
        "Seed DP noise and Poisson sampling from experiment.seed, so a private run repeats exactly. For "
        "simulations only: anyone who knows the seed (every party does) can regenerate the noise and remove it, "
        "so reports say 'reproducible noise: simulation only, not a privacy guarantee' and fedsilo deploy "
        "refuses it. false = noise and sampling are drawn from os.urandom at the site and never leave it.",
    )
    canaries: int = param(
        0,
        "One-run privacy audit (Steinke et al., NeurIPS 2023): this many gradient canaries, extra slots of the "
        "sites' data sets whose per-sample gradient is C on one weight, each real with probability 1/2 by a "
        "coin the auditor redraws from experiment.seed; `fedsilo audit RUN_DIR --attacks dp-canary` turns how "
        "far their weights moved into an epsilon lower bound. Needs privacy.mode = 'sample'; simulation only "
        "(fedsilo deploy refuses it). Canaries touch single weights, never data or metrics. 0 = none.",
        ge=0,
    )
    accountant: Literal["rdp", "prv"] = param(
        "rdp", "Opacus accountant: rdp (Renyi DP) or prv (privacy loss random variables; tighter)."
    )
    clipping: Literal["fixed", "adaptive"] = param(
        "fixed",
        "Client level: a fixed clipping norm, or adaptive clipping towards a quantile of update norms "
        "(Andrew et al., NeurIPS 2021).",
    )
    clipping_side: Literal["server", "client"] = param(
        "server",
        "Client level: updates are clipped by the server's wrapper, or by each site before it sends "
        "(the server then never sees an unclipped update).",
    )
    clipping_norm: float = param(
        1.0, "Client level: L2 bound of a site's model update (fixed clipping) or its initial value (adaptive).", gt=0.0
    )
    target_quantile: float = param(
        0.5, "Client level, adaptive: fraction of updates left unclipped that the norm adapts to.", ge=0.0, le=1.0
    )
    clip_norm_lr: float = param(0.2, "Client level, adaptive: learning rate of the geometric norm update.", gt=0.0)
    clipped_count_stddev: float = param(
        0.0,
        "Client level, adaptive: noise std of the count of clipped updates (0 = sites per round / 20, "
        "Flower's default; it must exceed noise_multiplier / 2).",
        ge=0.0,
    )

    @property
    def active(self) -> bool:
        """True when training is private (a DP mode and a finite epsilon)."""
        return self.mode != "none" and self.epsilon != float("inf")

    @property
    def guarantee(self) -> str:
        """One line on what the run's epsilon means, for reports, the model card and provenance."""
        if not self.active:
            return "no differential privacy"
        if self.reproducible_noise:
            return REPRODUCIBLE_NOISE
        return "noise and sampling from a secure source at each site (os.urandom)"


#: What reports print for a run with ``privacy.reproducible_noise = true``.
REPRODUCIBLE_NOISE = "reproducible noise: simulation only, not a privacy guarantee"


#: Strategies that aggregate a (weighted) sum of updates, which secure aggregation can compute.
SECURE_STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedyogi", "fedavgm")


@dataclass
class SecAggSection:
    num_shares: float = param(
        1.0,
        "SecAgg+ neighbours: the share of the round's sites each site splits its keys among (1.0 = all, "
        "classic SecAgg; smaller = SecAgg+'s sparse graph, cheaper at many sites; rounded to an odd number).",
        gt=0.0, le=1.0,
    )
    reconstruction_threshold: float = param(
        0.6,
        "Share of a site's neighbours needed to rebuild its masks. A site that drops out mid-round is "
        "recovered from its neighbours' shares; the round is abandoned when any site keeps fewer active "
        "neighbours than this. Higher = a coalition must be larger to unmask a site; lower = more dropouts tolerated.",
        gt=0.0, le=1.0,
    )
    clipping_range: float = param(
        1.0,
        "Each coordinate of a site's update (its trained weights minus the global ones, times its weight share) is "
        "clipped to [-clipping_range, clipping_range] before quantisation.",
        gt=0.0,
    )
    quantization_range: int = param(
        2**22, "Integer levels of the quantised range (the sum is exact in integers; the error is the rounding).",
        ge=2, le=2**30,
    )


@dataclass
class AuditSection:
    attacks: list[str] = param([], "Attacks `fedsilo audit` runs ([] = every attack the task's audit offers).")
    max_samples: int = param(
        500, "Members and non-members per membership attack (each side; fewer when the data holds fewer).", ge=2
    )
    reference_models: int = param(
        4,
        "Reference models of the calibrated membership attacks (RMIA, LiRA), each trained on a random half "
        "of the attack pool; 0 = run only uncalibrated attacks.",
        ge=0,
    )
    reference_rounds: int = param(
        0, "Training periods (task train() calls) of each reference model; 0 = federation.rounds.", ge=0
    )
    inversion_batch_sizes: list[int] = param([1, 4], "Gradient inversion: client batch sizes attacked.", ge=1)
    inversion_local_steps: list[int] = param([1], "Gradient inversion: local SGD steps in the attacked update.", ge=1)
    inversion_iterations: int = param(300, "Gradient inversion: Adam iterations on the dummy images.", ge=1)
    inversion_tv: float = param(1e-2, "Gradient inversion: weight of the total-variation prior.", ge=0.0)
    inversion_clip: float = param(1.0, "Gradient inversion: L2 clipping norm of the update in the 'DP' rows.", gt=0.0)
    inversion_noise: float = param(
        1.0, "Gradient inversion: noise multiplier (std over the clipping norm) in the 'DP' rows.", ge=0.0
    )
    gan_samples: int = param(
        2000, "GAN audits: generated images for GAN-Leaks black-box, DCR and the realism detector.", ge=4
    )
    latent_steps: int = param(200, "GAN audits: Adam steps of the latent optimisation (white-box, inversion).", ge=1)
    latent_restarts: int = param(2, "GAN audits: random starts per target of the latent optimisation.", ge=1)
    max_targets: int = param(
        200, "GAN audits: members and non-members per side for the latent optimisation (the costly attack).", ge=2
    )
