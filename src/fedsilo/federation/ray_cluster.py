"""The Ray cluster the simulation engine runs on: join (or start) it, and check it before any round.

``simulation.address`` names the cluster (``''`` starts a Ray instance on this machine, as Flower
would). Everything that would otherwise fail minutes later, or hang, fails here in one line,
as a :class:`~fedsilo.config.ConfigError` naming the key:

- an address nothing answers at (a TCP probe first: ``ray.init`` itself retries for minutes);
- a resource request no node can satisfy (``simulation.cpus_per_site`` / ``gpus_per_site``
  against each node's resources, the rule Flower's actor pool sizes itself by);
- a node whose Ray, Python or fedsilo differs from this machine's (Ray compares its own and
  Python's versions when joining; a tiny task on every node reports fedsilo's).

The run folder stays on this machine: the ServerApp runs in this process, only ClientApps run
on the cluster's nodes.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fedsilo.config import ConfigError
from fedsilo.config.simulation_schema import SimulationSection, split_address

logger = logging.getLogger(__name__)

#: Seconds to wait for a TCP connection to the head node before giving up.
CONNECT_TIMEOUT_S = 5.0
#: Seconds every node gets to report its versions (a worker process has to start there first).
VERSIONS_TIMEOUT_S = 120.0
#: Flower's ray.init defaults (flwr.simulation.run_simulation), kept for every address.
_FLOWER_INIT_DEFAULTS = {"logging_level": "WARNING", "log_to_driver": True}


@dataclass
class Cluster:
    """The Ray cluster a simulation runs on, as checked before the first round."""

    address: str
    cpus_per_site: float
    gpus_per_site: float
    sites_at_once: int
    nodes: list[dict[str, Any]] = field(default_factory=list)
    resources: dict[str, float] = field(default_factory=dict)
    ray_version: str = ""

    def record(self) -> dict[str, Any]:
        """What env.json keeps under ``cluster``."""
        return {"address": self.address or "local", "ray": self.ray_version, "nodes": len(self.nodes),
                "resources": self.resources, "cpus_per_site": self.cpus_per_site,
                "gpus_per_site": self.gpus_per_site, "sites_at_once": self.sites_at_once,
                "node_list": self.nodes}


def local_versions() -> dict[str, str | None]:
    """fedsilo, Ray and Python versions of this process (what every node must match)."""
    import ray

    import fedsilo

    return {"fedsilo": fedsilo.__version__, "ray": ray.__version__, "python": platform.python_version()}


@contextmanager
def ray_cluster(settings: SimulationSection, num_sites: int) -> Iterator[Cluster]:
    """Join (or start) the cluster of ``settings``, check it, and leave it afterwards."""
    cluster = connect(settings, num_sites)
    try:
        yield cluster
    finally:
        disconnect()


def connect(settings: SimulationSection, num_sites: int) -> Cluster:
    """``ray.init`` on ``simulation.address`` and every check; raises :class:`ConfigError`."""
    import ray

    check_reachable(settings.address)
    if ray.is_initialized():
        logger.warning("Ray is already initialised in this process; simulation.address and "
                       "simulation.ray_init_args are not applied")
    else:
        try:
            ray.init(**init_kwargs(settings))
        except Exception as exc:  # noqa: BLE001 - Ray raises RuntimeError, ConnectionError, ValueError, ...
            disconnect()
            raise ConfigError(init_error_message(settings.address, exc)) from None
    try:
        nodes = [{"ip": n["NodeManagerAddress"], "id": n["NodeID"], "cpus": float(n["Resources"].get("CPU", 0)),
                  "gpus": float(n["Resources"].get("GPU", 0))}
                 for n in ray.nodes() if n.get("Alive") and n.get("Resources")]
        cpus, gpus, at_once = plan_sites(settings, nodes, num_sites)
        versions = _node_versions(nodes)
        check_versions(settings.address, local_versions(), nodes, versions)
    except BaseException:
        disconnect()
        raise
    for node, found in zip(nodes, versions, strict=True):
        node.update(found)
        del node["id"]
    cluster = Cluster(settings.address, cpus, gpus, at_once, nodes,
                      {k: float(v) for k, v in ray.cluster_resources().items()}, ray.__version__)
    logger.info("Ray cluster %s: %d node(s), %s; %d site(s) at a time (%g CPUs, %g GPUs each)",
                settings.address or "(local)", len(nodes), _resources_text(cluster.resources), at_once, cpus, gpus)
    return cluster


def disconnect() -> None:
    """Leave (or stop, for a local instance) the Ray cluster of this process, if any."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def init_kwargs(settings: SimulationSection) -> dict[str, Any]:
    """``ray.init`` arguments: Flower's for a local instance, the address for a cluster, then ray_init_args."""
    kwargs: dict[str, Any] = dict(_FLOWER_INIT_DEFAULTS)
    if settings.address:
        kwargs["address"] = settings.address
    else:
        # a new instance on this machine, as Flower starts one: every CPU, no dashboard, and
        # this process's import path for the workers (RAY_ADDRESS is not consulted)
        pythonpath = os.pathsep.join([*sys.path, *filter(None, [os.environ.get("PYTHONPATH")])])
        kwargs.update(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False,
                      runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
    kwargs.update(settings.ray_init_args)
    return kwargs


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast when nothing accepts a TCP connection at the head node's address."""
    if not address:
        return
    target = address
    if address == "auto":
        target = _auto_address()
    host_port = split_address(target) if target != "auto" else None
    if host_port is None:
        return
    try:
        with socket.create_connection(host_port, timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"simulation.address = {address!r}: nothing answers at {host_port[0]}:{host_port[1]} "
                          f"({reason} within {timeout:g} s); start the head node with `ray start --head` "
                          f"or fix the address") from None


def _auto_address() -> str:
    """The cluster ``address = 'auto'`` means (RAY_ADDRESS, else the last ``ray start`` here)."""
    from ray._private import services

    try:
        found = services.canonicalize_bootstrap_address("auto")
    except ConnectionError:
        raise ConfigError("simulation.address = 'auto': no running Ray cluster found (RAY_ADDRESS is unset and "
                          "no `ray start` ran on this machine); start one or give its address") from None
    except Exception:  # noqa: BLE001 - a private Ray helper: let ray.init judge the address then
        return "auto"
    return found or "auto"


def init_error_message(address: str, exc: BaseException) -> str:
    """One line for a failed ``ray.init``; Ray's own version-mismatch report kept in it."""
    text = " ".join(str(exc).split())
    shown = repr(address) if address else "'' (a local Ray instance)"
    if "version mismatch" in text.lower():
        return (f"simulation.address = {shown}: the cluster runs another Ray or Python than this machine "
                f"({text}); install the cluster's versions here, or start the cluster with this machine's")
    return f"simulation.address = {shown}: could not join the Ray cluster: {type(exc).__name__}: {text}"


def plan_sites(settings: SimulationSection, nodes: Sequence[Mapping[str, Any]],
               num_sites: int) -> tuple[float, float, int]:
    """Resources per site and how many sites train at once; raises when no node can host one site.

    Returns
    -------
    (cpus_per_site, gpus_per_site, sites_at_once)
        ``cpus_per_site = 0`` resolves to the largest node's CPU count. A node hosts
        ``int(cpus / cpus_per_site)`` sites (fewer if ``int(gpus / gpus_per_site)`` is less), as
        Flower sizes its actor pool; ``sites_at_once`` is their sum, capped by
        ``simulation.max_concurrent_sites`` and ``num_sites``.
    """
    cpus = settings.cpus_per_site or max((float(n["cpus"]) for n in nodes), default=0.0)
    gpus = settings.gpus_per_site
    capacity = 0
    for node in nodes:
        fit = int(node["cpus"] / cpus) if cpus else 0
        if gpus:
            fit = min(fit, int(node["gpus"] / gpus))
        capacity += fit
    if capacity == 0:
        listed = ", ".join(f"{n['ip']}: {n['cpus']:g} CPUs, {n['gpus']:g} GPUs" for n in nodes[:5]) or "none"
        more = f" and {len(nodes) - 5} more" if len(nodes) > 5 else ""
        raise ConfigError(f"simulation.cpus_per_site = {settings.cpus_per_site:g}, simulation.gpus_per_site = "
                          f"{gpus:g}: no node of the Ray cluster can host one site (nodes: {listed}{more}); "
                          f"lower them or add a node that has them")
    at_once = min(capacity, max(num_sites, 1))
    if settings.max_concurrent_sites:
        at_once = min(at_once, settings.max_concurrent_sites)
    return cpus, gpus, at_once


def check_versions(address: str, here: Mapping[str, str | None], nodes: Sequence[Mapping[str, Any]],
                   found: Sequence[Mapping[str, str | None]]) -> None:
    """Raise when a node's fedsilo, Ray or Python (major.minor) differs from ``here``."""
    for node, theirs in zip(nodes, found, strict=True):
        where = f"simulation.address = {address or 'local'!r}: node {node['ip']}"
        if theirs.get("fedsilo") is None:
            raise ConfigError(f"{where} cannot import fedsilo; install fedsilo {here['fedsilo']} on every node")
        for name in ("fedsilo", "ray", "python"):
            mine, other = str(here[name]), str(theirs[name])
            if name == "python":
                mine, other = ".".join(mine.split(".")[:2]), ".".join(other.split(".")[:2])
            if mine != other:
                raise ConfigError(f"{where} runs {name} {other}, this machine {mine}; every node needs the same "
                                  f"{name} as the machine that starts the run")


def _node_versions(nodes: Sequence[Mapping[str, Any]]) -> list[dict[str, str | None]]:
    """Each node's fedsilo, Ray and Python versions, from a zero-CPU task pinned to it."""
    import ray
    from ray.exceptions import GetTimeoutError, RayError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    def versions() -> dict[str, str | None]:
        # defined here so that Ray ships it by value: it must run where fedsilo may be missing
        import platform as _platform

        import ray as _ray

        try:
            import fedsilo as _fedsilo

            version: str | None = _fedsilo.__version__
        except ImportError:
            version = None
        return {"fedsilo": version, "ray": _ray.__version__, "python": _platform.python_version()}

    task = ray.remote(num_cpus=0)(versions)
    refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["id"], soft=False)).remote()
            for n in nodes]
    try:
        return list(ray.get(refs, timeout=VERSIONS_TIMEOUT_S))
    except GetTimeoutError:
        raise ConfigError(f"simulation.address: not every node of the Ray cluster answered within "
                          f"{VERSIONS_TIMEOUT_S:g} s (nodes: {', '.join(n['ip'] for n in nodes)})") from None
    except RayError as exc:
        text = " ".join(str(exc).split())[:300]
        raise ConfigError(f"simulation.address: a node of the Ray cluster could not run fedsilo's version check: "
                          f"{type(exc).__name__}: {text}") from None


def ray_assigned_gpus() -> list[int | str] | None:
    """Inside a Ray actor, the GPU ids Ray assigned to it (``[]`` for none); None outside Ray actors."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    try:
        if ray.get_runtime_context().get_actor_id() is None:
            return None
        return list(ray.get_gpu_ids())
    except Exception:  # noqa: BLE001 - e.g. a Ray Client driver: not an actor
        return None


def _resources_text(resources: Mapping[str, float]) -> str:
    return f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs"
