"""Config sections of federation: rounds and sites, the aggregation strategy, update validation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fedsilo.config.loader import ConfigError, param, section
from fedsilo.config.privacy_schema import SecAggSection

StrategyName = Literal[
    "fedavg",
    "fedprox",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "fedavgm",
    "fedmedian",
    "fedtrimmedavg",
    "krum",
    "multikrum",
    "bulyan",
    "centeredclip",
    "fedbn",
]

FusedEvaluationMode = Literal["auto", "on", "off"]


@dataclass
class StrategySection:
    name: StrategyName = param(
        "fedavg", "Aggregation strategy (Flower strategies; centeredclip: centered clipping; fedbn keeps normalisation local)."
    )
    proximal_mu: float = param(0.01, "FedProx proximal weight mu (applied in the client loss).", ge=0.0)
    server_lr: float = param(0.1, "Server learning rate eta (fedadam, fedyogi, fedadagrad, fedavgm).", gt=0.0)
    server_momentum: float = param(0.9, "Server momentum (fedavgm).", ge=0.0, lt=1.0)
    beta_1: float = param(0.9, "First-moment decay (fedadam, fedyogi).", ge=0.0, lt=1.0)
    beta_2: float = param(0.99, "Second-moment decay (fedadam, fedyogi).", ge=0.0, lt=1.0)
    tau: float = param(1e-3, "Adaptivity constant tau (fedadam, fedyogi, fedadagrad).", gt=0.0)
    trim_beta: float = param(0.2, "Fraction trimmed from each end (fedtrimmedavg).", ge=0.0, lt=0.5)
    num_malicious: int = param(0, "Assumed malicious sites f (krum, multikrum, bulyan).", ge=0)
    num_selected: int = param(1, "Updates kept by multikrum.", ge=1)
    clip_radius: float = param(
        0.0, "Centered clipping radius tau in update-norm units (centeredclip; 0 = the round's median update norm).",
        ge=0.0)
    clip_iterations: int = param(3, "Centered clipping iterations per round (centeredclip).", ge=1, le=100)
    local_norm: bool = param(
        False, "Keep normalisation parameters and statistics local to each site (FedBN-style) with any strategy."
    )


@dataclass
class ValidationSection:
    max_update_norm: float = param(
        0.0,
        "Reject a site's update whose L2 norm (its trained weights minus the global weights it was sent, over "
        "every floating-point array) exceeds this, as a NaN update is rejected: the site is named in the log "
        "and in metrics.jsonl, and the round goes on with the others. Use with any strategy. 0 = off.",
        ge=0.0,
    )
    max_update_norm_factor: float = param(
        0.0,
        "Reject a site's update whose L2 norm exceeds this multiple of the round's median update norm (the "
        "median of the updates that passed the other checks, which a minority of sites cannot move). Use with "
        "any strategy; not with privacy.mode = 'client' (whether one site's update is kept would depend on the "
        "others' updates, outside the per-site sensitivity DP-FedAvg assumes). 0 = off, else >= 1.",
        ge=0.0,
    )

    def validate(self, prefix: str) -> None:
        if 0.0 < self.max_update_norm_factor < 1.0:
            raise ConfigError(f"{prefix}.max_update_norm_factor must be 0 (off) or >= 1 (below 1 it rejects at "
                              f"least half of every round's updates), got {self.max_update_norm_factor}")

    @property
    def bounds_norms(self) -> bool:
        """Whether either norm bound is on."""
        return self.max_update_norm > 0 or self.max_update_norm_factor > 0


@dataclass
class FederationSection:
    num_sites: int = param(3, "Number of sites (hospitals).", ge=1, le=1000)
    rounds: int = param(5, "Federated rounds (centralised/local modes: training periods of the same size).", ge=1)
    fraction_train: float = param(1.0, "Fraction of sites sampled for training each round.", gt=0.0, le=1.0)
    min_sites: int = param(
        1, "Minimum sites sampled and minimum valid updates per round; fewer stops the run with an error.", ge=1
    )
    eval_every: int = param(1, "Sites evaluate the global model on their validation split every N rounds.", ge=1)
    fused_evaluation: FusedEvaluationMode = param(
        "auto",
        "Fuse the sites' validation into the next training message: in round r+1 each sampled site first scores "
        "the global model it received (the aggregate of round r) on its validation split, then trains, and returns "
        "both; the coordinator logs those rows as round r's, the same numbers a separate evaluation exchange gives, "
        "so a round is one message exchange instead of two. Sites not sampled in round r+1 get an evaluation "
        "message in the same exchange, so every site is still scored; a site that does not answer that message "
        "has no validation row for round r. The last round's model (and that of a run stopping early) is scored "
        "by its own evaluation exchange. Validation metrics are never mixed into the training metrics the strategy "
        "aggregates, and, as evaluation replies, are not covered by a DP guarantee. auto = on in a deployment "
        "(`fedsilo deploy run`, where every exchange costs seconds), off in the local and simulation engines; "
        "on; off. Never with federation.secure_aggregation, a weight average of the released model (a GAN's "
        "EMA generator: the sites score other weights than they train) or federated test metrics "
        "(gan.evaluation = 'federated'): those keep the separate exchange.",
    )
    timeout: float = param(3600.0, "Seconds to wait for site replies each round.", gt=0.0)
    site_names: list[str] = param([], "Names of the sites (default site-1 ... site-N).")
    strategy: StrategySection = section(StrategySection, "Aggregation strategy.")
    validation: ValidationSection = section(
        ValidationSection,
        "Checks on each site's update before aggregation, beyond the ones always made (keys, shapes, dtypes, "
        "finite values, and num-examples at most the training examples the site reported at setup). Not with "
        "federation.secure_aggregation: the coordinator never holds a single update there "
        "(federation.secagg.clipping_range bounds each update at its site). A rejected update counts in the "
        "round's sites_rejected; with a norm bound on, each site's row in metrics.jsonl records its update_norm and "
        "the global row sites_norm_rejected.")
    secure_aggregation: bool = param(
        False,
        "Secure aggregation (Flower's SecAgg+, Bell et al. CCS 2020): each site masks its quantised update, and "
        "the coordinator only ever holds masked updates and their weighted mean. Needs a strategy that uses "
        "only the mean (fedavg, fedprox, fedadam, fedyogi, fedavgm) and at least 2 sites per round.",
    )
    secagg: SecAggSection = section(SecAggSection, "Secure aggregation settings (federation.secure_aggregation).")
