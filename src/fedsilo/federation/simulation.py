"""The ``simulation`` engine: the same ServerApp and ClientApp on Flower's simulation engine (Ray)."""

from __future__ import annotations

import os
import warnings

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp


def run_simulation_engine(server_app: ServerApp, client_app: ClientApp, num_sites: int,
                          cpus_per_site: float) -> None:
    """Run the apps on Flower's simulation engine (Ray actors run the ClientApps).

    Parameters
    ----------
    server_app, client_app
        The apps (the same objects the local engine runs).
    num_sites
        SuperNodes to simulate (partition ids ``0 .. num_sites - 1``).
    cpus_per_site
        CPUs Ray reserves per site (0 = all CPUs: one site at a time).
    """
    from flwr.simulation import run_simulation

    cpus = os.cpu_count() or 1
    backend_config = {
        "client_resources": {"num_cpus": cpus_per_site or cpus, "num_gpus": 0.0},
        "init_args": {"num_cpus": cpus, "include_dashboard": False},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=num_sites,
                       backend_config=backend_config)
