"""The ``[simulation]`` section: where Flower's simulation engine runs (Ray) and what each site gets."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fedsilo.config.loader import ConfigError, param

#: ``host:port`` (a GCS address, as ``ray start --head`` prints it) or ``ray://host:port`` (Ray Client).
_ADDRESS_RE = re.compile(r"^(ray://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})$")

#: ray.init arguments fedsilo sets itself from other keys (or that make no sense when joining a cluster).
_OWN_INIT_ARGS = {"address": "simulation.address"}
_LOCAL_ONLY_INIT_ARGS = ("num_cpus", "num_gpus", "resources", "object_store_memory", "include_dashboard",
                         "dashboard_host", "dashboard_port", "_temp_dir")


def split_address(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``host:port`` or ``ray://host:port`` address; None for ``""`` and ``"auto"``."""
    if address in ("", "auto"):
        return None
    match = _ADDRESS_RE.match(address)
    if match is None:
        raise ConfigError(f"simulation.address must be '' (a local Ray instance), 'auto', 'host:port' or "
                          f"'ray://host:port', got {address!r}")
    return match["host"].strip("[]"), int(match["port"])


@dataclass
class SimulationSection:
    address: str = param(
        "",
        "Ray cluster to run on: '' = a new Ray instance on this machine (stopped after the run); 'auto' = the "
        "cluster this machine belongs to (RAY_ADDRESS, or the last `ray start` here); 'host:port' = the head "
        "node's GCS address that `ray start --head` prints; 'ray://host:port' = Ray Client (from outside "
        "the cluster). The run folder stays on this machine; every node needs the same fedsilo, Ray and Python.",
    )
    cpus_per_site: float = param(
        0.0,
        "CPUs Ray reserves per simulated site; 0 = all CPUs of the largest node, so sites run one at a time with the "
        "same torch thread count as the local engine (which makes the two engines' weights bit-identical).",
        ge=0.0,
    )
    gpus_per_site: float = param(
        0.0,
        "GPUs Ray reserves per simulated site: a fraction (0.25 = four sites share a GPU) or a whole number; sites "
        "then train on the GPU Ray assigned when experiment.device = 'auto'. 0 = CPU only.",
        ge=0.0,
    )
    max_concurrent_sites: int = param(
        0,
        "Most sites that train at the same time (Ray actors in the pool); 0 = as many as the cluster's resources "
        "allow at cpus_per_site / gpus_per_site (and never more than federation.num_sites).",
        ge=0,
    )
    ray_init_args: dict[str, Any] = param(
        {},
        "Extra keyword arguments for ray.init, passed through unchanged (e.g. {namespace = 'study-1'}, or "
        "{num_cpus = 8} for a local instance); 'address' is simulation.address.",
    )

    def validate(self, prefix: str) -> None:
        split_address(self.address)
        gpus = self.gpus_per_site
        if gpus > 1 and gpus != int(gpus):
            raise ConfigError(f"{prefix}.gpus_per_site must be a fraction in [0, 1] or a whole number of GPUs, "
                              f"got {gpus!r}")
        for key, instead in _OWN_INIT_ARGS.items():
            if key in self.ray_init_args:
                raise ConfigError(f"{prefix}.ray_init_args.{key} is not allowed: set {instead} instead")
        if self.address:
            given = [k for k in _LOCAL_ONLY_INIT_ARGS if k in self.ray_init_args]
            if given:
                raise ConfigError(f"{prefix}.ray_init_args.{given[0]} only applies to a local Ray instance "
                                  f"(simulation.address = ''), got simulation.address = {self.address!r}: a "
                                  f"cluster's resources are set where its nodes are started (`ray start --num-cpus`)")
