"""The [simulation] section and the checks made before joining a Ray cluster (no Ray started here)."""

from __future__ import annotations

import pytest
import torch

from fedsilo.config import ConfigError, config_from_dict
from fedsilo.config.simulation_schema import SimulationSection, split_address
from fedsilo.federation.ray_cluster import check_versions, init_error_message, init_kwargs, plan_sites
from fedsilo.federation.simulation import actor_pool_limit, backend_config
from fedsilo.run.folder import RunDir
from fedsilo.seeding import resolve_device, visible_index


def _sim(**kwargs) -> SimulationSection:
    return config_from_dict({"simulation": kwargs}).simulation


def test_defaults_keep_a_local_instance_with_every_cpu(monkeypatch):
    sim = _sim()
    assert (sim.address, sim.cpus_per_site, sim.gpus_per_site, sim.max_concurrent_sites, sim.ray_init_args) == \
        ("", 0.0, 0.0, 0, {})
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    kwargs = init_kwargs(sim)
    assert {k: kwargs[k] for k in ("address", "num_cpus", "include_dashboard", "logging_level", "log_to_driver")} \
        == {"address": "local", "num_cpus": 6, "include_dashboard": False, "logging_level": "WARNING",
            "log_to_driver": True}
    # one site at a time on the whole machine, as before the [simulation] section existed
    assert plan_sites(sim, [{"ip": "a", "cpus": 6.0, "gpus": 0.0}], num_sites=3) == (6.0, 0.0, 1)


def test_ray_init_args_pass_through_and_address_joins():
    sim = config_from_dict({}, ["simulation.address=10.0.0.5:6379",
                                "simulation.ray_init_args={namespace = 'study-1', runtime_env = {env_vars = {A = '1'}}}"]
                           ).simulation
    assert init_kwargs(sim) == {"address": "10.0.0.5:6379", "namespace": "study-1", "logging_level": "WARNING",
                                "log_to_driver": True, "runtime_env": {"env_vars": {"A": "1"}}}
    assert init_kwargs(_sim(ray_init_args={"num_cpus": 3}))["num_cpus"] == 3


@pytest.mark.parametrize(("address", "expected"), [
    ("", None), ("auto", None), ("10.0.0.5:6379", ("10.0.0.5", 6379)), ("ray://head.example.org:10001",
                                                                         ("head.example.org", 10001)),
    ("[::1]:6379", ("::1", 6379)),
])
def test_addresses(address, expected):
    assert split_address(address) == expected
    assert _sim(address=address).address == address


@pytest.mark.parametrize(("settings", "message"), [
    ({"address": "head"}, "simulation.address must be '' (a local Ray instance), 'auto', 'host:port' or "
                          "'ray://host:port', got 'head'"),
    ({"address": "http://head:8265"}, "got 'http://head:8265'"),
    ({"cpus_per_site": -1}, "simulation.cpus_per_site must be >= 0.0, got -1.0"),
    ({"gpus_per_site": 1.5}, "simulation.gpus_per_site must be a fraction in [0, 1] or a whole number of GPUs, got 1.5"),
    ({"max_concurrent_sites": -2}, "simulation.max_concurrent_sites must be >= 0, got -2"),
    ({"ray_init_args": {"address": "auto"}}, "simulation.ray_init_args.address is not allowed: set simulation.address"),
    ({"address": "auto", "ray_init_args": {"num_cpus": 4}},
     "simulation.ray_init_args.num_cpus only applies to a local Ray instance (simulation.address = ''), got "
     "simulation.address = 'auto'"),
    ({"ray_init_args": "x"}, "simulation.ray_init_args must be a table, got 'x'"),
])
def test_bad_settings_name_the_key(settings, message):
    with pytest.raises(ConfigError) as err:
        _sim(**settings)
    assert message in str(err.value)


def test_whole_gpus_per_site_are_allowed():
    assert _sim(gpus_per_site=2).gpus_per_site == 2.0


NODES = [{"ip": "10.0.0.1", "cpus": 8.0, "gpus": 1.0}, {"ip": "10.0.0.2", "cpus": 4.0, "gpus": 0.0}]


@pytest.mark.parametrize(("settings", "num_sites", "expected"), [
    ({"cpus_per_site": 1}, 100, (1.0, 0.0, 12)),           # 8 + 4 sites
    ({"cpus_per_site": 3}, 100, (3.0, 0.0, 3)),            # 2 + 1: no site spans nodes
    ({"cpus_per_site": 1}, 5, (1.0, 0.0, 5)),              # never more actors than sites
    ({"cpus_per_site": 1, "max_concurrent_sites": 4}, 100, (1.0, 0.0, 4)),
    ({"cpus_per_site": 1, "gpus_per_site": 0.25}, 100, (1.0, 0.25, 4)),  # the GPU node alone, 4 per GPU
    ({"cpus_per_site": 2, "gpus_per_site": 0.1}, 100, (2.0, 0.1, 4)),    # CPUs bind first there
    ({}, 100, (8.0, 0.0, 1)),                              # 0 = the largest node's CPUs
])
def test_plan_sites(settings, num_sites, expected):
    assert plan_sites(_sim(**settings), NODES, num_sites) == expected


def test_plan_sites_refuses_what_no_node_has():
    with pytest.raises(ConfigError, match=r"simulation.cpus_per_site = 16, simulation.gpus_per_site = 0: no node of "
                                          r"the Ray cluster can host one site \(nodes: 10.0.0.1: 8 CPUs, 1 GPUs, "
                                          r"10.0.0.2: 4 CPUs, 0 GPUs\)"):
        plan_sites(_sim(cpus_per_site=16), NODES, 3)
    with pytest.raises(ConfigError, match="gpus_per_site = 2: no node"):
        plan_sites(_sim(cpus_per_site=1, gpus_per_site=2), NODES, 3)
    with pytest.raises(ConfigError, match=r"\(nodes: none\)"):
        plan_sites(_sim(), [], 3)


HERE = {"fedsilo": "0.1.0", "ray": "2.55.1", "python": "3.11.7"}


def test_versions_must_match_on_every_node():
    nodes = [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]
    check_versions("auto", HERE, nodes, [HERE, {**HERE, "python": "3.11.9"}])  # patch level may differ
    cases = [
        ({**HERE, "fedsilo": "0.0.9"}, "simulation.address = 'auto': node 10.0.0.2 runs fedsilo 0.0.9, this machine "
                                       "0.1.0; every node needs the same fedsilo as the machine that starts the run"),
        ({**HERE, "ray": "2.40.0"}, "node 10.0.0.2 runs ray 2.40.0, this machine 2.55.1"),
        ({**HERE, "python": "3.12.1"}, "node 10.0.0.2 runs python 3.12, this machine 3.11"),
        ({**HERE, "fedsilo": None}, "node 10.0.0.2 cannot import fedsilo; install fedsilo 0.1.0 on every node"),
    ]
    for theirs, message in cases:
        with pytest.raises(ConfigError) as err:
            check_versions("auto", HERE, nodes, [HERE, theirs])
        assert message in str(err.value)


def test_ray_init_failures_become_one_line():
    mismatch = RuntimeError("Version mismatch: The cluster was started with:\n    Ray: 2.40.0\n    Python: 3.11.7\n"
                            "This process on node 10.0.0.9 was started with:\n    Ray: 2.55.1\n    Python: 3.11.7\n")
    text = init_error_message("10.0.0.5:6379", mismatch)
    assert text == ("simulation.address = '10.0.0.5:6379': the cluster runs another Ray or Python than this machine "
                    "(Version mismatch: The cluster was started with: Ray: 2.40.0 Python: 3.11.7 This process on node "
                    "10.0.0.9 was started with: Ray: 2.55.1 Python: 3.11.7); install the cluster's versions here, or "
                    "start the cluster with this machine's")
    assert init_error_message("", ValueError("bad\nkwarg")) == \
        "simulation.address = '' (a local Ray instance): could not join the Ray cluster: ValueError: bad kwarg"


def test_backend_config_and_actor_pool_limit():
    from flwr.server.superlink.fleet.vce.backend import raybackend

    from fedsilo.federation.ray_cluster import Cluster

    assert backend_config(Cluster("", 2.0, 0.0, 1)) == {"client_resources": {"num_cpus": 2, "num_gpus": 0.0}}
    assert backend_config(Cluster("", 0.5, 0.25, 4)) == {"client_resources": {"num_cpus": 0.5, "num_gpus": 0.25}}
    original = raybackend.RayBackend
    with actor_pool_limit(3):
        assert raybackend.RayBackend is not original and issubclass(raybackend.RayBackend, original)
    assert raybackend.RayBackend is original
    with pytest.raises(ValueError, match="limit must be >= 1, got 0"), actor_pool_limit(0):
        pass


def test_auto_device_is_the_gpu_ray_assigned(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert resolve_device("auto", [3]) == torch.device("cuda", 0)   # Ray narrowed the visible GPUs
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    assert resolve_device("auto", [3, 1]) == torch.device("cuda", 1)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert resolve_device("auto", ["2"]) == torch.device("cuda", 2)  # every GPU visible under its own id
    assert resolve_device("auto", []) == torch.device("cpu")         # the site asked for no GPU
    assert resolve_device("cpu", [0]) == torch.device("cpu")         # an explicit device is kept
    expected = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("auto") == expected and resolve_device("auto", None) == expected
    assert (visible_index(5, "5,6"), visible_index(6, "5, 6"), visible_index(4, None)) == (0, 1, 4)
    with pytest.raises(ValueError, match=r"GPU 7 assigned by Ray is not in CUDA_VISIBLE_DEVICES='0,1'"):
        visible_index(7, "0,1")


def test_env_json_keeps_the_cluster_of_the_start_and_of_each_resume(tiny_cfg, tmp_path):
    run = RunDir.create(tmp_path / "run", tiny_cfg(), "simulation")
    run.record_cluster({"address": "auto", "nodes": 3})
    assert run.read_env()["cluster"] == {"address": "auto", "nodes": 3}
    run.record_resume(1, "simulation")
    run.record_cluster({"address": "10.0.0.5:6379", "nodes": 1})
    env = run.read_env()
    assert env["cluster"] == {"address": "auto", "nodes": 3}
    assert env["resumes"][0]["cluster"] == {"address": "10.0.0.5:6379", "nodes": 1}
