"""Config section of the FedGAN federation-level options (``[gan.federation]``, task = synthesis).

How the two networks of a GAN are federated: whether the discriminator (or its normalisation
layers) stays at each site, and a server optimiser per network on top of the aggregate. Their
defaults are the FedGAN protocol: both networks averaged by ``federation.strategy``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fedsilo.config.loader import ConfigError, param

DiscriminatorSharing = Literal["shared", "local_norm", "local"]
ServerOptName = Literal["none", "fedadam", "fedavgm"]

#: federation.strategy names whose aggregate a per-network server optimiser may act on: those that
#: return a (weighted) mean of the updates; a robust aggregate or FedOpt of its own would compose oddly.
GAN_SERVER_OPT_BASES = ("fedavg", "fedprox", "fedbn")


@dataclass
class GanFederationSection:
    discriminator: DiscriminatorSharing = param(
        "shared",
        "How the discriminator is federated: shared = averaged with the generator (FedGAN); local_norm = its "
        "normalisation layers (weights, biases, running statistics) stay at each site, the rest is averaged "
        "(FedBN for D, Li et al. ICLR 2021); local = each site keeps its own discriminator and only the "
        "generator is averaged. Kept arrays never leave the site: its reply carries the values it was sent, and "
        "it stores its own between rounds (memory, and a file for resume: see train.keep_optimizer_state). The "
        "run's global discriminator is then not a trained network (its local arrays stay at their initial "
        "values), so the privacy audit's discriminator attack does not apply.")
    server_opt_g: ServerOptName = param(
        "none",
        "Server optimiser of the generator on top of the aggregate (experiment.mode = 'federated'): none = the "
        "aggregate is the new generator; fedadam (Reddi et al. ICLR 2021) or fedavgm (Hsu et al. 2019) take "
        "aggregate minus current weights as the round's update, with federation.strategy's beta_1, beta_2, tau "
        "and server_momentum. Applies to the trainable parameters; buffers (batch-norm statistics) take the "
        "aggregate. Needs federation.strategy.name fedavg, fedprox or fedbn.")
    server_opt_d: ServerOptName = param(
        "none", "Server optimiser of the discriminator (as server_opt_g; not with discriminator = 'local').")
    server_lr_g: float = param(0.1, "Server learning rate of the generator's server optimiser (server_opt_g).",
                               gt=0.0)
    server_lr_d: float = param(0.1, "Server learning rate of the discriminator's server optimiser (server_opt_d).",
                               gt=0.0)

    def validate(self, prefix: str) -> None:
        if self.discriminator == "local" and self.server_opt_d != "none":
            raise ConfigError(f"{prefix}.server_opt_d must be 'none' with {prefix}.discriminator = 'local' (each "
                              f"site keeps its own discriminator: there is no shared one to optimise), got "
                              f"{self.server_opt_d!r}")

    @property
    def server_opts(self) -> bool:
        """Whether either network has a server optimiser."""
        return self.server_opt_g != "none" or self.server_opt_d != "none"


def check_gan_federation(section: GanFederationSection, strategy: str) -> None:
    """Cross-section checks of ``gan.federation`` (called by the experiment config's validation).

    Raises
    ------
    ConfigError
        A per-network server optimiser over a ``federation.strategy`` that is not a plain mean.
    """
    if section.server_opts and strategy not in GAN_SERVER_OPT_BASES:
        raise ConfigError(f"gan.federation.server_opt_g / server_opt_d need federation.strategy.name in "
                          f"{', '.join(GAN_SERVER_OPT_BASES)} (the server optimiser acts on their mean), got "
                          f"{strategy!r}")


__all__ = ["GAN_SERVER_OPT_BASES", "GanFederationSection", "check_gan_federation"]
