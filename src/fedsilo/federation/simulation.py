"""The ``simulation`` engine: the same ServerApp and ClientApp on Flower's simulation engine (Ray).

The Ray cluster is joined and checked first (:mod:`fedsilo.federation.ray_cluster`); Flower then
finds Ray initialised and uses it as it is. Each site gets ``simulation.cpus_per_site`` CPUs and
``simulation.gpus_per_site`` GPUs as Flower's client resources.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from fedsilo.federation.ray_cluster import Cluster


def backend_config(cluster: Cluster) -> dict[str, Any]:
    """Flower's backend config for ``cluster`` (client resources; Ray is already initialised)."""
    def number(x: float) -> float | int:
        return int(x) if float(x).is_integer() else x

    return {"client_resources": {"num_cpus": number(cluster.cpus_per_site),
                                 "num_gpus": float(cluster.gpus_per_site)}}


def run_simulation_engine(server_app: ServerApp, client_app: ClientApp, num_sites: int, cluster: Cluster) -> int:
    """Run the apps on Flower's simulation engine (Ray actors run the ClientApps).

    Parameters
    ----------
    server_app, client_app
        The apps (the same objects the local engine runs).
    num_sites
        SuperNodes to simulate (partition ids ``0 .. num_sites - 1``).
    cluster
        The joined Ray cluster (:func:`fedsilo.federation.ray_cluster.connect`): resources per
        site and how many sites train at once.

    Returns
    -------
    int
        Ray actors Flower started (sites that could train at once).
    """
    from flwr.simulation import run_simulation

    with actor_pool_limit(cluster.sites_at_once) as pool, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=num_sites,
                       backend_config=backend_config(cluster))
    return pool.get("actors", 0)


@contextmanager
def actor_pool_limit(limit: int) -> Iterator[dict[str, int]]:
    """Let Flower's Ray backend start at most ``limit`` actors (sites training at once).

    Yields a dict that holds ``actors``, the number started, once Flower has built its pool.

    Flower 1.41 sizes its actor pool from the cluster's resources alone (``BasicActorPool.
    actors_capacity``) and has no setting for fewer; its simulation runtime builds the backend
    from ``raybackend.RayBackend`` when the run starts, so for the run's duration that name
    points at a subclass whose pool holds ``min(capacity, limit)`` actors.
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    from flwr.server.superlink.fleet.vce.backend import raybackend

    original = raybackend.RayBackend
    pool: dict[str, int] = {}

    class BoundedRayBackend(original):  # type: ignore[misc, valid-type]
        def build(self, app_fn: Any) -> None:
            self.pool = raybackend.BasicActorPool(actor_type=raybackend.ClientAppActor,
                                                  client_resources=self.client_resources,
                                                  actor_kwargs=self.actor_kwargs)
            self.pool.add_actors_to_pool(min(self.pool.actors_capacity, limit))
            self.app_fn = app_fn
            pool["actors"] = self.pool.num_actors

    raybackend.RayBackend = BoundedRayBackend
    try:
        yield pool
    finally:
        raybackend.RayBackend = original
